"""Offline anomalies: devices silent for several reporting periods; open while still silent."""

from __future__ import annotations

import polars as pl

from processing.anomalies.frame import (
    DEV,
    FIRST,
    SECOND_NS,
    WHOLE_DEVICE,
    AnomalyOptions,
    Prepared,
    empty_anomalies,
)


def find_offline(prep: Prepared, opts: AnomalyOptions) -> pl.DataFrame:
    """Offline anomalies of one chunk (see ``processing.anomalies.detect_offline``)."""
    frame = prep.frame
    if frame.height == 0:
        return empty_anomalies()
    default_ns = int(prep.spec.reporting_period_s * SECOND_NS)
    gap = pl.when(~pl.col(FIRST)).then(pl.col("time").diff().dt.total_nanoseconds())
    gaps = frame.select(DEV, "time", gap.alias("gap"))
    periods = gaps.group_by(DEV, maintain_order=True).agg(
        pl.col("gap").median().alias("median"),
        pl.len().alias("readings"),
        pl.col("time").last().alias("last"),
    )
    periods = periods.with_columns(
        pl.when((pl.col("readings") >= opts.offline_min_readings) & (pl.col("median") > 0))
        .then(pl.col("median"))
        .otherwise(default_ns)
        .cast(pl.Float64)
        .alias("period")
    )
    shortest = periods["period"].min()
    assert isinstance(shortest, float)
    closed = (
        gaps.filter(pl.col("gap") > opts.offline_periods * shortest)
        .join(periods.select(DEV, "period"), on=DEV)
        .filter(pl.col("gap") > opts.offline_periods * pl.col("period"))
        .select(
            (pl.col("time") - pl.duration(nanoseconds=pl.col("gap"))).alias("time"),
            DEV,
            pl.col("time").dt.epoch("ns").alias("end_ns"),
            (pl.col("gap") / SECOND_NS).alias("observed"),
            (pl.col("period") / SECOND_NS).alias("expected"),
            (pl.col("gap") / pl.col("period")).alias("score"),
            pl.lit(False).alias("open"),
        )
    )
    now_ns = prep.now_ns
    silence = pl.lit(now_ns) - pl.col("last").dt.epoch("ns")
    still = periods.filter(silence > opts.offline_periods * pl.col("period")).select(
        pl.col("last").alias("time"),
        DEV,
        pl.lit(None, dtype=pl.Int64).alias("end_ns"),
        (silence / SECOND_NS).alias("observed"),
        (pl.col("period") / SECOND_NS).alias("expected"),
        (silence / pl.col("period")).alias("score"),
        pl.lit(True).alias("open"),
    )
    rows = pl.concat([closed, still])
    return prep.with_tags(rows).with_columns(kind=pl.lit("offline"), field=pl.lit(WHOLE_DEVICE))
