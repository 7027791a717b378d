"""What ingest does with what it refuses, against a real Mosquitto and real stores: camera payloads
never kept nor republished, dead-letter records durable before the acknowledgement, refusals
that cannot create series at will, same-instant conflicts, and device ids in French."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import polars as pl
import pytest
from dash._pages import _parse_path_variables
from paho.mqtt.enums import CallbackAPIVersion

from dashboards.app import create_app
from dashboards.config import DashboardSettings
from dashboards.pages import device as device_page
from dashboards.pages.common import device_href
from ingest.batch import REJECTED_MEASUREMENT
from sensors.communes import CommuneRegistry
from sensors.topics import reading_topic
from storage.duckdb_store import DuckDBStore
from storage.influx import InfluxStore
from tests.dashboard_fixtures import write_users
from tests.ingest_fixtures import (
    WIDE_END,
    WIDE_START,
    IngestProcess,
    deadletter_records,
    ingest_settings,
    metric,
    metrics_text,
    running_ingestor,
)
from tests.servers import Mosquitto, wait_until
from tests.storage_fixtures import open_influx, shared_influxd
from tests.test_decoder_allowlist import LEAKS
from tests.test_ingest_faults import influx

pytestmark = pytest.mark.slow

__all__ = ["influx", "shared_influxd"]

INSEE = "78498"
NOW_MS = int(time.time() * 1000)


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBStore]:
    store = DuckDBStore(tmp_path / "store.duckdb")
    yield store
    store.close()


class Watcher:
    """A plain MQTT client subscribed to a filter, keeping every message it receives."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watcher-{id(self)}")
        client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        self._client = client
        assert self._subscribed.wait(10), "watcher did not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def send(port: int, messages: list[tuple[str, bytes]]) -> None:
    """Publish with QoS 1, in order, and wait until the broker acknowledged each."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="refusals-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def test_camera_payloads_with_urls_or_plates_are_refused_and_never_kept_nor_republished(
    mosquitto: Mosquitto, tmp_path: Path, duck: DuckDBStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    watcher = Watcher(mosquitto.port, "smartcity/v1/_deadletter/#")
    topic = reading_topic(INSEE, "camera", "cam-poissy-1")
    messages = [
        (topic, json.dumps({"ts": NOW_MS, "peopleCount": 12, k: v}).encode()) for k, v in LEAKS.items()
    ]
    try:
        with running_ingestor(mosquitto.port, ingest_settings(tmp_path), duck) as ingestor:
            send(mosquitto.port, messages)
            wait_until(lambda: ingestor.metrics.acked.value() == len(messages), timeout=30, what="acks")
            wait_until(lambda: watcher.count() == len(messages), timeout=30, what="dead-letter topic")
    finally:
        watcher.close()
    file_text = (tmp_path / "deadletter.jsonl").read_text("utf-8")
    published = "\n".join(payload.decode() for _, payload in watcher.messages)
    logs = "\n".join(record.getMessage() for record in caplog.records)
    for leak in LEAKS.values():
        assert leak not in file_text and leak not in published and leak not in logs, leak
    records = deadletter_records(tmp_path / "deadletter.jsonl")
    assert sorted(r["refused_key"] for r in records) == sorted(LEAKS)
    for record, (_, payload) in zip(records, messages, strict=True):
        assert record["reason"] == "forbidden_field" and record["topic"] == topic
        assert record["payload_withheld"] and record["payload_bytes"] == len(payload)
        assert len(record["payload_sha256"]) == 64
        assert "payload" not in record and "payload_base64" not in record
    assert duck.read("camera", start=WIDE_START, end=WIDE_END).height == 0  # not even peopleCount 12


def test_a_store_refused_reading_is_in_the_dead_letter_file_before_its_ack_survives_kill_9(
    mosquitto: Mosquitto, tmp_path: Path, influx: tuple[InfluxStore, dict[str, str]]
) -> None:
    _, env = influx
    ingest = IngestProcess(tmp_path, mosquitto.port, {**env, "SMARTCITY_INGEST__LOG_INTERVAL_S": "0.5"})
    ingest.start()
    try:
        # 2000-01-01: the decoder accepts it, InfluxDB refuses it (older than the raw retention).
        send(
            mosquitto.port,
            [(reading_topic(INSEE, "air_quality", "aq-1"), b'{"ts": 946684800000, "pm25": 10}')],
        )
        wait_until(lambda: metric(ingest.metrics(), "smartcity_ingest_acked_messages_total") == 1, timeout=30)
        wait_until(lambda: "ingest:" in ingest.log(), timeout=10, what="a periodic summary")
    finally:
        ingest.kill()  # right after the acknowledgement: the broker will not deliver it again
    records = deadletter_records(tmp_path / "deadletter.jsonl")
    assert [r["reason"] for r in records] == ["store_rejected"], records
    assert records[0]["row"]["pm25"] == 10
    # The store's HTTP requests are at DEBUG: the log at INFO holds the summary, not them.
    assert "HTTP Request" not in ingest.log()


def test_three_thousand_invented_keys_create_one_series_and_a_bounded_number_of_rows(
    mosquitto: Mosquitto, tmp_path: Path, shared_influxd: Any
) -> None:
    store = open_influx(shared_influxd)
    keys = {f"attr_{i:04d}": i for i in range(3000)}
    payload = json.dumps({"ts": NOW_MS, "pm25": 5.0, **keys}).encode()
    topic = reading_topic(INSEE, "air_quality", "aq-flood")
    watcher = Watcher(mosquitto.port, "smartcity/v1/_deadletter/#")
    try:
        settings = ingest_settings(tmp_path, rejected_rows_per_device=100)
        with running_ingestor(mosquitto.port, settings, store) as ingestor:
            send(mosquitto.port, [(topic, payload)])
            wait_until(lambda: ingestor.metrics.acked.value() == 1, timeout=30, what="ack")
            wait_until(lambda: watcher.count() == 1, timeout=30, what="the dead-letter topic")
            text = metrics_text(ingestor.metrics_port or 0)
        published = json.loads(watcher.messages[0][1])
        assert len(published["errors"]) == 100 and published["errors_truncated"] == 3000
        series = store.series(REJECTED_MEASUREMENT)
        assert series.height == 1, series  # one device, one reason: one series
        assert "field" not in series.columns  # the names are values of a field, not tags
        rejected = store.read(REJECTED_MEASUREMENT, start=WIDE_START, end=WIDE_END)
        assert rejected.height == 100
        assert rejected["field"].n_unique() == 100 and rejected["field"][0].startswith("attr_")
        assert metric(text, "smartcity_ingest_unknown_fields_total", 'family="air_quality"') == 3000
        assert metric(text, "smartcity_ingest_rejected_rows_capped_total") == 2900
        assert store.read("air_quality", start=WIDE_START, end=WIDE_END)["pm25"].to_list() == [5.0]
        [record] = deadletter_records(tmp_path / "deadletter.jsonl")
        assert len(record["errors"]) == 3000  # the file keeps every name
    finally:
        watcher.close()
        store.close()


def test_two_readings_of_one_device_at_one_instant_in_one_batch(
    mosquitto: Mosquitto, tmp_path: Path, duck: DuckDBStore
) -> None:
    topic = reading_topic(INSEE, "air_quality", "aq-twice")
    split = reading_topic(INSEE, "air_quality", "aq-split")
    messages = [
        (topic, json.dumps({"ts": NOW_MS, "pm25": 10.0, "no2": 30.0}).encode()),
        (split, json.dumps({"ts": NOW_MS, "pm25": 7.0}).encode()),
        (topic, json.dumps({"ts": NOW_MS, "pm25": 12.0}).encode()),
        (split, json.dumps({"ts": NOW_MS, "no2": 21.0}).encode()),
    ]
    with running_ingestor(mosquitto.port, ingest_settings(tmp_path, batch_interval_s=3.0), duck) as ingestor:
        send(mosquitto.port, messages)
        wait_until(lambda: ingestor.metrics.acked.value() == len(messages), timeout=30, what="acks")
        text = metrics_text(ingestor.metrics_port or 0)
    stored = duck.read("air_quality", start=WIDE_START, end=WIDE_END).sort("device_id")
    # Disagreeing: the last received wins whole (no2 30 is not kept beside pm25 12).
    # Agreeing (disjoint fields of one instant): merged, as two batches would be.
    assert stored.select("device_id", "pm25", "no2").to_dicts() == [
        {"device_id": "aq-split", "pm25": 7.0, "no2": 21.0},
        {"device_id": "aq-twice", "pm25": 12.0, "no2": None},
    ]
    assert metric(text, "smartcity_ingest_conflicting_readings_total", 'family="air_quality"') == 1
    [record] = deadletter_records(tmp_path / "deadletter.jsonl")
    assert record["reason"] == "conflicting_readings" and record["topic"] == topic
    assert record["fields"] == ["pm25"]
    assert record["kept"] == {"pm25": 12.0} and record["dropped"] == [{"pm25": 10.0, "no2": 30.0}]


DEVICE = "capteur école 3"


def test_a_french_device_id_end_to_end(
    mosquitto: Mosquitto, tmp_path: Path, duck: DuckDBStore, shared_influxd: Any
) -> None:
    influx_store = open_influx(shared_influxd)
    topic = reading_topic(INSEE, "air_quality", DEVICE)
    try:
        for name, store in (("duckdb", duck), ("influxdb", influx_store)):
            settings = ingest_settings(tmp_path / name, client_id=f"test-ingest-{name}")
            with running_ingestor(mosquitto.port, settings, store) as ingestor:
                send(mosquitto.port, [(topic, json.dumps({"ts": NOW_MS, "pm25": 9.5}).encode())])
                wait_until(lambda: ingestor.metrics.acked.value() == 1, timeout=30, what=f"ack ({name})")
            assert not deadletter_records(tmp_path / name / "deadletter.jsonl")
            found = store.read("air_quality", start=WIDE_START, end=WIDE_END, where={"device_id": DEVICE})
            assert found.select("device_id", "pm25").to_dicts() == [{"device_id": DEVICE, "pm25": 9.5}], name
            others = store.read("air_quality", start=WIDE_START, end=WIDE_END, where={"device_id": "capteur"})
            assert others.height == 0
        _query_api_and_device_page(duck, tmp_path)
    finally:
        influx_store.close()


def _query_api_and_device_page(store: DuckDBStore, directory: Path) -> None:
    accounts = write_users(directory / "users.toml", [("poissy", [INSEE])])
    config = DashboardSettings.model_validate({"users_file": directory / "users.toml"})
    app = create_app(store, config, CommuneRegistry.load())
    http = app.server.test_client()
    devices = urllib.parse.quote(DEVICE)
    response = http.get(
        f"/api/v1/readings/air_quality?communes={INSEE}&start=-1d&devices={devices}&format=json",
        headers={"Authorization": f"Bearer {accounts['poissy'].token}"},
    )
    assert response.status_code == 200, response.data
    rows = pl.DataFrame(json.loads(response.data)["rows"])
    assert rows["device_id"].to_list() == [DEVICE] and rows["pm25"].to_list() == [9.5]
    # The dashboard's link to the device page, as Dash parses it back from the browser's path.
    href = device_href(INSEE, DEVICE)
    assert " " not in href and "é" not in href
    variables = _parse_path_variables(href, device_page.PATH_TEMPLATE)  # type: ignore[no-untyped-call]
    assert variables is not None
    assert urllib.parse.unquote(variables["device_id"]) == DEVICE
