"""Provisioning an InfluxDB server for the platform (``smartcity storage init``). Idempotent.

* 1.x: create the database, and the retention policies ``raw`` (raw readings, 30 days by
  default), ``minute`` (minute aggregates, 35 days by default, unless
  ``minute_retention_days`` is None) and ``aggregates`` (everything else, 5 years by default);
  an existing policy whose duration differs from the settings is altered to match. A new
  ``minute`` policy receives the recent minute aggregates an older version kept in ``aggregates``.
* 2.x: create the buckets ``<database>/raw``, ``<database>/minute`` and ``<database>/aggregates``
  with their retention (nothing is copied into a new minute bucket),
  and the DBRP mappings (database ``<database>``, retention policy ``raw``/``aggregates``) that
  let the v1 API address them; uses influxdb-client, since only the 2.x API can do that.
* 3.x: nothing to do: InfluxDB 3 creates the database at the first write (its retention is set
  by the operator with ``influxdb3 create database --retention-period``).

Only the 1.x path is tested against a real server here (Debian's influxd 1.6); the 2.x and 3.x
paths follow the vendors' documentation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from storage import influxql
from storage.config import InfluxSettings
from storage.errors import StoreError
from storage.influx import InfluxStore


@dataclass(frozen=True, slots=True)
class Policy:
    """A retention policy (2.x: a bucket) to provision."""

    name: str
    days: int


def policies(settings: InfluxSettings) -> list[Policy]:
    """The retention policies the settings call for."""
    _, _, fixed = settings.database.partition("/")
    if fixed:
        return [Policy(fixed, settings.aggregate_retention_days)] if fixed != "autogen" else []
    found = [
        Policy(settings.raw_retention_policy, settings.raw_retention_days),
        Policy(settings.aggregate_retention_policy, settings.aggregate_retention_days),
    ]
    if settings.minute_retention_days:
        found.append(Policy(settings.minute_retention_policy, settings.minute_retention_days))
    return found


def _duration_days(text: str) -> float | None:
    """Days of an InfluxDB duration such as ``720h0m0s`` (None for ``0s``: infinite)."""
    hours = re.match(r"(\d+)h", text)
    if not hours:
        return None
    value = int(hours.group(1)) / 24
    return value or None


def provision(settings: InfluxSettings) -> list[str]:
    """Create what the platform needs on the server; the list of what was done, for the operator."""
    store = InfluxStore(settings)
    try:
        major = store.version().major
        if major >= 3:
            return [f"InfluxDB {store.version().text}: the database is created at the first write"]
        if major == 2:
            return _provision_v2(settings)
        return _provision_v1(store, settings)
    finally:
        store.close()


def _provision_v1(store: InfluxStore, settings: InfluxSettings) -> list[str]:
    done: list[str] = []
    database = store.database
    names = {row[0] for series in store.query_json("SHOW DATABASES") for row in series.get("values") or []}
    if database not in names:
        store.query(f"CREATE DATABASE {influxql.quote_ident(database)}")
        done.append(f"created database {database!r}")
    existing: dict[str, str] = {}
    for series in store.query_json(f"SHOW RETENTION POLICIES ON {influxql.quote_ident(database)}"):
        for row in series.get("values") or []:
            existing[str(row[0])] = str(row[1])
    for policy in policies(settings):
        target = f"{influxql.quote_ident(policy.name)} ON {influxql.quote_ident(database)}"
        if policy.name not in existing:
            store.query(f"CREATE RETENTION POLICY {target} DURATION {policy.days}d REPLICATION 1")
            done.append(f"created retention policy {policy.name!r} ({policy.days} days)")
            upgrade = settings.aggregate_retention_policy in existing
            if policy.name == settings.minute_retention_policy and upgrade:
                done += _move_minute_aggregates(store, settings, policy.days)
        elif _duration_days(existing[policy.name]) != policy.days:
            store.query(f"ALTER RETENTION POLICY {target} DURATION {policy.days}d")
            done.append(f"changed retention policy {policy.name!r} to {policy.days} days")
    return done or [f"database {database!r} and its retention policies already in place"]


def _move_minute_aggregates(store: InfluxStore, settings: InfluxSettings, days: int) -> list[str]:
    """Copy the minute aggregates of the last ``days`` from the aggregates policy, where an older
    version kept them, to their own policy, so charts keep their recent minutes after an upgrade.
    The old copies stay in the aggregates policy until it expires them (InfluxQL cannot delete
    from one policy only)."""
    database = influxql.quote_ident(store.database)
    source = f"{database}.{influxql.quote_ident(settings.aggregate_retention_policy)}"
    target = f"{database}.{influxql.quote_ident(settings.minute_retention_policy)}"
    answer = store.query_json(
        f"SELECT * INTO {target}.:MEASUREMENT FROM {source}./_1m(_commune)?$/ "
        f"WHERE time > now() - {days}d GROUP BY *"
    )
    copied = sum(int(row[1]) for series in answer for row in series.get("values") or [])
    policy = settings.minute_retention_policy
    return [f"copied {copied} minute aggregates of the last {days} days to {policy!r}"]


def _provision_v2(settings: InfluxSettings) -> list[str]:  # pragma: no cover - no 2.x server here
    import importlib

    # influxdb-client's annotations are partial: use it untyped rather than silence each call.
    client: Any = importlib.import_module("influxdb_client")
    dbrp_create: Any = importlib.import_module("influxdb_client.domain.dbrp_create").DBRPCreate
    dbrps_service: Any = importlib.import_module("influxdb_client.service.dbr_ps_service").DBRPsService

    if not settings.token or not settings.org:
        raise StoreError("provisioning InfluxDB 2.x needs store.influxdb.token and store.influxdb.org")
    database = settings.database.partition("/")[0]
    done: list[str] = []
    with client.InfluxDBClient(url=settings.url, token=settings.token, org=settings.org) as api:
        buckets = api.buckets_api()
        dbrps = dbrps_service(api.api_client)
        org_id = api.organizations_api().find_organizations(org=settings.org)[0].id
        mapped = {(m.database, m.retention_policy) for m in (dbrps.get_dbr_ps(org_id=org_id).content or [])}
        for index, policy in enumerate(policies(settings)):
            name = f"{database}/{policy.name}"
            bucket = buckets.find_bucket_by_name(name)
            rules = client.BucketRetentionRules(type="expire", every_seconds=policy.days * 86_400)
            if bucket is None:
                bucket = buckets.create_bucket(bucket_name=name, retention_rules=rules, org=settings.org)
                done.append(f"created bucket {name!r} ({policy.days} days)")
            elif not bucket.retention_rules or bucket.retention_rules[0].every_seconds != rules.every_seconds:
                bucket.retention_rules = [rules]
                buckets.update_bucket(bucket)
                done.append(f"changed bucket {name!r} to {policy.days} days")
            if (database, policy.name) not in mapped:
                dbrps.post_dbrp(
                    dbrp_create(
                        org_id=org_id,
                        bucket_id=bucket.id,
                        database=database,
                        retention_policy=policy.name,
                        default=index == 0,
                    )
                )
                done.append(
                    f"mapped database {database!r} retention policy {policy.name!r} to bucket {name!r}"
                )
    return done or [f"buckets of {database!r} and their DBRP mappings already in place"]
