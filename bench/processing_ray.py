"""Benchmark of a backfill on Ray (1 and 2 workers) against the single-process backfill.

A real local ``influxd`` holds ``--days`` days of a simulated fleet (every family, ``--devices``
devices of each family in each of ``--communes`` communes, a reading a minute, faults on). The
same backfill of that period (every job, anomalies included) is then run three times, each
rewriting the same results:

* ``Runner.backfill`` in this process: the baseline;
* ``processing.distributed.backfill`` on a Ray cluster of this machine alone with 1 worker
  (``ray.init(address="local", num_cpus=1)``), then with 2 workers.

An untimed single-process backfill runs first, so that every timed run overwrites existing
series (as a real backfill does) and the numba kernels are in their cache for the workers.

Reported for each: wall time, and CPU seconds of this process, of the Ray processes (GCS,
raylet, workers: every descendant of this process but influxd, read from /proc) and of
influxd, with CPU per device-day.

    .venv/bin/python -m bench.processing_ray                 # 3 days, 4 communes, 1 device each
    .venv/bin/python -m bench.processing_ray --days 7 --communes 8
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.storage_data import local_influx
from processing import distributed
from processing.runner import Runner
from processing.windows import PARIS_TZ, floor
from sensors.communes import CommuneRegistry
from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet
from storage import StoreSettings

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of one live process, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass(slots=True)
class Figures:
    wall: float
    driver_cpu: float
    ray_cpu: float
    store_cpu: float

    @property
    def cpu(self) -> float:
        return self.driver_cpu + self.ray_cpu + self.store_cpu


def _measure(run: Callable[[], object], store_pid: int) -> Figures:
    """Time ``run``; CPU of this process, of its other descendants (Ray), and of the store."""

    def others() -> dict[int, float]:
        return {pid: _cpu_of(pid) for pid in _descendants(os.getpid()) if pid != store_pid}

    before, store_before = others(), _cpu_of(store_pid)
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # Read before the cluster stops: the workers are alive until then.
    after = others()
    ray_cpu = sum(value - before.get(pid, 0.0) for pid, value in after.items())
    return Figures(wall, cpu, ray_cpu, _cpu_of(store_pid) - store_before)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--communes", type=int, default=4)
    parser.add_argument("--devices", type=int, default=1, help="devices of each family in each commune")
    args = parser.parse_args()
    # A throwaway cluster of this machine: no token (Ray would keep one in ~/.ray for later clusters).
    os.environ["RAY_AUTH_MODE"] = "disabled"

    communes = CommuneRegistry.load().codes[: args.communes]
    # Within the raw retention (30 days) the provisioned database enforces on writes.
    start = floor(datetime.now(UTC) - timedelta(days=args.days + 3), "1d")
    end = floor(start + timedelta(days=args.days, hours=12), "1d")
    config = FleetConfig(
        communes=communes, devices_per_family=args.devices, period_s=60.0, faults=FaultRates.default()
    )
    frames = generate_fleet(config, start, end - start).frames
    readings = sum(frame.height for frame in frames.values())
    device_days = sum(frame.select("insee", "device_id").n_unique() for frame in frames.values()) * (
        (end - start) / timedelta(days=1)
    )
    print(
        f"{len(communes)} communes, {args.devices} device(s) a family each, "
        f"Paris days [{start.astimezone(PARIS_TZ):%Y-%m-%d}, {end.astimezone(PARIS_TZ):%Y-%m-%d}), "
        f"{readings:,} readings, {device_days:.0f} device-days; "
        f"cores: {os.cpu_count()}; load: {os.getloadavg()}"
    )
    with local_influx("bench-ray-") as (server, store):
        assert server.process is not None
        store_pid = server.process.pid
        for family, frame in frames.items():
            store.write(family, frame, tags=["insee", "device_id"])
        settings = StoreSettings(backend="influxdb", influxdb=store.settings)
        Runner(store).backfill(start, end)  # untimed: series exist, kernels compiled and cached

        results: list[tuple[str, Figures]] = []
        results.append(
            ("single process (baseline)", _measure(lambda: Runner(store).backfill(start, end), store_pid))
        )
        for workers in (1, 2):
            with distributed.connected(
                "local",
                num_cpus=workers,
                include_dashboard=False,
                object_store_memory=100_000_000,
                log_to_driver=False,
            ):

                def on_ray() -> None:
                    report = distributed.backfill(Runner(store), settings, start, end)
                    assert not report.failed, report.failed

                results.append((f"Ray, {workers} worker(s)", _measure(on_ray, store_pid)))
        print(f"load after: {os.getloadavg()}")
    print(
        f"{'':28} {'wall s':>8} {'CPU s':>8} {'(driver':>8} {'Ray':>8} {'influxd)':>8}"
        f" {'CPU ms/device-day':>18}"
    )
    for name, fig in results:
        print(
            f"{name:28} {fig.wall:8.1f} {fig.cpu:8.1f} {fig.driver_cpu:8.1f} {fig.ray_cpu:8.1f} "
            f"{fig.store_cpu:8.1f} {1000 * fig.cpu / device_days:18.0f}"
        )


if __name__ == "__main__":
    main()
