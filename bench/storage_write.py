"""Writes into a local influxd: ``InfluxStore.write`` (serialise, batch, gzip, POST) against
``curl`` posting the same pre-serialised 5,000-line batches to the same server, in one run.

    .venv/bin/python -m bench.storage_write [--quick]

Each run writes into a fresh database, so every run does the same work (new series, new
shards). The store starts from a polars frame and pays for serialisation and compression; curl
starts from batches already serialised (and, in the gzip comparison, already compressed).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.storage_data import TAGS, air_quality_frame, header
from storage.config import InfluxSettings
from storage.frames import prepare
from storage.influx import InfluxStore, serialise
from storage.provision import provision
from tests.servers import Influxd

BATCH = 5_000


class Bench:
    """One influxd, fresh databases on demand."""

    def __init__(self, server: Influxd, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.runs = 0

    def fresh(self, gzip_level: int) -> InfluxSettings:
        self.runs += 1
        settings = InfluxSettings(url=self.server.url, database=f"bench{self.runs}", gzip_level=gzip_level)
        provision(settings)
        return settings

    def store(self, frame: pl.DataFrame, gzip_level: int) -> float:
        store = InfluxStore(self.fresh(gzip_level))
        start = time.perf_counter()
        report = store.write("air_quality", frame, tags=TAGS)
        elapsed = time.perf_counter() - start
        store.close()
        assert report.written == frame.height and not report.rejected, report.rejected[:3]
        return elapsed

    def curl(self, bodies: list[bytes], gzipped: bool) -> float:
        settings = self.fresh(0)
        url = f"{self.server.url}/write?db={settings.database}&rp=raw&precision=ns"
        lines = []
        for index, body in enumerate(bodies):
            path = self.workdir / f"batch{index}{'.gz' if gzipped else ''}"
            path.write_bytes(gzip.compress(body, compresslevel=1) if gzipped else body)
            if index:
                lines.append("next")
            lines += [f'url = "{url}"', f'data-binary = "@{path}"', 'header = "Content-Type: text/plain"']
            if gzipped:
                lines.append('header = "Content-Encoding: gzip"')
            lines += ['output = "/dev/null"', 'write-out = "%{http_code}\\n"']
        config = self.workdir / "curl.cfg"
        config.write_text("\n".join(lines) + "\n")
        start = time.perf_counter()
        # One curl process for every batch: one connection kept alive, as the store does.
        done = subprocess.run(["curl", "-sS", "-K", str(config)], capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - start
        codes = done.stdout.split()
        assert codes == ["204"] * len(bodies), codes[:5]
        return elapsed


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    args = parser.parse_args()
    rows = 200_000 if args.quick else 1_000_000
    frame = air_quality_frame(rows)
    prepared = prepare("air_quality", frame, TAGS)
    lines = serialise("air_quality", prepared.frame, prepared.tags, prepared.fields)
    bodies = [bytes(lines.body(i, min(i + BATCH, len(lines)))) for i in range(0, len(lines), BATCH)]
    with tempfile.TemporaryDirectory(prefix="bench-storage-write-") as tmp:
        server = Influxd(Path(tmp) / "influxd")
        server.start()
        try:
            bench = Bench(server, Path(tmp))
            bench.store(frame.head(20_000), 1)  # warm-up: connections, first shard
            results: dict[str, list[float]] = {
                "store gzip": [],
                "curl gzip": [],
                "store plain": [],
                "curl plain": [],
            }
            for _ in range(1 if args.quick else 2):
                results["curl gzip"].append(bench.curl(bodies, gzipped=True))
                results["store gzip"].append(bench.store(frame, 1))
                results["curl plain"].append(bench.curl(bodies, gzipped=False))
                results["store plain"].append(bench.store(frame, 0))
        finally:
            server.kill()
    best = {name: min(times) for name, times in results.items()}
    print(header("storage write"))
    print(
        f"{rows:,} air-quality rows (11 fields), batches of {BATCH:,} lines, local influxd 1.x, best of runs"
    )
    for name, seconds in best.items():
        print(f"{name:12} {seconds:7.2f}s = {rows / seconds:>10,.0f} rows/s")
    print(f"ratio store/curl, gzip level 1: {best['curl gzip'] / best['store gzip']:.0%}")
    print(f"ratio store/curl, uncompressed: {best['curl plain'] / best['store plain']:.0%}")


if __name__ == "__main__":
    main()
