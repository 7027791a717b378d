"""``smartcity opendata export``: every public table of a period, in one validated package."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from opendata.config import OpenDataSettings
from opendata.package import Table, write_package
from opendata.privacy import Exclusions
from opendata.schemas import AIR_QUALITY_HOURLY, ATMO_DAILY, CAMERA_PEOPLE_HOURLY, CHANNEL, MEASURE, SITE
from opendata.tables import (
    air_quality_hourly,
    atmo_daily,
    camera_people_hourly,
    load_sites,
    traffic_counts,
)
from storage.base import Store

log = logging.getLogger(__name__)
PACKAGE_NAME = "smartcity-opendata"


@dataclass(slots=True)
class ExportReport:
    """What an export wrote and what it left out."""

    rows: dict[str, int] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    unplaced_devices: list[str] = field(default_factory=list)
    withheld_atmo_communes: list[str] = field(default_factory=list)


def export(
    store: Store, start: datetime, end: datetime, out: Path, settings: OpenDataSettings
) -> ExportReport:
    """Write the open-data package of ``[start, end)`` into ``out`` (see docs/opendata.md)."""
    exclusions = Exclusions.from_settings(settings)
    sites = load_sites(settings.sites_file) if settings.sites_file else None
    report = ExportReport()
    tables: list[Table] = []
    if sites is not None:
        comptage = traffic_counts(
            store, start, end, exclusions=exclusions, sites=sites, publisher=settings.publisher
        )
        report.unplaced_devices = comptage.unplaced_devices
        tables += [
            Table("comptage-mobilites/site", SITE, comptage.sites),
            Table("comptage-mobilites/channel", CHANNEL, comptage.channels),
            Table("comptage-mobilites/measure", MEASURE, comptage.measures),
        ]
    else:
        log.warning("no opendata.sites_file: traffic counts are not exported (the schema needs coordinates)")
    atmo, report.withheld_atmo_communes = atmo_daily(store, start, end, exclusions)
    tables += [
        Table(
            "air-quality-hourly", AIR_QUALITY_HOURLY, air_quality_hourly(store, start, end, exclusions), True
        ),
        Table("atmo-daily", ATMO_DAILY, atmo, True),
        Table(
            "camera-people-hourly",
            CAMERA_PEOPLE_HOURLY,
            camera_people_hourly(store, start, end, exclusions),
            True,
        ),
    ]
    if report.unplaced_devices:
        log.warning(
            "traffic counters without a site in %s, not exported: %s",
            settings.sites_file,
            ", ".join(report.unplaced_devices),
        )
    if report.withheld_atmo_communes:
        log.warning(
            "ATMO indices withheld (computed over an excluded device): %s",
            ", ".join(report.withheld_atmo_communes),
        )
    report.files = write_package(out, PACKAGE_NAME, tables)
    report.rows = {table.path: table.frame.height for table in tables}
    return report
