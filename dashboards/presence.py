"""Whether each device is online: the one answer the device tables, the overview counts and the
device page share, so that no page says "en ligne" while the anomalies or alerts say otherwise.

A device is offline when any of these says so:

* ``silence``: silent for more than ``online_after_periods`` of its family's reporting periods;
* ``anomaly``: processing has an open ``offline`` anomaly for it (its own threshold, measured on
  the device's observed period);
* ``alert``: an alert about it is firing under an offline rule (the rule's own ``silence``).

Each detector has its own delay, so taking the first that fires is what keeps the pages
consistent with each other, whichever answers first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import polars as pl

from dashboards.access import CommuneData
from dashboards.timerange import TimeRange
from storage.base import TIME

OPEN_ANOMALY_LOOKBACK = timedelta(days=7)
"""How far back an offline anomaly still open is looked for (older ones are silences anyway)."""
REASONS = ("silence", "anomaly", "alert")


def online_flags(devices: pl.DataFrame, now: datetime, online_after_periods: float) -> pl.DataFrame:
    """Adds ``silent_s`` (seconds since last seen) and ``online`` (by silence alone) to ``devices()``."""
    now_ns = int(now.timestamp() * 1e9)
    return devices.with_columns(
        ((pl.lit(now_ns) - pl.col("last_time").dt.epoch("ns")) / 1e9).alias("silent_s")
    ).with_columns((pl.col("silent_s") <= pl.col("period_s") * online_after_periods).alias("online"))


def _offline_anomalies(data: CommuneData, communes: Sequence[str], now: datetime) -> pl.DataFrame:
    span = TimeRange(now - OPEN_ANOMALY_LOOKBACK, now + timedelta(minutes=1))
    found = data.anomalies(communes, span, kind="offline")
    if found.is_empty() or "open" not in found.columns:
        return pl.DataFrame(
            schema={"insee": pl.String, "device_id": pl.String, "anomaly_since": found.schema[TIME]}
        )
    return (
        found.filter(pl.col("open").fill_null(False))
        .group_by("insee", "device_id")
        .agg(pl.col(TIME).min().alias("anomaly_since"))
    )


def _offline_alerts(data: CommuneData, communes: Sequence[str], now: datetime) -> pl.DataFrame:
    firing = data.open_alerts(communes, now)
    schema = {"insee": pl.String, "device_id": pl.String, "alert_offline": pl.Boolean}
    if firing.is_empty() or "condition" not in firing.columns:
        return pl.DataFrame(schema=schema)
    kind = pl.col("kind") if "kind" in firing.columns else pl.lit("")
    offline = firing.filter(
        (pl.col("condition") == "offline") | ((pl.col("condition") == "anomaly") & (kind == "offline"))
    )
    return (
        offline.select(
            "insee",
            pl.col("scope").str.split("/").list.get(1, null_on_oob=True).alias("device_id"),
            pl.lit(True).alias("alert_offline"),
        )
        .drop_nulls("device_id")
        .unique(["insee", "device_id"])
    )


def presence(
    data: CommuneData, communes: Sequence[str] | None, now: datetime, online_after_periods: float
) -> pl.DataFrame:
    """``data.devices()`` plus ``silent_s``, ``online`` and ``offline_reason`` (null when online).

    ``offline_reason`` is the first of ``silence``, ``anomaly``, ``alert`` that holds.
    """
    codes = data.resolve(communes)
    devices = online_flags(data.devices(codes), now, online_after_periods)
    if devices.is_empty():
        return devices.with_columns(pl.lit(None, dtype=pl.String).alias("offline_reason"))
    anomalies = _offline_anomalies(data, codes, now)
    alerts = _offline_alerts(data, codes, now)
    joined = devices.join(anomalies, on=["insee", "device_id"], how="left").join(
        alerts, on=["insee", "device_id"], how="left"
    )
    reason = (
        pl.when(~pl.col("online"))
        .then(pl.lit("silence"))
        .when(pl.col("anomaly_since").is_not_null())
        .then(pl.lit("anomaly"))
        .when(pl.col("alert_offline").fill_null(False))
        .then(pl.lit("alert"))
    )
    return (
        joined.with_columns(reason.alias("offline_reason"))
        .with_columns(pl.col("offline_reason").is_null().alias("online"))
        .drop("anomaly_since", "alert_offline")
    )
