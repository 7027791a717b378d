"""Network equipment: availability, optical power margin and error rate per device and hour."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from processing.aggregates import with_counter_increases
from processing.incremental import Dirty, IndexRunner, JobReport, in_starts, within
from sensors.catalogue import IndexSpec, register_index
from sensors.families import Family
from storage.base import TIME_DTYPE

COMMUNE = "_commune"
RX_SENSITIVITY_DBM = -27.0
"""Receiver sensitivity the margin is measured against: the ONU receiver of a GPON class B+
optical budget (ITU-T G.984.2 Amd. 1). Set it to your optics' datasheet value."""
_COUNTERS = ("inErrors", "crcErrors")


def network_health(
    readings: pl.DataFrame | pl.LazyFrame,
    *,
    rx_sensitivity_dbm: float = RX_SENSITIVITY_DBM,
) -> pl.DataFrame:
    """Hourly health of each network device, plus one commune row (``device_id`` ``_commune``).

    ``availability``: share of the hour's readings with the link up (readings come at a regular
    period, so this is the share of time). ``rx_margin_db``: the weakest received optical power
    of the hour minus ``rx_sensitivity_dbm``; below about 3 dB a fibre link is close to failing.
    ``errors``: increase of the inbound and CRC error counters over the hour (counter resets
    handled as in processing.aggregates), ``error_rate`` the same per second of the hour.
    The commune row averages availability, keeps the worst margin, and sums the errors.
    Readings of the hour before the first one should be included when available: the first
    increase of each device needs its previous reading.
    """
    frame = readings.lazy().collect() if isinstance(readings, pl.LazyFrame) else readings
    frame = frame.with_columns(pl.col("time").cast(TIME_DTYPE))
    counters = [c for c in _COUNTERS if c in frame.columns]
    frame = with_counter_increases(frame, counters, device="device_id")
    increase = pl.sum_horizontal([pl.col(f"_inc_{c}") for c in counters]) if counters else pl.lit(None)
    link = pl.col("linkUp").cast(pl.Float64) if "linkUp" in frame.columns else pl.lit(None, dtype=pl.Float64)
    rx = (
        pl.col("opticalRxPower").cast(pl.Float64)
        if "opticalRxPower" in frame.columns
        else pl.lit(None, dtype=pl.Float64)
    )
    per_device = (
        frame.with_columns(increase.cast(pl.Float64).alias("_errors"), pl.col("time").dt.truncate("1h"))
        .group_by("time", "insee", "device_id")
        .agg(
            link.mean().alias("availability"),
            (rx.min() - rx_sensitivity_dbm).alias("rx_margin_db"),
            pl.col("_errors").sum().alias("errors"),
        )
        .with_columns((pl.col("errors") / 3600.0).alias("error_rate"))
    )
    commune = per_device.group_by("time", "insee").agg(
        pl.lit(COMMUNE).alias("device_id"),
        pl.col("availability").mean(),
        pl.col("rx_margin_db").min(),
        pl.col("errors").sum(),
        pl.col("error_rate").sum(),
    )
    return pl.concat([per_device, commune.select(per_device.columns)]).sort("time", "insee", "device_id")


def update_network_health(runner: IndexRunner, dirty: Dirty, report: JobReport) -> None:
    """Recompute and write the ``network_health`` rows of the windows ``dirty`` names."""
    hours = dirty.starts("1h")
    for start, end, raw in runner.dirty_hours("network", dirty, report):
        if raw.is_empty():
            continue
        out = within(network_health(raw), start, end).filter(in_starts(hours))
        report.windows += out.height
        runner.write("network_health", out, ["insee", "device_id"], report)


register_index(
    IndexSpec(
        name="network_health",
        family=Family.NETWORK,
        tags=("insee", "device_id"),
        shown=("availability", "rx_margin_db", "error_rate"),
        units={"availability": "", "rx_margin_db": "dB", "error_rate": ""},
        staleness=timedelta(hours=3),
        compute=network_health,
        update=update_network_health,
    )
)
