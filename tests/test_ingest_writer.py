"""The writer: batches, stores, spools while the store is down, replays in order, acknowledges
only what is durable, and sends refusals to the dead-letter."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingest.batch import REJECTED_MEASUREMENT, BatchBuilder, Message
from ingest.config import IngestSettings
from ingest.deadletter import DeadLetter
from ingest.metrics import IngestMetrics
from ingest.spool import Spool, encode_tables
from ingest.writer import STOP, Inbox, Writer
from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from storage.duckdb_store import DuckDBStore
from tests.ingest_fixtures import WIDE_END, WIDE_START, FlakyStore, RecordingAcks, deadletter_records
from tests.servers import wait_until

BASE_MS = 1_790_000_000_000  # 2026-09-21: a fixed, plausible observed time


def reading(mid: int, *, device: str = "aq-1", family: str = "air_quality", insee: str = "78498") -> Message:
    """A valid one-reading message; the mid also sets the observed time (one second apart)."""
    payload = {"ts": BASE_MS + mid * 1000, "pm25": 10.0 + mid, "no2": 20.0}
    if family == "traffic":
        payload = {"ts": BASE_MS + mid * 1000, "intensity": mid, "averageVehicleSpeed": 42.5}
    topic = f"smartcity/v1/{insee}/{family}/{device}"
    return Message(mid, 1, topic, json.dumps(payload).encode(), time.time_ns(), 1)


@dataclass
class Rig:
    """A writer on a real DuckDB store that the test can switch down."""

    inbox: Inbox
    store: FlakyStore
    spool: Spool
    acks: RecordingAcks
    metrics: IngestMetrics
    writer: Writer
    deadletter_path: Path

    def send(self, *messages: Message) -> None:
        for message in messages:
            self.inbox.put(message)

    def stored(self, measurement: str = "air_quality") -> int:
        return self.store.store.read(measurement, start=WIDE_START, end=WIDE_END).height

    def stop(self) -> None:
        self.inbox.put(STOP)
        assert self.writer.join(30)


def make_rig(tmp_path: Path, store: DuckDBStore, **overrides: object) -> Rig:
    values: dict[str, object] = {
        "batch_size": 10,
        "batch_interval_s": 0.1,
        "retry_interval_s": 0.05,
        "retry_max_interval_s": 0.2,
        "spool_dir": tmp_path / "spool",
        "spool_max_bytes": 10 << 20,
        "deadletter_file": tmp_path / "deadletter.jsonl",
    }
    values.update(overrides)
    settings = IngestSettings.model_validate(values)
    metrics = IngestMetrics()
    deadletter = DeadLetter(settings.deadletter_file, topic_prefix=settings.deadletter_topic)
    inbox: Inbox = queue.SimpleQueue()
    flaky = FlakyStore(store)
    spool = Spool(settings.spool_dir, settings.spool_max_bytes)
    acks = RecordingAcks()
    writer = Writer(
        inbox=inbox,
        builder=BatchBuilder(Decoder(CommuneRegistry.load()), deadletter, metrics),
        store=flaky,
        spool=spool,
        deadletter=deadletter,
        acknowledger=acks,
        metrics=metrics,
        settings=settings,
    )
    writer.start()
    return Rig(inbox, flaky, spool, acks, metrics, writer, settings.deadletter_file)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    duck = DuckDBStore(tmp_path / "store.duckdb")
    yield duck
    duck.close()


def test_a_full_batch_is_one_write_per_family_then_acknowledged(tmp_path: Path, store: DuckDBStore) -> None:
    rig = make_rig(tmp_path, store, batch_size=20, batch_interval_s=30.0)
    # The long interval means only the size can trigger this flush.
    messages = [reading(i, device=f"aq-{i % 3}") for i in range(12)]
    messages += [reading(100 + i, family="traffic", device=f"tr-{i}") for i in range(8)]
    rig.send(*messages)
    wait_until(lambda: len(rig.acks.acked) == 20, timeout=10, what="acks of the full batch")
    assert sorted(rig.store.writes) == [("air_quality", 12), ("traffic", 8)]
    assert rig.stored("air_quality") == 12
    assert rig.stored("traffic") == 8
    assert rig.acks.mids == {m.mid for m in messages}
    rig.stop()


def test_a_partial_batch_is_flushed_after_the_interval(tmp_path: Path, store: DuckDBStore) -> None:
    rig = make_rig(tmp_path, store, batch_size=1000, batch_interval_s=0.2)
    rig.send(reading(1), reading(2), reading(3))
    wait_until(lambda: len(rig.acks.acked) == 3, timeout=10, what="the interval flush")
    assert rig.store.writes == [("air_quality", 3)]
    rig.stop()


def test_store_down_batches_are_spooled_acknowledged_then_replayed_in_order(
    tmp_path: Path, store: DuckDBStore
) -> None:
    rig = make_rig(tmp_path, store)
    rig.store.down.set()
    first = [reading(i) for i in range(10)]
    second = [reading(i) for i in range(10, 20)]
    rig.send(*first)
    wait_until(lambda: rig.spool.batches == 1, timeout=10, what="first batch spooled")
    rig.send(*second)
    wait_until(lambda: rig.spool.batches == 2, timeout=10, what="second batch spooled")
    # Spooled means durable: both batches are acknowledged although the store is down.
    assert rig.acks.mids == {m.mid for m in first + second}
    assert rig.stored() == 0
    assert rig.metrics.store_up.value() == 0
    rig.store.down.clear()
    wait_until(lambda: rig.spool.batches == 0, timeout=10, what="spool replayed")
    assert rig.stored() == 20
    assert rig.metrics.replayed_batches.value() == 2
    # Replayed oldest first.
    assert [rows for _, rows in rig.store.writes] == [10, 10]
    stored = store.read("air_quality", start=WIDE_START, end=WIDE_END)
    assert stored["pm25"].to_list() == [10.0 + i for i in range(20)]
    rig.stop()


def test_new_batches_queue_behind_the_spool_until_it_is_replayed(tmp_path: Path, store: DuckDBStore) -> None:
    rig = make_rig(tmp_path, store, retry_interval_s=1.5, retry_max_interval_s=1.5)
    rig.store.down.set()
    rig.send(*[reading(i) for i in range(10)])
    wait_until(lambda: rig.spool.batches == 1, timeout=10, what="spooled")
    rig.store.down.clear()
    # The store is back, but the next try is not due yet: new data must not overtake the spool.
    rig.send(*[reading(i) for i in range(10, 20)])
    wait_until(lambda: rig.spool.batches == 2, timeout=10, what="second batch behind the first")
    assert rig.store.writes == []
    wait_until(lambda: rig.spool.batches == 0, timeout=20, what="replay after the retry delay")
    assert rig.stored() == 20
    rig.stop()


def test_spool_full_withholds_acknowledgements_until_the_store_returns(
    tmp_path: Path, store: DuckDBStore
) -> None:
    one_batch = len(encode_tables(_probe_tables(tmp_path, store)))
    rig = make_rig(tmp_path, store, spool_max_bytes=max(1 << 12, int(one_batch * 1.5)))
    rig.store.down.set()
    batches = [[reading(n * 10 + i) for i in range(10)] for n in range(3)]
    for batch in batches:
        rig.send(*batch)
    wait_until(lambda: rig.writer.spool_full, timeout=10, what="spool full")
    wait_until(lambda: rig.metrics.held_messages.value() >= 10, timeout=10, what="messages held")
    spooled_mids = rig.acks.mids
    held = {m.mid for batch in batches for m in batch} - spooled_mids
    assert held, "some messages must be held unacknowledged"
    assert rig.metrics.spool_full.value() == 1
    rig.store.down.clear()
    wait_until(lambda: len(rig.acks.mids) == 30, timeout=20, what="every message acknowledged")
    assert not rig.writer.spool_full
    assert rig.stored() == 30
    rig.stop()


def _probe_tables(tmp_path: Path, store: DuckDBStore) -> list:  # type: ignore[type-arg]
    """The tables of one 10-reading batch, to size a spool that holds about one and a half."""
    metrics = IngestMetrics()
    builder = BatchBuilder(
        Decoder(CommuneRegistry.load()),
        DeadLetter(tmp_path / "probe.jsonl", topic_prefix="x"),
        metrics,
    )
    for i in range(10):
        builder.add(reading(i))
    return builder.take().tables


def test_a_writer_stuck_on_one_batch_reports_how_long_it_made_no_progress(
    tmp_path: Path, store: DuckDBStore
) -> None:
    rig = make_rig(tmp_path, store)
    rig.send(reading(1))
    wait_until(lambda: len(rig.acks.mids) == 1, timeout=10, what="the first batch acknowledged")
    idle_since = time.monotonic()
    wait_until(lambda: time.monotonic() - idle_since > 0.5, timeout=5, interval=0.05, what="idle time")
    # Idle, the batcher still beats: stalled_s drops back under the idle time (a one-shot look
    # could fall in a gap the machine's scheduler made).
    wait_until(
        lambda: rig.writer.stalled_s < 0.4, timeout=5, interval=0.01, what="an idle writer not stalled"
    )

    rig.store.flowing.clear()
    rig.send(reading(2))
    wait_until(lambda: rig.writer.stalled_s > 0.6, timeout=10, what="the stall to be reported")
    assert len(rig.acks.mids) == 1

    rig.store.flowing.set()
    wait_until(lambda: len(rig.acks.mids) == 2, timeout=10, what="the second batch acknowledged")
    wait_until(lambda: rig.writer.stalled_s < 0.4, timeout=5, what="the stall to end")
    rig.stop()


def test_the_spool_is_replayed_by_the_next_ingestor_after_a_restart(
    tmp_path: Path, store: DuckDBStore
) -> None:
    rig = make_rig(tmp_path, store)
    rig.store.down.set()
    rig.send(*[reading(i) for i in range(10)])
    wait_until(lambda: rig.spool.batches == 1, timeout=10, what="spooled")
    rig.stop()
    assert rig.stored() == 0
    again = make_rig(tmp_path, store)
    wait_until(lambda: again.spool.batches == 0, timeout=10, what="replay at start")
    assert again.stored() == 10
    again.stop()


def test_refused_messages_go_to_the_dead_letter_and_good_readings_around_them_are_stored(
    tmp_path: Path, store: DuckDBStore
) -> None:
    rig = make_rig(tmp_path, store, batch_size=1000)
    bad_json = Message(900, 1, "smartcity/v1/78498/air_quality/aq-1", b'{"ts": 1790000', time.time_ns(), 1)
    image = Message(
        901,
        1,
        "smartcity/v1/78498/camera/cam-1",
        json.dumps({"ts": BASE_MS, "peopleCount": 3, "image": "aGVsbG8="}).encode(),
        time.time_ns(),
        1,
    )
    mixed_payload = [
        {"ts": BASE_MS + 500_000, "pm25": 12.0},
        {"ts": BASE_MS + 501_000, "pm25": 5000.0, "no2": 40.0},
        {"pm25": 1.0},
    ]
    mixed = Message(
        902, 1, "smartcity/v1/78498/air_quality/aq-2", json.dumps(mixed_payload).encode(), time.time_ns(), 1
    )
    binary = Message(903, 1, "smartcity/v1/78498/air_quality/aq-3", b"\xff\xfe\x00", time.time_ns(), 1)
    good = [reading(i) for i in range(5)]
    rig.send(good[0], bad_json, good[1], image, good[2], mixed, good[3], binary, good[4])
    wait_until(lambda: len(rig.acks.acked) == 9, timeout=10, what="every message acknowledged")
    rig.stop()

    stored = store.read("air_quality", start=WIDE_START, end=WIDE_END)
    # 5 good readings, plus from the mixed batch: the first reading, and the second without pm25.
    assert stored.height == 7
    second = stored.filter(stored["device_id"] == "aq-2").sort("time")
    assert second["pm25"].to_list() == [12.0, None]
    assert second["no2"].to_list()[1] == 40.0

    records = {record["topic"]: record for record in deadletter_records(rig.deadletter_path)}
    assert records[bad_json.topic]["reason"] == "malformed_json"
    assert records[bad_json.topic]["payload"] == bad_json.payload.decode()
    assert records[image.topic]["reason"] == "forbidden_field"
    # The camera payload may hold an image: it is not kept, not even in the dead-letter.
    assert records[image.topic]["payload_withheld"] is True
    assert "payload" not in records[image.topic] and "payload_base64" not in records[image.topic]
    assert b"aGVsbG8" not in rig.deadletter_path.read_bytes()
    assert records[binary.topic]["reason"] == "not_utf8"
    assert records[binary.topic]["payload_base64"] == "//4A"
    assert records[mixed.topic]["refused"] is False
    assert records[mixed.topic]["kept_readings"] == 2
    assert {e["reason"] for e in records[mixed.topic]["errors"]} == {"out_of_bounds", "missing_timestamp"}

    rejected = store.read(REJECTED_MEASUREMENT, start=WIDE_START, end=WIDE_END)
    by_reason = {row["reason"]: row for row in rejected.iter_rows(named=True)}
    assert by_reason["out_of_bounds"]["field"] == "pm25"
    assert by_reason["out_of_bounds"]["value"] == 5000.0
    assert by_reason["out_of_bounds"]["time"] == datetime.fromtimestamp((BASE_MS + 501_000) / 1000, UTC)
    assert by_reason["forbidden_field"]["family"] == "camera"
    assert {"malformed_json", "not_utf8", "missing_timestamp"} <= set(by_reason)
    assert rig.metrics.errors.value("out_of_bounds") == 1
    assert rig.metrics.deadletters.value("malformed_json") == 1


def test_unknown_commune_is_dead_lettered_without_creating_a_series(
    tmp_path: Path, store: DuckDBStore
) -> None:
    rig = make_rig(tmp_path, store, batch_size=1000)
    stranger = reading(7, insee="99999")
    rig.send(stranger, reading(8))
    wait_until(lambda: len(rig.acks.acked) == 2, timeout=10, what="acks")
    rig.stop()
    assert rig.stored() == 1
    assert store.read(REJECTED_MEASUREMENT, start=WIDE_START, end=WIDE_END).height == 0
    [record] = deadletter_records(rig.deadletter_path)
    assert record["reason"] == "unknown_commune"
    assert record["topic"] == stranger.topic
