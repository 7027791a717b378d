"""MQTT to store: the ingestor, its spool and its dead-letter."""
