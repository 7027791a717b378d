"""The InfluxDB store, over the v1 HTTP API only (``/write``, ``/query``, ``/ping``).

That API is the one every InfluxDB serves: 1.x natively, 2.x for compatibility (database and
retention policy mapped to a bucket by DBRP), 3.x with InfluxQL. Nothing here needs Flux.

Writes: rows become line protocol (``storage.lineprotocol``, vectorised), sent in batches of
``batch_size`` lines, gzip-compressed, retried with exponential back-off and jitter on 429, 5xx
and connection errors (``Retry-After`` honoured). Once the retries are exhausted the write raises
``StoreUnavailable`` (ingest spools and replays: a replayed line overwrites itself, so a batch
that landed before the failure is harmless to send again). 401/403 raise ``StoreAuthError``.

Refused lines: InfluxDB 1.x answers a batch with some bad lines ``400 partial write: <first
reason> dropped=N``: the other lines are stored, but it does not say which lines it dropped. The
store finds them: when the reason names a field type conflict (``input field "f" ... is type
integer``) and exactly N lines of the batch carry that field, those are the refused lines; when
the reason is "points beyond retention policy" and exactly N lines are older than the policy,
those are; otherwise it bisects the batch, re-sending halves (harmless: a re-sent line
overwrites itself) until each refused line is alone. Refused lines are reported in
``WriteReport.rejected`` with the server's reason; nothing else is lost. A 400 that is not about
lines raises ``WriteRejected``.

Reads: one InfluxQL ``SELECT`` bounded in time, answered as CSV (``Accept: application/csv``,
``epoch=ns``) and parsed by ``polars.read_csv`` with dtypes from ``SHOW FIELD KEYS`` and ``SHOW
TAG KEYS`` (cached per measurement, refreshed when an answer shows an unknown column).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import polars as pl
from isal import igzip

from storage import influxql
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
from storage.config import InfluxSettings, is_minute_aggregate
from storage.errors import QueryError, StoreAuthError, StoreError, StoreUnavailable, WriteRejected
from storage.frames import KIND_DTYPES, ROW, PreparedFrame, check_read_range, empty_frame, prepare
from storage.lineprotocol import Lines, line_expr

log = logging.getLogger(__name__)

MIN_TIME_NS = -9_223_372_036_854_775_806
MAX_TIME_NS = 9_223_372_036_854_775_806
_PARALLEL_ROWS = 200_000
_DROPPED = re.compile(r"dropped=(\d+)")
_TYPE_CONFLICT = re.compile(r'input field \\?"(.+?)\\?" on measurement \\?".*?\\?" is type (\w+)')
_LINE_ERRORS = ("partial write", "unable to parse", "field type conflict", "beyond retention", "invalid")
_KIND_NAMES = {
    "float": "float",
    "integer": "integer",
    "boolean": "boolean",
    "string": "string",
    "unsigned": "integer",
}


@dataclass(slots=True)
class _Schema:
    tags: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)

    def dtype(self, name: str) -> pl.DataType:
        """The dtype field ``name`` reads as (Float64 for a field the measurement never had)."""
        return _dtype_for_kind(self.fields.get(name, "float"))


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """The server's version, from the ``X-Influxdb-Version`` header of ``/ping``."""

    text: str

    @property
    def major(self) -> int:
        """1, 2 or 3 (1 when the header cannot be read: the oldest API is the safe guess)."""
        match = re.match(r"v?(\d+)", self.text)
        return int(match.group(1)) if match else 1


def _dtype_for_kind(kind: str) -> pl.DataType:
    return KIND_DTYPES.get(_KIND_NAMES.get(kind, "string"), pl.String())


def _error_text(response: httpx.Response) -> str:
    header: str | None = response.headers.get("X-Influxdb-Error")
    if header:
        return header
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:500]
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return str(payload["error"])
    return response.text.strip()[:500]


class InfluxStore:
    """A ``Store`` on an InfluxDB server (1.x, 2.x or 3.x) through its v1 HTTP API."""

    backend = "influxdb"

    def __init__(self, settings: InfluxSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        headers = {"User-Agent": "smartcity-storage"}
        auth: httpx.BasicAuth | None = None
        if settings.token:
            headers["Authorization"] = f"Token {settings.token}"
        elif settings.username is not None:
            # Basic rather than u/p query parameters: credentials stay out of access logs.
            auth = httpx.BasicAuth(settings.username, settings.password or "")
        self._client = httpx.Client(
            base_url=settings.url.rstrip("/"),
            headers=headers,
            auth=auth,
            timeout=settings.timeout_s,
            limits=httpx.Limits(max_keepalive_connections=8),
        )
        self._lock = threading.Lock()
        self._schemas: dict[str, _Schema] = {}
        self._version: ServerVersion | None = None
        database, _, policy = settings.database.partition("/")
        self.database = database
        self._fixed_policy: str | None = policy or None

    # -- HTTP with retries ---------------------------------------------------------------------

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        retry_after: str | None = None if response is None else response.headers.get("Retry-After")
        if retry_after:
            with contextlib.suppress(ValueError, TypeError):
                return min(float(str(retry_after)), 300.0)
            with contextlib.suppress(ValueError, TypeError):
                moment = parsedate_to_datetime(retry_after)
                return max(0.0, min((moment - datetime.now(UTC)).total_seconds(), 300.0))
        ceiling = min(self.settings.retry_max_backoff_s, self.settings.retry_backoff_s * 2.0**attempt)
        # "Equal jitter": never less than half the back-off, so a herd of writers spreads out
        # without any of them hammering the server right away.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request, retrying connection errors, 429 and 5xx; raise on refused credentials."""
        attempts = self.settings.max_retries + 1
        problem = ""
        for attempt in range(attempts):
            response: httpx.Response | None = None
            try:
                response = self._client.request(
                    method, path, params=params, content=content, data=data, headers=headers
                )
            except httpx.TransportError as exc:
                problem = f"cannot reach InfluxDB at {self.settings.url}: {type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                if status in (401, 403):
                    who = (
                        "the API token"
                        if self.settings.token
                        else f"user {self.settings.username!r}"
                        if self.settings.username is not None
                        else "no credentials (set store.influxdb.username/password or token)"
                    )
                    raise StoreAuthError(
                        f"InfluxDB at {self.settings.url} refused {what} with {who}: "
                        f"HTTP {status} {_error_text(response)}"
                    )
                retryable = status == 429 or (status >= 500 and not self._is_missing_target(response))
                if not retryable:
                    return response
                problem = f"InfluxDB at {self.settings.url} answered HTTP {status}: {_error_text(response)}"
            if attempt + 1 < attempts:
                delay = self._delay(attempt, response)
                log.warning(
                    "%s failed (%s); retry %d/%d in %.2fs", what, problem, attempt + 1, attempts - 1, delay
                )
                self._sleep(delay)
        raise StoreUnavailable(f"{what}: {problem} (gave up after {attempts} attempts)")

    @staticmethod
    def _is_missing_target(response: httpx.Response) -> bool:
        text = _error_text(response)
        return "retention policy not found" in text or "database not found" in text

    def _missing_target_error(self, response: httpx.Response) -> StoreError:
        return StoreError(
            f"InfluxDB at {self.settings.url}: {_error_text(response)}. "
            "Create the database and retention policies with `smartcity storage init`."
        )

    # -- server facts --------------------------------------------------------------------------

    def version(self) -> ServerVersion:
        """The server's version (asked once with ``/ping``, then remembered)."""
        if self._version is None:
            response = self._request("GET", "/ping", what="ping")
            self._version = ServerVersion(response.headers.get("X-Influxdb-Version", ""))
        return self._version

    def retention_policy(self, measurement: str) -> str | None:
        """The retention policy a measurement lives in (None on 3.x, which has none)."""
        if self._fixed_policy:
            return self._fixed_policy
        if self.version().major >= 3:
            return None
        if measurement in self.settings.raw_measurements:
            return self.settings.raw_retention_policy
        if self.settings.minute_retention_days and is_minute_aggregate(measurement):
            return self.settings.minute_retention_policy
        return self.settings.aggregate_retention_policy

    def policy_days(self, policy: str | None) -> int | None:
        """Days a retention policy provisioned from the settings keeps (None: not one of them)."""
        days = {
            self.settings.aggregate_retention_policy: self.settings.aggregate_retention_days,
            self.settings.minute_retention_policy: self.settings.minute_retention_days,
            self.settings.raw_retention_policy: self.settings.raw_retention_days,
        }
        return days.get(policy) if policy else None

    def retention(self, measurement: str) -> timedelta | None:
        """How long ``measurement`` is kept (see ``storage.base.Store.retention``)."""
        if self._fixed_policy:
            return None  # the operator's own policy: its duration is theirs
        days = self.policy_days(self.retention_policy(measurement))
        return timedelta(days=days) if days else None

    # -- writing -------------------------------------------------------------------------------

    def write(self, measurement: str, frame: pl.DataFrame, *, tags: Sequence[str]) -> WriteReport:
        """Write rows (see ``storage.base.Store.write``)."""
        return self._write_prepared(measurement, prepare(measurement, frame, tags))

    def write_many(self, writes: Sequence[Write]) -> list[WriteReport]:
        """Write several frames, each checked before any is sent (see
        ``storage.base.Store.write_many``)."""
        prepared = [prepare(w.measurement, w.frame, w.tags) for w in writes]
        return [self._write_prepared(w.measurement, ready) for w, ready in zip(writes, prepared, strict=True)]

    def _write_prepared(self, measurement: str, prepared: PreparedFrame) -> WriteReport:
        report = WriteReport(rejected=list(prepared.rejected))
        data = prepared.frame
        if data.height == 0:
            return report
        lines = serialise(measurement, data, prepared.tags, prepared.fields)
        policy = self.retention_policy(measurement)
        params = {"db": self.database, "precision": "ns"}
        if policy:
            params["rp"] = policy
        batch = _Batch(self, measurement, params, data, lines)
        size = self.settings.batch_size
        spans = [(start, min(start + size, len(lines))) for start in range(0, len(lines), size)]
        refused: list[tuple[int, str]] = []
        if len(spans) == 1 or self.settings.write_concurrency == 1:
            for start, end in spans:
                refused += batch.send(start, end)
        else:
            # The batches of one write hold distinct (series, time) keys (prepare merged the
            # duplicates), so their order does not matter and they may be sent side by side.
            with ThreadPoolExecutor(
                self.settings.write_concurrency, thread_name_prefix="influx-write"
            ) as pool:
                futures = [pool.submit(batch.send, start, end) for start, end in spans]
                # result() re-raises a batch's failure; leaving the pool waits for the others.
                for future in futures:
                    refused += future.result()
        rows = data[ROW]
        report.rejected += [RejectedRow(row=int(rows[i]), reason=reason) for i, reason in refused]
        report.rejected.sort(key=lambda r: r.row)
        report.written = data.height - len(refused)
        self._note_columns(measurement, prepared.tags, prepared.fields)
        return report

    def _note_columns(self, measurement: str, tags: list[str], fields: list[str]) -> None:
        with self._lock:
            schema = self._schemas.get(measurement)
            if schema and (set(tags) - set(schema.tags) or set(fields) - set(schema.fields)):
                del self._schemas[measurement]

    def post_lines(self, params: Mapping[str, str], body: bytes | memoryview) -> httpx.Response:
        """POST one body of line protocol to ``/write``, with retries; the server's final answer."""
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        content = bytes(body)
        if self.settings.gzip_level:
            # ISA-L's gzip: the same format as zlib's, at a quarter of the CPU (the client shares
            # the machine with the server in small deployments).
            content = igzip.compress(content, compresslevel=min(self.settings.gzip_level, 3))
            headers["Content-Encoding"] = "gzip"
        return self._request("POST", "/write", what="write", params=params, content=content, headers=headers)

    # -- queries -------------------------------------------------------------------------------

    def query(self, statement: str, *, csv_answer: bool = False) -> httpx.Response:
        """Run InfluxQL against the database; the raw answer (JSON, or CSV when asked)."""
        headers = {"Accept": "application/csv" if csv_answer else "application/json"}
        # Local and LAN answers are faster uncompressed: compression would cost both CPUs.
        headers["Accept-Encoding"] = "identity"
        response = self._request(
            "POST",
            "/query",
            what="query",
            data={"q": statement, "db": self.database, "epoch": "ns"},
            headers=headers,
        )
        if response.status_code == 404 or self._is_missing_target(response):
            raise self._missing_target_error(response)
        if response.status_code >= 400:
            raise QueryError(f"InfluxDB refused the query {statement!r}: {_error_text(response)}")
        return response

    def query_json(self, statement: str) -> list[dict[str, Any]]:
        """Run InfluxQL; the list of series of the first statement (empty when none)."""
        payload = self.query(statement).json()
        results = payload.get("results") or [{}]
        first = results[0]
        if "error" in first:
            message = str(first["error"])
            if "not found" in message and ("database" in message or "retention policy" in message):
                raise StoreError(
                    f"InfluxDB at {self.settings.url}: {message}. "
                    "Create the database and retention policies with `smartcity storage init`."
                )
            raise QueryError(f"InfluxDB refused the query {statement!r}: {message}")
        series: list[dict[str, Any]] = first.get("series") or []
        return series

    def _schema(self, measurement: str, *, refresh: bool = False) -> _Schema:
        with self._lock:
            cached = self._schemas.get(measurement)
        if cached is not None and not refresh:
            return cached
        schema = _Schema()
        source = influxql.source(self.database, self.retention_policy(measurement), measurement)
        for series in self.query_json(f"SHOW FIELD KEYS FROM {source}"):
            for name, kind in series.get("values") or []:
                schema.fields.setdefault(str(name), str(kind))
        for series in self.query_json(f"SHOW TAG KEYS FROM {influxql.quote_ident(measurement)}"):
            schema.tags += [str(row[0]) for row in series.get("values") or []]
        schema.tags = sorted(set(schema.tags))
        if schema.fields:
            with self._lock:
                self._schemas[measurement] = schema
        return schema

    def _conditions(self, where: TagFilter | None) -> list[str] | None:
        conditions: list[str] = []
        for key, value in (where or {}).items():
            values = tag_values(value)
            if not values:
                return None
            conditions.append(influxql.tag_condition(key, values))
        return conditions

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
        schema = self._schema(measurement)
        wanted = list(dict.fromkeys(fields)) if fields is not None else sorted(schema.fields)
        tags = schema.tags
        present = [f for f in wanted if f in schema.fields]
        conditions = self._conditions(where)
        if not present or conditions is None:
            return empty_frame(tags, {f: schema.dtype(f) for f in wanted})
        if fields is None:
            selection = "*"
        else:
            selection = ", ".join(f"{influxql.quote_ident(f)}::field" for f in present)
            if tags:
                selection += ", *::tag"
        source = influxql.source(self.database, self.retention_policy(measurement), measurement)
        clause = " AND ".join([influxql.time_range(epoch_ns(start), epoch_ns(end)), *conditions])
        body = self.query(f"SELECT {selection} FROM {source} WHERE {clause}", csv_answer=True).content
        frame = self._parse_csv(measurement, body, schema)
        if frame is None:
            return empty_frame(tags, {f: schema.dtype(f) for f in wanted})
        frame = frame.with_columns(
            pl.col(TIME).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
            *(pl.col(t).fill_null("") if t in frame.columns else pl.lit("").alias(t) for t in tags),
            *(pl.lit(None, dtype=schema.dtype(f)).alias(f) for f in wanted if f not in frame.columns),
        )
        frame = frame.select(TIME, *tags, *wanted)
        return frame.sort([TIME, *tags], multithreaded=True) if tags else frame.sort(TIME)

    def arrivals(
        self,
        measurement: str,
        *,
        start: datetime,
        end: datetime,
        received_after_ns: int | None = None,
    ) -> pl.DataFrame:
        """Arrival times of the rows received after a moment (see ``storage.base.Store.arrivals``).

        The server filters: ``SELECT "received_at" ... WHERE time ... AND "received_at" > N``
        (a field comparison, valid InfluxQL on 1.x, 2.x and 3.x), so only the rows received
        after the threshold cross the wire.
        """
        check_arrivals_query(start, end, received_after_ns)
        schema = self._schema(measurement)
        if RECEIVED_AT not in schema.fields:
            return empty_arrivals()
        source = influxql.source(self.database, self.retention_policy(measurement), measurement)
        conditions = [influxql.time_range(epoch_ns(start), epoch_ns(end))]
        if received_after_ns is not None:
            conditions.append(influxql.field_greater_than(RECEIVED_AT, received_after_ns))
        selection = f"{influxql.quote_ident(RECEIVED_AT)}::field"
        statement = f"SELECT {selection} FROM {source} WHERE {' AND '.join(conditions)}"
        frame = self._parse_csv(measurement, self.query(statement, csv_answer=True).content, schema)
        if frame is None or RECEIVED_AT not in frame.columns:
            return empty_arrivals()
        return (
            frame.select(
                pl.col(TIME).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"),
                pl.col(RECEIVED_AT).cast(pl.Int64),
            )
            .drop_nulls()
            .sort(TIME, RECEIVED_AT)
        )

    def _parse_csv(self, measurement: str, body: bytes, schema: _Schema) -> pl.DataFrame | None:
        if not body.strip():
            return None
        newline = body.find(b"\n")
        header = next(csv.reader([body[:newline].decode()]))
        if header and header[0] == "error":
            raise QueryError(f"InfluxDB refused the query: {body[newline + 1 :].decode().strip()}")
        unknown = [c for c in header[3:] if c not in schema.fields and c not in schema.tags]
        if unknown:
            schema = self._schema(measurement, refresh=True)
        dtypes: dict[str, pl.DataType] = {"name": pl.String(), "tags": pl.String(), TIME: pl.Int64()}
        for column in header[3:]:
            dtypes[column] = (
                pl.String() if column in schema.tags else _dtype_for_kind(schema.fields.get(column, ""))
            )
        # The header is read above: polars does not unescape doubled quotes in header names.
        frame = pl.read_csv(
            io.BytesIO(body), schema=dtypes, has_header=False, skip_rows=1, infer_schema=False
        )
        return frame.drop("name", "tags")

    def series(self, measurement: str, *, where: TagFilter | None = None) -> pl.DataFrame:
        """One row per series with its tags and ``last_time`` (see ``storage.base.Store.series``)."""
        schema = self._schema(measurement)
        conditions = self._conditions(where)
        tags = schema.tags
        if not schema.fields or conditions is None:
            return pl.DataFrame(schema={**{t: pl.String for t in tags}, "last_time": TIME_DTYPE})
        source = influxql.source(self.database, self.retention_policy(measurement), measurement)
        clause = " AND ".join(
            [influxql.time_range(MIN_TIME_NS, MAX_TIME_NS, end_inclusive=True), *conditions]
        )
        found = self.query_json(
            f"SELECT * FROM {source} WHERE {clause} GROUP BY * ORDER BY time DESC LIMIT 1"
        )
        columns: dict[str, list[Any]] = {t: [] for t in tags}
        columns["last_time"] = []
        for series in found:
            series_tags = series.get("tags") or {}
            for t in tags:
                columns[t].append(series_tags.get(t, ""))
            columns["last_time"].append(series["values"][0][0])
        frame = pl.DataFrame(columns, schema={**{t: pl.String for t in tags}, "last_time": pl.Int64})
        frame = frame.with_columns(pl.col("last_time").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC"))
        return frame.sort(tags) if tags else frame

    def measurements(self) -> list[str]:
        """Names of the measurements that hold data."""
        names: list[str] = []
        for series in self.query_json("SHOW MEASUREMENTS"):
            names += [str(row[0]) for row in series.get("values") or []]
        return sorted(names)

    def health(self) -> Health:
        """Whether the server answers and accepts the credentials; never raises."""
        try:
            response = self._client.get("/ping", timeout=min(self.settings.timeout_s, 5.0))
            version = response.headers.get("X-Influxdb-Version", "")
            if response.status_code >= 400:
                return Health(False, self.backend, version, f"/ping answered HTTP {response.status_code}")
            self._version = ServerVersion(version)
            self.query_json("SHOW MEASUREMENTS LIMIT 1")
        except StoreError as exc:
            return Health(False, self.backend, self._version.text if self._version else "", str(exc))
        except httpx.HTTPError as exc:
            return Health(False, self.backend, "", f"cannot reach InfluxDB at {self.settings.url}: {exc}")
        return Health(True, self.backend, version, f"{self.settings.url} database {self.settings.database!r}")

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


def serialise(measurement: str, frame: pl.DataFrame, tags: Sequence[str], fields: Sequence[str]) -> Lines:
    """Line protocol of a prepared frame; large frames are cut in slices serialised in parallel."""
    expr = line_expr(measurement, frame, tags, fields).alias("line")
    if frame.height < _PARALLEL_ROWS:
        return Lines(frame.select(expr).to_series())
    parts = max(2, pl.thread_pool_size())
    step = -(-frame.height // parts)
    lazy = [frame.lazy().slice(i, step).select(expr) for i in range(0, frame.height, step)]
    return Lines(pl.concat([part.to_series() for part in pl.collect_all(lazy)], rechunk=False))


class _Batch:
    """Sending the lines of one write, and finding which lines a server refused."""

    def __init__(
        self, store: InfluxStore, measurement: str, params: dict[str, str], frame: pl.DataFrame, lines: Lines
    ) -> None:
        self.store = store
        self.measurement = measurement
        self.params = params
        self.frame = frame
        self.lines = lines

    def send(self, start: int, end: int) -> list[tuple[int, str]]:
        """Write lines ``start..end``; the (line index, reason) of each line the server refused."""
        response = self.store.post_lines(self.params, self.lines.body(start, end))
        status = response.status_code
        if status < 300:
            return []
        if status == 404 or self.store._is_missing_target(response):
            raise self.store._missing_target_error(response)
        if status == 413 and end - start > 1:
            middle = (start + end) // 2
            return self.send(start, middle) + self.send(middle, end)
        message = _error_text(response)
        if status != 400:
            raise StoreError(f"InfluxDB refused a write with HTTP {status}: {message}")
        if not any(marker in message for marker in _LINE_ERRORS):
            # Not about particular lines (a bad parameter, say): splitting the batch cannot help.
            raise WriteRejected(f"InfluxDB refused the write: {message}")
        return self._isolate(start, end, message)

    def _isolate(self, start: int, end: int, message: str) -> list[tuple[int, str]]:
        reason = _DROPPED.sub("", message.removeprefix("partial write: ")).strip()
        if end - start == 1:
            return [(start, reason)]
        match = _DROPPED.search(message)
        dropped = int(match.group(1)) if match else end - start
        suspects = self._suspects(start, end, message)
        if suspects is not None and len(suspects) == dropped:
            return [(i, reason) for i in suspects]
        middle = (start + end) // 2
        return self.send(start, middle) + self.send(middle, end)

    def _suspects(self, start: int, end: int, message: str) -> list[int] | None:
        window = self.frame.slice(start, end - start).with_row_index("__line", offset=start)
        conflict = _TYPE_CONFLICT.search(message)
        if conflict and conflict.group(1) in window.columns:
            column = conflict.group(1)
            return window.filter(pl.col(column).is_not_null())["__line"].to_list()
        if "beyond retention policy" in message:
            policy = self.params.get("rp")
            days = self.store.policy_days(policy) or self.store.settings.aggregate_retention_days
            # InfluxDB drops a point older than now minus the policy's duration.
            cutoff_ns = time.time_ns() - days * 86_400 * 1_000_000_000
            old = pl.col(TIME).dt.epoch("ns") < cutoff_ns
            return window.filter(old)["__line"].to_list()
        return None
