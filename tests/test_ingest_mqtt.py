"""Ingest against a real Mosquitto: the simulated fleet end to end, the persistent session, a
broker restart, the dead-letter, shared subscriptions, metrics and health."""

from __future__ import annotations

import json
import select
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import polars as pl
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ingest.batch import REJECTED_MEASUREMENT
from ingest.mqtt import READ_SIZE, BufferedSocket
from sensors.frames import TAGS
from storage.duckdb_store import DuckDBStore
from tests.ingest_fixtures import (
    WIDE_END,
    WIDE_START,
    assert_store_holds_fleet,
    deadletter_records,
    fleet_messages,
    ingest_settings,
    make_fleet,
    metric,
    metrics_text,
    publish,
    running_ingestor,
)
from tests.servers import Mosquitto, wait_until


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    duck = DuckDBStore(tmp_path / "store.duckdb")
    yield duck
    duck.close()


def _rows(store: DuckDBStore) -> int:
    return sum(
        store.read(family, start=WIDE_START, end=WIDE_END).height
        for family in ("air_quality", "traffic", "building", "camera", "network")
    )


def test_the_fleet_of_nine_communes_is_stored_exactly_once_with_metrics_and_health(
    mosquitto: Mosquitto, tmp_path: Path, store: DuckDBStore
) -> None:
    fleet = make_fleet(minutes=10)
    messages = fleet_messages(fleet)
    assert set(fleet.frames) == {"air_quality", "traffic", "building", "camera", "network"}
    assert fleet.devices["insee"].n_unique() == 9
    with running_ingestor(mosquitto.port, ingest_settings(tmp_path), store) as ingestor:
        port = ingestor.metrics_port
        assert port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
        publish(mosquitto.port, messages)
        wait_until(
            lambda: ingestor.metrics.acked.value() == messages.height,
            timeout=60,
            what="every message acknowledged",
        )
        text = metrics_text(port)
    assert_store_holds_fleet(store, fleet)
    assert metric(text, "smartcity_ingest_messages_total") == messages.height
    for family, frame in fleet.frames.items():
        assert metric(text, "smartcity_ingest_rows_written_total", f'measurement="{family}"') == frame.height
    assert metric(text, "smartcity_ingest_lag_received_seconds_count") == fleet.rows
    assert metric(text, "smartcity_ingest_spool_bytes") == 0
    assert "smartcity_ingest_store_write_seconds_bucket" in text
    assert not deadletter_records(tmp_path / "deadletter.jsonl")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_readings_published_while_the_ingestor_is_down_are_delivered_at_its_return(
    mosquitto: Mosquitto, tmp_path: Path, store: DuckDBStore, protocol: Literal["5", "3.1.1"]
) -> None:
    fleet = make_fleet(minutes=4)
    messages = fleet_messages(fleet)
    first, second = messages.head(messages.height // 2), messages.tail(messages.height - messages.height // 2)
    # MQTT 3.1.1 is for brokers without MQTT 5 (the demo's embedded one): same guarantee.
    settings = ingest_settings(tmp_path)
    with running_ingestor(mosquitto.port, settings, store, protocol=protocol) as ingestor:
        publish(mosquitto.port, first)
        wait_until(lambda: ingestor.metrics.acked.value() == first.height, timeout=60, what="first half")
    # The ingestor is gone; its persistent session collects the second half.
    publish(mosquitto.port, second)
    assert _rows(store) == first.height
    with running_ingestor(mosquitto.port, settings, store, protocol=protocol) as ingestor:
        wait_until(lambda: ingestor.metrics.acked.value() == second.height, timeout=60, what="second half")
    assert_store_holds_fleet(store, fleet)


def test_a_broker_restart_mid_stream_loses_nothing(
    mosquitto: Mosquitto, tmp_path: Path, store: DuckDBStore
) -> None:
    fleet = make_fleet(minutes=10)
    messages = fleet_messages(fleet)
    with running_ingestor(mosquitto.port, ingest_settings(tmp_path), store) as ingestor:
        errors: list[BaseException] = []

        def publish_all() -> None:
            try:
                publish(mosquitto.port, messages, max_queued=200)
            except BaseException as exc:
                errors.append(exc)

        publisher = threading.Thread(target=publish_all)
        publisher.start()
        wait_until(
            lambda: ingestor.metrics.acked.value() > messages.height // 4, timeout=60, what="a quarter in"
        )
        mosquitto.stop()
        mosquitto.start()
        publisher.join(180)
        assert not errors, errors
        wait_until(lambda: _rows(store) >= fleet.rows, timeout=90, interval=0.2, what="every reading stored")
        wait_until(lambda: ingestor.consumer.connected, timeout=30, what="reconnected")
    assert_store_holds_fleet(store, fleet)


class _Watcher:
    """Subscribes to the dead-letter topics and keeps what arrives."""

    def __init__(self, port: int) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.client.subscribe("smartcity/v1/_deadletter/#", qos=1)
        assert self._subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.records.append((message.topic, json.loads(message.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_invalid_messages_land_in_the_dead_letter_topic_and_file_and_the_valid_ones_are_stored(
    mosquitto: Mosquitto, tmp_path: Path, store: DuckDBStore
) -> None:
    fleet = make_fleet(minutes=2, devices=1)
    good = fleet_messages(fleet)
    camera_topic = good.filter(pl.col("topic").str.contains("/camera/"))["topic"][0]
    aq_topic = good.filter(pl.col("topic").str.contains("/air_quality/"))["topic"][0]
    bad = [
        (aq_topic, b'{"ts": "2026-03-02T07:00:00Z", "pm25": 1', "malformed_json"),
        (aq_topic, json.dumps({"ts": 1772434800000, "pad": "x" * 300_000}).encode(), "oversized"),
        ("smartcity/v1/78498/air_quality", b'{"ts": 1772434800000, "pm25": 3}', "bad_topic"),
        ("smartcity/v1/78498/weather/w-1", b'{"ts": 1772434800000, "wind": 3}', "unknown_family"),
        ("smartcity/v1/99999/air_quality/aq-9", b'{"ts": 1772434800000, "pm25": 3}', "unknown_commune"),
        (
            camera_topic,
            json.dumps({"ts": 1772434800000, "peopleCount": 2, "faceImage": "/9j/4AAQ"}).encode(),
            "forbidden_field",
        ),
    ]
    # The valid readings surround the bad ones in the stream.
    middle = good.height // 2
    bad_frame = pl.DataFrame(
        {
            "send_ns": [int(good["send_ns"][middle])] * len(bad),
            "topic": [topic for topic, _, _ in bad],
            "payload": [payload for _, payload, _ in bad],
            "readings": [0] * len(bad),
        },
        schema=good.schema,
    )
    stream = pl.concat([good.head(middle), bad_frame, good.tail(good.height - middle)])
    watcher = _Watcher(mosquitto.port)
    # A wide subscription: the wrong-depth topic reaches the ingestor, and so would its own
    # dead-letter publications if it did not set them aside.
    settings = ingest_settings(tmp_path, topic="smartcity/v1/#")
    try:
        with running_ingestor(mosquitto.port, settings, store) as ingestor:
            publish(mosquitto.port, stream)
            wait_until(lambda: ingestor.metrics.acked.value() == stream.height, timeout=60, what="all acked")
            wait_until(lambda: len(watcher.records) == len(bad), timeout=10, what="dead-letter publications")
            messages_in = ingestor.metrics.messages.value()
    finally:
        watcher.close()
    assert_store_holds_fleet(store, fleet)
    # The ingestor counted the stream, not its own dead-letter records.
    assert messages_in == stream.height

    file_records = deadletter_records(settings.deadletter_file)
    assert sorted(r["reason"] for r in file_records) == sorted(reason for _, _, reason in bad)
    for topic, payload, reason in bad:
        [record] = [r for r in file_records if r["reason"] == reason]
        assert record["topic"] == topic
        if reason == "forbidden_field":
            # A camera payload that may hold a face is never kept, not even here.
            assert "payload" not in record and record["payload_withheld"] is True
        else:
            assert record["payload"] == payload.decode()
        assert record["received_at"].endswith("Z")
        assert record["errors"][0]["reason"] == reason
    for topic, record in watcher.records:
        assert topic == f"smartcity/v1/_deadletter/{record['reason']}/{record['topic']}"
    assert all("/9j/4AAQ" not in json.dumps(record) for _, record in watcher.records)
    oversized = next(record for _, record in watcher.records if record["reason"] == "oversized")
    assert oversized["payload_truncated"] is True
    rejected = store.read(REJECTED_MEASUREMENT, start=WIDE_START, end=WIDE_END)
    # Only refusals of a known commune's device become rows; strangers create no series.
    assert sorted(rejected["reason"].to_list()) == ["forbidden_field", "malformed_json", "oversized"]


def test_two_ingestors_on_a_shared_subscription_split_the_load_and_store_each_reading_once(
    mosquitto: Mosquitto, tmp_path: Path, store: DuckDBStore
) -> None:
    fleet = make_fleet(minutes=6)
    messages = fleet_messages(fleet)
    one = ingest_settings(tmp_path / "one", shared_group="ingest", client_id="ingest-one")
    two = ingest_settings(tmp_path / "two", shared_group="ingest", client_id="ingest-two")
    with (
        running_ingestor(mosquitto.port, one, store) as first,
        running_ingestor(mosquitto.port, two, store) as second,
    ):
        publish(mosquitto.port, messages)
        wait_until(
            lambda: first.metrics.acked.value() + second.metrics.acked.value() == messages.height,
            timeout=60,
            what="all acknowledged",
        )
        shares = (first.metrics.messages.value(), second.metrics.messages.value())
    assert sum(shares) == messages.height
    assert min(shares) >= 0.3 * messages.height, f"load not split: {shares}"
    assert_store_holds_fleet(store, fleet)
    for family in fleet.frames:
        stored = store.read(family, start=WIDE_START, end=WIDE_END)
        assert stored.select(["time", *TAGS]).is_duplicated().sum() == 0


def test_healthz_reports_a_broker_that_is_gone(
    mosquitto: Mosquitto, tmp_path: Path, store: DuckDBStore
) -> None:
    with running_ingestor(mosquitto.port, ingest_settings(tmp_path), store) as ingestor:
        url = f"http://127.0.0.1:{ingestor.metrics_port}/healthz"
        mosquitto.stop()
        wait_until(lambda: not ingestor.consumer.connected, timeout=10, what="disconnection seen")
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(url, timeout=5)
        assert answer.value.code == 503
        assert "not connected to the broker" in answer.value.read().decode()
        mosquitto.start()
        wait_until(lambda: ingestor.health()[0], timeout=30, what="healthy again")


def test_the_buffered_connection_hands_paho_whole_and_split_packets_in_order() -> None:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    reader = BufferedSocket(ours)
    with pytest.raises(BlockingIOError):
        reader.recv(1)
    # Two packets and the first byte of a third arrive in one segment.
    broker.sendall(b"\x30\x03abc" + b"\x30\x02de" + b"\x30")
    wait_until(lambda: reader.pending() > 0 or _readable(ours), timeout=5, what="bytes to arrive")
    assert reader.recv(1) == b"\x30"
    assert reader.pending() == 9, "the rest waits in the buffer, where select cannot see it"
    assert [reader.recv(1), reader.recv(3)] == [b"\x03", b"abc"]
    assert [reader.recv(1), reader.recv(1), reader.recv(2)] == [b"\x30", b"\x02", b"de"]
    assert reader.recv(1) == b"\x30"
    assert reader.pending() == 0
    with pytest.raises(BlockingIOError):
        reader.recv(1)  # the rest of the third packet is not here yet: paho tries again later
    broker.sendall(b"\x01z" + b"x" * (2 * READ_SIZE))
    wait_until(lambda: _readable(ours), timeout=5, what="the rest")
    assert reader.recv(2) == b"\x01z"
    received = b""
    while len(received) < 2 * READ_SIZE:
        try:
            received += reader.recv(2 * READ_SIZE - len(received))
        except BlockingIOError:
            wait_until(lambda: _readable(ours), timeout=5, what="more bytes")
    assert received == b"x" * (2 * READ_SIZE)
    broker.close()
    wait_until(lambda: _readable(ours), timeout=5, what="the end of the connection")
    assert reader.recv(1) == b"", "the end of the connection reaches paho as it is"
    reader.close()


def _readable(sock: Any) -> bool:
    return bool(select.select([sock], [], [], 0)[0])
