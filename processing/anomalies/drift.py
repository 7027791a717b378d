"""Drift anomalies: a device leaving, for hours, what its commune's neighbours and its own
history say it should read.

Per device and field, on hourly medians: the device's values in units of its own spread, a
reference from the commune's devices of the family (the median of their values in their own
units), a robust linear fit of the device on that reference (its gain and offset), and the
residual of that fit scaled by the family's spread of residuals at that hour and by the
device's own typical residual. A drift is an hour whose
residual is far beyond it, or two hours in a row that are beyond a lower mark in the same
direction."""

from __future__ import annotations

import polars as pl

from processing.anomalies.frame import (
    ANOMALY_SCHEMA,
    DEV,
    HOUR_NS,
    MAD_TO_SIGMA,
    AnomalyOptions,
    Prepared,
    empty_anomalies,
    new_group,
)
from sensors.families import Family

DRIFT_FIELDS: dict[str, tuple[str, ...]] = {
    Family.AIR_QUALITY.value: (
        "pm25",
        "pm10",
        "no2",
        "o3",
        "so2",
        "co",
        "co2",
        "temperature",
        "relativeHumidity",
    ),
    Family.TRAFFIC.value: ("averageVehicleSpeed", "occupancy"),
    Family.BUILDING.value: ("activePower", "temperature", "co2"),
    Family.CAMERA.value: ("deviceTemperature", "framesPerSecond"),
    Family.NETWORK.value: (
        "opticalRxPower",
        "opticalTxPower",
        "throughputIn",
        "throughputOut",
        "latency",
        "cpuLoad",
    ),
}
"""Measured, continuous fields of each family: the default fields of the drift detector. Counts
(vehicles, people) are left out: their hourly medians move by whole units."""

_BY = "_series"
"""One integer per device and field: windows over one key are cheaper than over two."""

_REFITS = 3
"""Times the fit is done again without the hours far off the line."""

_HOUR_SCALE_FLOOR = 0.01
"""Lowest spread of residuals at an hour, in units of the devices' own spreads: an hour when
every device sits at its fit exactly (a closed building at night) must not divide by zero."""


def _drift_fields(prep: Prepared, opts: AnomalyOptions) -> list[str]:
    wanted = opts.drift_fields if opts.drift_fields is not None else DRIFT_FIELDS.get(prep.family, ())
    return [name for name in wanted if name in prep.numeric_fields]


def _robust_scale(column: str) -> pl.Expr:
    """1.4826 x the median absolute deviation of ``column`` per device and field."""
    return (MAD_TO_SIGMA * (pl.col(column) - pl.col(column).median()).abs().median()).over(_BY)


def _fit(rows: pl.DataFrame, weight: pl.Expr) -> pl.DataFrame:
    """``rows`` with ``fit``: the weighted least-squares line of ``z`` on ``ref`` per device and
    field (its gain and offset against the commune)."""
    # The weight is a column first: a window expression inside another one is evaluated once
    # per group.
    rows = rows.with_columns(weight.cast(pl.Float64).alias("_weight"))
    w = pl.col("_weight")
    mean_ref = ((pl.col("ref") * w).sum() / w.sum()).over(_BY)
    mean_z = ((pl.col("z") * w).sum() / w.sum()).over(_BY)
    rows = rows.with_columns(mean_ref.alias("_mean_ref"), mean_z.alias("_mean_z"))
    covariance = (
        ((pl.col("ref") - pl.col("_mean_ref")) * (pl.col("z") - pl.col("_mean_z")) * w).sum().over(_BY)
    )
    variance = ((pl.col("ref") - pl.col("_mean_ref")) ** 2 * w).sum().over(_BY)
    gain = pl.when(variance > 0).then(covariance / variance).otherwise(0.0)
    fit = pl.col("_mean_z") + gain * (pl.col("ref") - pl.col("_mean_ref"))
    return rows.with_columns(fit.fill_nan(None).alias("fit"))


def scored_hours(prep: Prepared, opts: AnomalyOptions, hourly: pl.DataFrame) -> pl.DataFrame:
    """One row per device, field and hour compared: ``observed`` (the hourly median),
    ``expected`` (what the commune and the device's fit say) and ``score`` (the residual in
    units of the device's own typical residual)."""
    fields = _drift_fields(prep, opts)
    if not fields or hourly.height == 0:
        return pl.DataFrame(schema={DEV: pl.UInt32, "insee": pl.String, "field": pl.String, "hour": pl.Int64})
    hours = (
        prep.with_tags(hourly.select(DEV, "hour", *fields))
        .select(DEV, "insee", "hour", *fields)
        .unpivot(index=[DEV, "insee", "hour"], on=fields, variable_name="field", value_name="observed")
        .drop_nulls("observed")
        .filter(pl.col("observed").is_finite())
        .with_columns(pl.struct(DEV, "field").rank("dense").alias(_BY))
    )
    # Each device in units of its own spread, so that devices of different sizes (a 10 Gb/s
    # link and a 1 Gb/s one, a school and a town hall) make one reference.
    centre = pl.col("observed").median().over(_BY)
    spread = _robust_scale("observed")
    hours = hours.with_columns(centre.alias("_centre"), spread.alias("_spread")).filter(pl.col("_spread") > 0)
    hours = hours.with_columns(((pl.col("observed") - pl.col("_centre")) / pl.col("_spread")).alias("z"))
    commune = hours.group_by("insee", "field", "hour").agg(
        pl.col("z").median().alias("ref"), pl.len().alias("devices")
    )
    rows = hours.join(commune, on=["insee", "field", "hour"]).filter(
        pl.col("devices") >= opts.drift_min_devices
    )
    # Least squares, then again without the hours far off the line (the drift itself), until
    # the line no longer leans towards them.
    rows = _fit(rows, pl.lit(1.0))
    for _ in range(_REFITS):
        rows = rows.with_columns((pl.col("z") - pl.col("fit")).alias("_residual"))
        off = (pl.col("_residual") - pl.col("_residual").median().over(_BY)).abs()
        rows = _fit(rows, off <= 3 * _robust_scale("_residual"))
    residual = pl.col("z") - pl.col("fit")
    rows = rows.with_columns((residual - residual.median().over(_BY)).alias("_residual"))
    # How far devices stray from their fit changes with the hour (a building's CO2 follows its
    # own occupancy by day and sits at the outdoor level by night): each residual is first put in
    # units of the family's spread of residuals at that hour, then of the device's own typical
    # one, never below a share of the device's spread.
    at_hour = rows.group_by("field", "hour").agg(
        pl.max_horizontal(MAD_TO_SIGMA * pl.col("_residual").abs().median(), pl.lit(_HOUR_SCALE_FLOOR)).alias(
            "_hour_scale"
        )
    )
    rows = rows.join(at_hour, on=["field", "hour"]).with_columns(
        (pl.col("_residual") / pl.col("_hour_scale")).alias("_relative")
    )
    own = _robust_scale("_relative") * pl.col("_hour_scale")
    scale = pl.max_horizontal(own, pl.lit(opts.drift_scale_floor))
    return rows.with_columns(
        (pl.col("_residual") / scale).alias("score"),
        (pl.col("observed") - pl.col("_residual") * pl.col("_spread")).alias("expected"),
    ).select(DEV, "insee", "field", "hour", "observed", "expected", "score")


def find_drift(prep: Prepared, opts: AnomalyOptions, hourly: pl.DataFrame) -> pl.DataFrame:
    """Drift anomalies of ``prep``'s family from the hourly medians of every chunk (see
    ``processing.anomalies.detect_drift``)."""
    scored = scored_hours(prep, opts, hourly)
    if scored.height == 0:
        return empty_anomalies()
    last_hour = scored.group_by(DEV).agg(pl.col("hour").max().alias("last_hour"))
    scored = scored.sort(DEV, "field", "hour")
    # An hour beyond the run mark counts when the hour before or after it (the next clock hour)
    # is beyond it too, in the same direction: a ramp shows in two hourly medians or more.
    beyond = pl.col("score").abs() > opts.drift_run_threshold
    direction = pl.col("score").sign()
    same_before = (pl.col("hour").diff() == 1) & beyond.shift(1) & (direction == direction.shift(1))
    same_after = (pl.col("hour").diff(-1) == -1) & beyond.shift(-1) & (direction == direction.shift(-1))
    paired = beyond & (same_before.fill_null(False) | same_after.fill_null(False)).over(DEV, "field")
    drifting = (
        scored.filter((pl.col("score").abs() > opts.drift_threshold) | paired)
        .with_columns(
            new_group(
                [DEV, "field"],
                (pl.col("hour").diff() != 1) | (pl.col("score").sign() != pl.col("score").sign().shift(1)),
            )
        )
        .group_by("group", maintain_order=True)
        .agg(
            pl.col(DEV, "insee", "field").first(),
            pl.col("hour").first().alias("first_hour"),
            pl.col("hour").last().alias("end_hour"),
            # The first of the worst hours, so that ties always pick the same one.
            pl.col("observed", "expected").get(pl.col("score").abs().arg_max()),
            pl.col("score").abs().max(),
        )
        .join(last_hour, on=DEV)
    )
    if drifting.height == 0:
        return empty_anomalies()
    still = pl.col("end_hour") >= pl.col("last_hour")
    rows = drifting.select(
        (pl.col("first_hour") * HOUR_NS).cast(ANOMALY_SCHEMA["time"]).alias("time"),
        DEV,
        "field",
        pl.when(still).then(None).otherwise((pl.col("end_hour") + 1) * HOUR_NS).alias("end_ns"),
        "observed",
        "expected",
        "score",
        still.alias("open"),
    )
    return prep.with_tags(rows).with_columns(kind=pl.lit("drift"))
