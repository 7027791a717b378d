"""Time-series storage: one small ``Store`` protocol, an InfluxDB store and an embedded DuckDB store."""

from __future__ import annotations

from storage.base import Health, RejectedRow, Store, Write, WriteReport
from storage.config import DuckDBSettings, InfluxSettings, StoreSettings
from storage.errors import QueryError, StoreAuthError, StoreError, StoreUnavailable, WriteRejected

__all__ = [
    "DuckDBSettings",
    "Health",
    "InfluxSettings",
    "QueryError",
    "RejectedRow",
    "Store",
    "StoreAuthError",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "Write",
    "WriteRejected",
    "WriteReport",
    "open_store",
]


def open_store(settings: StoreSettings) -> Store:
    """The store the settings name: ``DuckDBStore`` or ``InfluxStore``."""
    if settings.backend == "influxdb":
        from storage.influx import InfluxStore

        return InfluxStore(settings.influxdb)
    from storage.duckdb_store import DuckDBStore

    return DuckDBStore.from_settings(settings.duckdb)
