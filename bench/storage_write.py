"""Writes into a local influxd: ``InfluxStore.write`` (serialise, batch, gzip, POST) against
``curl`` posting the same pre-serialised 5,000-line batches to the same server, in one run.

    .venv/bin/python -m bench.storage_write [--quick]

Each run writes into a fresh database, so every run does the same work (new series, new
shards). The store starts from a polars frame and pays for serialisation and compression; curl
starts from batches already serialised (and, in the gzip comparison, already compressed).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import polars as pl
from isal import igzip

from bench.storage_data import TAGS, air_quality_frame, header
from storage.config import InfluxSettings
from storage.frames import prepare
from storage.influx import InfluxStore, serialise
from storage.provision import provision
from tests.servers import Influxd

BATCH = 5_000


class Bench:
    """One influxd; each contender writes into its own database, chunk after chunk."""

    def __init__(self, server: Influxd, workdir: Path) -> None:
        self.server = server
        self.workdir = workdir
        self.stores: dict[int, InfluxStore] = {}
        self.curl_urls: dict[bool, str] = {}
        self.files = 0
        self.client_cpu: dict[int, float] = {}
        """CPU seconds this process spent in the store's writes (all threads), per gzip level."""

    def _database(self, name: str) -> InfluxSettings:
        settings = InfluxSettings(url=self.server.url, database=name)
        provision(settings)
        return settings

    def store(self, frame: pl.DataFrame, gzip_level: int) -> float:
        """Seconds for ``InfluxStore.write`` of ``frame`` (serialise, batch, compress, send)."""
        if gzip_level not in self.stores:
            settings = self._database(f"store_gzip{gzip_level}").model_copy(update={"gzip_level": gzip_level})
            self.stores[gzip_level] = InfluxStore(settings)
        start, cpu = time.perf_counter(), time.process_time()
        report = self.stores[gzip_level].write("air_quality", frame, tags=TAGS)
        elapsed = time.perf_counter() - start
        self.client_cpu[gzip_level] = self.client_cpu.get(gzip_level, 0.0) + time.process_time() - cpu
        assert report.written == frame.height and not report.rejected, report.rejected[:3]
        return elapsed

    def curl(self, bodies: list[bytes], gzipped: bool) -> float:
        """Seconds for one curl process posting ``bodies`` (already serialised) over one connection."""
        if gzipped not in self.curl_urls:
            database = self._database(f"curl_gzip{int(gzipped)}").database
            self.curl_urls[gzipped] = f"{self.server.url}/write?db={database}&rp=raw&precision=ns"
        url = self.curl_urls[gzipped]
        lines = []
        for index, body in enumerate(bodies):
            self.files += 1
            path = self.workdir / f"batch{self.files}"
            path.write_bytes(igzip.compress(body, compresslevel=1) if gzipped else body)
            if index:
                lines.append("next")
            lines += [f'url = "{url}"', f'data-binary = "@{path}"', 'header = "Content-Type: text/plain"']
            if gzipped:
                lines.append('header = "Content-Encoding: gzip"')
            lines += ['output = "/dev/null"', 'write-out = "%{http_code}\\n"']
        config = self.workdir / "curl.cfg"
        config.write_text("\n".join(lines) + "\n")
        start = time.perf_counter()
        done = subprocess.run(["curl", "-sS", "-K", str(config)], capture_output=True, text=True, check=True)
        elapsed = time.perf_counter() - start
        codes = done.stdout.split()
        assert codes == ["204"] * len(bodies), codes[:5]
        return elapsed


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="100,000 rows instead of 400,000")
    args = parser.parse_args()
    rows = 100_000 if args.quick else 400_000
    chunk = 20_000  # contenders take turns every chunk, so both see the same neighbours' load
    frame = air_quality_frame(rows)
    totals = {"store gzip": 0.0, "curl gzip": 0.0, "store plain": 0.0, "curl plain": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-storage-write-") as tmp:
        server = Influxd(Path(tmp) / "influxd")
        server.start()
        try:
            bench = Bench(server, Path(tmp))
            for turn, offset in enumerate(range(0, rows, chunk)):
                part = frame.slice(offset, chunk)
                prepared = prepare("air_quality", part, TAGS)
                lines = serialise("air_quality", prepared.frame, prepared.tags, prepared.fields)
                bodies = [
                    bytes(lines.body(i, min(i + BATCH, len(lines)))) for i in range(0, len(lines), BATCH)
                ]
                contenders: list[tuple[str, bool, int]] = [
                    ("store gzip", False, 1),
                    ("curl gzip", True, 1),
                    ("store plain", False, 0),
                    ("curl plain", True, 0),
                ]
                if turn % 2:
                    contenders.reverse()
                for name, is_curl, level in contenders:
                    totals[name] += (
                        bench.curl(bodies, gzipped=bool(level)) if is_curl else bench.store(part, level)
                    )
        finally:
            server.kill()
    print(header("storage write"))
    print(
        f"{rows:,} air-quality rows (11 fields) in turns of {chunk:,}, {BATCH:,}-line batches, local influxd"
    )
    for name, seconds in totals.items():
        print(f"{name:12} {seconds:7.2f}s = {rows / seconds:>10,.0f} rows/s")
    for level, name in ((1, "store gzip"), (0, "store plain")):
        cpu = bench.client_cpu[level]
        print(f"{name}: client CPU {cpu:.2f}s = {cpu / totals[name]:.0%} of its wall time")
    print(f"ratio store/curl, gzip level 1: {totals['curl gzip'] / totals['store gzip']:.0%}")
    print(f"ratio store/curl, uncompressed: {totals['curl plain'] / totals['store plain']:.0%}")


if __name__ == "__main__":
    main()
