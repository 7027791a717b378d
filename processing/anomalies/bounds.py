"""Out-of-bounds anomalies: values outside the contract's physical bounds, found in the readings
or refused by ingest (``rejected_readings``)."""

from __future__ import annotations

import math

import polars as pl

from processing.anomalies.frame import (
    ANOMALY_SCHEMA,
    DEV,
    SECOND_NS,
    AnomalyOptions,
    Prepared,
    empty_anomalies,
    new_group,
)


def out_of_bounds_points(prep: Prepared) -> pl.DataFrame:
    """Readings of ``prep`` outside their field's bounds: ``time, insee, device_id, field, value``."""
    points: list[pl.DataFrame] = [empty_points()]
    for row in _bounds_table(prep).iter_rows(named=True):
        name, low, high = row["field"], row["low"], row["high"]
        if name not in prep.numeric_fields:
            continue
        value = pl.col(name)
        outside = prep.frame.filter((value < low) | (value > high))
        if outside.height:
            points.append(
                prep.with_tags(outside.select("time", DEV, value.alias("value"))).select(
                    "time", "insee", "device_id", pl.lit(name).alias("field"), "value"
                )
            )
    return pl.concat(points)


def empty_points() -> pl.DataFrame:
    """No out-of-bounds reading: the columns of ``out_of_bounds_points``."""
    return pl.DataFrame(
        schema={
            "time": ANOMALY_SCHEMA["time"],
            "insee": pl.String,
            "device_id": pl.String,
            "field": pl.String,
            "value": pl.Float64,
        }
    )


def merge_out_of_bounds(
    prep: Prepared, opts: AnomalyOptions, found: list[pl.DataFrame], rejected: pl.DataFrame | None
) -> pl.DataFrame:
    """Out-of-bounds readings (found in the frames or refused by ingest) merged into anomalies."""
    points = list(found)
    if rejected is not None and rejected.height:
        points.append(_rejected_points(prep, rejected))
    points = [p for p in points if p.height]
    if not points:
        return empty_anomalies()
    bounds = _bounds_table(prep)
    merge_ns = int(opts.out_of_bounds_merge_s * SECOND_NS)
    excess = pl.max_horizontal(pl.col("low") - pl.col("value"), pl.col("value") - pl.col("high"))
    merged = (
        pl.concat(points)
        .join(bounds, on="field")
        .with_columns(
            excess.alias("excess"),
            pl.when(pl.col("value") < pl.col("low")).then("low").otherwise("high").alias("bound"),
        )
        .sort("insee", "device_id", "field", "time")
        .with_columns(
            new_group(
                ["insee", "device_id", "field"], pl.col("time").diff().dt.total_nanoseconds() > merge_ns
            )
        )
        .group_by("group", maintain_order=True)
        .agg(
            pl.col("time").first(),
            pl.col("time").last().dt.epoch("ns").alias("end_ns"),
            pl.col("insee", "device_id", "field").first(),
            # The first of the worst readings, so that ties always pick the same one.
            pl.col("value").get(pl.col("excess").arg_max()).alias("observed"),
            pl.col("bound").get(pl.col("excess").arg_max()).alias("expected"),
            (pl.col("excess") / (pl.col("high") - pl.col("low"))).max().alias("score"),
        )
    )
    return merged.with_columns(
        family=pl.lit(prep.family), kind=pl.lit("out_of_bounds"), open=pl.lit(False)
    ).drop("group")


def _bounds_table(prep: Prepared) -> pl.DataFrame:
    """One row per bounded numeric field of the family: ``field``, ``low``, ``high``."""
    rows = [
        (
            f.name,
            f.minimum if f.minimum is not None else -math.inf,
            f.maximum if f.maximum is not None else math.inf,
        )
        for f in prep.spec.fields
        if f.kind in ("float", "int") and (f.minimum is not None or f.maximum is not None)
    ]
    return pl.DataFrame(
        rows, schema={"field": pl.String, "low": pl.Float64, "high": pl.Float64}, orient="row"
    )


def _rejected_points(prep: Prepared, rejected: pl.DataFrame) -> pl.DataFrame:
    """The ``out_of_bounds`` rows of ``rejected_readings`` that belong to this family."""
    needed = ("time", "insee", "family", "device_id", "reason", "field", "value")
    missing = [name for name in needed if name not in rejected.columns]
    if missing:
        raise ValueError(f"rejected readings lack the column(s) {', '.join(missing)}")
    time = pl.col("time")
    if isinstance(rejected.schema["time"], pl.Datetime) and rejected.schema["time"].time_zone is None:
        time = time.dt.replace_time_zone("UTC")
    return rejected.filter(
        (pl.col("family") == prep.family)
        & (pl.col("reason") == "out_of_bounds")
        & pl.col("value").is_not_null()
        & pl.col("field").is_in(list(prep.numeric_fields) + [f.name for f in prep.spec.fields])
    ).select(
        time.cast(ANOMALY_SCHEMA["time"]).alias("time"),
        pl.col("insee").cast(pl.String),
        pl.col("device_id").cast(pl.String),
        pl.col("field").cast(pl.String),
        pl.col("value").cast(pl.Float64),
    )
