"""DuckDBStore specifics: one file that survives a restart, schema growth, threads sharing it."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from pydantic import ValidationError

from storage import StoreSettings, open_store
from storage.base import TIME, Write
from storage.duckdb_store import DuckDBStore
from storage.errors import StoreError, WriteRejected

T0 = datetime(2026, 1, 5, tzinfo=UTC)
WINDOW = {"start": T0 - timedelta(days=1), "end": T0 + timedelta(days=1)}


def rows(device: str, n: int, **fields: object) -> pl.DataFrame:
    times = (
        pl.Series(TIME, [T0] * n).dt.cast_time_unit("ns")
        + pl.int_range(0, n, eager=True).cast(pl.Duration("ms")) * 1000
    )
    return pl.DataFrame({TIME: times, "insee": "78498", "device_id": device, **fields})


def test_the_file_keeps_data_and_schema_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "city.duckdb"
    store = DuckDBStore(path)
    store.write("air_quality", rows("a", 3, pm25=[1.0, 2.0, 3.0]), tags=["insee", "device_id"])
    store.write("air_quality", rows("b", 2, no2=[4, 5], lane=["x", "y"]), tags=["insee", "device_id", "lane"])
    store.close()
    reopened = DuckDBStore(path)
    got = reopened.read("air_quality", **WINDOW)  # type: ignore[arg-type]
    assert got.columns == [TIME, "device_id", "insee", "lane", "no2", "pm25"]
    assert got.schema["no2"] == pl.Int64
    assert got.height == 5
    assert reopened.measurements() == ["air_quality"]
    reopened.close()


def test_write_many_is_one_transaction_schema_changes_included(tmp_path: Path) -> None:
    path = tmp_path / "city.duckdb"
    store = DuckDBStore(path)
    tags = ["insee", "device_id"]
    store.write("m", rows("a", 2, pm25=[1.0, 2.0]), tags=tags)
    batch = [
        Write("m", rows("a", 2, pm25=[5.0, 6.0], no2=[1, 2]), tags),  # an update and a new field
        Write("new", rows("b", 1, x=[1.0]), tags),  # a new measurement
        Write("m", pl.DataFrame({TIME: [T0], "insee": [1.0]}), []),
    ]
    # The third frame carries "insee" as a field, which is a tag of "m": the store refuses it
    # once the first two are written in the transaction, and none of the three stays.
    with pytest.raises(WriteRejected, match="'insee' is a tag"):
        store.write_many(batch)
    assert store.read("m", **WINDOW)["pm25"].to_list() == [1.0, 2.0]  # type: ignore[arg-type]
    assert store.read("m", **WINDOW).columns == [TIME, "device_id", "insee", "pm25"]  # type: ignore[arg-type]
    assert store.measurements() == ["m"]
    # What the failed transaction would have added to the schema is not known after it either:
    # "no2" may come as a string, "new" may hold an integer "x".
    reports = store.write_many(
        [Write("m", rows("a", 1, no2=["high"]), tags), Write("new", rows("b", 1, x=[3]), tags)]
    )
    assert [r.written for r in reports] == [1, 1]
    store.close()
    reopened = DuckDBStore(path)
    got = reopened.read("m", **WINDOW)  # type: ignore[arg-type]
    assert got.select("pm25", "no2").rows() == [(1.0, "high"), (2.0, None)]
    assert reopened.read("new", **WINDOW).schema["x"] == pl.Int64  # type: ignore[arg-type]
    reopened.close()


def test_open_store_defaults_to_duckdb(tmp_path: Path) -> None:
    settings = StoreSettings.model_validate({"duckdb": {"path": str(tmp_path / "x" / "s.duckdb")}})
    store = open_store(settings)
    assert isinstance(store, DuckDBStore) and store.health().ok
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.read("m", **WINDOW)  # type: ignore[arg-type]


def test_a_frame_that_cannot_be_stored_is_refused_as_a_whole() -> None:
    store = DuckDBStore()
    with pytest.raises(WriteRejected, match="no 'time' column"):
        store.write("m", pl.DataFrame({"x": [1.0]}), tags=[])
    with pytest.raises(WriteRejected, match="dtype"):
        store.write("m", pl.DataFrame({TIME: [T0], "x": [[1, 2]]}), tags=[])
    with pytest.raises(WriteRejected, match="tag column"):
        store.write("m", pl.DataFrame({TIME: [T0], "x": [1.0]}), tags=["insee"])


def test_threads_write_and_read_side_by_side(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "threads.duckdb")
    errors: list[BaseException] = []
    per_writer, batches = 200, 10
    finished = threading.Event()

    def writer(device: str) -> None:
        try:
            for batch in range(batches):
                frame = rows(device, per_writer).with_columns(
                    (pl.col(TIME) + pl.duration(hours=batch)), v=pl.lit(float(batch))
                )
                store.write("m", frame, tags=["insee", "device_id"])
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not finished.is_set():
                store.read("m", **WINDOW)  # type: ignore[arg-type]
                store.series("m")
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(f"dev{i}",)) for i in range(4)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join()
    finished.set()
    for thread in readers:
        thread.join()
    assert not errors, errors
    assert store.read("m", **WINDOW).height == 4 * per_writer * batches  # type: ignore[arg-type]
    assert store.series("m").height == 4


def test_reads_answer_while_a_write_is_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dashboard's read must not queue behind ingest's or processing's write transaction: it
    answers at once with what is committed, new columns and rows appearing once the write is."""
    store = DuckDBStore(tmp_path / "open-write.duckdb")
    store.write("m", rows("a", 2, v=[1.0, 2.0]), tags=["insee", "device_id"])
    merging, release = threading.Event(), threading.Event()
    merge = DuckDBStore._merge

    def held_merge(*args: object, **kwargs: object) -> None:
        merge(*args, **kwargs)  # type: ignore[arg-type]
        merging.set()
        assert release.wait(60), "the test never let the write finish"

    monkeypatch.setattr(DuckDBStore, "_merge", staticmethod(held_merge))
    writer = threading.Thread(
        target=store.write,
        args=("m", rows("b", 3, w=[7.0, 8.0, 9.0])),
        kwargs={"tags": ["insee", "device_id"]},
    )
    writer.start()
    try:
        assert merging.wait(60), "the write never reached its merge"
        answers: list[pl.DataFrame] = []
        reader = threading.Thread(
            target=lambda: answers.extend(
                [store.read("m", **WINDOW), store.series("m")]  # type: ignore[arg-type]
            )
        )
        reader.start()
        reader.join(60)
        assert answers, "the read waited for the open write transaction"
        during, series = answers
        assert during.height == 2 and "w" not in during.columns
        assert series.get_column("device_id").to_list() == ["a"]
    finally:
        release.set()
        writer.join(60)
    after = store.read("m", **WINDOW)  # type: ignore[arg-type]
    assert after.height == 5 and after.get_column("w").drop_nulls().to_list() == [7.0, 8.0, 9.0]
    store.close()


def test_every_call_leaves_the_connection_ready_for_the_next() -> None:
    """The dashboards check health, list measurements and merge duplicates on the same thread as
    they read; a half-read DuckDB result would make the next read fail."""
    store = DuckDBStore(":memory:")
    store.write("air_quality", rows("aq-1", 3, pm10=[1.0, 2.0, 3.0]), tags=["insee", "device_id"])
    assert store.health().ok
    assert store.measurements() == ["air_quality"]
    # A second write of the same keys goes through the merge path.
    store.write("air_quality", rows("aq-1", 3, pm10=[4.0, 5.0, 6.0]), tags=["insee", "device_id"])
    assert store.read("air_quality", start=WINDOW["start"], end=WINDOW["end"])["pm10"].to_list() == [
        4.0,
        5.0,
        6.0,
    ]
    assert store.series("air_quality")["device_id"].to_list() == ["aq-1"]


def test_minute_aggregates_older_than_their_retention_are_swept(tmp_path: Path) -> None:
    settings = StoreSettings.model_validate({"duckdb": {"path": tmp_path / "city.duckdb"}})
    store = open_store(settings)
    assert isinstance(store, DuckDBStore)
    now = datetime.now(UTC).replace(microsecond=0)

    def at(start: datetime, n: int) -> pl.DataFrame:
        times = pl.datetime_range(start, start + timedelta(minutes=n - 1), "1m", time_unit="ns", eager=True)
        return pl.DataFrame({TIME: times, "insee": "78498", "device_id": "a", "pm25_mean": 1.0})

    old, recent = at(now - timedelta(days=40), 3), at(now - timedelta(days=1), 2)
    store.write("air_quality_15m", old, tags=["insee", "device_id"])
    store.write("air_quality_1m_commune", pl.concat([old, recent]), tags=["insee", "device_id"])
    span = {"start": now - timedelta(days=60), "end": now}
    # The write of a minute aggregate sweeps (at most hourly): what InfluxDB's policy would drop goes.
    assert store.read("air_quality_1m_commune", **span).height == 2  # type: ignore[arg-type]
    assert store.read("air_quality_15m", **span).height == 3  # type: ignore[arg-type]
    store.write("air_quality_1m", old, tags=["insee", "device_id"])
    assert store.read("air_quality_1m", **span).height == 3  # type: ignore[arg-type]
    assert store.sweep() == 3
    assert store.read("air_quality_1m", **span).height == 0  # type: ignore[arg-type]
    assert store.retention("air_quality_1m") == timedelta(days=35)
    assert store.retention("air_quality_15m") is None and store.retention("air_quality") is None
    store.close()
    assert DuckDBStore(":memory:").retention("air_quality_1m") is None  # a bare store keeps everything


def test_the_memory_limit_setting_caps_duckdb_and_a_bad_one_is_refused_at_load(tmp_path: Path) -> None:
    def mib(reported: str) -> float:
        number, unit = reported.split()
        return float(number) * {"MiB": 1.0, "GiB": 1024.0}[unit]

    default = open_store(StoreSettings(duckdb={"path": tmp_path / "default.duckdb"}))
    capped = open_store(StoreSettings(duckdb={"path": tmp_path / "capped.duckdb", "memory_limit": "256MB"}))
    assert isinstance(default, DuckDBStore) and isinstance(capped, DuckDBStore)
    assert 240 < mib(capped.memory_limit) < 260  # 256 MB is 244 MiB
    assert mib(default.memory_limit) > mib(capped.memory_limit)
    default.close()
    capped.close()
    with pytest.raises(ValidationError, match=r"memory_limit[\s\S]*DuckDB refuses memory_limit 'lots'"):
        StoreSettings(duckdb={"memory_limit": "lots"})
