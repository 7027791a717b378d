"""The exported tables, built from what processing stored (docs/measurements.md).

Each builder reads one measurement through the ``Store`` protocol, drops what may not be
published, and returns a frame in its schema's columns (``TableSchema.conform``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from opendata.privacy import Exclusions
from opendata.schemas import (
    AIR_QUALITY_HOURLY,
    ATMO_DAILY,
    CAMERA_PEOPLE_HOURLY,
    CHANNEL,
    MEASURE,
    SITE,
)
from storage.base import TIME, Store

PARIS = "Europe/Paris"
HOUR = timedelta(hours=1)
COMMUNE_LEVEL = "_commune"
"""``device_id`` of the commune-level rows of an index (docs/measurements.md)."""
SITES_COLUMNS = ("insee", "device_id", "site_id", "site_name", "latitude", "longitude")


class OpenDataError(ValueError):
    """An export cannot be made as asked; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Comptage:
    """The three files of the national schema "comptage des mobilités"."""

    sites: pl.DataFrame
    channels: pl.DataFrame
    measures: pl.DataFrame
    unplaced_devices: list[str]
    """``insee/device_id`` of traffic counters left out because the sites file does not place them."""


def load_sites(path: Path) -> pl.DataFrame:
    """The operator's traffic sites file, checked: every column present, coordinates in range."""
    try:
        frame = pl.read_csv(path, infer_schema=False, comment_prefix="#")
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise OpenDataError(f"cannot read the sites file {path}: {exc}") from None
    missing = [c for c in SITES_COLUMNS if c not in frame.columns]
    if missing:
        raise OpenDataError(f"sites file {path}: missing column(s) {', '.join(missing)}")
    frame = frame.select(SITES_COLUMNS).with_columns(
        pl.col("latitude", "longitude").str.strip_chars().cast(pl.Float64, strict=False)
    )
    bad = frame.with_row_index("line", offset=2).filter(
        pl.col("latitude").is_null()
        | pl.col("longitude").is_null()
        | ~pl.col("latitude").is_between(-90, 90)
        | ~pl.col("longitude").is_between(-180, 180)
        | pl.col("site_id").is_null()
        | pl.col("site_name").is_null()
    )
    if not bad.is_empty():
        lines = ", ".join(str(n) for n in bad.get_column("line").head(10).to_list())
        raise OpenDataError(
            f"sites file {path}: line(s) {lines} need a site_id, a site_name, a latitude in "
            "[-90, 90] and a longitude in [-180, 180]"
        )
    duplicated = frame.filter(pl.struct("insee", "device_id").is_duplicated())
    if not duplicated.is_empty():
        first = duplicated.row(0, named=True)
        raise OpenDataError(
            f"sites file {path}: device {first['insee']}/{first['device_id']} is placed twice"
        )
    return frame


def _read(
    store: Store,
    measurement: str,
    start: datetime,
    end: datetime,
    *,
    needed: dict[str, pl.DataType],
    fields: list[str] | None = None,
) -> pl.DataFrame:
    """Rows of ``measurement``, with the ``needed`` columns even when the store has none."""
    frame = store.read(measurement, start=start, end=end, fields=fields)
    return frame.with_columns(
        pl.lit(None, dtype=dtype).alias(name) for name, dtype in needed.items() if name not in frame.columns
    )


_DEVICE_ROWS: dict[str, pl.DataType] = {
    TIME: pl.Datetime("ns", "UTC"),
    "insee": pl.String(),
    "device_id": pl.String(),
}


def _hours(frame: pl.DataFrame) -> pl.DataFrame:
    """``time`` turned into the hour's ``start_datetime`` and ``end_datetime``."""
    start = pl.col(TIME).dt.truncate("1h")
    return frame.with_columns(start.alias("start_datetime"), (start + HOUR).alias("end_datetime"))


def traffic_counts(
    store: Store,
    start: datetime,
    end: datetime,
    *,
    exclusions: Exclusions,
    sites: pl.DataFrame,
    publisher: str = "",
) -> Comptage:
    """Vehicles counted per counter and hour, as sites, channels and measures.

    The count of an hour is the sum of the readings' ``intensity``: the hourly aggregate's mean
    times its count. One channel per counter (a counter watches one lane), one site per
    ``site_id`` of the sites file (several lanes may share it).
    """
    fields = {"intensity_mean": pl.Float64(), "intensity_count": pl.Int64()}
    read = _read(store, "traffic_1h", start, end, needed=_DEVICE_ROWS | fields, fields=list(fields))
    hourly = exclusions.keep(read)
    # A site shared with an excluded counter must not take that counter's line of the file.
    sites = exclusions.keep(sites)
    placed = hourly.join(sites, on=["insee", "device_id"], how="inner")
    unplaced = (
        hourly.join(sites, on=["insee", "device_id"], how="anti")
        .select((pl.col("insee") + "/" + pl.col("device_id")).alias("ref"))
        .unique()
        .sort("ref")
        .get_column("ref")
        .to_list()
    )
    measures = (
        _hours(placed)
        .with_columns(
            (pl.col("insee") + "/" + pl.col("device_id")).alias("channel_id"),
            pl.col("device_id").alias("counter_id"),
            (pl.col("intensity_mean") * pl.col("intensity_count")).round(0).alias("count"),
        )
        .sort("channel_id", "start_datetime")
    )
    channels = (
        measures.group_by("channel_id", "site_id")
        .agg(
            pl.col("start_datetime").min().alias("started_at"),
            pl.col("end_datetime").max().alias("last_updated_at"),
        )
        .with_columns(
            pl.lit("REMOTE TRANSMISSION").alias("counter_transmission_type"),
            pl.lit("PERMANENT").alias("temporality"),
            pl.lit(HOUR.total_seconds()).alias("time_step"),
            pl.lit(publisher or None, dtype=pl.String).alias("data_provider_name"),
        )
        .sort("channel_id")
    )
    used_sites = channels.select("site_id").unique()
    site_rows = (
        sites.join(used_sites, on="site_id", how="semi")
        .unique(subset="site_id", keep="first", maintain_order=True)
        .select(
            "site_id",
            "site_name",
            pl.col("insee").alias("fr_insee_code"),
            pl.col("longitude").alias("xlong"),
            pl.col("latitude").alias("ylat"),
        )
        .sort("site_id")
    )
    # Whole numbers in "number" columns, written as the schema's examples do ("20", not "20.0").
    return Comptage(
        sites=SITE.conform(site_rows),
        channels=CHANNEL.conform(channels).with_columns(pl.col("time_step").cast(pl.Int64)),
        measures=MEASURE.conform(measures).with_columns(pl.col("count").cast(pl.Int64)),
        unplaced_devices=unplaced,
    )


def air_quality_hourly(store: Store, start: datetime, end: datetime, exclusions: Exclusions) -> pl.DataFrame:
    """Hourly statistics of each air-quality device (``air_quality_1h``)."""
    frame = exclusions.keep(_read(store, "air_quality_1h", start, end, needed=_DEVICE_ROWS))
    # A field no device reported has no column in the store: its count is 0, not unknown.
    return (
        AIR_QUALITY_HOURLY.conform(_hours(frame))
        .with_columns(pl.col("^.*_count$").fill_null(0))
        .sort("insee", "device_id", "start_datetime")
    )


def atmo_daily(
    store: Store, start: datetime, end: datetime, exclusions: Exclusions
) -> tuple[pl.DataFrame, list[str]]:
    """Daily ATMO indices per commune, and the communes withheld.

    A commune's index is computed over all its stations, so it is withheld when one of its
    air-quality devices is excluded: publishing it would publish that device's data.
    """
    withheld = sorted(
        set().union(
            *(
                exclusions.communes_with_excluded_devices(store.series(m))
                for m in ("air_quality", "air_quality_1h")
            )
        )
    )
    needed: dict[str, pl.DataType] = {TIME: pl.Datetime("ns", "UTC"), "insee": pl.String()}
    frame = exclusions.keep(_read(store, "atmo_daily", start, end, needed=needed))
    frame = frame.filter(~pl.col("insee").is_in(withheld)).with_columns(
        pl.col(TIME).dt.convert_time_zone(PARIS).dt.date().alias("date")
    )
    return ATMO_DAILY.conform(frame).sort("insee", "date"), withheld


def camera_people_hourly(
    store: Store, start: datetime, end: datetime, exclusions: Exclusions
) -> pl.DataFrame:
    """People counted per camera and hour: summed again by hour so nothing finer can pass."""
    frame = _read(
        store, "camera_hourly", start, end, needed=_DEVICE_ROWS | {"people": pl.Int64()}, fields=["people"]
    )
    frame = exclusions.keep(frame.filter(pl.col("device_id") != COMMUNE_LEVEL))
    hourly = (
        _hours(frame.filter(pl.col("people").is_not_null()))
        .group_by("insee", "device_id", "start_datetime", "end_datetime")
        .agg(pl.col("people").sum())
    )
    return CAMERA_PEOPLE_HOURLY.conform(hourly).sort("insee", "device_id", "start_datetime")
