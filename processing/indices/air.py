"""Air-quality indices: the French ATMO index (daily) and the European Air Quality Index (hourly).

Both start from hourly means per device. An hour is valid when readings cover at least 75% of
it, and a daily statistic needs at least 18 valid hours (75% of the day): the aggregation
criteria of Directive 2008/50/EC, annex XI, which the ATMO index inherits through the French
monitoring rules. A day or an hour without enough data gets a null sub-index, never a guess.

At commune level, the value of each pollutant is the worst of the commune's stations: the
index is a public warning, so one polluted street is not averaged away.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from processing.incremental import Dirty, IndexRunner, JobReport, day_range, in_starts, within
from processing.indices.scales import ATMO, EAQI, POLLUTANTS, Scale
from processing.windows import window_start
from sensors.catalogue import IndexSpec, register_index
from sensors.families import Family
from storage.base import TIME_DTYPE

COVERAGE = 0.75
"""Share of an hour (of the hours of a day) that data must cover for a valid mean."""
_HOUR_NS = 3_600_000_000_000


def hourly_means(
    readings: pl.DataFrame | pl.LazyFrame,
    fields: Sequence[str] = POLLUTANTS,
    *,
    reporting_period_s: float = 60.0,
    coverage: float = COVERAGE,
) -> pl.DataFrame:
    """Hourly mean of each field per device, null when the hour is not covered enough.

    Coverage is measured in slots of ``max(reporting_period_s, 60)`` seconds: an hour is valid
    when at least ``coverage`` of its slots hold a reading of the field. Fields missing from
    ``readings`` come out as null columns. Columns: ``time`` (hour start), ``insee``,
    ``device_id``, one Float64 per field.
    """
    partials = slot_partials(readings, fields, reporting_period_s=reporting_period_s)
    return means_from_partials(partials, fields, reporting_period_s=reporting_period_s, coverage=coverage)


def slot_ns(reporting_period_s: float) -> int:
    """Length of a coverage slot (ns): the reporting period, and never less than a minute."""
    return int(max(reporting_period_s, 60.0) * 1e9)


def slot_partials(
    readings: pl.DataFrame | pl.LazyFrame,
    fields: Sequence[str] = POLLUTANTS,
    *,
    reporting_period_s: float = 60.0,
) -> pl.DataFrame:
    """Per device and coverage slot, the sum and the count of each field's readings.

    Hourly means compose from them (:func:`means_from_partials`): a runner that keeps the
    partials of an hour recomputes only the slots new readings fall in. Columns: ``time`` (the
    hour), ``slot`` (:func:`slot_of`), ``insee``, ``device_id``, ``{field}_sum`` (Float64) and
    ``{field}_n`` (UInt32) for each field present.
    """
    lazy = readings.lazy().with_columns(pl.col("time").cast(TIME_DTYPE))
    names = set(lazy.collect_schema().names())
    present = [f for f in fields if f in names]
    sums = [pl.col(f).cast(pl.Float64).sum().alias(f"{f}_sum") for f in present]
    counts = [pl.col(f).count().cast(pl.UInt32).alias(f"{f}_n") for f in present]
    keys = [pl.col("time").dt.truncate("1h"), slot_of(reporting_period_s), "insee", "device_id"]
    return lazy.group_by(keys).agg(*sums, *counts).collect()


def slot_of(reporting_period_s: float) -> pl.Expr:
    """The coverage slot (a number) of each reading's ``time``."""
    return (pl.col("time").cast(TIME_DTYPE).cast(pl.Int64) // slot_ns(reporting_period_s)).alias("slot")


def means_from_partials(
    partials: pl.DataFrame,
    fields: Sequence[str] = POLLUTANTS,
    *,
    reporting_period_s: float = 60.0,
    coverage: float = COVERAGE,
) -> pl.DataFrame:
    """Hourly means per device from :func:`slot_partials` of the readings (see
    :func:`hourly_means`, which this computes)."""
    needed = coverage * (_HOUR_NS / slot_ns(reporting_period_s))
    present = [f for f in fields if f"{f}_n" in partials.columns]
    aggs = [
        pl.when((pl.col(f"{f}_n") > 0).sum() >= needed)
        .then(pl.col(f"{f}_sum").sum() / pl.col(f"{f}_n").sum())
        .alias(f)
        for f in present
    ]
    if not aggs:
        aggs = [pl.len().alias("_rows")]
    result = partials.group_by("time", "insee", "device_id").agg(aggs)
    missing = [pl.lit(None, dtype=pl.Float64).alias(f) for f in fields if f not in present]
    return (
        result.with_columns(missing)
        .select("time", "insee", "device_id", *(pl.col(f).cast(pl.Float64) for f in fields))
        .sort("time", "insee", "device_id")
    )


def _commune_sub_indices(per_device: pl.DataFrame, scale: Scale) -> pl.DataFrame:
    """A commune's value of each pollutant is its worst device's; then its sub-index on ``scale``."""
    return (
        per_device.group_by("time", "insee")
        .agg(pl.col(p).max() for p in POLLUTANTS)
        .with_columns(scale.sub_index(p, pl.col(p)).alias(f"sub_{p}") for p in POLLUTANTS)
    )


def _index_columns(scale: Scale, subs: Sequence[str], gate: pl.Expr | None = None) -> list[pl.Expr]:
    sub_cols = [pl.col(f"sub_{p}") for p in subs]
    worst = pl.max_horizontal(sub_cols)
    index = worst if gate is None else pl.when(gate).then(worst)
    # The responsible pollutant: the first (in the scale's order) whose sub-index is the worst.
    pollutant: pl.Expr = pl.lit(None, dtype=pl.String)
    for p in reversed(subs):
        pollutant = pl.when(pl.col(f"sub_{p}") == index).then(pl.lit(p)).otherwise(pollutant)
    return [
        index.alias("index"),
        scale.label(index).alias("label"),
        scale.color(index).alias("color"),
        pl.when(index.is_not_null()).then(pollutant).alias("pollutant"),
    ]


def atmo_daily(
    readings: pl.DataFrame | pl.LazyFrame,
    *,
    reporting_period_s: float = 60.0,
    coverage: float = COVERAGE,
    required: Sequence[str] = POLLUTANTS,
) -> pl.DataFrame:
    """The ATMO index of each commune and Paris day, from raw ``air_quality`` readings.

    Sub-indices: PM2.5 and PM10 from the daily mean, NO2, O3 and SO2 from the daily maximum of
    hourly means, each on the arrêté's scale; the index is the worst sub-index. A day is
    ``complete`` when every pollutant of ``required`` has a valid daily value somewhere in the
    commune; otherwise ``index``, ``label``, ``color`` and ``pollutant`` are null (the day shows
    as unavailable), and the sub-indices that could be computed are still given.

    Columns: ``time`` (Paris midnight, UTC), ``insee``, ``index``, ``label``, ``color``,
    ``complete``, ``pollutant``, ``sub_<pollutant>`` and the daily value ``<pollutant>`` (µg/m³).
    """
    hourly = hourly_means(readings, POLLUTANTS, reporting_period_s=reporting_period_s, coverage=coverage)
    return atmo_from_hourly(hourly, coverage=coverage, required=required)


def atmo_from_hourly(
    hourly: pl.DataFrame, *, coverage: float = COVERAGE, required: Sequence[str] = POLLUTANTS
) -> pl.DataFrame:
    """``atmo_daily`` from the device hourly means of ``hourly_means`` (every hour of the days).

    The runner keeps hourly means between runs, so that today's index needs only the new hours.
    """
    min_hours = math.ceil(coverage * 24)
    daily_stat = {"pm25": "mean", "pm10": "mean", "no2": "max", "o3": "max", "so2": "max"}
    per_device: list[pl.Expr] = []
    for p in POLLUTANTS:
        value = pl.col(p)
        stat = value.mean() if daily_stat[p] == "mean" else value.max()
        per_device.append(pl.when(value.count() >= min_hours).then(stat).alias(p))
    days = (
        hourly.with_columns(window_start(pl.col("time"), "1d").alias("time"))
        .group_by("time", "insee", "device_id")
        .agg(per_device)
        .pipe(_commune_sub_indices, ATMO)
    )
    complete = pl.all_horizontal([pl.col(f"sub_{p}").is_not_null() for p in required])
    return (
        days.with_columns(complete.alias("complete"))
        .with_columns(_index_columns(ATMO, POLLUTANTS, gate=pl.col("complete")))
        .select(
            "time",
            "insee",
            "index",
            "label",
            "color",
            "complete",
            "pollutant",
            *(f"sub_{p}" for p in POLLUTANTS),
            *POLLUTANTS,
        )
        .sort("time", "insee")
    )


def eaqi_hourly(
    readings: pl.DataFrame | pl.LazyFrame,
    *,
    reporting_period_s: float = 60.0,
    coverage: float = COVERAGE,
) -> pl.DataFrame:
    """The European Air Quality Index of each commune and hour, from raw ``air_quality`` readings.

    NO2, O3 and SO2 from the hourly mean; PM2.5 and PM10 from the 24-hour running mean ending
    with the hour, valid when at least 75% of those 24 hours are valid (EEA). The index is the
    worst available sub-index; an hour with no valid pollutant has a null index.

    Columns: ``time`` (hour start), ``insee``, ``index``, ``label``, ``color``, ``pollutant``,
    ``sub_<pollutant>`` and the value ``<pollutant>`` each sub-index comes from (µg/m³).
    """
    hourly = hourly_means(readings, POLLUTANTS, reporting_period_s=reporting_period_s, coverage=coverage)
    return eaqi_from_hourly(hourly, coverage=coverage)


def eaqi_from_hourly(hourly: pl.DataFrame, *, coverage: float = COVERAGE) -> pl.DataFrame:
    """``eaqi_hourly`` from the device hourly means of ``hourly_means`` (with the 23 hours before
    the first hour wanted, for the PM running means)."""
    min_hours = math.ceil(coverage * 24)
    running: list[pl.Expr] = []
    for p in ("pm25", "pm10"):
        mean = pl.col(p).rolling_mean_by("time", window_size="24h", min_samples=min_hours)
        running.append(mean.over("insee", "device_id").alias(p))
    return (
        hourly.sort("insee", "device_id", "time")
        .with_columns(running)
        .pipe(_commune_sub_indices, EAQI)
        .with_columns(_index_columns(EAQI, POLLUTANTS))
        .select(
            "time",
            "insee",
            "index",
            "label",
            "color",
            "pollutant",
            *(f"sub_{p}" for p in POLLUTANTS),
            *POLLUTANTS,
        )
        .sort("time", "insee")
    )


def update_atmo_daily(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
    """Recompute and write the ``atmo_daily`` rows of the windows ``dirty`` names."""
    # From hourly means kept between runs: only the hours with new readings are read again.
    for day in dirty.days():
        day_start, day_end = day_range(day)
        hourly = runner.air_hourly_means(day_start, day_end, dirty, report)
        if hourly.is_empty():
            continue
        out = within(atmo_from_hourly(hourly), day_start, day_end)
        report.windows += out.height
        runner.write("atmo_daily", out, ["insee"], report)


def update_eaqi_hourly(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
    """Recompute and write the ``eaqi_hourly`` rows of the windows ``dirty`` names."""
    # A reading weighs on the PM 24-hour running means of the 23 following hours too.
    spread = timedelta(hours=23)
    hours = dirty.starts("1h", spread)
    for day in dirty.days(spread):
        day_start, day_end = day_range(day)
        # Always the same span of hourly means for a day (the day and the 24 hours before it),
        # whichever hours are dirty: a backfill computes exactly the same running means.
        hourly = runner.air_hourly_means(day_start - timedelta(hours=24), day_end, dirty, report)
        # Rows are those of hours with means: a day without any (the day after, which the spread
        # reaches) has none, whatever the day before holds.
        if within(hourly, day_start, day_end).is_empty():
            continue
        out = within(eaqi_from_hourly(hourly), day_start, day_end).filter(in_starts(hours))
        report.windows += out.height
        runner.write("eaqi_hourly", out, ["insee"], report)


register_index(
    IndexSpec(
        name="atmo_daily",
        family=Family.AIR_QUALITY,
        tags=("insee",),
        shown=("index", "label", "color", "complete", "pollutant"),
        units={"index": "", **{f"sub_{p}": "" for p in ("pm25", "pm10", "no2", "o3", "so2")}},
        staleness=timedelta(days=2),
        compute=atmo_daily,
        update=update_atmo_daily,
        rule_name="atmo",
    )
)
register_index(
    IndexSpec(
        name="eaqi_hourly",
        family=Family.AIR_QUALITY,
        tags=("insee",),
        shown=("index", "label", "color", "pollutant"),
        units={"index": "", **{f"sub_{p}": "" for p in ("pm25", "pm10", "no2", "o3", "so2")}},
        staleness=timedelta(hours=3),
        compute=eaqi_hourly,
        update=update_eaqi_hourly,
        rule_name="eaqi",
    )
)
