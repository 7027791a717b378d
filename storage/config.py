"""Settings of the store: which backend, where, and with what credentials."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MINUTE_RETENTION_DAYS = 35
"""Minute aggregates outlive the raw readings (30 days) by a margin: a late window can still be
recomputed from raw, and a month of minute charts stays readable."""

_MINUTE_AGGREGATE = re.compile(r"_1m(_commune)?$")


def is_minute_aggregate(measurement: str) -> bool:
    """Whether a measurement holds minute aggregates (``air_quality_1m``, ``traffic_1m_commune``)."""
    return _MINUTE_AGGREGATE.search(measurement) is not None


class InfluxSettings(BaseModel):
    """An InfluxDB server reached through its v1 HTTP API (1.x, 2.x compat, 3.x)."""

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8086"
    database: str = "smartcity"
    """The 1.x database (2.x: the DBRP database; 3.x: the database). Written ``name/policy``
    (e.g. ``smartcity/autogen``, or a 2.x bucket mapped as ``bucket/rp``), every measurement goes
    to that one retention policy; written ``name``, raw readings go to ``raw_retention_policy``
    and everything else to ``aggregate_retention_policy``."""
    username: str | None = None
    password: str | None = None
    token: str | None = None
    """2.x/3.x API token; when set, sent as ``Authorization: Token``."""
    org: str | None = None
    """2.x organisation, only needed by ``smartcity storage init`` to create buckets."""
    raw_retention_days: int = Field(30, ge=1)
    aggregate_retention_days: int = Field(5 * 365, ge=1)
    minute_retention_days: int | None = Field(MINUTE_RETENTION_DAYS, ge=1)
    """How long the minute aggregates (``*_1m``, ``*_1m_commune``) are kept, in a policy of their
    own; None keeps them with the other aggregates. Docs/sizing.md: they outweigh the raw
    readings and only the last days of them are read."""
    raw_retention_policy: str = "raw"
    """1.x retention policy (2.x: bucket ``<database>/<policy>``) of raw readings."""
    aggregate_retention_policy: str = "aggregates"
    """1.x retention policy (2.x: bucket ``<database>/<policy>``) of everything else."""
    minute_retention_policy: str = "minute"
    """1.x retention policy (2.x: bucket ``<database>/<policy>``) of the minute aggregates."""
    raw_measurements: list[str] = Field(
        default_factory=lambda: [
            "air_quality",
            "traffic",
            "building",
            "camera",
            "network",
            "rejected_readings",
        ]
    )
    """Measurements kept for the raw retention; every other one goes to the aggregates policy."""
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    write_concurrency: int = Field(1, ge=1, le=16)
    """Batches of one write in flight at once. 1 was the fastest against a local 1.x server on
    2 cores (bench/storage_write.py); a larger server may take more."""
    gzip_level: int = Field(1, ge=0, le=3)
    """gzip compression of write bodies, 0 (none) to 3 (ISA-L's levels); 1 costs little CPU."""
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(5, ge=0)
    retry_backoff_s: float = Field(0.5, gt=0)
    """First retry delay; doubled at each attempt (with jitter), up to ``retry_max_backoff_s``."""
    retry_max_backoff_s: float = Field(30.0, gt=0)


class DuckDBSettings(BaseModel):
    """The embedded store: one DuckDB file."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Path("var/smartcity.duckdb")
    minute_retention_days: int | None = Field(MINUTE_RETENTION_DAYS, ge=1)
    """How long the minute aggregates are kept (the store deletes older ones itself); None: for
    ever. Everything else is kept for ever."""
    memory_limit: str | None = None
    """Ceiling of DuckDB's buffer manager (its cache of the file's blocks and its working
    memory), in DuckDB's own terms ("1GB", "512MiB"); None: DuckDB's default, 80 % of the
    machine's memory. Operations outside the buffer manager can exceed it."""

    @field_validator("memory_limit")
    @classmethod
    def _duckdb_accepts(cls, value: str | None) -> str | None:
        # DuckDB parses it: a throw-away in-memory database says whether it takes the value.
        if value is None:
            return None
        import duckdb

        try:
            duckdb.connect(":memory:", config={"memory_limit": value}).close()
        except duckdb.Error as exc:
            raise ValueError(f"DuckDB refuses memory_limit {value!r}: {exc}") from None
        return value


class StoreSettings(BaseModel):
    """Which store the platform uses."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["duckdb", "influxdb"] = "duckdb"
    influxdb: InfluxSettings = InfluxSettings()
    duckdb: DuckDBSettings = DuckDBSettings()
