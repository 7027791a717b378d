"""Buildings: daily energy from the cumulative meter, and its deviation from the building's norm."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from processing.incremental import Dirty, IndexRunner, JobReport, day_and_history
from processing.windows import PARIS
from sensors.catalogue import IndexSpec, aggregate_measurement, register_index
from sensors.families import Family

BASELINE_WEEKS = 8
"""How many previous same weekdays the baseline looks at."""
MIN_BASELINE_DAYS = 2
"""Fewer previous same weekdays than this and there is no baseline (deviation is null)."""


def building_energy_daily(daily: pl.DataFrame, history: pl.DataFrame | None = None) -> pl.DataFrame:
    """Energy per building and Paris day, with the baseline of the same weekday and the deviation.

    ``daily`` and ``history`` are rows of the ``building_1d`` aggregates (``time`` at Paris
    midnight, ``insee``, ``device_id``, ``energy_increase``): the meter's increase over the day,
    meter resets already handled (processing.aggregates). ``history`` holds earlier days; the
    baseline of a day is the median energy of the same building on the same weekday over the
    ``BASELINE_WEEKS`` previous weeks (a median, so one holiday or one faulty day does not move
    it), from ``history`` and ``daily`` together. ``deviation`` is (energy - baseline) /
    baseline: +0.25 means 25% more than usual for that weekday.

    Columns: ``time``, ``insee``, ``device_id``, ``energy_kwh``, ``baseline_kwh``, ``deviation``.
    """
    columns = ["time", "insee", "device_id", "energy_increase"]
    parts = [daily.select(columns)]
    if history is not None and history.height:
        parts.insert(0, history.select(columns))
    days = (
        pl.concat(parts)
        .unique(["time", "insee", "device_id"], keep="last")
        .rename({"energy_increase": "energy_kwh"})
        .with_columns(pl.col("time").dt.convert_time_zone(PARIS).dt.weekday().alias("_weekday"))
        .sort("insee", "device_id", "_weekday", "time")
    )
    previous = (
        pl.col("energy_kwh")
        .shift(1)
        .rolling_median(window_size=BASELINE_WEEKS, min_samples=MIN_BASELINE_DAYS)
        .over("insee", "device_id", "_weekday")
    )
    # Same weekdays are a week apart; rows further apart than BASELINE_WEEKS weeks (a gap in the
    # data) still count, which is the better guess when the building was silent in between.
    result = days.with_columns(previous.alias("baseline_kwh")).with_columns(
        pl.when(pl.col("baseline_kwh") > 0)
        .then((pl.col("energy_kwh") - pl.col("baseline_kwh")) / pl.col("baseline_kwh"))
        .alias("deviation")
    )
    wanted = daily.select("time", "insee", "device_id")
    return (
        result.join(wanted, on=["time", "insee", "device_id"], how="semi")
        .select("time", "insee", "device_id", "energy_kwh", "baseline_kwh", "deviation")
        .sort("time", "insee", "device_id")
    )


def update_building_energy_daily(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
    """Recompute and write the ``building_energy_daily`` rows of the windows ``dirty`` names."""
    source = aggregate_measurement("building", "1d")
    for day in dirty.days():
        history = timedelta(weeks=BASELINE_WEEKS, days=1)
        found = day_and_history(runner, source, day, report, history=history, column="energy_increase")
        if found is None:
            continue
        out = building_energy_daily(*found)
        report.windows += out.height
        runner.write("building_energy_daily", out, ["insee", "device_id"], report)


register_index(
    IndexSpec(
        name="building_energy_daily",
        family=Family.BUILDING,
        tags=("insee", "device_id"),
        shown=("energy_kwh", "baseline_kwh", "deviation"),
        units={"energy_kwh": "kWh", "baseline_kwh": "kWh", "deviation": ""},
        staleness=timedelta(days=2),
        compute=building_energy_daily,
        update=update_building_energy_daily,
        from_daily_rows=True,
    )
)
