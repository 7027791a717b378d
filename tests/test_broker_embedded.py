"""The embedded amqtt broker serves paho clients (MQTT 3.1.1, QoS 1) from synchronous code."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulator.fleet import FleetConfig, generate_fleet
from simulator.publisher import PublishOptions, publish_fleet
from smartcity.broker import PROTOCOL, EmbeddedBroker
from tests.servers import wait_until
from tests.simulator_fixtures import subscriber


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(port=0) as running:
        yield running


def test_a_paho_client_publishes_and_a_subscriber_receives(broker: EmbeddedBroker) -> None:
    payloads = [f"message {i}".encode() for i in range(200)]
    with subscriber(broker.port, protocol=PROTOCOL, topic="test/#") as received:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="publisher", protocol=PROTOCOL)
        client.connect(broker.host, broker.port)
        client.loop_start()
        infos = [client.publish("test/topic", payload, qos=1) for payload in payloads]
        for info in infos:
            info.wait_for_publish(timeout=15)
            assert info.is_published()
        received.wait_for(len(payloads))
        client.disconnect()
        client.loop_stop()
    assert [payload for _, payload in received.raw] == payloads


def test_the_simulated_fleet_goes_through_the_embedded_broker(broker: EmbeddedBroker) -> None:
    fleet = generate_fleet(
        FleetConfig(communes=["78160", "92012"], seed=3),
        datetime(2026, 3, 2, tzinfo=UTC),
        timedelta(minutes=15),
    )
    options = PublishOptions(
        host=broker.host, port=broker.port, protocol="3.1.1", max_inflight=10, max_queued=20
    )
    with subscriber(broker.port, protocol=PROTOCOL) as received:
        report = publish_fleet(fleet, options)
        received.wait_for(report.published)
    assert report.acknowledged == report.published == fleet.rows
    assert sum(len(d.readings) for d in received.decoded) == fleet.rows
    assert not [e for d in received.decoded for e in d.errors]


def test_an_mqtt5_client_is_refused_with_a_protocol_error(broker: EmbeddedBroker) -> None:
    # amqtt 0.12 only speaks MQTT 3.1.1: clients must connect with MQTTv311 (documented).
    outcome: list[ReasonCode] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v5", protocol=MQTTProtocolVersion.MQTTv5)
    client.on_connect = lambda c, u, f, reason, p: outcome.append(reason)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        wait_until(lambda: bool(outcome), timeout=10, what="CONNACK")
    finally:
        client.loop_stop()
    assert outcome[0].is_failure


def test_stop_frees_the_port_and_the_broker_can_start_again() -> None:
    broker = EmbeddedBroker(port=0)
    broker.start()
    port = broker.port
    broker.stop()
    assert not broker.running
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the listener is closed
    with EmbeddedBroker(port=port) as again, subscriber(again.port, protocol=PROTOCOL, topic="x/#"):
        assert again.running
