"""Benchmark of the rolling aggregates (processing/aggregates/): both engines, and pandas.

One day of 2,000 air-quality stations at 10-second resolution (about 17 million rows, 9 numeric
fields) from the project's fleet simulator, then every rolling aggregate: windows 1 min, 15 min,
1 h and the Paris day, per device and per commune, with mean, min, max, p95 and count of every
field (8 result measurements), reading only the columns they use, with the compiled engine
(the service's, tuned as ``smartcity process`` tunes its process) and with the polars
reference. The same computation in pandas (groupby on the window start and the tags, ``agg``
plus ``quantile(0.95)``, tags as categoricals: pandas' fast path) is measured in the same run.
Each engine runs in a fresh process, so its peak memory (ru_maxrss) is its own, the frame it
reads included.

    .venv/bin/python -m bench.processing_aggregates            # 2,000 devices
    .venv/bin/python -m bench.processing_aggregates --quick    # 200 devices
    .venv/bin/python -m bench.processing_aggregates --engines compiled,polars   # no pandas
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from bench.fleets import air_quality_stations
from bench.workers import peak_rss_gb, run_worker
from processing.aggregates import Engine, aggregate_all
from processing.memory import tune_for_service
from sensors.families import AIR_QUALITY

START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday


def _generate(devices: int, path: Path) -> int:
    frame = air_quality_stations(devices, START, timedelta(days=1))
    frame.write_parquet(path)
    return frame.height


COLUMNS = ["time", "insee", "device_id", *AIR_QUALITY.numeric_fields]
"""What the aggregates read (the runner's store read also carries received_at, 8 bytes a row)."""


def _ours(path: Path, engine: Engine) -> dict[str, float]:
    tune_for_service()  # what smartcity process does at start (processing/memory.py)
    frame = pl.read_parquet(path, columns=COLUMNS)
    loaded = peak_rss_gb()
    # The compiled kernels load from numba's cache (or compile, the first time on a machine):
    # a cost paid once per process, timed apart.
    began = time.perf_counter()
    aggregate_all(frame.head(2_000), "air_quality", engine=engine)
    first_call = time.perf_counter() - began
    began, cpu = time.perf_counter(), time.process_time()
    results = aggregate_all(frame, "air_quality", engine=engine)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    produced = sum(r.height for r in results.values())
    return {
        "rows": frame.height,
        "seconds": elapsed,
        "cpu": cpu,
        "loaded_gb": loaded,
        "produced": produced,
        "first_call": first_call,
    }


def _pandas(path: Path) -> dict[str, float]:
    frame = pl.read_parquet(path, columns=COLUMNS).to_pandas()
    frame["insee"] = frame["insee"].astype("category")
    frame["device_id"] = frame["device_id"].astype("category")
    loaded = peak_rss_gb()
    fields = [f for f in AIR_QUALITY.numeric_fields if f in frame.columns]
    began, cpu = time.perf_counter(), time.process_time()
    produced = 0
    for window in ("1min", "15min", "1h", "1D"):
        if window == "1D":
            local = frame["time"].dt.tz_convert("Europe/Paris")
            start = local.dt.normalize().dt.tz_convert("UTC")
        else:
            start = frame["time"].dt.floor(window)
        for keys in (["insee", "device_id"], ["insee"]):
            grouped = frame.groupby([start, *(frame[k] for k in keys)], observed=True, sort=False)[fields]
            stats = grouped.agg(["mean", "min", "max", "count"])
            p95 = grouped.quantile(0.95)
            stats[[(f, "p95") for f in fields]] = p95.to_numpy()
            produced += len(stats)
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {"rows": len(frame), "seconds": elapsed, "cpu": cpu, "loaded_gb": loaded, "produced": produced}


def _worker(path: Path, engine: str) -> dict[str, float]:
    result = (
        _pandas(path) if engine == "pandas" else _ours(path, "polars" if engine == "polars" else "compiled")
    )
    return {**result, "peak_gb": peak_rss_gb()}


def _run_worker(path: Path, engine: str) -> dict[str, float]:
    return run_worker("bench.processing_aggregates", "--worker", str(path), "--engine", engine)


LABELS = {
    "compiled": "aggregates, compiled engine",
    "polars": "aggregates, polars reference",
    "pandas": "pandas groupby, same aggregates",
}


def speed(devices: int, engines: list[str]) -> None:
    """Print rows/s, CPU and peak memory of each engine, and their ratios to pandas."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "readings.parquet"
        began = time.perf_counter()
        # In a process of its own: a worker's peak (ru_maxrss) starts from this process's size
        # when it is forked, so this one must stay small.
        made = run_worker("bench.processing_aggregates", "--generate", str(path), "--devices", str(devices))
        rows = int(made["rows"])
        took = time.perf_counter() - began
        print(f"generated {rows:,} rows ({devices} devices x 1 day x 10 s, 9 fields) in {took:.1f} s")
        # The file just written is still going to disk: flushed now, not on the engines' time.
        os.sync()
        measured = {engine: _run_worker(path, engine) for engine in engines}
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
    header = f"{'what':<34} {'wall s':>7} {'rows/s':>11} {'CPU s':>7} {'rows/CPU-s':>11} {'peak GB':>8}"
    print(header + f" {'results':>10}")
    for engine, result in measured.items():
        rate = result["rows"] / result["seconds"]
        cpu_rate = result["rows"] / result["cpu"]
        print(
            f"{LABELS[engine]:<34} {result['seconds']:>7.2f} {rate:>11,.0f} {result['cpu']:>7.2f} "
            f"{cpu_rate:>11,.0f} {result['peak_gb']:>8.2f} {int(result['produced']):>10,}"
        )
    for engine, result in measured.items():
        if "first_call" in result:
            print(
                f"{engine}: data loaded before timing: peak {result['loaded_gb']:.2f} GB; first call on "
                f"2,000 rows (loads or compiles the kernels): {result['first_call']:.2f} s, not timed above"
            )
    if "pandas" in measured:
        base = measured["pandas"]
        for engine in (e for e in measured if e != "pandas"):
            ours = measured[engine]
            print(
                f"{engine} against pandas: {base['seconds'] / ours['seconds']:.1f}x (wall), "
                f"{base['cpu'] / ours['cpu']:.1f}x (CPU)"
            )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200 devices instead of 2,000")
    parser.add_argument("--devices", type=int, help="number of devices (overrides --quick)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--engines",
        default="compiled,polars,pandas",
        help="which to run, comma-separated (default: all three)",
    )
    parser.add_argument("--engine", default="compiled", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.engine)))
        return
    if args.generate:
        print(json.dumps({"rows": _generate(args.devices or 2000, args.generate)}))
        return
    engines = [e for e in args.engines.split(",") if e]
    if bad := [e for e in engines if e not in LABELS]:
        parser.error(f"unknown engine(s) {', '.join(bad)}: expected some of {', '.join(LABELS)}")
    speed(args.devices or (200 if args.quick else 2000), engines)


if __name__ == "__main__":
    main()
