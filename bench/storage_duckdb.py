"""The embedded store: ``DuckDBStore`` write and read of realistic rows, against DuckDB itself doing
the bare minimum (``CREATE TABLE AS`` from the Arrow table; ``SELECT *`` to Arrow) in one run.

    .venv/bin/python -m bench.storage_duckdb [--quick]

The store does more than the baseline: it checks the rows, merges duplicates, checks overlaps
with stored rows (last write wins), and reads sorted by time and tags with UTC timestamps.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl

from bench.storage_data import TAGS, air_quality_frame, best_of, header
from storage.duckdb_store import DuckDBStore


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200,000 rows instead of 1,000,000")
    args = parser.parse_args()
    rows = 200_000 if args.quick else 1_000_000
    frame = air_quality_frame(rows)
    start, end = frame["time"].min(), frame["time"].max()
    assert isinstance(start, datetime) and isinstance(end, datetime)
    window = {"start": start, "end": end + timedelta(seconds=1)}
    runs = 0
    with tempfile.TemporaryDirectory(prefix="bench-storage-duckdb-") as tmp:

        def fresh() -> Path:
            nonlocal runs
            runs += 1
            return Path(tmp) / f"run{runs}.duckdb"

        def store_write() -> DuckDBStore:
            store = DuckDBStore(fresh())
            assert store.write("air_quality", frame, tags=TAGS).written == rows
            return store

        def bare_write() -> duckdb.DuckDBPyConnection:
            conn = duckdb.connect(str(fresh()))
            arrow = frame.with_columns(pl.col("time").dt.epoch("ns")).to_arrow()
            conn.register("batch", arrow)
            conn.execute("CREATE TABLE air_quality AS SELECT * FROM batch")
            return conn

        repeats = 2 if args.quick else 3
        store_w = min(best_of(1, store_write) for _ in range(repeats))
        bare_w = min(best_of(1, bare_write) for _ in range(repeats))
        store = store_write()
        conn = bare_write()
        store_r = best_of(repeats, lambda: store.read("air_quality", **window))  # type: ignore[arg-type]
        bare_r = best_of(
            repeats, lambda: pl.from_arrow(conn.sql("SELECT * FROM air_quality").to_arrow_table())
        )
        store.close()
        conn.close()
    print(header("storage duckdb"))
    print(f"{rows:,} air-quality rows (2 tags, 10 fields), a fresh file per write, best of {repeats}")
    print(f"write: DuckDBStore {store_w:6.2f}s = {rows / store_w:>10,.0f} rows/s; bare CTAS {bare_w:6.2f}s")
    print(f"read:  DuckDBStore {store_r:6.2f}s = {rows / store_r:>10,.0f} rows/s; bare SELECT {bare_r:6.2f}s")
    print(f"ratio store/bare: write {bare_w / store_w:.0%}, read {bare_r / store_r:.0%}")


if __name__ == "__main__":
    main()
