"""Traffic: a congestion level per road sensor and commune against each sensor's own habits.

A sensor's *typical profile* is, for each weekday and hour (Paris time), the median of its
hourly mean speed, occupancy and vehicle count over past weeks. The congestion level compares
the hour with that profile: what is normal at 08:00 on a Monday on that road is not what is
normal at 03:00 on a Sunday.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from processing.incremental import Dirty, IndexRunner, JobReport, day_and_history, in_starts
from processing.windows import PARIS
from sensors.catalogue import IndexSpec, aggregate_measurement, register_index
from sensors.families import Family

COMMUNE = "_commune"
PROFILE_HISTORY = timedelta(days=28)
"""The past weeks a sensor's typical profile is learned from."""
LABELS = ("fluide", "dense", "ralenti", "saturé", "bloqué")
SPEED_RATIO_LEVELS = (0.8, 0.6, 0.4, 0.2)
"""Speed as a share of the typical speed at or above which the level is 0, 1, 2, 3 (else 4)."""
OCCUPANCY_JAM = 0.3
"""Occupancy from which queues stand on the detector, when also 1.5x the typical one."""
MIN_PROFILE_SAMPLES = 2


def _hourly(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "time",
        "insee",
        "device_id",
        pl.col("averageVehicleSpeed_mean").alias("speed"),
        pl.col("occupancy_mean").alias("occupancy"),
        (pl.col("intensity_mean") * pl.col("intensity_count")).alias("intensity"),
    ).with_columns(
        pl.col("time").dt.convert_time_zone(PARIS).dt.weekday().alias("weekday"),
        pl.col("time").dt.convert_time_zone(PARIS).dt.hour().alias("hour"),
    )


def traffic_profile(history: pl.DataFrame) -> pl.DataFrame:
    """Typical speed, occupancy and intensity per sensor, weekday (1 = Monday) and Paris hour.

    ``history`` holds rows of the ``traffic_1h`` aggregates. A cell needs at least two past
    hours; ``weekday`` 0 rows are the all-days fallback for each hour, used while a sensor has
    less than two weeks of history.
    """
    hourly = _hourly(history)
    stats = [
        pl.col("speed").median().alias("typical_speed"),
        pl.col("occupancy").median().alias("typical_occupancy"),
        pl.col("intensity").median().alias("typical_intensity"),
        pl.len().alias("samples"),
    ]
    by_weekday = hourly.group_by("insee", "device_id", "weekday", "hour").agg(stats)
    any_day = (
        hourly.group_by("insee", "device_id", "hour")
        .agg(stats)
        .with_columns(pl.lit(0, pl.Int8).alias("weekday"))
    )
    return (
        pl.concat([by_weekday, any_day.select(by_weekday.columns)], how="vertical_relaxed")
        .filter(pl.col("samples") >= MIN_PROFILE_SAMPLES)
        .sort("insee", "device_id", "weekday", "hour")
    )


def _level(speed_ratio: pl.Expr, occupancy: pl.Expr, typical_occupancy: pl.Expr) -> pl.Expr:
    level: pl.Expr = pl.lit(len(SPEED_RATIO_LEVELS), dtype=pl.Int64)
    for value, bound in reversed(list(enumerate(SPEED_RATIO_LEVELS))):
        level = pl.when(speed_ratio >= bound).then(pl.lit(value, dtype=pl.Int64)).otherwise(level)
    jam = (occupancy >= OCCUPANCY_JAM) & (occupancy >= 1.5 * typical_occupancy)
    bumped = pl.when(jam.fill_null(False)).then(pl.min_horizontal(level + 1, pl.lit(4))).otherwise(level)
    return pl.when(speed_ratio.is_not_null()).then(bumped)


def traffic_congestion(hourly: pl.DataFrame, profile: pl.DataFrame) -> pl.DataFrame:
    """Congestion level (0 fluide .. 4 bloqué) per sensor and hour, and per commune.

    ``hourly`` holds rows of ``traffic_1h``; ``profile`` comes from ``traffic_profile`` over
    earlier weeks. ``speed_ratio`` is the hour's mean speed over the typical one; the level
    follows ``SPEED_RATIO_LEVELS``, one level worse when the detector's occupancy shows
    standing queues (``OCCUPANCY_JAM`` and 1.5x the typical occupancy). A sensor without a
    profile yet has a null level. The commune row (``device_id`` ``_commune``) weighs each
    sensor's speed ratio by its vehicle count.

    Columns: ``time``, ``insee``, ``device_id``, ``level``, ``label``, ``speed_ratio``,
    ``occupancy``, ``intensity`` (vehicles in the hour).
    """
    keys = ["insee", "device_id", "hour"]
    current = _hourly(hourly)
    by_weekday = profile.filter(pl.col("weekday") > 0).drop("samples")
    any_day = profile.filter(pl.col("weekday") == 0).drop("samples", "weekday")
    joined = current.join(by_weekday, on=[*keys, "weekday"], how="left").join(
        any_day, on=keys, how="left", suffix="_any"
    )
    typical_speed = pl.coalesce("typical_speed", "typical_speed_any")
    typical_occupancy = pl.coalesce("typical_occupancy", "typical_occupancy_any")
    per_sensor = joined.with_columns(
        pl.when(typical_speed > 0).then(pl.col("speed") / typical_speed).alias("speed_ratio"),
        typical_occupancy.alias("_typical_occupancy"),
    )
    per_sensor = per_sensor.with_columns(
        _level(pl.col("speed_ratio"), pl.col("occupancy"), pl.col("_typical_occupancy")).alias("level")
    )
    weight = pl.col("intensity").fill_null(0) + 1e-9
    commune = (
        per_sensor.filter(pl.col("speed_ratio").is_not_null())
        .group_by("time", "insee")
        .agg(
            pl.lit(COMMUNE).alias("device_id"),
            ((pl.col("speed_ratio") * weight).sum() / weight.sum()).alias("speed_ratio"),
            pl.col("occupancy").mean(),
            pl.col("intensity").sum(),
            pl.col("_typical_occupancy").mean(),
        )
        .with_columns(
            _level(pl.col("speed_ratio"), pl.col("occupancy"), pl.col("_typical_occupancy")).alias("level")
        )
    )
    columns = ["time", "insee", "device_id", "level", "speed_ratio", "occupancy", "intensity"]
    result = pl.concat([per_sensor.select(columns), commune.select(columns)])
    label = pl.col("level").replace_strict(list(range(5)), list(LABELS), default=None, return_dtype=pl.String)
    return (
        result.with_columns(label.alias("label"))
        .select("time", "insee", "device_id", "level", "label", "speed_ratio", "occupancy", "intensity")
        .sort("time", "insee", "device_id")
    )


def update_traffic_congestion(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
    """Recompute and write the ``traffic_congestion`` rows of the windows ``dirty`` names."""
    hours = dirty.starts("1h")
    source = aggregate_measurement("traffic", "1h")
    for day in dirty.days():
        found = day_and_history(
            runner, source, day, report, history=PROFILE_HISTORY, column="averageVehicleSpeed_mean"
        )
        if found is None:
            continue
        hourly, history = found
        profile = traffic_profile(history if history is not None else hourly.clear())
        out = traffic_congestion(hourly, profile).filter(in_starts(hours))
        report.windows += out.height
        runner.write("traffic_congestion", out, ["insee", "device_id"], report)


register_index(
    IndexSpec(
        name="traffic_congestion",
        family=Family.TRAFFIC,
        tags=("insee", "device_id"),
        shown=("level", "label", "speed_ratio", "occupancy", "intensity"),
        units={"level": "", "speed_ratio": "", "occupancy": "", "intensity": "véhicules"},
        staleness=timedelta(hours=1),
        compute=traffic_congestion,
        update=update_traffic_congestion,
    )
)
