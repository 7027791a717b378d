"""Drift anomalies: a device leaving, for hours, the median of its commune's devices, once its
own offset and gain against them are taken out."""

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

AMBIENT_FIELDS: dict[str, tuple[str, ...]] = {
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
}
"""Fields that devices of one commune should agree on (they measure the same air): the default
fields of the drift detector."""


def _drift_fields(prep: Prepared, opts: AnomalyOptions) -> list[str]:
    wanted = opts.drift_fields if opts.drift_fields is not None else AMBIENT_FIELDS.get(prep.family, ())
    return [name for name in wanted if name in prep.numeric_fields]


def find_drift(prep: Prepared, opts: AnomalyOptions, hourly: pl.DataFrame) -> pl.DataFrame:
    """Drift anomalies of ``prep``'s family from the hourly medians of every chunk (see
    ``processing.anomalies.detect_drift``)."""
    fields = _drift_fields(prep, opts)
    if not fields or hourly.height == 0:
        return empty_anomalies()
    hours = (
        prep.with_tags(hourly.select(DEV, "hour", *fields))
        .unpivot(index=[DEV, "insee", "hour"], on=fields, variable_name="field", value_name="observed")
        .drop_nulls("observed")
    )
    commune = hours.group_by("insee", "field", "hour").agg(
        pl.col("observed").median().alias("expected"), pl.len().alias("devices")
    )
    compared = (
        hours.join(commune, on=["insee", "field", "hour"])
        .filter(pl.col("devices") >= opts.drift_min_devices)
        .with_columns((pl.col("observed") - pl.col("expected")).alias("gap"))
    )
    if compared.height == 0:
        return empty_anomalies()
    # Devices of one commune differ by nature: an offset (siting, calibration) and a gain (a
    # station by a busy road sees more of every rush hour). Both are learned per device, robustly
    # (medians), and taken out: what remains, the gap, is what a drift adds.
    by_device = [DEV, "field"]
    own = pl.col("observed") - pl.col("observed").median().over(by_device)
    shared = pl.col("expected") - pl.col("expected").median().over(by_device)
    compared = compared.with_columns(own.alias("_own"), shared.alias("_shared"))
    moving = pl.col("_shared").abs() > pl.col("_shared").abs().median().over(by_device)
    gain = (
        pl.when(moving & (pl.col("_shared") != 0))
        .then(pl.col("_own") / pl.col("_shared"))
        .median()
        .over(by_device)
        .fill_null(1.0)
    )
    compared = compared.with_columns((pl.col("_own") - gain * pl.col("_shared")).alias("gap"))
    # The fleet's robust spread of that gap, per field: a drift is a gap far beyond it.
    spread = compared.group_by("field").agg(
        (MAD_TO_SIGMA * pl.col("gap").abs().median()).alias("spread"),
        (1e-6 * pl.col("expected").abs().median() + 1e-12).alias("floor"),
    )
    last_hour = hours.group_by(DEV).agg(pl.col("hour").max().alias("last_hour"))
    drifting = (
        compared.join(spread, on="field")
        .with_columns((pl.col("gap") / pl.max_horizontal("spread", "floor")).alias("score"))
        .filter(pl.col("score").abs() > opts.drift_threshold)
        .sort(DEV, "field", "hour")
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
            pl.len().alias("hours"),
            # The first of the worst hours, so that ties always pick the same one.
            pl.col("observed", "expected").get(pl.col("score").abs().arg_max()),
            pl.col("score").abs().max(),
        )
        .filter(pl.col("hours") >= opts.drift_min_hours)
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
