"""Cameras: people counted and elevated-temperature counts per site and hour, and device health."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from processing.incremental import Dirty, IndexRunner, JobReport, in_starts
from sensors.catalogue import IndexSpec, register_index
from sensors.families import Family
from storage.base import TIME_DTYPE

COMMUNE = "_commune"
"""The ``device_id`` of commune-level rows."""


def camera_hourly(readings: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Hourly counts and health per camera, plus one commune row (``device_id`` ``_commune``).

    ``people`` and ``elevated_temperature`` sum the counts of the hour (each reading counts
    since the previous one). Health: ``online_ratio`` is the share of readings with the stream
    up, ``tampered`` whether any reading of the hour flagged tampering, ``fps_mean`` the mean
    frame rate, ``device_temperature_max`` the hottest housing temperature, ``readings`` how
    many readings arrived. The commune row sums the counts, averages ``online_ratio`` over
    cameras, and is ``tampered`` when any camera was.
    """
    lazy = readings.lazy()
    names = set(lazy.collect_schema().names())

    def column(name: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(name).cast(dtype) if name in names else pl.lit(None, dtype=dtype)

    per_camera = (
        lazy.with_columns(pl.col("time").cast(TIME_DTYPE).dt.truncate("1h"))
        .group_by("time", "insee", "device_id")
        .agg(
            column("peopleCount", pl.Int64()).sum().alias("people"),
            column("elevatedTemperatureCount", pl.Int64()).sum().alias("elevated_temperature"),
            column("online", pl.Float64()).mean().alias("online_ratio"),
            column("tampered", pl.Boolean()).any().alias("tampered"),
            column("framesPerSecond", pl.Float64()).mean().alias("fps_mean"),
            column("deviceTemperature", pl.Float64()).max().alias("device_temperature_max"),
            pl.len().cast(pl.Int64).alias("readings"),
        )
        .collect()
    )
    commune = per_camera.group_by("time", "insee").agg(
        pl.lit(COMMUNE).alias("device_id"),
        pl.col("people").sum(),
        pl.col("elevated_temperature").sum(),
        pl.col("online_ratio").mean(),
        pl.col("tampered").any(),
        pl.col("fps_mean").mean(),
        pl.col("device_temperature_max").max(),
        pl.col("readings").sum(),
    )
    return pl.concat([per_camera, commune.select(per_camera.columns)]).sort("time", "insee", "device_id")


def update_camera_hourly(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
    """Recompute and write the ``camera_hourly`` rows of the windows ``dirty`` names."""
    hours = dirty.starts("1h")
    for _, _, raw in runner.dirty_hours("camera", dirty, report):
        if raw.is_empty():
            continue
        out = camera_hourly(raw).filter(in_starts(hours))
        report.windows += out.height
        runner.write("camera_hourly", out, ["insee", "device_id"], report)


register_index(
    IndexSpec(
        name="camera_hourly",
        family=Family.CAMERA,
        tags=("insee", "device_id"),
        shown=("people", "elevated_temperature", "online_ratio", "tampered"),
        units={"people": "", "elevated_temperature": "", "online_ratio": "", "tampered": ""},
        staleness=timedelta(hours=3),
        compute=camera_hourly,
        update=update_camera_hourly,
    )
)
