"""The embedded store: one DuckDB file, no server. The demo's default.

Layout: one table per measurement in the schema ``m`` (``m."air_quality"``), with a ``time``
column (``BIGINT``, nanoseconds since the epoch, UTC: exact, and cheap to convert to and from
polars' ``Datetime("ns", "UTC")``), one ``VARCHAR`` column per tag ("" when a series has no such
tag, as InfluxDB reads it) and one column per field. Columns are added as new tags and fields
appear. The table ``main.smartcity_columns`` records which column is a tag and which a field.

Writes are appends when the batch touches no stored (tags, time); otherwise the overlapping rows
are updated field by field (a null keeps the stored value: last write wins, field by field, as in
InfluxDB) and the rest appended. DuckDB's zone maps on ``time`` keep that check cheap for data
arriving roughly in time order. Data goes in and out as Arrow, so polars frames cross without
copies.

Retention: minute aggregates older than ``minute_retention_days`` are deleted by the store
itself (``sweep``, run by their writes at most hourly), as InfluxDB's ``minute`` policy drops
them; everything else is kept.

Threads: one process may share a ``DuckDBStore`` between ingest, processing and dashboards.
Writes and schema changes are serialised by a lock (one write transaction at a time); reads run
concurrently, each thread with its own DuckDB cursor on the same database (MVCC: a read sees the
last committed writes), and never wait for that lock: the schema they need is published under a
lock of its own, held only to copy or update it, once a write has committed. DuckDB allows one
process per file: two processes cannot share a file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from storage.base import (
    RECEIVED_AT,
    TIME,
    TIME_DTYPE,
    Health,
    RejectedRow,
    TagFilter,
    Write,
    WriteReport,
    check_arrivals_query,
    empty_arrivals,
    epoch_ns,
    tag_values,
)
from storage.config import DuckDBSettings, is_minute_aggregate
from storage.errors import StoreError, WriteRejected
from storage.frames import KIND_DTYPES, ROW, check_read_range, empty_frame, field_kind, prepare

SWEEP_INTERVAL_S = 3600.0
"""Shortest time between two retention sweeps of the minute aggregates."""

_SQL_TYPES = {"float": "DOUBLE", "integer": "BIGINT", "boolean": "BOOLEAN", "string": "VARCHAR"}


def quote_ident(name: str) -> str:
    """A SQL identifier, double-quoted with inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def _to_frame(table: pa.Table, time_column: str) -> pl.DataFrame:
    """A query's answer as polars, its nanosecond column as UTC times, with Arrow alone.

    Not with polars operations: those run in polars' thread pool, which the processing jobs of
    the same process keep busy, and a dashboard's small read would wait behind them.
    """
    index = table.schema.get_field_index(time_column)
    times = table.column(index).cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
    table = table.set_column(index, time_column, times)
    # Column by column: ``pl.from_arrow`` converts the columns as tasks of that pool too.
    return pl.DataFrame([pl.Series(name, table.column(name)) for name in table.column_names])


def _table(measurement: str) -> str:
    return f"m.{quote_ident(measurement)}"


class _Schema:
    """Tag keys and field kinds of one measurement, in the order they were added."""

    def __init__(self) -> None:
        self.tags: list[str] = []
        self.fields: dict[str, str] = {}

    @classmethod
    def copy_of(cls, schema: _Schema | None) -> _Schema:
        """A copy that a write may change (a new one when ``schema`` is None)."""
        copy = cls()
        if schema is not None:
            copy.tags, copy.fields = list(schema.tags), dict(schema.fields)
        return copy


class DuckDBStore:
    """A ``Store`` in one DuckDB file (``":memory:"`` for a throw-away store)."""

    backend = "duckdb"

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        minute_retention_days: int | None = None,
        memory_limit: str | None = None,
    ) -> None:
        self.path = str(path)
        self.minute_retention = timedelta(days=minute_retention_days) if minute_retention_days else None
        """How long minute aggregates are kept (None: for ever); ``sweep`` deletes older ones."""
        self._swept_at = float("-inf")  # the first minute write sweeps
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = duckdb.connect(
                self.path, config={"memory_limit": memory_limit} if memory_limit else {}
            )
        except duckdb.Error as exc:
            raise StoreError(f"cannot open DuckDB file {self.path}: {exc}") from exc
        self._lock = threading.RLock()
        # Guards ``_schemas`` alone, never held across a query: readers must not queue behind a
        # write transaction (ingest and processing write all the time in the demo's one process).
        self._schema_lock = threading.Lock()
        self._local = threading.local()
        self._closed = False
        self._conn.execute("CREATE SCHEMA IF NOT EXISTS m")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS main.smartcity_columns ("
            "measurement VARCHAR, name VARCHAR, kind VARCHAR, position INTEGER)"
        )
        self._schemas: dict[str, _Schema] = {}
        rows = self._conn.execute(
            "SELECT measurement, name, kind FROM main.smartcity_columns ORDER BY measurement, position"
        ).fetchall()
        for measurement, name, kind in rows:
            schema = self._schemas.setdefault(measurement, _Schema())
            if kind == "tag":
                schema.tags.append(name)
            else:
                schema.fields[name] = kind

    @classmethod
    def from_settings(cls, settings: DuckDBSettings) -> DuckDBStore:
        """The store ``store.duckdb`` describes: its file, minute retention and memory limit."""
        return cls(
            settings.path,
            minute_retention_days=settings.minute_retention_days,
            memory_limit=settings.memory_limit,
        )

    @property
    def memory_limit(self) -> str:
        """DuckDB's buffer-manager ceiling as it reports it (``"1.0 GiB"``)."""
        row = self._cursor().execute("SELECT current_setting('memory_limit')").fetchone()
        return str(row[0]) if row else ""

    # -- connections ---------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise StoreError("the DuckDB store is closed")
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._conn.cursor()
            self._local.cursor = cursor
        return cursor

    def _schema_copy(self, measurement: str) -> tuple[list[str], dict[str, str]] | None:
        if self._closed:
            raise StoreError("the DuckDB store is closed")
        with self._schema_lock:
            schema = self._schemas.get(measurement)
            return None if schema is None else (list(schema.tags), dict(schema.fields))

    # -- writing -------------------------------------------------------------------------------

    def write(self, measurement: str, frame: pl.DataFrame, *, tags: Sequence[str]) -> WriteReport:
        """Write rows (see ``storage.base.Store.write``)."""
        return self.write_many([Write(measurement, frame, tags)])[0]

    def write_many(self, writes: Sequence[Write]) -> list[WriteReport]:
        """Write several frames in one transaction: all of them or, when one raises, none (see
        ``storage.base.Store.write_many``)."""
        prepared = [prepare(w.measurement, w.frame, w.tags) for w in writes]
        reports = [WriteReport(rejected=list(p.rejected)) for p in prepared]
        if not any(p.frame.height for p in prepared):
            return reports
        with self._lock:
            if self._closed:
                raise StoreError("the DuckDB store is closed")
            # Schemas as the transaction changes them, published only once it has committed.
            # Only writers change a schema, and they hold ``_lock``: reading them needs no copy.
            changed: dict[str, _Schema] = {}
            conn = self._conn
            conn.execute("BEGIN TRANSACTION")
            try:
                for write, ready, report in zip(writes, prepared, reports, strict=True):
                    if ready.frame.height == 0:
                        continue
                    measurement = write.measurement
                    schema = changed.get(measurement) or self._schemas.get(measurement)
                    exists = schema is not None
                    schema = _Schema.copy_of(schema)
                    data, conflicts = self._drop_type_conflicts(
                        measurement, schema, ready.frame, ready.fields
                    )
                    report.rejected.extend(conflicts)
                    if data.height:
                        self._write_locked(measurement, schema, data, ready.tags, exists=exists)
                        changed[measurement] = schema
                    report.written = data.height
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            with self._schema_lock:
                self._schemas.update(changed)
        for report in reports:
            report.rejected.sort(key=lambda r: r.row)
        due = time.monotonic() - self._swept_at >= SWEEP_INTERVAL_S
        if self.minute_retention and due and any(is_minute_aggregate(w.measurement) for w in writes):
            self.sweep()
        return reports

    def sweep(self, now: datetime | None = None) -> int:
        """Delete the minute aggregates older than their retention (what InfluxDB's retention
        policies do by themselves); the number of rows deleted. Writes of minute aggregates
        call it at most every ``SWEEP_INTERVAL_S``."""
        if self.minute_retention is None:
            return 0
        cutoff = epoch_ns((now or datetime.now(UTC)) - self.minute_retention)
        deleted = 0
        with self._lock:
            if self._closed:
                raise StoreError("the DuckDB store is closed")
            self._swept_at = time.monotonic()
            for measurement in [m for m in self._schemas if is_minute_aggregate(m)]:
                statement = f"DELETE FROM {_table(measurement)} WHERE time < ?"
                row = self._conn.execute(statement, [cutoff]).fetchone()
                deleted += int(row[0]) if row else 0
        return deleted

    def retention(self, measurement: str) -> timedelta | None:
        """How long ``measurement`` is kept (see ``storage.base.Store.retention``)."""
        return self.minute_retention if is_minute_aggregate(measurement) else None

    @staticmethod
    def _drop_type_conflicts(
        measurement: str, schema: _Schema, data: pl.DataFrame, fields: list[str]
    ) -> tuple[pl.DataFrame, list[RejectedRow]]:
        rejected: list[RejectedRow] = []
        dtypes = data.schema  # built anew at every access: once, not once per field
        for name in fields:
            if name in schema.tags:
                raise WriteRejected(f"{name!r} is a tag of {measurement!r}; it cannot also be a field")
            stored = schema.fields.get(name)
            kind = field_kind(dtypes[name])
            if stored is None or stored == kind or name not in data.columns:
                continue
            bad = data.filter(pl.col(name).is_not_null())
            reason = f"field type conflict: {name!r} is {stored} in {measurement!r}, got {kind}"
            rejected += [RejectedRow(row=r, reason=reason) for r in bad[ROW].to_list()]
            data = data.filter(pl.col(name).is_null()).drop(name)
        if not rejected:
            return data, rejected  # ``prepare`` left no row without a field
        # A field only the refused rows carried must not become a column: InfluxDB never
        # learns of it, and reads would answer it as a column of nulls.
        data = data.drop([f for f in fields if f in data.columns and data[f].null_count() == data.height])
        remaining = [f for f in fields if f in data.columns]
        if remaining and data.height:
            data = data.filter(pl.any_horizontal(pl.col(f).is_not_null() for f in remaining))
        elif not remaining:
            data = data.clear()
        return data, rejected

    def _write_locked(
        self, measurement: str, schema: _Schema, data: pl.DataFrame, tags: list[str], *, exists: bool
    ) -> None:
        """Write ``data`` inside the open transaction, adding its new columns to the table and
        to ``schema`` (the caller's copy, published after the commit)."""
        conn = self._conn
        table = _table(measurement)
        fields = [c for c in data.columns if c not in (ROW, TIME, *tags)]
        for tag in tags:
            if tag in schema.fields:
                raise WriteRejected(f"{tag!r} is a field of {measurement!r}; it cannot also be a tag")
        new_tags = [t for t in tags if t not in schema.tags]
        new_fields = [f for f in fields if f not in schema.fields]
        # Tags the batch does not carry are "" for its rows, as a missing tag reads in InfluxDB.
        data = data.drop(ROW).with_columns(
            pl.col(TIME).dt.epoch("ns"), *(pl.lit("").alias(t) for t in schema.tags if t not in tags)
        )
        if not exists:
            conn.execute(f"CREATE TABLE {table} ({quote_ident(TIME)} BIGINT NOT NULL)")
        position = len(schema.tags) + len(schema.fields)
        for tag in new_tags:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(tag)} VARCHAR DEFAULT ''")
            position += 1
            conn.execute(
                "INSERT INTO main.smartcity_columns VALUES (?, ?, 'tag', ?)", [measurement, tag, position]
            )
            schema.tags.append(tag)
        dtypes = data.schema
        for name in new_fields:
            kind = field_kind(dtypes[name])
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {quote_ident(name)} {_SQL_TYPES[kind]}")
            position += 1
            conn.execute(
                "INSERT INTO main.smartcity_columns VALUES (?, ?, ?, ?)", [measurement, name, kind, position]
            )
            schema.fields[name] = kind
        self._merge(conn, table, data.to_arrow(), schema.tags, fields, stored=exists)

    @staticmethod
    def _merge(
        conn: duckdb.DuckDBPyConnection,
        table: str,
        batch: pa.Table,
        tags: list[str],
        fields: list[str],
        *,
        stored: bool,
    ) -> None:
        conn.register("smartcity_batch", batch)
        try:
            keys = [quote_ident(k) for k in (*tags, TIME)]
            times = pc.min_max(batch.column(TIME))
            low, high = times["min"].as_py(), times["max"].as_py()
            # A batch whose time range holds no stored row (a new minute's rows) is appended:
            # the zone maps on ``time`` answer that without reading the table.
            overlaps = (
                stored
                and conn.execute(
                    f"SELECT 1 FROM {table} "
                    f"WHERE {quote_ident(TIME)} BETWEEN {int(low)} AND {int(high)} LIMIT 1"
                ).fetchall()
            )
            if not overlaps:
                conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM smartcity_batch")
                return
            join = " AND ".join(f"t.{k} = b.{k}" for k in keys)
            # The time bounds let DuckDB skip the table's row groups outside the batch.
            in_range = f"t.{quote_ident(TIME)} BETWEEN {int(low)} AND {int(high)}"
            # A null keeps the stored value; a field with a value on every row of the batch is
            # set as it is, so DuckDB need not read the stored column.
            sets = ", ".join(
                f"{quote_ident(f)} = b.{quote_ident(f)}"
                if batch.column(f).null_count == 0
                else f"{quote_ident(f)} = COALESCE(b.{quote_ident(f)}, t.{quote_ident(f)})"
                for f in fields
            )
            # One MERGE: a batch's rows are unique per (tags, time) (storage.frames.prepare), so
            # each matches at most one stored row; new rows go in by name.
            conn.execute(
                f"MERGE INTO {table} AS t USING smartcity_batch AS b ON ({join} AND {in_range}) "
                f"WHEN MATCHED THEN UPDATE SET {sets} WHEN NOT MATCHED THEN INSERT BY NAME"
            )
        finally:
            conn.unregister("smartcity_batch")

    # -- reading -------------------------------------------------------------------------------

    @staticmethod
    def _where(tags: list[str], where: TagFilter | None, params: list[Any]) -> list[str]:
        clauses: list[str] = []
        for key, value in (where or {}).items():
            values = tag_values(value)
            if key not in tags:
                # A tag the measurement never had is "" on every row, as in InfluxDB.
                clauses.append("TRUE" if "" in values else "FALSE")
                continue
            if not values:
                clauses.append("FALSE")
                continue
            clauses.append(f"{quote_ident(key)} IN ({', '.join('?' for _ in values)})")
            params.extend(values)
        return clauses

    def read(
        self,
        measurement: str,
        *,
        start: datetime,
        end: datetime,
        where: TagFilter | None = None,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of one measurement in ``[start, end)`` (see ``storage.base.Store.read``)."""
        check_read_range(start, end)
        known = self._schema_copy(measurement)
        wanted = list(dict.fromkeys(fields)) if fields is not None else None
        if known is None:
            return empty_frame([], {f: KIND_DTYPES["float"] for f in wanted or []})
        tags, stored_fields = known
        tags = sorted(tags)
        if wanted is None:
            wanted = sorted(stored_fields)
        present = [f for f in wanted if f in stored_fields]
        if not present:
            return empty_frame(tags, {f: KIND_DTYPES[stored_fields.get(f, "float")] for f in wanted})
        params: list[Any] = [epoch_ns(start), epoch_ns(end)]
        clauses = [f"{quote_ident(TIME)} >= ?", f"{quote_ident(TIME)} < ?"]
        clauses += self._where(tags, where, params)
        clauses.append("(" + " OR ".join(f"{quote_ident(f)} IS NOT NULL" for f in present) + ")")
        # The columns come out of DuckDB in their final order, a field never stored as nulls, so
        # that no polars operation runs on the way out (see ``_to_frame``).
        columns = [quote_ident(c) for c in (TIME, *tags)] + [
            quote_ident(f) if f in stored_fields else f"CAST(NULL AS DOUBLE) AS {quote_ident(f)}"
            for f in wanted
        ]
        order = ", ".join(quote_ident(c) for c in (TIME, *tags))
        sql = (
            f"SELECT {', '.join(columns)} FROM {_table(measurement)} "
            f"WHERE {' AND '.join(clauses)} ORDER BY {order}"
        )
        return _to_frame(self._cursor().sql(sql, params=params).to_arrow_table(), TIME)

    def arrivals(
        self,
        measurement: str,
        *,
        start: datetime,
        end: datetime,
        received_after_ns: int | None = None,
    ) -> pl.DataFrame:
        """Arrival times of the rows received after a moment (see ``storage.base.Store.arrivals``)."""
        check_arrivals_query(start, end, received_after_ns)
        known = self._schema_copy(measurement)
        if known is None or RECEIVED_AT not in known[1]:
            return empty_arrivals()
        column = quote_ident(RECEIVED_AT)
        params: list[Any] = [epoch_ns(start), epoch_ns(end)]
        clauses = [f"{quote_ident(TIME)} >= ?", f"{quote_ident(TIME)} < ?", f"{column} IS NOT NULL"]
        if received_after_ns is not None:
            clauses.append(f"{column} > ?")
            params.append(received_after_ns)
        sql = (
            f"SELECT {quote_ident(TIME)}, CAST({column} AS BIGINT) AS {column} FROM {_table(measurement)} "
            f"WHERE {' AND '.join(clauses)} ORDER BY {quote_ident(TIME)}, {column}"
        )
        frame = pl.from_arrow(self._cursor().sql(sql, params=params).to_arrow_table())
        assert isinstance(frame, pl.DataFrame)
        return frame.select(
            pl.col(TIME).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
            pl.col(RECEIVED_AT).cast(pl.Int64),
        )

    def series(self, measurement: str, *, where: TagFilter | None = None) -> pl.DataFrame:
        """One row per series with its tags and ``last_time`` (see ``storage.base.Store.series``)."""
        known = self._schema_copy(measurement)
        if known is None:
            return pl.DataFrame(schema={"last_time": TIME_DTYPE})
        tags = sorted(known[0])
        params: list[Any] = []
        clauses = self._where(tags, where, params) or ["TRUE"]
        tag_sql = ", ".join(quote_ident(t) for t in tags)
        select = f"{tag_sql}, " if tags else ""
        group = f" GROUP BY {tag_sql}" if tags else ""
        order = f" ORDER BY {tag_sql}" if tags else ""
        last = f"max({quote_ident(TIME)})"
        sql = (
            f"SELECT {select}{last} AS last_time FROM {_table(measurement)} "
            f"WHERE {' AND '.join(clauses)}{group} HAVING {last} IS NOT NULL{order}"
        )
        return _to_frame(self._cursor().sql(sql, params=params).to_arrow_table(), "last_time")

    def measurements(self) -> list[str]:
        """Names of the measurements that hold data."""
        with self._schema_lock:
            names = sorted(self._schemas)
        cursor = self._cursor()
        return [n for n in names if cursor.execute(f"SELECT 1 FROM {_table(n)} LIMIT 1").fetchall()]

    def health(self) -> Health:
        """Whether the database answers; never raises."""
        try:
            self._cursor().execute("SELECT 1").fetchall()
        except Exception as exc:
            return Health(ok=False, backend=self.backend, version=duckdb.__version__, detail=str(exc))
        return Health(ok=True, backend=self.backend, version=duckdb.__version__, detail=self.path)

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()
