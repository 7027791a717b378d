"""Settings of the store: which backend, where, and with what credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class InfluxSettings(BaseModel):
    """An InfluxDB server reached through its v1 HTTP API (1.x, 2.x compat, 3.x)."""

    url: str = "http://127.0.0.1:8086"
    database: str = "smartcity"
    """On 2.x, the bucket name (database ``bucket`` maps to ``bucket/autogen``)."""
    username: str | None = None
    password: str | None = None
    token: str | None = None
    """2.x/3.x API token; when set, sent as ``Authorization: Token``."""
    org: str | None = None
    """2.x organisation, only needed by ``smartcity storage init`` to create buckets."""
    raw_retention_days: int = Field(30, ge=1)
    aggregate_retention_days: int = Field(5 * 365, ge=1)
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(5, ge=0)


class DuckDBSettings(BaseModel):
    """The embedded store: one DuckDB file."""

    path: Path = Path("var/smartcity.duckdb")


class StoreSettings(BaseModel):
    """Which store the platform uses."""

    backend: Literal["duckdb", "influxdb"] = "duckdb"
    influxdb: InfluxSettings = InfluxSettings()
    duckdb: DuckDBSettings = DuckDBSettings()
