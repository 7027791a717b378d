"""The runner against a real DuckDB store: late data corrected, idempotent, backfill, CLI."""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pydantic import ValidationError

from bench.processing_writes import CountingStore
from processing.aggregates import aggregate
from processing.runner import JobReport, Runner, RunReport
from processing.watermarks import Watermarks
from processing.windows import PARIS_TZ, floor
from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet
from smartcity.cli import main
from smartcity.commands.process import build_runner
from smartcity.settings import Settings
from storage.base import TIME_DTYPE, Store, TagFilter, Write, WriteReport
from storage.duckdb_store import DuckDBStore
from storage.errors import StoreUnavailable
from tests.servers import wait_until
from tests.storage_fixtures import open_test_store, shared_influxd

__all__ = ["shared_influxd"]  # one influxd for the module; each test gets its own database

NOW = datetime(2026, 6, 2, 10, 30, tzinfo=UTC)
WINDOW = datetime(2026, 6, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    db = DuckDBStore(tmp_path / "processing.duckdb")
    yield db
    db.close()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def air(
    times: list[datetime], values: list[float], received: datetime, device: str = "aq-78498-01"
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "time": pl.Series(times).cast(TIME_DTYPE),
            "insee": "78498",
            "device_id": device,
            "pm25": values,
            "received_at": [int(received.timestamp() * 1e9)] * len(times),
        }
    )


def read_all(store: DuckDBStore, measurement: str) -> pl.DataFrame:
    return store.read(measurement, start=NOW - timedelta(days=30), end=NOW + timedelta(days=1))


def test_late_readings_correct_the_windows_they_fall_in(store: DuckDBStore) -> None:
    clock = Clock(NOW)
    on_time = air(
        [WINDOW + timedelta(minutes=m) for m in range(0, 60, 2)], [10.0] * 30, WINDOW + timedelta(hours=1)
    )
    store.write("air_quality", on_time, tags=["insee", "device_id"])
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
    runner.run_once()
    first = read_all(store, "air_quality_1h").row(0, named=True)
    assert (first["pm25_count"], first["pm25_mean"]) == (30, 10.0)

    # Readings of the same hour arrive an hour later (a gateway was offline).
    clock.now = NOW + timedelta(hours=1)
    late = air([WINDOW + timedelta(minutes=m) for m in range(1, 60, 2)], [40.0] * 30, clock.now)
    store.write("air_quality", late, tags=["insee", "device_id"])
    report = runner.run_once()
    assert not report.failed

    everything = pl.concat([on_time, late])
    for window in ("1m", "15m", "1h", "1d"):
        stored = read_all(store, f"air_quality_{window}").sort("time")
        expected = aggregate(everything, "air_quality", window)
        assert stored["time"].to_list() == expected["time"].to_list(), window
        assert stored["pm25_count"].to_list() == expected["pm25_count"].to_list(), window
        assert stored["pm25_mean"].to_list() == pytest.approx(expected["pm25_mean"].to_list()), window
        assert stored["pm25_p95"].to_list() == pytest.approx(expected["pm25_p95"].to_list()), window
    corrected = read_all(store, "air_quality_1h").row(0, named=True)
    assert (corrected["pm25_count"], corrected["pm25_mean"]) == (60, 25.0)
    assert read_all(store, "air_quality_1h_commune")["pm25_count"].to_list() == [60]


def test_a_run_without_new_readings_touches_nothing_and_reruns_are_idempotent(store: DuckDBStore) -> None:
    clock = Clock(NOW)
    store.write(
        "air_quality",
        air([WINDOW + timedelta(minutes=m) for m in range(60)], [float(m) for m in range(60)], WINDOW),
        tags=["insee", "device_id"],
    )
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
    runner.run_once()
    before = read_all(store, "air_quality_1m")
    clock.now = NOW + timedelta(hours=2)  # past the settle margin: nothing is new
    report = runner.run_once()
    assert report.rows_written == 0
    # A backfill of the same period rewrites the same rows with the same values.
    runner.backfill(WINDOW, WINDOW + timedelta(hours=1))
    assert read_all(store, "air_quality_1m").equals(before)
    assert Watermarks(store).get("aggregates:air_quality", now=clock.now) == int(WINDOW.timestamp() * 1e9)


class _WritesDown:
    """The store, except that its writes fail while ``down`` (InfluxDB unreachable, a full disk)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = True

    def write_many(self, writes: list[Write]) -> list[WriteReport]:
        if self.down:
            raise StoreUnavailable("connection refused")
        return self.store.write_many(writes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_run_whose_results_cannot_be_stored_fails_and_the_next_run_redoes_it(store: DuckDBStore) -> None:
    store.write(
        "air_quality",
        air([WINDOW + timedelta(minutes=m) for m in range(30)], [float(m) for m in range(30)], WINDOW),
        tags=["insee", "device_id"],
    )
    flaky = _WritesDown(store)
    runner = Runner(flaky, families=["air_quality"], anomalies=False, clock=Clock(NOW))  # type: ignore[arg-type]
    report = runner.run_once()
    # EAQI has no rows to write here (pm25 alone, no 24-hour running mean yet): it did not fail.
    assert {job.job for job in report.failed} == {
        "aggregates:air_quality",
        "aggregates_1d:air_quality",
        "atmo_daily",
    }
    assert all("connection refused" in (job.error or "") for job in report.failed)
    # Nothing was stored, the watermarks included: the results and their watermarks go together.
    assert store.measurements() == ["air_quality"]
    assert Watermarks(store).all(now=NOW) == {}

    flaky.down = False
    assert not runner.run_once().failed
    expected = aggregate(read_all(store, "air_quality"), "air_quality", "1m")
    assert read_all(store, "air_quality_1m")["pm25_mean"].to_list() == expected["pm25_mean"].to_list()
    assert not read_all(store, "atmo_daily").is_empty()
    assert Watermarks(store).get("aggregates:air_quality", now=NOW) == int(WINDOW.timestamp() * 1e9)


def test_backfill_reaches_readings_older_than_the_horizon(store: DuckDBStore) -> None:
    old = NOW - timedelta(days=5)
    store.write(
        "air_quality", air([old, old + timedelta(minutes=1)], [1.0, 3.0], NOW), tags=["insee", "device_id"]
    )
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=lambda: NOW)
    runner.run_once()
    assert read_all(store, "air_quality_1h").is_empty()
    runner.backfill(old - timedelta(hours=1), old + timedelta(hours=1))
    assert read_all(store, "air_quality_1h")["pm25_mean"].to_list() == [2.0]


def test_a_simulated_fleet_gets_every_measurement(store: DuckDBStore) -> None:
    fleet = generate_fleet(
        FleetConfig(communes=["78498", "92049"], devices_per_family=2, period_s=60.0),
        NOW - timedelta(hours=20),
        NOW,
    )
    for family, frame in fleet.frames.items():
        store.write(family, frame, tags=["insee", "device_id"])
    report = Runner(store, anomalies=False, clock=lambda: NOW).run_once()
    assert not report.failed, report.failed
    for measurement in (
        "air_quality_1m",
        "traffic_1d_commune",
        "building_1h",
        "atmo_daily",
        "eaqi_hourly",
        "traffic_congestion",
        "building_energy_daily",
        "camera_hourly",
        "network_health",
    ):
        assert not read_all(store, measurement).is_empty(), measurement
    eaqi = read_all(store, "eaqi_hourly")
    assert set(eaqi["insee"]) == {"78498", "92049"}
    assert eaqi["index"].drop_nulls().is_between(1, 6).all()
    energy = read_all(store, "building_1d")
    assert (energy["energy_increase"] >= 0).all()


def test_process_once_and_backfill_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cli.duckdb"
    now = datetime.now(UTC).replace(microsecond=0)
    db = DuckDBStore(path)
    db.write("air_quality", air([now - timedelta(minutes=5)], [12.0], now), tags=["insee", "device_id"])
    db.close()
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(path))
    assert main(["process", "--once", "--family", "air_quality", "--no-anomalies"]) == 0
    assert "aggregates:air_quality" in capsys.readouterr().out
    day = (now - timedelta(days=1)).date().isoformat()
    assert main(["backfill", "--from", day, "--to", (now + timedelta(days=1)).date().isoformat()]) == 0
    db = DuckDBStore(path)
    try:
        stored = db.read("air_quality_1m", start=now - timedelta(hours=1), end=now + timedelta(hours=1))
        assert stored["pm25_mean"].to_list() == [12.0]
    finally:
        db.close()
    with pytest.raises(SystemExit):
        main(["backfill", "--from", "yesterday", "--to", day])
    assert main(["backfill", "--from", day, "--to", day]) == 2


def test_the_anomaly_pass_runs_and_reruns_rewrite_the_same_rows(store: DuckDBStore) -> None:
    fleet = generate_fleet(
        FleetConfig(
            communes=["78498"],
            families=["air_quality", "network"],
            devices_per_family=3,
            period_s=60.0,
            faults=FaultRates(spike=3.0, stuck=1.0, offline=1.0),
        ),
        NOW - timedelta(hours=12),
        NOW,
    )
    for family, frame in fleet.frames.items():
        store.write(family, frame, tags=["insee", "device_id"])
    runner = Runner(store, families=["air_quality", "network"], clock=lambda: NOW)
    report = runner.run_once()
    assert not report.failed, report.failed
    first = read_all(store, "anomalies")
    assert not first.is_empty()
    assert set(first["family"]) <= {"air_quality", "network"}
    assert set(first["kind"]) <= {"out_of_bounds", "spike", "stuck", "drift", "offline"}
    runner.run_once()
    again = read_all(store, "anomalies")
    keys = ["time", "insee", "family", "device_id", "field", "kind"]
    assert again.select(keys).sort(keys).equals(first.select(keys).sort(keys))


def test_the_anomaly_pass_reads_refusals_that_name_no_field(store: DuckDBStore) -> None:
    """Ingest writes message-level refusals (malformed JSON) with no field and no value; the store
    then has neither column, and the anomaly pass must still run and find the bound breach."""
    clock = Clock(NOW)
    readings = air(
        [WINDOW + timedelta(minutes=m) for m in range(60)], [10.0] * 60, WINDOW + timedelta(hours=1)
    )
    store.write("air_quality", readings, tags=["insee", "device_id"])
    refusal = pl.DataFrame(
        {
            "time": pl.Series([WINDOW + timedelta(minutes=5)]).cast(TIME_DTYPE),
            "insee": "78498",
            "family": "air_quality",
            "device_id": "aq-78498-01",
            "reason": "malformed_json",
            "detail": "truncated JSON at byte 12",
        }
    )
    store.write("rejected_readings", refusal, tags=["insee", "family", "device_id", "reason"])
    report = Runner(store, families=["air_quality"], clock=clock).run_once()
    assert not report.failed, [job.error for job in report.failed]


def test_an_offline_device_back_after_midnight_closes_the_anomaly_opened_the_day_before(
    store: DuckDBStore,
) -> None:
    def minutes(start: datetime, end: datetime) -> list[datetime]:
        return [start + timedelta(minutes=m) for m in range(int((end - start).total_seconds() // 60))]

    # Paris midnight of 2 June is 22:00 UTC on 1 June: the device falls silent at 23:30 Paris.
    before = minutes(datetime(2026, 6, 1, 18, 0, tzinfo=UTC), datetime(2026, 6, 1, 21, 31, tzinfo=UTC))
    store.write("air_quality", air(before, [10.0] * len(before), before[-1]), tags=["insee", "device_id"])
    clock = Clock(datetime(2026, 6, 1, 21, 50, tzinfo=UTC))
    runner = Runner(store, families=["air_quality"], clock=clock)
    runner.run_once()
    opened = read_all(store, "anomalies").filter(pl.col("kind") == "offline")
    assert opened["open"].to_list() == [True]

    # It comes back at 03:00 Paris, on the next day.
    after = minutes(datetime(2026, 6, 2, 1, 0, tzinfo=UTC), datetime(2026, 6, 2, 2, 0, tzinfo=UTC))
    store.write("air_quality", air(after, [10.0] * len(after), after[-1]), tags=["insee", "device_id"])
    clock.now = after[-1] + timedelta(minutes=1)
    runner.run_once()
    offline = read_all(store, "anomalies").filter(pl.col("kind") == "offline")
    assert offline.height == 1, offline
    assert offline["open"].to_list() == [False]
    assert offline["end_ns"].to_list() == [int(after[0].timestamp() * 1e9)]


# -- incremental runs: cost follows what arrived -----------------------------------------------

DAY = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
"""Paris midnight of 2 June 2026."""
NEXT_DAY = DAY + timedelta(days=1)
RAW = ("air_quality", "traffic", "building", "camera", "network")


def fleet(
    families: list[str], start: datetime, end: datetime, *, devices: int = 2
) -> dict[str, pl.DataFrame]:
    """Simulated readings of ``[start, end)``, each received 5 s after it was observed."""
    frames = generate_fleet(
        FleetConfig(
            communes=["78498", "92049"], families=families, devices_per_family=devices, period_s=60.0
        ),
        start,
        end,
    ).frames
    arrival = pl.col("time").cast(pl.Int64) + 5_000_000_000
    return {family: frame.with_columns(arrival.alias("received_at")) for family, frame in frames.items()}


def write_all(store: Store, frames: dict[str, pl.DataFrame]) -> None:
    for family, frame in frames.items():
        if not frame.is_empty():
            store.write(family, frame, tags=["insee", "device_id"])


def read_between(store: Store, measurement: str, start: datetime, end: datetime) -> pl.DataFrame:
    return store.read(measurement, start=start, end=end)


def jobs_of(report: RunReport) -> dict[str, JobReport]:
    assert not report.failed, [(job.job, job.error) for job in report.failed]
    return {job.job: job for job in report.jobs}


def day_row(store: Store, day: datetime) -> dict[str, Any]:
    rows = read_between(store, "air_quality_1d_commune", day, day + timedelta(hours=1)).filter(
        pl.col("insee") == "78498"
    )
    assert rows.height == 1, rows
    return rows.row(0, named=True)


def counted_in_day_row(store: Store, day: datetime) -> int:
    """The readings the commune 78498's 1-day row of ``day`` was computed from."""
    return int(day_row(store, day)["pm25_count"])


def stored_in_day(store: Store, day: datetime) -> int:
    """The readings of the commune 78498 stored for ``day``."""
    return read_between(store, "air_quality", day, day + timedelta(days=1)).filter(insee="78498").height


def expected_windows(raw: pl.DataFrame, window: str, start: datetime, end: datetime) -> pl.DataFrame:
    return aggregate(raw, "air_quality", window, "commune").filter(
        (pl.col("time") >= start) & (pl.col("time") < end)
    )


@pytest.fixture(params=["duckdb", "influxdb"])
def any_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The embedded store, and a real influxd: many small time ranges are read, not one day."""
    with open_test_store(request) as store:
        yield store


def test_one_new_minute_after_a_processed_day_reads_only_that_minute(any_store: Store) -> None:
    store = any_store
    # Yesterday, not a fixed date: influxd refuses points older than its 30-day retention.
    day = floor(datetime.now(UTC) - timedelta(days=1), "1d")
    now = day + timedelta(hours=20, minutes=30)
    write_all(store, fleet(["air_quality"], day, now))
    clock = Clock(now)
    # The hour's own rows at every run (their throttling has a test of its own, below).
    runner = Runner(store, families=["air_quality"], anomalies=False, hour_refresh=timedelta(0), clock=clock)
    jobs_of(runner.run_once())
    daily_before = day_row(store, day)
    hour = floor(now, "1h")

    # One minute of the whole fleet arrives, then another, then a reading of the first comes late.
    first = fleet(["air_quality"], now, now + timedelta(minutes=1))
    late = first["air_quality"].filter(pl.col("device_id") == pl.col("device_id").max())
    first["air_quality"] = first["air_quality"].filter(pl.col("device_id") != pl.col("device_id").max())
    arrivals = [
        (now, first),
        (
            now + timedelta(minutes=1),
            fleet(["air_quality"], now + timedelta(minutes=1), now + timedelta(minutes=2)),
        ),
        (
            now,
            {
                "air_quality": late.with_columns(
                    received_at=pl.lit(int((now + timedelta(minutes=3)).timestamp() * 1e9))
                )
            },
        ),
    ]
    for step, (minute, frames) in enumerate(arrivals):
        write_all(store, frames)
        clock.now = now + timedelta(minutes=2 + step)
        jobs = jobs_of(runner.run_once())

        in_minute = read_between(store, "air_quality", minute, minute + timedelta(minutes=1))
        in_hour = read_between(store, "air_quality", hour, hour + timedelta(hours=1))
        # The hour was kept from the run before: only the minute with new readings is read.
        assert jobs["aggregates:air_quality"].rows_read == in_minute.height
        # Its minute, quarter and hour are recomputed: not the minutes before it that the
        # settle margin looks at again. Every commune's rows are written, but of the minute's and
        # the quarter's device rows only those of the devices whose readings came; the hour's
        # rows are recomputed whole.
        touched = [
            in_hour.filter(
                pl.col("time").is_between(floor(minute, w), floor(minute, w) + length, closed="left")
            )
            for w, length in (
                ("1m", timedelta(minutes=1)),
                ("15m", timedelta(minutes=15)),
                ("1h", timedelta(hours=1)),
            )
        ]
        came = frames["air_quality"]["device_id"].n_unique()
        expected_rows = (
            sum(f["insee"].n_unique() for f in touched) + 2 * came + touched[2]["device_id"].n_unique()
        )
        assert jobs["aggregates:air_quality"].windows == expected_rows
        assert jobs["atmo_daily"].rows_read == 0
        assert jobs["eaqi_hourly"].rows_read == 0
        assert in_minute.height * 30 < in_hour.height

        # The windows holding the new minute are corrected, and equal a recompute from raw.
        for window in ("1m", "15m", "1h"):
            start = floor(minute, window)
            stored = read_between(store, f"air_quality_{window}_commune", start, start + timedelta(minutes=1))
            expected = expected_windows(in_hour, window, start, start + timedelta(minutes=1))
            assert stored.select(expected.columns).equals(expected), window
        atmo = read_between(store, "eaqi_hourly", hour, hour + timedelta(hours=1)).drop("time")
        assert atmo.height == 2  # both communes, from the kept hour's partial means
    # Today's 1-day row waits for day_refresh (1 hour by default).
    assert day_row(store, day) == daily_before


@pytest.mark.parametrize("family", ["network", "building"])
def test_a_new_minute_of_counters_reads_only_that_minute(any_store: Store, family: str) -> None:
    """Error counters and energy meters: a minute's increases need each device's previous
    reading, which the kept hours hold, so a new minute reads that minute, not its hour and the
    hour before it; and its windows equal a recompute from every reading of the day."""
    store = any_store
    day = floor(datetime.now(UTC) - timedelta(days=1), "1d")
    now = day + timedelta(hours=20, minutes=30)
    write_all(store, fleet([family], day - timedelta(hours=1), now))
    clock = Clock(now)
    runner = Runner(store, families=[family], anomalies=False, clock=clock)
    jobs_of(runner.run_once())

    for step in range(3):
        minute = now + timedelta(minutes=step)
        write_all(store, fleet([family], minute, minute + timedelta(minutes=1)))
        clock.now = minute + timedelta(minutes=2)
        jobs = jobs_of(runner.run_once())
        in_minute = read_between(store, family, minute, minute + timedelta(minutes=1))
        assert jobs[f"aggregates:{family}"].rows_read == in_minute.height, step
        # Its indices take the hours the aggregates job kept (network_health reads nothing;
        # building_energy_daily reads the day's hourly aggregates): no hour of raw readings.
        hour_of_readings = read_between(store, family, floor(minute, "1h"), minute).height
        indices = {name: job.rows_read for name, job in jobs.items() if not name.startswith("aggregates")}
        assert indices and all(read < hour_of_readings for read in indices.values()), indices

        raw = read_between(store, family, day - timedelta(hours=1), minute + timedelta(minutes=1))
        for window in ("1m", "15m"):
            start = floor(minute, window)
            stored = read_between(store, f"{family}_{window}_commune", start, start + timedelta(minutes=1))
            expected = aggregate(raw, family, window, "commune").filter(pl.col("time") == start)
            assert_frame_equal(
                stored.select(expected.columns).sort("insee"),
                expected.sort("insee"),
                check_exact=False,
                rel_tol=1e-12,
            )


class DeviceReadsStore(DuckDBStore):
    """Counts the reads that name devices: what the runner asks for counters' earlier readings."""

    device_reads = 0

    def read(
        self,
        measurement: str,
        *,
        start: datetime,
        end: datetime,
        where: TagFilter | None = None,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        if where and "device_id" in where:
            self.device_reads += 1
        return super().read(measurement, start=start, end=end, where=where, fields=fields)


def test_meters_new_this_hour_are_looked_for_earlier_in_the_day_once(tmp_path: Path) -> None:
    """A fleet that began reporting within the hour (a new deployment, a gateway back from an
    outage) has no reading in the counter lookback: its meters' earlier readings are looked for
    once, not again at every minute's run (thousands of devices named in one query a minute kept
    influxd busy in the soak); a reading that then arrives in that range is still used."""
    store = DeviceReadsStore(tmp_path / "store.duckdb")
    began = DAY + timedelta(hours=5, minutes=10)
    write_all(store, fleet(["building"], began, began + timedelta(minutes=5)))
    clock = Clock(began + timedelta(minutes=6))
    runner = Runner(store, families=["building"], anomalies=False, clock=clock)
    jobs_of(runner.run_once())
    asked = store.device_reads
    assert asked >= 1
    for step in range(3):
        minute = began + timedelta(minutes=5 + step)
        write_all(store, fleet(["building"], minute, minute + timedelta(minutes=1)))
        clock.now = minute + timedelta(minutes=2)
        jobs_of(runner.run_once())
    assert store.device_reads == asked

    def first_minute() -> pl.DataFrame:
        return read_between(store, "building_1m_commune", began, began + timedelta(minutes=1)).sort("insee")

    before = first_minute()
    # One meter's reading of three hours earlier arrives late, with its first reading of the
    # hour sent again: that reading's increase now starts from the late one.
    meter = fleet(["building"], began, began + timedelta(minutes=1))["building"].sort("device_id").head(1)
    earlier = fleet(
        ["building"], began - timedelta(hours=3), began - timedelta(hours=3) + timedelta(minutes=1)
    )["building"]
    arrived = pl.lit(int(clock.now.timestamp() * 1e9) + 1)
    late = pl.concat([earlier.join(meter.select("device_id"), on="device_id", how="semi"), meter])
    write_all(store, {"building": late.with_columns(received_at=arrived)})
    clock.now += timedelta(minutes=1)
    jobs_of(runner.run_once())
    assert store.device_reads > asked

    raw = read_between(store, "building", DAY - timedelta(hours=1), clock.now)
    expected = aggregate(raw, "building", "1m", "commune").filter(pl.col("time") == began).sort("insee")
    after = first_minute()
    assert_frame_equal(after.select(expected.columns), expected, check_exact=False, rel_tol=1e-12)
    assert not after.select(expected.columns).equals(before.select(expected.columns))
    # ...and the meter's own row of that minute, which only it changed.
    own = (
        aggregate(raw, "building", "1m", "device")
        .filter(pl.col("time") == began)
        .join(meter.select("device_id"), on="device_id", how="semi")
    )
    stored = read_between(store, "building_1m", began, began + timedelta(minutes=1)).join(
        meter.select("device_id"), on="device_id", how="semi"
    )
    assert_frame_equal(stored.select(own.columns), own, check_exact=False, rel_tol=1e-12)


@pytest.mark.parametrize("family", ["air_quality", "building"])
def test_a_run_rewrites_only_the_device_windows_its_new_readings_change(family: str, tmp_path: Path) -> None:
    """A fleet's readings of a minute reach the store across two runs (devices report all
    through the minute): the second run writes the minute and quarter rows of the devices
    whose readings it brought, not every device's again (the soak's influxd spent most of its
    time on such rewrites); what the store then holds is what the whole minute gives."""
    store = CountingStore(tmp_path / "store.duckdb")
    began = DAY + timedelta(hours=5, minutes=5)  # the split minute is inside a quarter
    write_all(store, fleet([family], began, began + timedelta(minutes=5), devices=4))
    clock = Clock(began + timedelta(minutes=5, seconds=10))
    runner = Runner(store, families=[family], anomalies=False, clock=clock)
    jobs_of(runner.run_once())

    minute = began + timedelta(minutes=5)
    readings = fleet([family], minute, minute + timedelta(minutes=1), devices=4)[family]
    devices = sorted(readings["device_id"].unique().to_list())
    early = readings.filter(pl.col("device_id").is_in(devices[:3]))
    late = readings.filter(~pl.col("device_id").is_in(devices[:3]))
    for part in (early, late):
        write_all(store, {family: part})
        clock.now += timedelta(minutes=1)
        store.rows.clear()
        jobs_of(runner.run_once())
        assert store.rows[f"{family}_1m"] == part.height
        assert store.rows[f"{family}_15m"] == part.height
        assert store.rows[f"{family}_1m_commune"] == part["insee"].n_unique()

    raw = read_between(store, family, DAY, clock.now)
    for window in ("1m", "15m"):
        expected = (
            aggregate(raw, family, window, "device").filter(pl.col("time") >= began).sort("device_id", "time")
        )
        stored = read_between(store, f"{family}_{window}", began, clock.now).sort("device_id", "time")
        assert_frame_equal(stored.select(expected.columns), expected, check_exact=False, rel_tol=1e-12)
    store.close()


@pytest.mark.parametrize(
    ("began", "held_at", "late_by", "windows"),
    [
        pytest.param(
            timedelta(hours=5, minutes=5),
            timedelta(minutes=2),
            timedelta(minutes=1),
            ("1m", "15m"),
            id="the next reading in the same hour",
        ),
        pytest.param(
            timedelta(hours=5, minutes=55),
            timedelta(minutes=4),
            timedelta(hours=2),
            ("1m", "15m", "1h"),
            id="the next reading in the next hour, over when the late one came",
        ),
    ],
)
def test_a_late_meter_reading_corrects_the_increase_of_the_reading_after_it(
    tmp_path: Path, began: timedelta, held_at: timedelta, late_by: timedelta, windows: tuple[str, ...]
) -> None:
    """A meter's reading that arrives after the next one falls between two readings the store
    had: the next reading's increase now starts from it, so that reading's rows change too (they
    kept the whole step, and the meter's consumption was counted twice), also when the next
    reading lies in an hour that holds nothing new (the late one came hours later)."""
    store = DuckDBStore(tmp_path / "store.duckdb")
    start = DAY + began
    end = start + held_at * 2 + timedelta(minutes=2)
    readings = fleet(["building"], start, end, devices=2)["building"]
    held = (pl.col("device_id") == readings["device_id"].min()) & (pl.col("time") == start + held_at)
    write_all(store, {"building": readings.filter(~held)})
    clock = Clock(end + timedelta(seconds=10))
    runner = Runner(store, families=["building"], anomalies=False, clock=clock)
    jobs_of(runner.run_once())
    clock.now += late_by
    arrived = pl.lit(int(clock.now.timestamp() * 1e9) - 1)
    write_all(store, {"building": readings.filter(held).with_columns(received_at=arrived)})
    jobs_of(runner.run_once())

    raw = read_between(store, "building", DAY, clock.now)
    for window in windows:
        expected = aggregate(raw, "building", window, "device").filter(pl.col("time") >= start)
        stored = read_between(store, f"building_{window}", start, clock.now)
        assert_frame_equal(
            stored.select(expected.columns).sort("device_id", "time"),
            expected.sort("device_id", "time"),
            check_exact=False,
            rel_tol=1e-12,
        )
    store.close()


class SlowWritesStore(DuckDBStore):
    """A store whose writes take seconds, as a busy influxd's do."""

    writes = 0

    def write_many(self, writes: Sequence[Write]) -> list[WriteReport]:
        self.writes += 1
        time.sleep(WRITE_DELAY_S)
        return super().write_many(writes)


WRITE_DELAY_S = 3.0  # well above what a job takes on a loaded machine


def test_a_jobs_time_leaves_out_storing_what_the_jobs_before_it_computed(tmp_path: Path) -> None:
    """A run stores what it holds before a job reads (the job may read it): that write is the
    run's storing time, not the reading job's, or the log names the wrong job as the slowest."""
    store = SlowWritesStore(tmp_path / "store.duckdb")
    write_all(store, fleet(["traffic", "building"], NOW - timedelta(minutes=10), NOW))
    runner = Runner(store, families=["traffic", "building"], anomalies=False, clock=Clock(NOW))
    store.writes = 0
    report = runner.run_once()
    jobs_of(report)  # none failed
    assert store.writes >= 2  # the aggregates of traffic before building's jobs read, and the rest
    assert report.storing_seconds >= store.writes * WRITE_DELAY_S
    slowest = max(report.jobs, key=lambda job: job.seconds)
    assert slowest.seconds < WRITE_DELAY_S, (slowest.job, slowest.seconds)


def test_a_backlog_drained_run_after_run_reads_each_reading_once(any_store: Store) -> None:
    """A gateway flushing the readings it held for hours, ten minutes of them a minute: each run
    reads what arrived, not again every reading of the settle margin (15 minutes of arrivals:
    the whole backlog so far), and a straggler (received before the last run, stored after it)
    still reaches its windows."""
    store = any_store
    clock = Clock(floor(datetime.now(UTC), "1m"))
    hour = floor(clock.now - timedelta(hours=5), "1h")  # within the horizon and influxd's retention
    backlog = fleet(["air_quality"], hour, hour + timedelta(hours=1), devices=4)["air_quality"]
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
    straggler = backlog.filter(
        (pl.col("time") == hour + timedelta(minutes=25)) & (pl.col("device_id") == pl.col("device_id").max())
    )
    for step in range(6):
        start = hour + timedelta(minutes=10 * step)
        chunk = backlog.filter(pl.col("time").is_between(start, start + timedelta(minutes=10), closed="left"))
        chunk = chunk.join(straggler, on=["time", "device_id"], how="anti")
        received = int(clock.now.timestamp() * 1e9)
        write_all(store, {"air_quality": chunk.with_columns(received_at=pl.lit(received))})
        if step == 3:
            # Received with the chunk before, stored only now.
            late = straggler.with_columns(received_at=pl.lit(received - 60_000_000_000))
            write_all(store, {"air_quality": late})
        clock.now += timedelta(minutes=1)
        read = jobs_of(runner.run_once())["aggregates:air_quality"].rows_read
        if step >= 2:  # the hour is kept: the first runs read it whole (and the day, once)
            minute = backlog.filter(pl.col("time") == straggler["time"].item()).height
            assert read == chunk.height + (minute if step == 3 else 0), step

    raw = read_between(store, "air_quality", hour, hour + timedelta(hours=1))
    assert raw.height == backlog.height
    for window in ("1m", "15m", "1h"):
        stored = read_between(store, f"air_quality_{window}_commune", hour, hour + timedelta(hours=1))
        expected = expected_windows(raw, window, hour, hour + timedelta(hours=1))
        assert_frame_equal(
            stored.select(expected.columns).sort("time", "insee"),
            expected.sort("time", "insee"),
            check_exact=False,
            rel_tol=1e-12,
        )


def test_a_run_reads_the_arrival_times_of_new_readings_only(any_store: Store) -> None:
    store = any_store
    # Yesterday at noon, Paris time: no Paris midnight within the runs, whose closing of a day
    # would rightly read the whole day's arrivals again.
    today = datetime.now(PARIS_TZ).replace(hour=12, minute=0, second=0, microsecond=0)
    now = (today - timedelta(days=1)).astimezone(UTC)
    # Five hours of readings, the last received an hour before the first run: past the settle
    # margin, so the second run has no reason to look at them again.
    processed = fleet(["air_quality"], now - timedelta(hours=6), now - timedelta(hours=1))["air_quality"]
    store.write("air_quality", processed, tags=["insee", "device_id"])
    clock = Clock(now)
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
    first = runner.run_once()
    jobs_of(first)
    assert first.arrivals_read == processed.height  # no watermark yet: the whole horizon

    new = fleet(["air_quality"], now, now + timedelta(minutes=3))["air_quality"]
    store.write("air_quality", new, tags=["insee", "device_id"])
    clock.now = now + timedelta(minutes=5)
    second = runner.run_once()
    jobs_of(second)
    # What the watermark rule calls new: received after the watermark, or within the settle
    # margin before the previous run.
    last_received: int = processed.select(pl.col("received_at").max()).item()
    threshold = min(last_received, int((now - runner.settle).timestamp() * 1e9))
    written = pl.concat([processed, new])
    assert second.arrivals_read == written.filter(pl.col("received_at") > threshold).height == new.height
    # And the windows of the new minutes were computed from them.
    stored = read_between(store, "air_quality_1m_commune", now, now + timedelta(minutes=3))
    assert stored.select(pl.col("pm25_count").sum()).item() == new.filter(pl.col("pm25").is_not_null()).height


class WholeHorizonStore(DuckDBStore):
    """A store that ignores the threshold of ``arrivals``: every reading of the range, as the
    runner read them before the store filtered them."""

    def arrivals(
        self, measurement: str, *, start: datetime, end: datetime, received_after_ns: int | None = None
    ) -> pl.DataFrame:
        return super().arrivals(measurement, start=start, end=end)


def test_filtered_arrivals_change_nothing_a_run_does(tmp_path: Path) -> None:
    """Runs through a day with new minutes, today's 1-day row due, the day closing and late
    readings into it: each job recomputes the same windows and writes the same rows whether
    the store filters arrivals or returns every one of the horizon."""
    start = DAY + timedelta(hours=10)
    frames = fleet(["air_quality"], DAY, start)["air_quality"]
    late_start = DAY + timedelta(hours=3, seconds=30)
    steps = [  # (readings of [from, to) that arrive, received when, run at)
        (start, start + timedelta(minutes=2), None, start + timedelta(minutes=3)),
        (start + timedelta(minutes=2), start + timedelta(minutes=4), None, start + timedelta(minutes=20)),
        # Nothing new, but today's 1-day row is due (day_refresh) with readings pending since.
        (start + timedelta(minutes=4), start + timedelta(minutes=4), None, start + timedelta(minutes=40)),
        (start + timedelta(hours=13), NEXT_DAY, None, NEXT_DAY + timedelta(minutes=1)),
        (
            late_start,
            late_start + timedelta(minutes=10),
            NEXT_DAY + timedelta(minutes=10),
            NEXT_DAY + timedelta(minutes=16),
        ),
        (NEXT_DAY, NEXT_DAY + timedelta(minutes=30), None, NEXT_DAY + timedelta(minutes=31)),
    ]
    filtered = DuckDBStore(tmp_path / "filtered.duckdb")
    whole = WholeHorizonStore(tmp_path / "whole.duckdb")
    try:
        clock = Clock(start)
        runners = [
            Runner(
                store,
                families=["air_quality"],
                anomalies=False,
                day_refresh=timedelta(minutes=30),
                clock=clock,
            )
            for store in (filtered, whole)
        ]
        for store in (filtered, whole):
            store.write("air_quality", frames, tags=["insee", "device_id"])
        done = [[jobs_of(runner.run_once())] for runner in runners]
        for first, last, received, run_at in steps:
            new = fleet(["air_quality"], first, last)["air_quality"] if first < last else frames.clear()
            if received is not None:
                new = new.with_columns(received_at=pl.lit(int(received.timestamp() * 1e9)))
            clock.now = run_at
            for store, runner, reports in zip((filtered, whole), runners, done, strict=True):
                if not new.is_empty():
                    store.write("air_quality", new, tags=["insee", "device_id"])
                reports.append(jobs_of(runner.run_once()))
        for step, (got, want) in enumerate(zip(*done, strict=True)):
            assert {name: (job.windows, job.rows_written) for name, job in got.items()} == {
                name: (job.windows, job.rows_written) for name, job in want.items()
            }, step
        assert sum(j.windows for run in done[0] for j in run.values()) > 0
        got_out, want_out = outputs(filtered), outputs(whole)
        assert sorted(got_out) == sorted(want_out)
        for name in want_out:
            assert_frame_equal(got_out[name], want_out[name], check_exact=False, rel_tol=1e-12, abs_tol=0.0)
        assert Watermarks(filtered).all(now=clock.now) == Watermarks(whole).all(now=clock.now)
    finally:
        filtered.close()
        whole.close()


def test_late_readings_into_a_closed_day_correct_its_daily_row(store: DuckDBStore) -> None:
    yesterday = DAY - timedelta(days=1)
    on_time = fleet(["air_quality"], yesterday, DAY)
    write_all(store, on_time)
    clock = Clock(DAY + timedelta(hours=1))
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
    jobs_of(runner.run_once())
    assert day_row(store, yesterday)["pm25_count"] == on_time["air_quality"].filter(insee="78498").height

    # A gateway back from an outage sends ten minutes of yesterday afternoon, 30 s off the grid.
    late_start = yesterday + timedelta(hours=15, seconds=30)
    late = fleet(["air_quality"], late_start, late_start + timedelta(minutes=10))["air_quality"]
    clock.now = DAY + timedelta(hours=2)
    store.write(
        "air_quality",
        late.with_columns(received_at=pl.lit(int(clock.now.timestamp() * 1e9))),
        tags=["insee", "device_id"],
    )
    jobs = jobs_of(runner.run_once())

    raw = read_between(store, "air_quality", yesterday, DAY)
    assert jobs["aggregates_1d:air_quality"].rows_read == raw.height  # the day's p95 needs the day
    # The shorter windows read the late readings' hour, not the day.
    assert 0 < jobs["aggregates:air_quality"].rows_read <= raw.height / 12
    stored = pl.DataFrame([day_row(store, yesterday)])
    expected = expected_windows(raw, "1d", yesterday, DAY).filter(pl.col("insee") == "78498")
    assert stored.select(expected.columns).equals(expected)
    assert (
        stored["pm25_count"].item()
        == expected["pm25_count"].item()
        > on_time["air_quality"].filter(insee="78498").height
    )


def test_todays_daily_row_is_refreshed_after_day_refresh_and_when_the_day_closes(store: DuckDBStore) -> None:
    start = DAY + timedelta(hours=10)
    write_all(store, fleet(["air_quality"], DAY, start))
    clock = Clock(start)
    refresh = timedelta(minutes=30)
    runner = Runner(store, families=["air_quality"], anomalies=False, day_refresh=refresh, clock=clock)
    jobs_of(runner.run_once())

    first = counted_in_day_row(store, DAY)
    assert first == stored_in_day(store, DAY)
    write_all(store, fleet(["air_quality"], start, start + timedelta(minutes=1)))
    for minutes in (2, 29):  # new readings, but the row was refreshed less than 30 min ago
        clock.now = start + timedelta(minutes=minutes)
        jobs_of(runner.run_once())
        assert counted_in_day_row(store, DAY) == first, minutes
    clock.now = start + refresh
    jobs_of(runner.run_once())
    assert counted_in_day_row(store, DAY) == stored_in_day(store, DAY) > first

    # The last readings of the evening wait for the next refresh... which the day's close brings.
    evening = DAY + timedelta(hours=23, minutes=20)
    write_all(store, fleet(["air_quality"], evening, evening + timedelta(minutes=30)))
    clock.now = evening + timedelta(minutes=30)
    jobs_of(runner.run_once())
    assert counted_in_day_row(store, DAY) == stored_in_day(store, DAY)
    write_all(store, fleet(["air_quality"], evening + timedelta(minutes=30), NEXT_DAY))
    clock.now = NEXT_DAY + timedelta(minutes=1)
    jobs_of(runner.run_once())
    refreshed = counted_in_day_row(store, DAY)
    assert refreshed < stored_in_day(store, DAY)
    clock.now = NEXT_DAY + runner.settle  # closed: the settle margin after midnight has passed
    jobs_of(runner.run_once())
    assert counted_in_day_row(store, DAY) == stored_in_day(store, DAY)
    clock.now += timedelta(minutes=1)  # and only once
    assert jobs_of(runner.run_once())["aggregates_1d:air_quality"].rows_read == 0


def test_a_closed_days_late_readings_refresh_its_daily_row_at_most_every_day_refresh(
    store: DuckDBStore,
) -> None:
    """A gateway draining yesterday's backlog all morning: yesterday's 1-day rows follow its
    readings once per day_refresh, not by reading the whole of yesterday at every run."""
    write_all(store, fleet(["air_quality"], DAY, DAY + timedelta(hours=6)))
    clock = Clock(NEXT_DAY + timedelta(hours=2))
    refresh = timedelta(minutes=30)
    runner = Runner(store, families=["air_quality"], anomalies=False, day_refresh=refresh, clock=clock)
    jobs_of(runner.run_once())

    first = counted_in_day_row(store, DAY)
    assert first == stored_in_day(store, DAY)
    backlog = DAY + timedelta(hours=6)
    for minute in (1, 2, 29):  # the backlog keeps coming, the row waits for day_refresh
        write_all(store, fleet(["air_quality"], backlog, backlog + timedelta(minutes=10)))
        backlog += timedelta(minutes=10)
        clock.now = NEXT_DAY + timedelta(hours=2, minutes=minute)
        jobs = jobs_of(runner.run_once())
        assert counted_in_day_row(store, DAY) == first, minute
        assert jobs["aggregates_1d:air_quality"].rows_read == 0, minute
        # Only the late readings' own windows were read: an hour at most, not the day.
        assert 0 < jobs["aggregates:air_quality"].rows_read <= stored_in_day(store, DAY) / 4, minute
    clock.now = NEXT_DAY + timedelta(hours=2) + refresh
    jobs_of(runner.run_once())
    assert counted_in_day_row(store, DAY) == stored_in_day(store, DAY) > first
    clock.now += timedelta(minutes=1)  # nothing new: nothing read again
    jobs = jobs_of(runner.run_once())
    assert jobs["aggregates:air_quality"].rows_read == jobs["aggregates_1d:air_quality"].rows_read == 0


def test_the_open_hours_rows_are_refreshed_after_hour_refresh_and_once_the_hour_closes(
    store: DuckDBStore,
) -> None:
    start = DAY + timedelta(hours=10, minutes=40)
    hour = floor(start, "1h")
    write_all(store, fleet(["air_quality"], hour, start))
    clock = Clock(start)
    refresh = timedelta(minutes=5)
    runner = Runner(store, families=["air_quality"], anomalies=False, hour_refresh=refresh, clock=clock)
    jobs_of(runner.run_once())

    def hour_row() -> dict[str, Any]:
        rows = read_between(store, "air_quality_1h_commune", hour, hour + timedelta(minutes=1))
        return rows.filter(insee="78498").row(0, named=True)

    def recomputed() -> dict[str, Any]:
        raw = read_between(store, "air_quality", hour, hour + timedelta(hours=1))
        return (
            expected_windows(raw, "1h", hour, hour + timedelta(minutes=1))
            .filter(insee="78498")
            .row(0, named=True)
        )

    def quarter_count() -> int:
        quarter = floor(clock.now - timedelta(minutes=2), "15m")
        rows = read_between(store, "air_quality_15m_commune", quarter, quarter + timedelta(minutes=1))
        return int(rows.filter(insee="78498")["pm25_count"][0])

    first = hour_row()
    assert first == recomputed()
    # New minutes within ``hour_refresh`` of the last refresh: the minute and quarter follow, the
    # hour's row waits.
    for minute in range(1, 4):
        moment = start + timedelta(minutes=minute - 1)
        write_all(store, fleet(["air_quality"], moment, moment + timedelta(minutes=1)))
        clock.now = moment + timedelta(minutes=1, seconds=10)
        jobs_of(runner.run_once())
        assert hour_row() == first, minute
        assert (
            quarter_count()
            == read_between(store, "air_quality", floor(moment, "15m"), moment + timedelta(minutes=1))
            .filter(insee="78498")
            .height
        )
    # ``hour_refresh`` after the last refresh, even with nothing new, the row holds every reading.
    clock.now = start + refresh
    jobs_of(runner.run_once())
    assert hour_row() == recomputed() != first

    # The hour's last minutes arrive before it closes, within ``hour_refresh`` of a refresh: its
    # row waits, and is recomputed once the hour has closed, though nothing new arrives then.
    moment = start + timedelta(minutes=6)
    write_all(store, fleet(["air_quality"], moment, hour + timedelta(minutes=57)))
    clock.now = hour + timedelta(minutes=57, seconds=10)
    jobs_of(runner.run_once())
    write_all(store, fleet(["air_quality"], hour + timedelta(minutes=57), hour + timedelta(hours=1)))
    clock.now = hour + timedelta(minutes=59, seconds=40)
    jobs_of(runner.run_once())
    assert hour_row() != recomputed()
    clock.now = hour + timedelta(hours=1, seconds=30)
    jobs_of(runner.run_once())
    assert hour_row() == recomputed()

    # A runner started again, nothing kept, recomputes the stale row from the settle margin.
    write_all(store, fleet(["air_quality"], hour + timedelta(hours=1), hour + timedelta(hours=1, minutes=2)))
    clock.now = hour + timedelta(hours=1, minutes=2, seconds=10)
    jobs_of(runner.run_once())
    late = (hour + timedelta(hours=1), hour + timedelta(hours=1, minutes=1))
    write_all(
        store,
        {
            "air_quality": fleet(["air_quality"], *late)["air_quality"].with_columns(
                pl.col("pm25") + 1, received_at=pl.lit(int(clock.now.timestamp() * 1e9))
            )
        },
    )
    clock.now += timedelta(seconds=50)
    jobs_of(runner.run_once())  # the next hour's row waits
    assert next_hour_row(store, hour) != next_hour_recomputed(store, hour)
    restarted = Runner(store, families=["air_quality"], anomalies=False, hour_refresh=refresh, clock=clock)
    clock.now = hour + timedelta(hours=1, minutes=40)
    jobs_of(restarted.run_once())
    assert next_hour_row(store, hour) == next_hour_recomputed(store, hour)


def next_hour_row(store: Store, hour: datetime) -> dict[str, Any]:
    later = hour + timedelta(hours=1)
    rows = read_between(store, "air_quality_1h_commune", later, later + timedelta(minutes=1))
    return rows.filter(insee="78498").row(0, named=True)


def next_hour_recomputed(store: Store, hour: datetime) -> dict[str, Any]:
    later = hour + timedelta(hours=1)
    raw = read_between(store, "air_quality", later, later + timedelta(hours=1))
    expected = expected_windows(raw, "1h", later, later + timedelta(minutes=1))
    return expected.filter(insee="78498").row(0, named=True)


def outputs(store: Store) -> dict[str, pl.DataFrame]:
    """Every processed measurement of the store, rows in a stable order."""
    result: dict[str, pl.DataFrame] = {}
    for name in store.measurements():
        if name in RAW or name.startswith("_"):
            continue
        frame = store.read(name, start=DAY - timedelta(days=3), end=NEXT_DAY + timedelta(days=2))
        keys = [
            c
            for c in frame.columns
            if frame.schema[c] == pl.String and c not in ("label", "color", "pollutant")
        ]
        result[name] = frame.sort(["time", *keys])
    return result


def test_incremental_runs_end_where_a_backfill_does(tmp_path: Path) -> None:
    """Data arriving in chunks, late data, and a network device silent for 2.5 hours (its first
    counter increase after the gap needs a reading from before the lookback): once the day has
    closed, every stored result equals a backfill of the same readings."""
    start = DAY - timedelta(hours=4)
    end = DAY + timedelta(hours=9)
    frames = fleet(list(RAW), start, end)
    silent = frames["network"]["device_id"].unique().sort()[0]
    gap = (pl.col("device_id") == silent) & pl.col("time").is_between(
        DAY + timedelta(hours=3), DAY + timedelta(hours=5, minutes=30), closed="left"
    )
    frames["network"] = frames["network"].filter(~gap)
    # Two hours of air-quality readings of one commune arrive at the very end.
    held = (pl.col("insee") == "92049") & pl.col("time").is_between(
        DAY + timedelta(hours=1), DAY + timedelta(hours=3)
    )
    late = frames["air_quality"].filter(held)
    frames["air_quality"] = frames["air_quality"].filter(~held)

    incremental = DuckDBStore(tmp_path / "incremental.duckdb")
    reference = DuckDBStore(tmp_path / "backfill.duckdb")
    try:
        clock = Clock(start)
        runner = Runner(incremental, anomalies=False, clock=clock)
        moment = start
        while moment < end:
            until = moment + timedelta(minutes=90)
            write_all(
                incremental,
                {
                    f: fr.filter(pl.col("time").is_between(moment, until, closed="left"))
                    for f, fr in frames.items()
                },
            )
            clock.now = until + timedelta(minutes=1)
            jobs_of(runner.run_once())
            moment = until
        write_all(
            incremental,
            {"air_quality": late.with_columns(received_at=pl.lit(int(clock.now.timestamp() * 1e9)))},
        )
        clock.now += timedelta(minutes=5)
        jobs_of(runner.run_once())
        clock.now = NEXT_DAY + runner.settle  # both days closed: their 1-day rows are final
        jobs_of(runner.run_once())

        write_all(reference, {**frames, "air_quality": pl.concat([frames["air_quality"], late])})
        jobs_of(Runner(reference, anomalies=False, clock=lambda: clock.now).backfill(start, end))

        got, want = outputs(incremental), outputs(reference)
        assert sorted(got) == sorted(want)
        assert {"air_quality_1d", "network_health", "eaqi_hourly", "atmo_daily", "camera_hourly"} <= set(got)
        for name in want:
            # Exact, but for the last bit of polars group means (it sums a group in an order
            # that depends on the frame around it): counts, p95, classes, times are all equal.
            assert_frame_equal(got[name], want[name], check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    finally:
        incremental.close()
        reference.close()


@pytest.mark.parametrize(
    ("name", "must_be_positive"),
    [
        ("horizon", True),
        ("settle", False),
        ("day_refresh", True),
        ("hour_refresh", False),
        ("anomaly_refresh", True),
    ],
)
def test_processing_periods_are_settings_with_a_clear_error(
    name: str, must_be_positive: bool, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    variable = f"SMARTCITY_PROCESSING__{name.upper()}_S"
    monkeypatch.setenv(variable, "600")
    assert getattr(Settings().processing, f"{name}_s") == 600.0
    # ...and it reaches the runner `smartcity process` builds, and the demo's (same settings).
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(tmp_path / "store.duckdb"))
    runner = build_runner(argparse.Namespace(family=None, no_anomalies=False), Settings())
    try:
        assert getattr(runner, name) == timedelta(minutes=10)
        assert getattr(Runner.from_settings(runner.store, Settings().processing), name) == timedelta(
            minutes=10
        )
    finally:
        runner.store.close()
    monkeypatch.setenv(variable, "-1")
    with pytest.raises(ValidationError, match=f"{name}_s"):
        Settings()
    if must_be_positive:
        monkeypatch.setenv(variable, "0")
        with pytest.raises(ValidationError, match=f"{name}_s"):
            Settings()


def test_the_anomaly_pass_is_off_when_the_settings_or_the_command_line_say_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(tmp_path / "store.duckdb"))
    for setting, option, runs in [("true", False, True), ("false", False, False), ("true", True, False)]:
        monkeypatch.setenv("SMARTCITY_PROCESSING__ANOMALIES", setting)
        runner = build_runner(argparse.Namespace(family=None, no_anomalies=option), Settings())
        try:
            assert runner.anomalies is runs
        finally:
            runner.store.close()


def last_minute_spikes(store: DuckDBStore) -> int:
    found = read_all(store, "anomalies")
    if "kind" not in found.columns:
        return 0
    spikes = found.filter(pl.col("kind") == "spike", pl.col("field") == "pm25")
    return spikes.filter(pl.col("time") == NEXT_DAY - timedelta(minutes=1)).height


def test_a_spike_in_the_last_minute_of_a_day_is_found_once_the_next_day_begins(store: DuckDBStore) -> None:
    # A spike is judged with the readings after it: the last reading before Paris midnight has
    # its after side in the next day.
    frames = fleet(["air_quality"], NEXT_DAY - timedelta(hours=8), NEXT_DAY + timedelta(minutes=10))
    air_quality = frames["air_quality"]
    spiked = (pl.col("device_id") == air_quality["device_id"].min()) & (
        pl.col("time") == NEXT_DAY - timedelta(minutes=1)
    )
    air_quality = air_quality.with_columns(
        pl.when(spiked).then(pl.col("pm25") + 400).otherwise("pm25").alias("pm25")
    )
    clock = Clock(NEXT_DAY)
    runner = Runner(store, families=["air_quality"], clock=clock)
    write_all(store, {"air_quality": air_quality.filter(pl.col("time") < NEXT_DAY)})
    jobs_of(runner.run_once())
    assert last_minute_spikes(store) == 0  # not judged yet

    write_all(store, {"air_quality": air_quality.filter(pl.col("time") >= NEXT_DAY)})
    clock.now = NEXT_DAY + runner.anomaly_refresh
    jobs_of(runner.run_once())
    assert last_minute_spikes(store) == 1


def test_the_anomaly_pass_runs_every_anomaly_refresh_over_what_arrived_since(store: DuckDBStore) -> None:
    """The pass reads its days whole: it runs once per anomaly_refresh, not at every run, and
    then finds what arrived in between."""
    start = DAY + timedelta(hours=8)
    frames = fleet(["air_quality"], DAY, start + timedelta(minutes=10))
    spike_at = start + timedelta(minutes=2)
    spiked = (pl.col("device_id") == frames["air_quality"]["device_id"].min()) & (pl.col("time") == spike_at)
    air_quality = frames["air_quality"].with_columns(
        pl.when(spiked).then(pl.col("pm25") + 400).otherwise("pm25").alias("pm25")
    )
    clock = Clock(start)
    runner = Runner(store, families=["air_quality"], anomaly_refresh=timedelta(minutes=15), clock=clock)
    write_all(store, {"air_quality": air_quality.filter(pl.col("time") < start)})
    assert jobs_of(runner.run_once())["anomalies:air_quality"].rows_read > 0

    def spikes() -> int:
        found = read_all(store, "anomalies")
        if "kind" not in found.columns:
            return 0
        return found.filter(pl.col("kind") == "spike", pl.col("time") == spike_at).height

    write_all(store, {"air_quality": air_quality.filter(pl.col("time") >= start)})
    clock.now = start + timedelta(minutes=11)
    report = jobs_of(runner.run_once())
    assert report["anomalies:air_quality"].rows_read == 0  # not due: the day is not read
    assert report["aggregates:air_quality"].rows_read > 0  # while the minutes follow
    assert spikes() == 0
    clock.now = start + timedelta(minutes=15)
    jobs_of(runner.run_once())
    assert spikes() == 1


def test_minute_aggregates_keep_coming_while_a_pass_over_whole_days_runs(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_forever`` runs the jobs that read whole days in a loop of their own: an anomaly pass
    over a large day (held here until the test lets it go) does not hold the minute aggregates
    of what arrives meanwhile."""
    import processing.anomalies

    detect = processing.anomalies.detect_anomalies
    entered, release = threading.Event(), threading.Event()

    def held(*args: Any, **kwargs: Any) -> pl.DataFrame:
        entered.set()
        release.wait(timeout=120)
        return detect(*args, **kwargs)

    monkeypatch.setattr(processing.anomalies, "detect_anomalies", held)
    start = floor(datetime.now(UTC), "1m") - timedelta(minutes=30)
    write_all(store, fleet(["air_quality"], start, start + timedelta(minutes=20)))
    stop = threading.Event()
    loops = threading.Thread(
        target=Runner(store, families=["air_quality"]).run_forever, args=(0.05,), kwargs={"stop": stop.is_set}
    )
    loops.start()
    later = start + timedelta(minutes=25)

    def later_rows() -> int:
        return store.read("air_quality_1m_commune", start=later, end=later + timedelta(minutes=1)).height

    try:
        wait_until(entered.is_set, timeout=60, what="the anomaly pass")
        arrived = fleet(["air_quality"], later, later + timedelta(minutes=1))["air_quality"]
        now_ns = int(datetime.now(UTC).timestamp() * 1e9)
        write_all(store, {"air_quality": arrived.with_columns(received_at=pl.lit(now_ns))})
        wait_until(lambda: later_rows() > 0, timeout=60, what="the new minute's aggregates")
        assert not release.is_set()  # the pass is still held: the minute did not wait for it
    finally:
        release.set()
        stop.set()
        loops.join(timeout=120)
    assert not loops.is_alive()
    assert later_rows() == 2  # one row per commune


def test_the_two_loops_together_compute_what_one_run_does(tmp_path: Path) -> None:
    frames = fleet(list(RAW), DAY + timedelta(hours=6), DAY + timedelta(hours=8))
    clock = Clock(DAY + timedelta(hours=8, minutes=1))
    one, split = DuckDBStore(tmp_path / "one.duckdb"), DuckDBStore(tmp_path / "split.duckdb")
    try:
        write_all(one, frames)
        write_all(split, frames)
        jobs_of(Runner(one, clock=clock).run_once())
        runner = Runner(split, clock=clock)
        incremental, whole_days = runner.with_part("incremental"), runner.with_part("whole_days")
        assert not any(job.whole_days for job in incremental.jobs())
        assert {job.name for job in whole_days.jobs()} >= {"aggregates_1d:building", "building_energy_daily"}
        jobs_of(incremental.run_once())
        jobs_of(whole_days.run_once())
        got, want = outputs(split), outputs(one)
        assert sorted(got) == sorted(want)
        assert {"air_quality_1m", "air_quality_1d", "building_energy_daily", "atmo_daily"} <= set(got)
        for name in want:
            assert_frame_equal(got[name], want[name], check_exact=False, rel_tol=1e-12, abs_tol=0.0)
    finally:
        one.close()
        split.close()


def test_an_unknown_part_of_the_jobs_is_a_clear_error(store: DuckDBStore) -> None:
    with pytest.raises(ValueError, match="part must be one of all, incremental, whole_days, not 'daily'"):
        Runner(store, part="daily")  # type: ignore[arg-type]


def test_an_index_registered_in_the_catalogue_is_kept_up_to_date_by_the_runner(
    store: DuckDBStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Adding an index is one module registering itself: the runner names none of them."""
    from processing.incremental import Dirty, IndexRunner, in_starts, within
    from sensors import catalogue
    from sensors.families import Family

    def readings_hourly(raw: pl.DataFrame) -> pl.DataFrame:
        return (
            raw.group_by(pl.col("time").dt.truncate("1h"), "insee")
            .agg(pl.len().cast(pl.Int64).alias("readings"))
            .sort("time", "insee")
        )

    def update(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
        hours = dirty.starts("1h")
        for start, end in dirty.hour_spans():
            out = within(readings_hourly(runner.read("air_quality", start, end, report)), start, end)
            runner.write("toy_readings_hourly", out.filter(in_starts(hours)), ["insee"], report)

    monkeypatch.setattr(catalogue, "_INDICES", dict(catalogue.indices()))
    catalogue.register_index(
        catalogue.IndexSpec(
            name="toy_readings_hourly",
            family=Family.AIR_QUALITY,
            tags=("insee",),
            shown=("readings",),
            units={"readings": ""},
            staleness=timedelta(hours=2),
            compute=readings_hourly,
            update=update,
        )
    )
    clock = Clock(NOW)
    minutes = [WINDOW + timedelta(minutes=m) for m in range(0, 60, 2)]
    store.write(
        "air_quality", air(minutes, [10.0] * 30, WINDOW + timedelta(hours=1)), tags=["insee", "device_id"]
    )
    runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
    report = runner.run_once()

    assert "toy_readings_hourly" in [job.job for job in report.jobs]
    assert read_all(store, "toy_readings_hourly")["readings"].to_list() == [30]
    # A late reading makes its hour dirty again: the index follows, as the built-in ones do.
    clock.now = NOW + timedelta(minutes=1)
    late = air([WINDOW + timedelta(minutes=1)], [12.0], clock.now)
    store.write("air_quality", late, tags=["insee", "device_id"])
    runner.run_once()
    assert read_all(store, "toy_readings_hourly")["readings"].to_list() == [31]
    # Without the registration the runner has no such job.
    monkeypatch.undo()
    assert "toy_readings_hourly" not in [job.name for job in runner.jobs()]
