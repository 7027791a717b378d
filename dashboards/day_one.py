"""What the overview shows before the indices can be computed: the ATMO index of the day so far
and the last complete day, and the current traffic flow before any congestion profile exists.

The official ATMO index of a day needs 18 valid hours (docs/indices.md), so until the evening
``atmo_daily`` has no index for today. The day so far is classed here on the same scale
(``processing.indices.scales.ATMO``), from the device hourly means of the day: daily mean for
PM2.5 and PM10, maximum of hourly means for NO2, O3 and SO2, worst device of the commune. It is
always shown as *provisoire*, with the hours it rests on.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import polars as pl

from dashboards.access import CommuneData
from dashboards.timerange import TimeRange
from processing.indices.scales import ATMO, POLLUTANTS
from storage.base import TIME

DAILY_STAT = {"pm25": "mean", "pm10": "mean", "no2": "max", "o3": "max", "so2": "max"}
"""How each pollutant's daily value is taken (arrêté du 10 juillet 2020, docs/indices.md)."""
LAST_DAY_LOOKBACK = timedelta(days=10)
FLOW_WINDOW = timedelta(minutes=15)

ATMO_SCHEMA = pl.Schema(
    {
        "insee": pl.String(),
        "atmo_provisional_index": pl.Int64(),
        "atmo_hours": pl.Int64(),
        "atmo_last_index": pl.Int64(),
        "atmo_last_day": pl.Datetime("ns", "UTC"),
    }
)
FLOW_SCHEMA = pl.Schema({"insee": pl.String(), "flow_per_hour": pl.Float64(), "speed_kmh": pl.Float64()})


def atmo_so_far(data: CommuneData, codes: Sequence[str], day_start: datetime, now: datetime) -> pl.DataFrame:
    """Per commune: the provisional index of the day so far and its hours, and the last complete day."""
    base = pl.DataFrame({"insee": list(codes)}, schema={"insee": pl.String})
    if not codes:
        return pl.DataFrame(schema=ATMO_SCHEMA)
    fields = [f"{p}_mean" for p in POLLUTANTS]
    hourly = data.aggregates(
        "air_quality", codes, TimeRange(day_start, now), "1h", level="device", fields=fields
    )
    present = [p for p in POLLUTANTS if f"{p}_mean" in hourly.columns]
    if hourly.height and present:
        per_device = hourly.group_by("insee", "device_id").agg(
            *[
                (pl.col(f"{p}_mean").mean() if DAILY_STAT[p] == "mean" else pl.col(f"{p}_mean").max()).alias(
                    p
                )
                for p in present
            ],
            pl.col(TIME).n_unique().alias("hours"),
        )
        communes = per_device.group_by("insee").agg(
            *[pl.col(p).max() for p in present], pl.col("hours").max()
        )
        subs = [ATMO.sub_index(p, pl.col(p)) for p in present]
        today = communes.select(
            "insee",
            pl.max_horizontal(subs).alias("atmo_provisional_index"),
            pl.col("hours").cast(pl.Int64).alias("atmo_hours"),
        )
    else:
        today = pl.DataFrame(
            schema={"insee": pl.String, "atmo_provisional_index": pl.Int64, "atmo_hours": pl.Int64}
        )
    days = data.index(
        "atmo_daily", codes, TimeRange(day_start - LAST_DAY_LOOKBACK, day_start), fields=["index"]
    )
    if days.height and "index" in days.columns:
        last = (
            days.filter(pl.col("index").is_not_null())
            .sort(TIME)
            .group_by("insee")
            .last()
            .select(
                "insee",
                pl.col("index").cast(pl.Int64).alias("atmo_last_index"),
                pl.col(TIME).alias("atmo_last_day"),
            )
        )
    else:
        last = pl.DataFrame(schema={k: ATMO_SCHEMA[k] for k in ("insee", "atmo_last_index", "atmo_last_day")})
    return base.join(today, on="insee", how="left").join(last, on="insee", how="left").cast(ATMO_SCHEMA)


def current_flow(data: CommuneData, codes: Sequence[str], now: datetime) -> pl.DataFrame:
    """Per commune: vehicles per hour over the last 15 minutes (every counter), and mean speed."""
    frames = []
    for insee in codes:
        raw = data.readings(
            "traffic", insee, TimeRange(now - FLOW_WINDOW, now), fields=["intensity", "averageVehicleSpeed"]
        )
        if raw.is_empty() or "intensity" not in raw.columns:
            continue
        speed = pl.col("averageVehicleSpeed").mean() if "averageVehicleSpeed" in raw.columns else pl.lit(None)
        frames.append(
            raw.select(
                pl.lit(insee).alias("insee"),
                (pl.col("intensity").sum() * (timedelta(hours=1) / FLOW_WINDOW))
                .cast(pl.Float64)
                .alias("flow_per_hour"),
                speed.cast(pl.Float64).alias("speed_kmh"),
            )
        )
    return pl.concat(frames) if frames else pl.DataFrame(schema=FLOW_SCHEMA)
