"""Fleet generation speed: readings per second, against the cost of merely materialising frames
of the same shape.

Run: ``.venv/bin/python -m bench.simulator [--quick]``. The full run generates the processing
benchmark's day: 1,980 devices (44 per family in each of the nine communes) at 10-second
resolution, every family, default faults (about 17 million readings). The baseline builds frames
with the very same rows, columns and dtypes from plain random numbers, in the same run: the
ratio says what the signal and fault models cost on top of allocating the data, whatever the
machine's load. ``--quick`` does a tenth of the devices.
"""

from __future__ import annotations

import argparse
import resource
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from simulator.faults import FaultRates
from simulator.fleet import Fleet, FleetConfig, generate_fleet

START = datetime(2026, 3, 2, tzinfo=UTC)


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system): less sensitive to a loaded machine."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def baseline(fleet: Fleet) -> tuple[float, float]:
    """Wall and CPU seconds to build frames of the same shape and dtypes from random numbers."""
    rng = np.random.default_rng(0)
    started, cpu = time.perf_counter(), cpu_seconds()
    for frame in fleet.frames.values():
        columns: dict[str, pl.Series] = {}
        for name, dtype in frame.schema.items():
            if dtype == pl.String:
                columns[name] = frame[name].gather(rng.integers(0, frame.height, frame.height))
            elif dtype == pl.Boolean:
                columns[name] = pl.Series(name, rng.random(frame.height) < 0.5)
            else:
                columns[name] = pl.Series(name, rng.standard_normal(frame.height)).cast(dtype)
        pl.DataFrame(columns)
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a tenth of the devices")
    args = parser.parse_args()
    devices = 4 if args.quick else 44
    config = FleetConfig(devices_per_family=devices, period_s=10, seed=1, faults=FaultRates.default())
    started, cpu = time.perf_counter(), cpu_seconds()
    fleet = generate_fleet(config, START, timedelta(days=1))
    generation, generation_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    floor, floor_cpu = baseline(fleet)
    print(f"fleet: {fleet.devices.height} devices, 1 day at 10 s, {fleet.rows:,} readings, default faults")
    print(
        f"generate_fleet: {generation:.1f} s wall, {generation_cpu:.1f} s CPU, "
        f"{fleet.rows / generation / 1e6:.2f} M readings/s (wall)"
    )
    print(f"baseline (same frames from random numbers): {floor:.1f} s wall, {floor_cpu:.1f} s CPU")
    print(
        f"ratio generation / baseline: {generation / floor:.1f}x wall, {generation_cpu / floor_cpu:.1f}x CPU"
    )
    print(f"peak memory (max RSS): {peak_gb:.2f} GB; ground truth: {fleet.ground_truth.height:,} faults")


if __name__ == "__main__":
    main()
