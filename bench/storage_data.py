"""Data and helpers shared by the storage benchmarks."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from storage.config import InfluxSettings
from storage.influx import InfluxStore
from storage.provision import provision
from tests.servers import Influxd

AIR_QUALITY_FIELDS = ["pm25", "pm10", "no2", "o3", "so2", "co", "co2", "temperature", "relativeHumidity"]
TAGS = ["insee", "device_id"]


def air_quality_frame(rows: int, *, devices: int = 2_000, end: datetime | None = None) -> pl.DataFrame:
    """``rows`` realistic raw air-quality readings (the shape ingest writes): two tags, nine float
    fields with full-precision values, ``received_at`` (Int64); 10 s apart per device, ending now."""
    end = end or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    idx = pl.int_range(0, rows, eager=True)
    steps = rows // devices + 1
    start = end - timedelta(seconds=10 * steps)
    times = pl.Series([start] * rows).dt.cast_time_unit("ns") + ((idx // devices) * 10_000).cast(
        pl.Duration("ms")
    )
    frame = pl.DataFrame(
        {
            "time": times,
            "insee": pl.Series(
                ["78498", "78160", "78321", "78672", "78172", "78005", "78015", "92049", "92012"]
            )[idx % devices % 9],
            "device_id": "aq-" + (idx % devices).cast(pl.String),
        }
    )
    noise = (idx.cast(pl.Float64) * 0.618033988749895) % 1.0
    for position, name in enumerate(AIR_QUALITY_FIELDS):
        frame = frame.with_columns((noise * (10 + position) + position / 3).alias(name))
    return frame.with_columns(received_at=times.dt.epoch("ns") + 1_500_000_000)


def best_of(repeats: int, action: Callable[[], object]) -> float:
    """The best wall time of ``repeats`` runs of ``action`` (the least disturbed by neighbours)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(values: list[float]) -> float:
    """The median."""
    return statistics.median(values)


def header(title: str) -> str:
    """The first line of a benchmark's output: what, when, on what, under which load."""
    load = os.getloadavg()[0]
    return f"{title}  {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average {load:.1f}"


@contextlib.contextmanager
def local_influx(prefix: str, database: str = "bench") -> Iterator[tuple[Influxd, InfluxStore]]:
    """A real influxd in a temporary directory, ``database`` provisioned, and a store on it; the
    store is closed and the server killed at the end."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        server = Influxd(Path(tmp) / "influxd")
        server.start()
        try:
            settings = InfluxSettings(url=server.url, database=database)
            provision(settings)
            store = InfluxStore(settings)
            try:
                yield server, store
            finally:
                store.close()
        finally:
            server.kill()
