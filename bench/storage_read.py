"""Reading one measurement into polars: ``InfluxStore.read`` against a bare HTTP GET of the same
CSV answer parsed by ``polars.read_csv``, on the same local influxd, in one run.

    .venv/bin/python -m bench.storage_read [--quick]

``--quick`` reads 200,000 points instead of 1,000,000. A point is one row of one field here
(``fields=["pm25"]``), as a dashboard or a processing job reads one field over a range.
"""

from __future__ import annotations

import argparse
import http.client
import io
import urllib.parse
from datetime import datetime, timedelta

import polars as pl

from bench.storage_data import TAGS, air_quality_frame, best_of, header, local_influx
from storage import influxql
from storage.base import epoch_ns
from tests.servers import Influxd


def bare_get(server: Influxd, query: str, database: str) -> pl.DataFrame:
    """GET /query as CSV with http.client, then polars.read_csv with its own type inference."""
    params = urllib.parse.urlencode({"db": database, "q": query, "epoch": "ns"})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("GET", f"/query?{params}", headers={"Accept": "application/csv"})
    body = conn.getresponse().read()
    conn.close()
    return pl.read_csv(io.BytesIO(body))


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="200,000 points instead of 1,000,000")
    args = parser.parse_args()
    rows = 200_000 if args.quick else 1_000_000
    frame = air_quality_frame(rows).select("time", *TAGS, "pm25")
    with local_influx("bench-storage-read-") as (server, store):
        assert store.write("air_quality", frame, tags=TAGS).written == rows
        start = frame["time"].min()
        end = frame["time"].max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        end += timedelta(seconds=1)
        query = (
            f'SELECT "pm25"::field, *::tag FROM {influxql.source("bench", "raw", "air_quality")} '
            f"WHERE {influxql.time_range(epoch_ns(start), epoch_ns(end))}"
        )
        got = store.read("air_quality", start=start, end=end, fields=["pm25"])
        assert got.height == rows, got.height
        assert bare_get(server, query, "bench").height == rows
        repeats = 2 if args.quick else 3
        bare_s: list[float] = []
        store_s: list[float] = []
        for _ in range(repeats):  # alternate, so both see the same neighbours
            bare_s.append(best_of(1, lambda: bare_get(server, query, "bench")))
            store_s.append(
                best_of(1, lambda: store.read("air_quality", start=start, end=end, fields=["pm25"]))
            )
    bare, ours = min(bare_s), min(store_s)
    print(header("storage read"))
    print(f"{rows:,} points of one field, 2,000 series, local influxd 1.x, best of {repeats}")
    print(f"bare GET + polars.read_csv: {bare:6.2f}s = {rows / bare:>10,.0f} points/s")
    print(f"InfluxStore.read:           {ours:6.2f}s = {rows / ours:>10,.0f} points/s (typed, UTC, sorted)")
    print(f"ratio store/bare: {bare / ours:.0%}")


if __name__ == "__main__":
    main()
