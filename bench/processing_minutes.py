"""One-new-minute runs of the processing runner, on a day stored once: for comparing two versions
of the code in interleaved runs on a shared machine.

``bench.processing_runner`` builds the 2,000-station day, processes it from nothing, and times
the backfill beside the new minutes: about ten minutes a run on a loaded machine. This bench
keeps two DuckDB files in ``--dir`` (the day's readings up to 22:00 UTC, then the same after a
first ``run_once``), so each run only copies the processed file, starts a runner on it (its
first run reads what the settle margin and ATMO/EAQI need), then times ten new minutes, one
``run_once`` each, as ``bench.processing_runner`` does, and prints each run's wall and CPU
seconds and their median and mean.

    .venv/bin/python -m bench.processing_minutes                     # this checkout
    cd /path/to/other/checkout && PYTHONPATH=. /path/to/this/.venv/bin/python -m bench.processing_minutes

The other checkout's code runs only from its own directory: ``python -m`` puts the current
directory first on the path, ahead of ``PYTHONPATH``. Run the two alternately (A, B, A, B) so
that both see the same load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from datetime import timedelta
from pathlib import Path

from bench.processing_runner import DAY, MINUTES, TAGS, _Clock, _readings
from processing.runner import Runner
from storage.duckdb_store import DuckDBStore

NOW = DAY + timedelta(hours=22)


def _prepared(folder: Path, devices: int) -> Path:
    """The processed day's store file, made on the first call."""
    readings, processed = folder / f"day-{devices}.duckdb", folder / f"processed-{devices}.duckdb"
    if not readings.exists():
        store = DuckDBStore(readings)
        store.write("air_quality", _readings(devices, DAY, NOW), tags=TAGS)
        store.close()
    if not processed.exists():
        shutil.copy(readings, processed)
        store = DuckDBStore(processed)
        Runner(store, families=["air_quality"], anomalies=False, clock=_Clock(NOW)).run_once()
        store.close()
    return processed


def measure(folder: Path, devices: int) -> None:
    """Print ten one-new-minute runs of a runner started on the processed day."""
    work = folder / f"work-{os.getpid()}.duckdb"
    shutil.copy(_prepared(folder, devices), work)
    store = DuckDBStore(work)
    try:
        clock = _Clock(NOW + timedelta(minutes=4, seconds=10))
        runner = Runner(store, families=["air_quality"], anomalies=False, clock=clock)
        runner.run_once()
        walls: list[float] = []
        cpus: list[float] = []
        for minute in range(5, 5 + MINUTES):
            start = NOW + timedelta(minutes=minute)
            store.write("air_quality", _readings(devices, start, start + timedelta(minutes=1)), tags=TAGS)
            clock.now = start + timedelta(minutes=1, seconds=10)
            began, cpu = time.perf_counter(), time.process_time()
            report = runner.run_once()
            walls.append(time.perf_counter() - began)
            cpus.append(time.process_time() - cpu)
            if report.failed:
                raise RuntimeError(f"jobs failed: {[(job.job, job.error) for job in report.failed]}")
            jobs = ", ".join(f"{job.job} {job.seconds:.3f} s" for job in report.jobs)
            print(f"{walls[-1]:.3f} s wall, {cpus[-1]:.3f} CPU s: {jobs}")
    finally:
        store.close()
        work.unlink()
    print(
        f"median {statistics.median(walls):.3f} s wall, {statistics.median(cpus):.3f} CPU s; "
        f"mean {statistics.mean(walls):.3f} s wall, {statistics.mean(cpus):.3f} CPU s; "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=2000, help="air-quality stations (default 2000)")
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp/smartcity-bench-minutes"), help="where the stored day is kept"
    )
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    measure(args.dir, args.devices)


if __name__ == "__main__":
    main()
