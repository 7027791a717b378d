"""Line-protocol serialisation: rows/s of ``storage`` (polars, vectorised) against influxdb-client's
``Point`` objects, on the same rows, in one run; for wide rows (air quality: 2 tags, 10 fields)
and narrow rows (traffic: 2 tags, 3 fields of three types).

    .venv/bin/python -m bench.storage_lineprotocol [--quick]
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import polars as pl

from bench.storage_data import TAGS, air_quality_frame, best_of, header
from storage.frames import prepare
from storage.influx import serialise


def traffic_frame(rows: int) -> pl.DataFrame:
    """Narrow rows: an integer, a float and a boolean field."""
    base = air_quality_frame(rows).select("time", *TAGS, "pm25")
    return base.select(
        "time",
        *TAGS,
        intensity=(pl.col("pm25") * 7).cast(pl.Int64),
        averageVehicleSpeed=pl.col("pm25") * 3.3,
        congested=pl.col("pm25") > 5,
    )


def ours(measurement: str, frame: pl.DataFrame) -> int:
    """Frame -> checked -> line protocol bytes, as ``InfluxStore.write`` does before sending."""
    prepared = prepare(measurement, frame, TAGS)
    lines = serialise(measurement, prepared.frame, prepared.tags, prepared.fields)
    return len(lines.body())


def points(measurement: str, frame: pl.DataFrame) -> int:
    """influxdb-client: one ``Point`` per row, then ``to_line_protocol()`` (what its write API does)."""
    client: Any = importlib.import_module("influxdb_client")
    fields = [c for c in frame.columns if c not in ("time", *TAGS)]
    size = 0
    for row in frame.iter_rows(named=True):
        point = client.Point(measurement).tag("insee", row["insee"]).tag("device_id", row["device_id"])
        for name in fields:
            point = point.field(name, row[name])
        size += len(point.time(row["time"], client.WritePrecision.NS).to_line_protocol())
    return size


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    rows, point_rows = 200_000, 20_000  # per round
    print(header("storage line protocol"))
    print(
        f"{rounds} rounds; each serialises {rows:,} rows with storage, then {point_rows:,} with Point objects"
    )
    for name, measurement, frame in (
        ("wide (2 tags, 9 float + 1 int fields)", "air_quality", air_quality_frame(rows)),
        ("narrow (2 tags, int + float + bool fields)", "traffic", traffic_frame(rows)),
    ):
        small = frame.head(point_rows)
        width = ours(measurement, small) // point_rows
        ours_s = points_s = 0.0
        # Taking turns, round after round, lets both see the same load from the machine's neighbours.
        for _ in range(rounds):
            ours_s += best_of(1, lambda: ours(measurement, frame))  # noqa: B023
            points_s += best_of(1, lambda: points(measurement, small))  # noqa: B023
        ours_rate, points_rate = rounds * rows / ours_s, rounds * point_rows / points_s
        print(f"{name}, ~{width} bytes/line:")
        print(f"  storage (polars): {ours_rate:>10,.0f} rows/s")
        print(f"  influxdb Point:   {points_rate:>10,.0f} rows/s")
        print(f"  ratio: {ours_rate / points_rate:.1f}x")


if __name__ == "__main__":
    main()
