"""Line-protocol serialisation: rows/s of ``storage`` (polars, vectorised) against influxdb-client's
``Point`` objects, on the same realistic air-quality rows, in one run.

    .venv/bin/python -m bench.storage_lineprotocol [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

import polars as pl

from bench.storage_data import AIR_QUALITY_FIELDS, TAGS, air_quality_frame, best_of, header
from storage.frames import prepare
from storage.influx import serialise


def ours(frame: pl.DataFrame) -> int:
    """Frame -> checked -> line protocol bytes, as ``InfluxStore.write`` does before sending."""
    prepared = prepare("air_quality", frame, TAGS)
    lines = serialise("air_quality", prepared.frame, prepared.tags, prepared.fields)
    return len(lines.body())


def points(frame: pl.DataFrame) -> int:
    """influxdb-client: one ``Point`` per row, then ``to_line_protocol()`` (what its write API does)."""
    import importlib

    client: Any = importlib.import_module("influxdb_client")
    Point, WritePrecision = client.Point, client.WritePrecision  # noqa: N806 (class names)

    size = 0
    columns = frame.columns
    for row in frame.iter_rows():
        values = dict(zip(columns, row, strict=True))
        point = Point("air_quality").tag("insee", values["insee"]).tag("device_id", values["device_id"])
        for name in AIR_QUALITY_FIELDS:
            point = point.field(name, values[name])
        point = point.field("received_at", values["received_at"]).time(values["time"], WritePrecision.NS)
        size += len(point.to_line_protocol())
    return size


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller frames, fewer repeats")
    args = parser.parse_args()
    rows = 200_000 if args.quick else 1_000_000
    point_rows = 20_000 if args.quick else 100_000
    frame = air_quality_frame(rows)
    small = frame.head(point_rows)
    ours(small)  # warm-up
    ours_s = best_of(2 if args.quick else 3, lambda: ours(frame))
    points_s = best_of(1, lambda: points(small))
    ours_rate = rows / ours_s
    points_rate = point_rows / points_s
    print(header("storage line protocol"))
    width = ours(small) // point_rows
    print(f"rows: 2 tags, {len(AIR_QUALITY_FIELDS)} float fields + 1 integer field, ~{width} bytes/line")
    print(f"storage (polars):      {rows:>9,} rows in {ours_s:.3f}s = {ours_rate:>10,.0f} rows/s")
    print(f"influxdb-client Point: {point_rows:>9,} rows in {points_s:.3f}s = {points_rate:>10,.0f} rows/s")
    print(f"ratio: {ours_rate / points_rate:.1f}x")


if __name__ == "__main__":
    main()
