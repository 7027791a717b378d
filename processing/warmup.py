"""Compile the processing kernels ahead of time: ``python -m processing.warmup``.

numba compiles each kernel on its first call for the argument types it gets, then keeps the
machine code in its cache (``NUMBA_CACHE_DIR``, or ``__pycache__`` beside the source when that
is writable). Compiling everything takes about 20 s, which a service would otherwise pay on its
first run after a start in a fresh container; the Docker image runs this once at build time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import polars as pl

from processing.aggregates import aggregate_all
from processing.anomalies import detect_anomalies
from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet


def compile_kernels() -> list[str]:
    """Run the aggregates and the anomaly pass of every family over two simulated hours.

    The frames have the store's types (what the runner reads), so the kernels are compiled for
    the argument types they get in service. Returns the families run.
    """
    config = FleetConfig(devices_per_family=2, period_s=10.0, faults=FaultRates.default())
    fleet = generate_fleet(config, datetime(2026, 1, 5, 6, tzinfo=UTC), timedelta(hours=2))
    for family, frame in fleet.frames.items():
        aggregate_all(frame, family)
        detect_anomalies(frame, family)
    # A reading of -inf takes the aggregates' other way to the minutes' partials.
    stations = fleet.frames["air_quality"]
    aggregate_all(stations.with_columns(pl.lit(float("-inf")).alias("pm25")), "air_quality")
    return list(fleet.frames)


def main() -> None:
    """Command-line entry point."""
    began = time.perf_counter()
    families = compile_kernels()
    print(f"processing kernels ready for {', '.join(families)} in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
