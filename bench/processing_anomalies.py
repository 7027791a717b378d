"""Benchmark and evaluation of the anomaly pass (processing/anomalies/__init__.py).

Speed (default): one day of 2,000 air-quality stations at 10-second resolution (about 17 million
rows, 9 fields) from the project's fleet simulator with its default faults, then the full
anomaly pass on it, each measurement in a fresh process so that its peak memory is its own (the
frame it reads included):

- the pass (compiled engine) on the rows in the store's order (time, then tags), then on the
  same rows grouped by device;
- the same pass with the polars/numpy reference engine (the implementation before the compiled
  kernels), the baseline the ratio is taken against;
- the textbook Hampel filter written with polars' ``rolling_median`` (a rolling median and a
  rolling MAD per device and field), which computes only the spike part of what the pass does;
- the one-time costs of the compiled kernels: loading them from numba's cache in a fresh
  process, and compiling them in a fresh process with an empty cache (the first run on a
  machine, or after the kernels change).

Evaluation (``--evaluate``): a few days of a small fleet with faults, the pass against the
simulator's ground truth, and clean data (faults off) for the false alarms per device-day.

    .venv/bin/python -m bench.processing_anomalies            # speed, full size
    .venv/bin/python -m bench.processing_anomalies --quick    # speed, 200 devices
    .venv/bin/python -m bench.processing_anomalies --evaluate # precision and recall table
    .venv/bin/python -m bench.processing_anomalies --no-hampel  # without the slowest baseline
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from bench.anomaly_eval import evaluate, evaluation_fleet, format_table
from bench.fleets import air_quality_stations
from bench.workers import peak_rss_gb, run_worker
from processing.anomalies import Engine, detect_anomalies
from simulator.faults import FaultRates

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def _generate(devices: int, path: Path) -> int:
    frame = air_quality_stations(devices, START, timedelta(days=1), FaultRates.default())
    frame.write_parquet(path)
    # The same rows device by device, as a runner reading one device at a time would get them.
    frame.sort("device_id", "time").write_parquet(_grouped(path))
    return frame.height


def _grouped(path: Path) -> Path:
    return path.with_name(f"grouped-{path.name}")


def _worker(path: Path, mode: str) -> dict[str, float]:
    """Run one timed pass on the frame in ``path``; in a fresh process, so ru_maxrss is its own."""
    if mode == "compile":
        return _first_calls(path)
    frame = pl.read_parquet(_grouped(path) if mode == "grouped" else path, low_memory=True)
    read_gb = peak_rss_gb()
    # The compiled kernels load from numba's cache once per process: timed apart, on a few rows.
    began = time.perf_counter()
    if mode in ("pass", "grouped"):
        detect_anomalies(frame.head(2_000), "air_quality")
    first_call = time.perf_counter() - began
    sampler = _RssSampler()
    sampler.start()
    began, cpu = time.perf_counter(), time.process_time()
    if mode == "baseline":
        found = _hampel_baseline(frame)
    else:
        engine: Engine = "reference" if mode == "reference" else "compiled"
        found = detect_anomalies(frame, "air_quality", engine=engine).height
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    sampler.stop()
    peak_gb = peak_rss_gb()
    return {
        "rows": frame.height,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "peak_gb": peak_gb,
        "read_gb": read_gb,
        "pass_gb": sampler.peak_gb,
        "found": found,
        "first_call": first_call,
    }


def _first_calls(path: Path) -> dict[str, float]:
    """The first call of the pass on a few rows and the second one, in this fresh process: the
    difference is what loading (or compiling) the kernels costs."""
    frame = pl.read_parquet(path, n_rows=20_000)
    began = time.perf_counter()
    detect_anomalies(frame, "air_quality")
    first = time.perf_counter() - began
    began = time.perf_counter()
    detect_anomalies(frame, "air_quality")
    second = time.perf_counter() - began
    return {"first": first, "second": second, "one_time": first - second}


class _RssSampler(threading.Thread):
    """Highest resident memory of this process while it runs (ru_maxrss cannot be reset, and
    reading Parquet has its own peak before the pass starts)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_gb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._done.wait(0.02):
            with open("/proc/self/statm") as statm:
                self.peak_gb = max(self.peak_gb, int(statm.read().split()[1]) * page / 1e9)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _hampel_baseline(frame: pl.DataFrame) -> int:
    """The textbook Hampel filter: rolling median and rolling MAD of 5 readings per device."""
    fields = [c for c in frame.columns if c not in ("time", "insee", "device_id", "received_at")]
    ordered = frame.sort("device_id", "time")
    flagged = 0
    for name in fields:
        median = pl.col(name).rolling_median(5, center=True).over("device_id")
        deviation = (pl.col(name) - median).abs()
        mad = deviation.rolling_median(61, center=True).over("device_id")
        flagged += ordered.select((deviation > 8 * 1.4826 * mad).sum()).item()
    return int(flagged)


def _run_worker(path: Path, mode: str, env: dict[str, str] | None = None) -> dict[str, float]:
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})  # run_worker hands the subprocess this process's environment
    try:
        return run_worker("bench.processing_anomalies", "--worker", str(path), "--mode", mode)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (5-min {five:.1f})"


def speed(devices: int, *, hampel: bool = True) -> None:
    """Print the speed and memory of the pass and of the baselines, and the one-time costs."""
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load average {_load()}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "readings.parquet"
        began = time.perf_counter()
        rows = _generate(devices, path)
        took = time.perf_counter() - began
        print(f"generated {rows:,} rows ({devices} devices x 1 day x 10 s) in {took:.1f} s")
        ours = _run_worker(path, "pass")
        grouped = _run_worker(path, "grouped")
        reference = _run_worker(path, "reference")
        base = _run_worker(path, "baseline") if hampel else None
        cached = _run_worker(path, "compile")
        compiled = _run_worker(path, "compile", {"NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")})
    print(
        f"{'what':<50} {'wall s':>7} {'rows/s (wall)':>14} {'CPU s':>7} {'rows/CPU-s':>12} "
        f"{'GB during pass':>15} {'GB peak reading':>16}"
    )
    runs = [
        ("full anomaly pass (5 kinds), store order", ours),
        ("same, input already grouped by device", grouped),
        ("baseline: reference engine (polars/numpy)", reference),
    ]
    if base is not None:
        runs.append(("baseline: rolling_median Hampel, spikes only", base))
    for label, result in runs:
        wall, cpu = result["seconds"], result["cpu_seconds"]
        print(
            f"{label:<50} {wall:>7.1f} {result['rows'] / wall:>14,.0f} {cpu:>7.1f} "
            f"{result['rows'] / cpu:>12,.0f} {result['pass_gb']:>15.2f} {result['read_gb']:>16.2f}"
        )
    print(f"anomalies found: {int(ours['found'])} (reference engine: {int(reference['found'])})")
    print(
        f"ratio to the reference engine: {reference['seconds'] / ours['seconds']:.1f}x in wall time, "
        f"{reference['cpu_seconds'] / ours['cpu_seconds']:.1f}x in CPU time"
    )
    if base is not None:
        print(
            f"ratio to the spike-only Hampel baseline: {base['seconds'] / ours['seconds']:.1f}x "
            f"in wall time, {base['cpu_seconds'] / ours['cpu_seconds']:.1f}x in CPU time"
        )
    print(
        f"one-time costs of the compiled kernels, per fresh process: loading them from numba's "
        f"cache {cached['one_time']:.2f} s (the pass timed above excludes it: "
        f"{ours['first_call']:.2f} s there); compiling them with an empty cache "
        f"{compiled['one_time']:.1f} s (once per machine, or after the kernels change)"
    )
    print(f"load average at the end: {_load()} (machine has {os.cpu_count()} cores)")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 devices instead of 2,000")
    parser.add_argument("--evaluate", action="store_true", help="print precision and recall per kind")
    parser.add_argument("--days", type=float, default=3.0, help="days simulated by --evaluate")
    parser.add_argument(
        "--no-hampel", action="store_true", help="skip the rolling_median baseline (90 s, 6 GB)"
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="pass", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.mode)))
        return
    if args.evaluate:
        days = 1.0 if args.quick else args.days
        faulty = evaluation_fleet(days=days, faults=FaultRates.default())
        clean = evaluation_fleet(days=days, faults=FaultRates.none())
        print(format_table(evaluate(faulty), evaluate(clean)))
        return
    speed(200 if args.quick else 2000, hampel=not args.no_hampel)


if __name__ == "__main__":
    main()
