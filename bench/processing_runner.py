"""Benchmark of an incremental processing run against the whole-day recompute it replaces.

A DuckDB store holds a day of 2,000 air-quality stations at 10-second resolution (about 15.8
million readings: the Paris day up to 22:00, from the project's fleet simulator), already
processed by a first ``run_once``. Then one minute of readings of the whole fleet arrives, and
one ``run_once`` is timed, ten times: the aggregates (1 min, 15 min; the open hour's 1-hour rows
at the first run and then every ``hour_refresh``; today's 1-day row waits for ``day_refresh``),
the ATMO index and the EAQI. The runner keeps the latest hours' readings
between runs, so such a run reads the new minute and computes each window it touches from its
own readings (the minute, its quarter, its hour). It is compared with what the runner did before at
every run that had new readings in the day, which is ``backfill`` of the day: read the whole day
and recompute it, measured in the same run. The run an hour later that refreshes today's 1-day
rows (``day_refresh``) is timed too, as is a run of a freshly started runner (its hourly means
are not kept yet). The anomaly pass is left out (it reads the day by design: see
docs/performance.md).

Finding what arrived is compared too: a run asks the store for the readings received after
its watermarks (``Store.arrivals``); before, it read ``received_at`` of every reading of the
24-hour horizon and filtered in polars. That old read is timed in the same run.

    .venv/bin/python -m bench.processing_runner            # 2,000 devices
    .venv/bin/python -m bench.processing_runner --quick    # 200 devices
    .venv/bin/python -m bench.processing_runner --influx   # finding arrivals on a local influxd

``--influx`` compares only the two ways to find what arrived, on a real local ``influxd``
(200 devices by default: loading 2,000 devices' day into influxd takes minutes), with
``Store.arrivals`` asked for the readings of the last ``settle`` (15 min), as a run asks.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from bench.fleets import air_quality_stations
from bench.storage_data import local_influx
from processing.runner import DEFAULT_HORIZON, DEFAULT_SETTLE, Runner, RunReport
from processing.windows import floor, next_start
from storage.base import Store, epoch_ns
from storage.duckdb_store import DuckDBStore

DAY = floor(datetime(2026, 3, 3, 12, tzinfo=UTC), "1d")  # a Tuesday, Paris midnight
TAGS = ["insee", "device_id"]
MINUTES = 10
"""New minutes timed, one run each."""


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _readings(devices: int, start: datetime, end: datetime) -> pl.DataFrame:
    """The fleet's readings of ``[start, end)``, each received 5 s after it was observed."""
    frame = air_quality_stations(devices, start, end)
    return frame.with_columns((pl.col("time").cast(pl.Int64) + 5_000_000_000).alias("received_at"))


@dataclass(frozen=True, slots=True)
class _Timed:
    report: RunReport
    wall: float
    cpu: float
    """CPU seconds of the process (both cores count): less swayed by the other users' load."""


def _timed(action: Callable[[], RunReport]) -> _Timed:
    began, cpu = time.perf_counter(), time.process_time()
    report = action()
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    if report.failed:
        raise RuntimeError(f"jobs failed: {[(job.job, job.error) for job in report.failed]}")
    return _Timed(report, took, cpu)


def _line(label: str, timed: _Timed) -> str:
    report, seconds = timed.report, timed.wall
    read = sum(job.rows_read for job in report.jobs)
    jobs = ", ".join(f"{job.job} {job.rows_read:,} rows {job.seconds:.2f} s" for job in report.jobs)
    if report.arrivals_read:
        jobs += f"; finding arrivals {report.arrivals_read:,} rows {report.arrivals_seconds * 1000:.0f} ms"
    return (
        f"{label:<46} {seconds:>7.2f} s ({timed.cpu:>6.2f} CPU s) {read:>11,} rows read "
        f"{report.rows_written:>8,} written\n      {jobs}"
    )


def _old_arrivals(store: Store, now: datetime, horizon: timedelta = DEFAULT_HORIZON) -> tuple[int, float]:
    """Rows and seconds of the old way to find what arrived: ``received_at`` of every reading
    of the horizon, read through ``Store.read``."""
    began = time.perf_counter()
    frame = store.read(
        "air_quality", start=now - horizon, end=now + timedelta(days=2), fields=["received_at"]
    )
    frame = frame.select(pl.col("time"), pl.col("received_at").cast(pl.Int64)).drop_nulls()
    return frame.height, time.perf_counter() - began


def _new_arrivals(store: Store, now: datetime, after_ns: int) -> tuple[int, float]:
    """Rows and seconds of ``Store.arrivals`` over the horizon, from ``after_ns``."""
    began = time.perf_counter()
    frame = store.arrivals(
        "air_quality", start=now - DEFAULT_HORIZON, end=now + timedelta(days=2), received_after_ns=after_ns
    )
    return frame.height, time.perf_counter() - began


def measure_influx(devices: int) -> None:
    """Print both ways to find what arrived on a local influxd holding 22 hours of readings."""
    now = floor(datetime.now(UTC), "1m")  # recent: influxd refuses points past the 30-day policy
    start = now - timedelta(hours=22)
    with local_influx("bench-runner-influx-") as (_, store):
        began = time.perf_counter()
        day = _readings(devices, start, now)
        store.write("air_quality", day, tags=TAGS)
        print(
            f"stored {day.height:,} readings ({devices} devices, 10 s, 22 h) in influxd in "
            f"{time.perf_counter() - began:.1f} s"
        )
        # A run one minute after the last asks from the settle margin before the previous run.
        after = epoch_ns(now - DEFAULT_SETTLE - timedelta(minutes=1))
        old_s: list[float] = []
        new_s: list[float] = []
        for _ in range(3):  # alternate, so both see the same neighbours
            old_rows, took = _old_arrivals(store, now)
            old_s.append(took)
            new_rows, took = _new_arrivals(store, now, after)
            new_s.append(took)
    expected = day.filter(pl.col("received_at") > after).height
    assert new_rows == expected, (new_rows, expected)
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (2 cores)")
    print(
        f"old whole-horizon read: {old_rows:,} rows, best of 3 {min(old_s):.2f} s "
        f"({', '.join(f'{t:.2f}' for t in old_s)} s)"
    )
    print(
        f"Store.arrivals (last 16 min): {new_rows:,} rows, best of 3 {min(new_s) * 1000:.0f} ms "
        f"({', '.join(f'{t * 1000:.0f}' for t in new_s)} ms)"
    )
    print(f"ratio: {min(old_s) / min(new_s):.0f}x faster, {old_rows / max(new_rows, 1):.0f}x fewer rows")


def measure(devices: int, at_minute: int = 5) -> None:
    """Print the incremental run, the day-refresh run, a cold run and the whole-day baseline.

    The new minutes are minutes ``at_minute`` to ``at_minute + 2`` of an hour: the later in the
    hour, the more readings its 1-hour window holds."""
    now = DAY + timedelta(hours=22, minutes=at_minute - 5)
    with tempfile.TemporaryDirectory() as tmp:
        store = DuckDBStore(Path(tmp) / "bench.duckdb")
        try:
            began = time.perf_counter()
            day = _readings(devices, DAY, now)
            store.write("air_quality", day, tags=TAGS)
            print(
                f"stored {day.height:,} readings ({devices} devices, 10 s, {DAY:%Y-%m-%d %H:%M} UTC to "
                f"{now:%H:%M}) in {time.perf_counter() - began:.1f} s"
            )
            del day
            clock = _Clock(now)
            runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
            first = _timed(runner.run_once)
            print(f"first run (everything new, untimed in the comparison): {first.wall:.1f} s")

            def arrive(minute: datetime) -> int:
                new = _readings(devices, minute, minute + timedelta(minutes=1))
                store.write("air_quality", new, tags=TAGS)
                clock.now = minute + timedelta(minutes=1, seconds=10)
                return new.height

            # Ten minutes, one run each: the open hour's 1-hour rows are refreshed at the first
            # and then every ``hour_refresh`` (5 minutes); the median run is reported, and the
            # CPU of all ten per minute (the machine is shared).
            runs: list[_Timed] = []
            for minute in range(5, 5 + MINUTES):
                arrived = arrive(now + timedelta(minutes=minute))
                runs.append(_timed(runner.run_once))
            incremental = sorted(runs, key=lambda run: run.cpu)[len(runs) // 2]
            old_rows, old_seconds = _old_arrivals(store, runner.now, runner.horizon)
            # An hour later: today's 1-day rows are due again (day_refresh), read from the whole day.
            arrive(now + timedelta(minutes=5 + MINUTES) + runner.day_refresh)
            refresh = _timed(runner.run_once)
            # A runner just started keeps no hourly means yet: ATMO and EAQI read their hours once.
            arrive(clock.now + timedelta(minutes=1))
            cold_runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
            cold = _timed(cold_runner.run_once)
            baseline = _timed(lambda: runner.backfill(DAY, next_start(DAY, "1d")))
        finally:
            store.close()
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (2 cores)")
    print(f"new readings per run: {arrived:,} (one minute of the fleet)")
    print(
        "one-new-minute runs (wall s / CPU s): "
        + ", ".join(f"{run.wall:.2f}/{run.cpu:.2f}" for run in runs)
        + f"; mean CPU s per minute {sum(run.cpu for run in runs) / len(runs):.3f}, "
        f"mean wall s {sum(run.wall for run in runs) / len(runs):.3f}; the median (by CPU):"
    )
    print(_line("run_once, one new minute", incremental))
    print(_line("the slowest (by CPU): the open hour's rows refreshed", max(runs, key=lambda run: run.cpu)))
    print(_line("run_once, one new minute + day_refresh due", refresh))
    print(_line("run_once of a freshly started runner", cold))
    print(_line("baseline: backfill of the day (old run_once)", baseline))
    read = sum(job.rows_read for job in incremental.report.jobs)
    base_read = sum(job.rows_read for job in baseline.report.jobs)
    print(
        f"ratio, one new minute vs baseline: {baseline.wall / incremental.wall:.1f}x faster in wall time, "
        f"{baseline.cpu / incremental.cpu:.1f}x in CPU time, {base_read / max(read, 1):.0f}x fewer rows read"
    )
    print(
        f"finding arrivals, one new minute: {incremental.report.arrivals_read:,} rows in "
        f"{incremental.report.arrivals_seconds * 1000:.0f} ms (Store.arrivals); the old whole-horizon read: "
        f"{old_rows:,} rows in {old_seconds:.2f} s "
        f"({old_seconds / max(incremental.report.arrivals_seconds, 1e-9):.0f}x slower)"
    )
    print(
        f"ratio, day_refresh run vs baseline: {baseline.wall / refresh.wall:.1f}x faster in wall time, "
        f"{baseline.cpu / refresh.cpu:.1f}x in CPU time"
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 devices instead of 2,000")
    parser.add_argument("--devices", type=int, help="number of devices (overrides --quick)")
    parser.add_argument(
        "--at-minute",
        type=int,
        default=5,
        choices=range(5, 58),
        metavar="5..57",
        help="minute of the hour the new minutes start at (default 5)",
    )
    parser.add_argument(
        "--influx", action="store_true", help="compare the two ways to find arrivals on a local influxd"
    )
    args = parser.parse_args(argv)
    if args.influx:
        measure_influx(args.devices or 200)
        return
    measure(args.devices or (200 if args.quick else 2000), args.at_minute)


if __name__ == "__main__":
    main()
