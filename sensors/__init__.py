"""Sensor families, the commune registry, the MQTT wire contract and the fleet simulator."""
