"""``smartcity opendata export``: write the platform's public data in published schemas."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from opendata.config import OpenDataSettings
from sensors.lorawan.devicemap import DeviceMap, DeviceMapError
from smartcity.commands.backfill import parse_moment
from smartcity.settings import Settings
from storage import StoreError, open_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``opendata`` sub-command."""
    parser = subparsers.add_parser(
        "opendata",
        help="export public data in open-data schemas (docs/opendata.md)",
        description="Open data out: traffic counts in the national schema 'comptage des mobilités', "
        "hourly air quality, daily ATMO indices and hourly camera people counts in the platform's "
        "own Table Schemas, validated before they are written. Settings: [opendata].",
    )
    actions = parser.add_subparsers(dest="opendata_command", metavar="ACTION", required=True)
    export_parser = actions.add_parser(
        "export",
        help="write the open-data package of a period into a directory",
        description="Write every public table of [--from, --to) into DIR as CSV (and Parquet) "
        "with a datapackage.json; nothing is replaced unless the whole package validates. "
        "Dates without a time mean midnight in Europe/Paris.",
    )
    export_parser.add_argument(
        "--from", dest="start", required=True, type=parse_moment, metavar="WHEN", help="start (included)"
    )
    export_parser.add_argument(
        "--to", dest="end", required=True, type=parse_moment, metavar="WHEN", help="end (excluded)"
    )
    export_parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    export_parser.set_defaults(func=run_export)


def publishable(settings: Settings) -> OpenDataSettings:
    """The ``[opendata]`` settings, with the LoRaWAN devices the device map flags private excluded."""
    lorawan = settings.ingest.lorawan
    if lorawan is None:
        return settings.opendata
    private = DeviceMap.load(lorawan.device_map).private_devices()
    if not private:
        return settings.opendata
    excluded = list(dict.fromkeys([*settings.opendata.exclude_devices, *private]))
    return settings.opendata.model_copy(update={"exclude_devices": excluded})


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``opendata export``."""
    # Imported here: frictionless is needed by this command only, not by every ``smartcity`` start.
    from opendata.export import export
    from opendata.package import InvalidExport
    from opendata.tables import OpenDataError

    if args.end <= args.start:
        print(
            f"smartcity opendata export: --to {args.end.isoformat()} is not after --from "
            f"{args.start.isoformat()}",
            file=sys.stderr,
        )
        return 2
    try:
        store = open_store(settings.store)
    except StoreError as exc:
        print(f"smartcity opendata export: {exc}", file=sys.stderr)
        return 1
    try:
        report = export(store, args.start, args.end, args.out, publishable(settings))
    except (OpenDataError, InvalidExport, StoreError, DeviceMapError) as exc:
        print(f"smartcity opendata export: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    for path, rows in report.rows.items():
        print(f"{path}: {rows} rows")
    if report.unplaced_devices:
        print(f"traffic counters without a site, not exported: {', '.join(report.unplaced_devices)}")
    if report.withheld_atmo_communes:
        print(f"ATMO indices withheld (excluded device): {', '.join(report.withheld_atmo_communes)}")
    print(f"written to {args.out}")
    return 0
