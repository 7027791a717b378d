"""The test bed itself: the real servers start, answer, and come back after a stop."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.servers import Influxd, Mosquitto


def test_mosquitto_accepts_a_connection(mosquitto: Mosquitto) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    result = client.connect("127.0.0.1", mosquitto.port)
    assert result == mqtt.MQTT_ERR_SUCCESS
    client.disconnect()


def test_influxd_answers_ping_and_survives_a_restart(influxd: Influxd) -> None:
    assert influxd.ready()
    assert influxd.query("CREATE DATABASE probe") == 200
    influxd.stop()
    assert not influxd.ready()
    influxd.start()
    assert influxd.query("SHOW DATABASES") == 200
