"""The ``Store`` protocol that every other part reads and writes through.

Frames exchanged with a store follow one convention, so nothing store-specific leaks out:

* a ``time`` column of dtype ``Datetime("ns", "UTC")``;
* tag columns of dtype ``String`` (which columns are tags is said on write);
* every other column is a field: ``Float64``, ``Int64``, ``Boolean`` or ``String``; a null
  means the field is absent from that row.

A second write of the same (measurement, tags, time) overwrites the fields it carries and keeps
the others (last write wins, field by field, as InfluxDB does), so replaying data is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import polars as pl

from storage.errors import QueryError

TIME = "time"
TIME_DTYPE = pl.Datetime("ns", "UTC")

RECEIVED_AT = "received_at"
"""The field of raw readings that holds when ingest received them (``Store.arrivals``)."""
ARRIVALS_SCHEMA = pl.Schema({TIME: TIME_DTYPE, RECEIVED_AT: pl.Int64()})

TagFilter = Mapping[str, str | Sequence[str]]
"""Tag filters: tag key -> one value or any of several values."""


def tag_values(value: str | Sequence[str]) -> list[str]:
    """A tag filter's accepted values as a list."""
    return [value] if isinstance(value, str) else list(value)


def epoch_ns(moment: datetime) -> int:
    """Nanoseconds since the epoch of an aware datetime (a naive one is taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def check_arrivals_query(start: datetime, end: datetime, received_after_ns: int | None) -> None:
    """Refuse what ``Store.arrivals`` cannot answer exactly: naive bounds, a threshold that is
    not an integer of nanoseconds (a float would lose the last digits of a 2026 timestamp)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("arrivals() needs time-zone-aware start and end datetimes")
    if received_after_ns is not None and (
        isinstance(received_after_ns, bool) or not isinstance(received_after_ns, int)
    ):
        raise QueryError(
            f"arrivals(): received_after_ns must be an int of nanoseconds since the epoch, "
            f"got {type(received_after_ns).__name__} {received_after_ns!r}"
        )
    if received_after_ns is not None and not -(2**63) <= received_after_ns < 2**63:
        raise QueryError(f"arrivals(): received_after_ns {received_after_ns} is outside the Int64 range")


def empty_arrivals() -> pl.DataFrame:
    """What ``Store.arrivals`` returns when no row matches."""
    return pl.DataFrame(schema=ARRIVALS_SCHEMA)


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row the store refused, with the store's reason."""

    row: int
    reason: str


@dataclass(slots=True)
class WriteReport:
    """What a write achieved."""

    written: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Write:
    """One frame of a ``Store.write_many``: the arguments of a ``Store.write``."""

    measurement: str
    frame: pl.DataFrame
    tags: Sequence[str]


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the store answers, and what it is."""

    ok: bool
    backend: str
    version: str = ""
    detail: str = ""


@runtime_checkable
class Store(Protocol):
    """A time-series store. Implementations: ``InfluxStore``, ``DuckDBStore``."""

    def write(self, measurement: str, frame: pl.DataFrame, *, tags: Sequence[str]) -> WriteReport:
        """Write rows; ``tags`` names the tag columns, ``time`` is the timestamp, the rest fields.

        Raises ``StoreUnavailable`` when nothing could be written for a reason that may pass,
        ``StoreAuthError`` on refused credentials. Rows the store refuses individually are
        reported in the result; the others are written.
        """
        ...

    def write_many(self, writes: Sequence[Write]) -> list[WriteReport]:
        """Write several frames, each as ``write`` would, in order; one report per frame.

        Every frame is checked before anything is written: a frame ``write`` would refuse as a
        whole (``WriteRejected``) refuses them all. A writer with several results to store at
        once (a processing run) calls it to pay the store's per-write cost once: DuckDB writes
        them in one transaction (all or, when one raises, none); InfluxDB, which has no
        transactions, sends each frame as ``write`` does, and a failure part way leaves the
        frames before it written (as the same ``write`` calls would).
        """
        ...

    def read(
        self,
        measurement: str,
        *,
        start: datetime,
        end: datetime,
        where: TagFilter | None = None,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of one measurement with ``start <= time < end``, sorted by time then tags.

        Columns: ``time``, every tag key of the measurement, then the selected fields (all when
        ``fields`` is None). An unknown measurement reads as an empty frame.
        """
        ...

    def arrivals(
        self,
        measurement: str,
        *,
        start: datetime,
        end: datetime,
        received_after_ns: int | None = None,
    ) -> pl.DataFrame:
        """When the rows of ``[start, end)`` were received, for those received after a moment.

        ``received_at`` is the arrival time ingest gives every raw reading (Int64 ns since the
        epoch, docs/measurements.md). Columns: ``time`` and ``received_at`` (Int64), one row
        per stored row with ``start <= time < end`` and ``received_at > received_after_ns``
        (every row that has a ``received_at`` when it is None), sorted by time then
        ``received_at``. Rows without ``received_at`` and unknown measurements give no rows.
        The store does the filtering, so a caller that wants what arrived since its last
        look reads only that, not every row of the range.
        """
        ...

    def series(self, measurement: str, *, where: TagFilter | None = None) -> pl.DataFrame:
        """One row per series (distinct tag set) with its tag columns and ``last_time``."""
        ...

    def measurements(self) -> list[str]:
        """Names of the measurements that hold data."""
        ...

    def retention(self, measurement: str) -> timedelta | None:
        """How long the store keeps rows of ``measurement`` (None: for ever, or not known).
        Readers use it to ask an older range at a coarser resolution."""
        ...

    def health(self) -> Health:
        """Whether the store answers; never raises."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...
