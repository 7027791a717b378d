"""``smartcity storage``: provision the store (``init``) and check that it answers (``health``)."""

from __future__ import annotations

import argparse
import sys

from smartcity.settings import Settings
from storage import StoreError, open_store


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``storage`` sub-command and its actions."""
    parser = subparsers.add_parser(
        "storage",
        help="provision the store and check its health",
        description="Work on the store named by settings.store "
        "(SMARTCITY_STORE__BACKEND: duckdb or influxdb).",
    )
    actions = parser.add_subparsers(dest="storage_action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="create the database, retention policies or buckets (idempotent)",
        description=(
            "InfluxDB 1.x: create the database and the retention policies 'raw' (raw readings, "
            "store.influxdb.raw_retention_days, default 30), 'minute' (minute aggregates, "
            "store.influxdb.minute_retention_days, default 35; a new one receives the recent minute "
            "aggregates kept in 'aggregates' before) and 'aggregates' (everything else, "
            "store.influxdb.aggregate_retention_days, default 1825); an existing policy is altered "
            "to the configured duration. InfluxDB 2.x: create the buckets <database>/raw, "
            "<database>/minute and <database>/aggregates and their DBRP mappings (needs "
            "store.influxdb.token and org). "
            "InfluxDB 3.x: nothing (the database is created at the first write). DuckDB: create the "
            "file. Running it again changes nothing."
        ),
    )
    init.set_defaults(func=run_init)
    health = actions.add_parser(
        "health",
        help="say whether the store answers, its version, and exit 0 (ok) or 1",
        description="Ping the store, check the credentials and the database; "
        "exit 0 when healthy, 1 otherwise.",
    )
    health.set_defaults(func=run_health)


def run_init(args: argparse.Namespace, settings: Settings) -> int:
    """``smartcity storage init``."""
    config = settings.store
    try:
        if config.backend == "influxdb":
            from storage.provision import provision

            for line in provision(config.influxdb):
                print(line)
        else:
            store = open_store(config)
            store.close()
            print(f"DuckDB store ready at {config.duckdb.path}")
    except StoreError as exc:
        print(f"smartcity storage init: {exc}", file=sys.stderr)
        return 1
    return 0


def run_health(args: argparse.Namespace, settings: Settings) -> int:
    """``smartcity storage health``."""
    try:
        store = open_store(settings.store)
    except StoreError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    try:
        health = store.health()
    finally:
        store.close()
    state = "ok" if health.ok else "unhealthy"
    version = f" {health.version}" if health.version else ""
    print(f"{state}: {health.backend}{version} ({health.detail})")
    return 0 if health.ok else 1
