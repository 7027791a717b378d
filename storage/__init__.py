"""Time-series storage: one small ``Store`` protocol, an InfluxDB store and an embedded DuckDB store."""

from storage.base import Health, Store, WriteReport
from storage.errors import QueryError, StoreAuthError, StoreError, StoreUnavailable

__all__ = [
    "Health",
    "QueryError",
    "Store",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailable",
    "WriteReport",
]
