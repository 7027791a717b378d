"""How the commune page's status panel costs grow with the fleet, store by store.

    .venv/bin/python -m bench.dashboard_status_scale [--devices 20 112 223] [--hours 1]
        [--store influxdb duckdb]

For each size, a fresh store (a real local ``influxd`` as the tests start it, or DuckDB in
memory) holds ``--hours`` of raw readings, one a minute, of N devices of every family in each of
three communes (N per family and commune). Then, for one commune, it times the status panel's
reads and the whole panel as the callback answers it (components, then Dash's JSON), with every
device listed (the baseline) and with ``status_rows`` (the setting's default): median wall time,
CPU of this process and of ``influxd`` per call, and the answer's size. 112 and 223 devices per
family and commune are the soak's knee steps of 5,000 and 10,000 devices over nine communes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from dash._utils import to_json

from bench.soak import procstat
from dashboards.access import CommuneData
from dashboards.config import DashboardSettings
from dashboards.pages.commune import status_panel
from dashboards.users import User
from sensors.communes import CommuneRegistry
from sensors.families import Family
from storage.base import Store
from tests.dashboard_fixtures import CONFLANS, MONTROUGE, POISSY, write_raw

COMMUNES = [POISSY, MONTROUGE, CONFLANS]


def fill(store: Store, devices: int, now: datetime, hours: float) -> None:
    """``hours`` of raw readings of ``devices`` devices per family and commune."""
    for number, family in enumerate(Family):
        write_raw(
            store, family.value, COMMUNES, devices_per_commune=devices, now=now, hours=hours, seed=number
        )


def measure(call: Callable[[], object], repeats: int, server_pid: int | None) -> tuple[float, float, float]:
    """Median wall ms, CPU ms of this process and of the server per call."""
    call()
    walls = []
    cpu0, server0 = time.process_time(), procstat.cpu_seconds(server_pid, tree=False) if server_pid else 0.0
    for _ in range(repeats):
        begin = time.perf_counter()
        call()
        walls.append(time.perf_counter() - begin)
    cpu = (time.process_time() - cpu0) / repeats
    server = ((procstat.cpu_seconds(server_pid, tree=False) - server0) / repeats) if server_pid else 0.0
    return statistics.median(walls) * 1e3, cpu * 1e3, server * 1e3


@contextmanager
def opened(kind: str, directory: Path) -> Iterator[tuple[Store, int | None]]:
    """A fresh store of ``kind`` and the pid of its server (None in-process)."""
    if kind == "duckdb":
        from storage.duckdb_store import DuckDBStore

        store = DuckDBStore()
        yield store, None
        store.close()
        return
    from storage.influx import InfluxStore
    from tests.storage_fixtures import provisioned_influxd

    with provisioned_influxd(directory) as (influxd, settings):
        influx = InfluxStore(settings)
        assert influxd.process is not None
        yield influx, influxd.process.pid
        influx.close()


def panel(data: CommuneData, settings: DashboardSettings) -> str:
    """The status callback's answer: the components, then Dash's JSON of them."""
    now = datetime.now(UTC)
    answer: str = to_json(status_panel(data, POISSY, "24h", lang="fr", settings=settings, now=now))  # type: ignore[no-untyped-call]
    return answer


def main() -> None:
    """Fill, time, print one line per store, size and step."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, nargs="+", default=[20, 112, 223])
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--store", nargs="+", default=["influxdb", "duckdb"])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    now = datetime.now(UTC)
    registry = CommuneRegistry.load()
    settings = DashboardSettings.model_validate({"basemap": "none"})
    print(f"uptime: {os.getloadavg()}")
    for kind in args.store:
        for devices in args.devices:
            with tempfile.TemporaryDirectory() as tmp, opened(kind, Path(tmp)) as (store, pid):
                fill(store, devices, now, args.hours)
                data = CommuneData(store, User(name="bench", communes=frozenset(["*"])), registry)
                every = settings.model_copy(update={"status_rows": 10_000})
                steps: dict[str, Callable[[], object]] = {
                    "devices()": partial(data.devices, [POISSY]),
                    "panel, every row (baseline)": partial(panel, data, every),
                    f"panel, {settings.status_rows} rows": partial(panel, data, settings),
                }
                for name, call in steps.items():
                    wall, cpu, server = measure(call, args.repeats, pid)
                    size = len(call()) if name.startswith("panel") else 0  # type: ignore[arg-type]
                    print(
                        f"{kind:8} {devices * len(Family):5} devices in the commune  {name:28}"
                        f" wall {wall:7.1f} ms  cpu {cpu:7.1f} ms  server cpu {server:6.1f} ms"
                        f"  answer {size / 1e3:6.0f} kB",
                        flush=True,
                    )
    print(f"uptime: {os.getloadavg()}")


if __name__ == "__main__":
    main()
