"""A test MQTT subscriber that records and decodes what arrives (used by simulator and broker tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.readings import Decoded
from sensors.topics import SUBSCRIPTION
from tests.servers import wait_until


class Recorder:
    """Everything received on a subscription, raw and decoded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.raw: list[tuple[str, bytes]] = []
        self.decoded: list[Decoded] = []
        self.decoder = Decoder(CommuneRegistry.load())
        self.subscribed = threading.Event()

    def on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        payload = bytes(message.payload)
        decoded = self.decoder.decode(message.topic, payload)
        with self.lock:
            self.raw.append((message.topic, payload))
            self.decoded.append(decoded)

    def count(self) -> int:
        """Messages received so far."""
        with self.lock:
            return len(self.raw)

    def wait_for(self, messages: int, timeout: float = 60.0) -> None:
        """Wait until at least ``messages`` messages arrived."""
        wait_until(lambda: self.count() >= messages, timeout=timeout, what=f"{messages} MQTT messages")


@contextmanager
def subscriber(
    port: int, *, protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5, topic: str = SUBSCRIPTION
) -> Iterator[Recorder]:
    """A QoS 1 subscriber on ``topic``, subscribed (SUBACK received) when the block starts."""
    recorder = Recorder()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber", protocol=protocol)
    client.on_message = recorder.on_message
    client.on_subscribe = lambda *args: recorder.subscribed.set()
    client.on_connect = lambda c, *args: c.subscribe(topic, qos=1)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        wait_until(recorder.subscribed.is_set, timeout=15, what="SUBACK from the broker")
        yield recorder
    finally:
        client.disconnect()
        client.loop_stop()
