"""The writer thread: batches messages, stores them (or spools them), then acknowledges them.

The MQTT network thread only enqueues; everything slow happens here, so a slow store never
stalls the connection to the broker. The rule that makes ingest lossless: a message is
acknowledged only once everything it carried is durable, in the store, in the spool, or (for
what the decoder refused) in the dead-letter file.

Order is kept: while the spool holds batches, new batches go behind them, and replay drains the
spool oldest first before writing directly again. When the spool is full and the store is down,
batches are held in memory unacknowledged; the broker's flow control (MQTT 5 receive maximum)
then stops sending more, so memory stays bounded and nothing is dropped.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NoReturn, Protocol

import numpy as np
import polars as pl

from ingest.batch import Ack, Batch, BatchBuilder, Message
from ingest.config import IngestSettings
from ingest.deadletter import DeadLetter, store_rejected_record
from ingest.metrics import IngestMetrics
from ingest.spool import Spool, SpoolCorrupt, SpoolFull
from ingest.tables import Table
from sensors.frames import RECEIVED_AT
from storage.base import Store
from storage.errors import StoreAuthError, StoreError, StoreUnavailable, WriteRejected

log = logging.getLogger(__name__)

STOP = None
"""Put on the inbox to make the writer flush what it holds and exit."""

Inbox = queue.SimpleQueue[Message | None]

_NS = 1_000_000_000
_GATHER_S = 0.01
"""How long the batcher lets messages gather while a batch is open and the queue is empty."""


class Acknowledger(Protocol):
    """Sends acknowledgements to the broker (the MQTT consumer)."""

    def ack(self, acks: Sequence[Ack]) -> int:
        """Acknowledge messages; returns how many were sent (stale connections are skipped)."""
        ...


class _StoreDown(Exception):
    """The store failed a write in a way that may pass: spool and retry later."""


class Writer:
    """Consumes the inbox on its own thread until ``STOP`` arrives."""

    def __init__(
        self,
        *,
        inbox: Inbox,
        builder: BatchBuilder,
        store: Store,
        spool: Spool,
        deadletter: DeadLetter,
        acknowledger: Acknowledger,
        metrics: IngestMetrics,
        settings: IngestSettings,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        self._inbox = inbox
        self._builder = builder
        self._store = store
        self._spool = spool
        self._deadletter = deadletter
        self._acknowledger = acknowledger
        self._metrics = metrics
        self._settings = settings
        self._on_drain = on_drain
        self._held: deque[Batch] = deque()
        self._retry_delay = settings.retry_interval_s
        self._next_store_try = 0.0
        # Two threads, so decoding the next batch overlaps with waiting for the store's answer
        # (the store's HTTP wait releases the GIL). Two batches at most wait between them.
        self._batches: queue.Queue[Batch | None] = queue.Queue(maxsize=2)
        self._batcher = threading.Thread(
            target=self._run, args=(self._batch_loop,), name="ingest-batcher", daemon=True
        )
        self._thread = threading.Thread(
            target=self._run, args=(self._write_loop,), name="ingest-writer", daemon=True
        )
        self._batcher_beat = time.monotonic()
        self._busy_since: float | None = None
        self.failure: BaseException | None = None
        self.last_store_error: str | None = None
        """Why the last store write failed (shown by /healthz while the store is down)."""
        metrics.spool_bytes.track(lambda: float(spool.bytes))
        metrics.spool_batches.track(lambda: float(spool.batches))
        metrics.held_messages.track(self._held_messages)
        metrics.queue_depth.track(lambda: float(inbox.qsize()))
        metrics.store_up.set(1)

    # --- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start consuming the inbox."""
        self._thread.start()
        self._batcher.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for both threads to end (after ``STOP``); True when they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in (self._batcher, self._thread):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not self.alive

    @property
    def alive(self) -> bool:
        """Whether the batcher and writer threads run."""
        return self._thread.is_alive() and self._batcher.is_alive()

    @property
    def stalled_s(self) -> float:
        """Seconds without progress: since the batcher last went round its loop (it does at
        least every ``batch_interval_s``, even idle), or since the writer took the batch it is
        still on. A store write is bounded by its timeout, so a long stall means a stuck thread."""
        now = time.monotonic()
        busy = self._busy_since
        return max(now - self._batcher_beat, 0.0 if busy is None else now - busy)

    @property
    def backlog(self) -> int:
        """Batches waiting for the store: spooled plus held in memory."""
        return self._spool.batches + len(self._held)

    @property
    def spool_full(self) -> bool:
        """True while batches are held because the spool is full."""
        return bool(self._held)

    def _held_messages(self) -> float:
        waiting = [batch for batch in list(self._batches.queue) if batch is not None]
        held = list(self._held)
        return float(self._builder.messages + sum(batch.messages for batch in waiting + held))

    # --- main loop ----------------------------------------------------------------------------

    def _run(self, loop: Callable[[], None]) -> None:
        try:
            loop()
        except BaseException as exc:  # surfaced through /healthz and the service's exit code
            self.failure = exc
            log.exception("ingest %s failed; unacknowledged messages stay with the broker", loop.__name__)
            if loop == self._batch_loop:
                self._batches.put(STOP)
            raise

    def _batch_loop(self) -> None:
        """Decode messages from the inbox into batches, flushed by size or age to the writer."""
        interval = self._settings.batch_interval_s
        batch_size = self._settings.batch_size
        builder = self._builder
        inbox = self._inbox
        deadline: float | None = None
        stopping = False
        while not stopping:
            now = self._batcher_beat = time.monotonic()
            timeout = interval if deadline is None else max(0.0, deadline - now)
            item: object
            if deadline is not None and timeout > 0 and inbox.empty():
                # A batch is open: let messages gather rather than block on the queue, where each
                # message would wake this thread (a thread switch per message on paho's side).
                time.sleep(min(timeout, _GATHER_S))
                timeout = 0
            try:
                item = inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
            except queue.Empty:
                item = _EMPTY
            # Drain what is already waiting without blocking: one wake-up per burst, not per message.
            while item is not _EMPTY:
                if item is STOP:
                    stopping = True
                    break
                assert isinstance(item, Message)
                builder.add(item)
                if deadline is None:
                    deadline = time.monotonic() + interval
                if builder.rows >= batch_size:
                    break
                try:
                    item = inbox.get_nowait()
                except queue.Empty:
                    item = _EMPTY
            if self._on_drain is not None:
                self._on_drain()
            if builder.messages and (
                stopping
                or builder.rows >= batch_size
                or (deadline is not None and time.monotonic() >= deadline)
            ):
                self._batches.put(builder.take())
                deadline = None
        self._batches.put(STOP)

    def _write_loop(self) -> None:
        """Store (or spool, or hold) each batch, acknowledge it, and replay the spool when due."""
        interval = self._settings.batch_interval_s
        while True:
            timeout = None
            if self.backlog:
                timeout = max(0.01, self._next_store_try - time.monotonic())
            item: object
            try:
                item = self._batches.get(timeout=timeout)
            except queue.Empty:
                item = _EMPTY
            if item is STOP:
                break
            self._busy_since = time.monotonic()
            if isinstance(item, Batch):
                self._flush(item)
            if self.backlog and time.monotonic() >= self._next_store_try:
                self._replay(budget_s=interval)
            self._busy_since = None
        if self._held:
            log.warning(
                "stopping with %d message(s) unacknowledged (store down and spool full): "
                "the broker keeps them for the next start",
                self._held_messages(),
            )
        self._deadletter.sync()

    # --- flushing -----------------------------------------------------------------------------

    def _flush(self, batch: Batch) -> None:
        if not batch.tables:
            self._deadletter.sync()
            self._metrics.batches.inc(1, "deadletter_only")
            self._ack(batch.acks)
            return
        outcome = self._persist(batch)
        self._metrics.batches.inc(1, outcome)
        if outcome != "held":
            # After the store: rows it refused just became dead-letter records, and they must be
            # durable before the broker forgets their messages.
            self._deadletter.sync()
            self._ack(batch.acks)

    def _persist(self, batch: Batch) -> str:
        """Store the batch, or spool it, or hold it; returns which."""
        tables = batch.tables
        if not self.backlog and time.monotonic() >= self._next_store_try:
            tables = self._write_tables(tables)
            if not tables:
                return "stored"
        if self._held:
            batch.tables = tables
            self._held.append(batch)
            return "held"
        try:
            self._spool.append(tables)
        except SpoolFull as exc:
            if not self._held:
                log.error("%s: holding batches unacknowledged until the store returns", exc)
            batch.tables = tables
            self._held.append(batch)
            self._metrics.spool_full.set(1)
            return "held"
        self._metrics.spooled_batches.inc()
        return "spooled"

    def _ack(self, acks: Sequence[Ack]) -> None:
        sent = self._acknowledger.ack(acks)
        self._metrics.acked.inc(sent)

    # --- the store ----------------------------------------------------------------------------

    def _write_tables(self, tables: list[Table]) -> list[Table]:
        """Write tables in order; returns those not written when the store went down."""
        for position, table in enumerate(tables):
            try:
                self._write_one(table)
            except _StoreDown:
                return tables[position:]
        return []

    def _write_one(self, table: Table) -> None:
        metrics = self._metrics
        started = time.perf_counter()
        try:
            report = self._store.write(table.measurement, table.frame, tags=list(table.tags))
        except WriteRejected as exc:
            # The store calls the data invalid: retrying or spooling cannot help. Keep the rows.
            log.error(
                "store refused %d %s row(s): %s; rows kept in the dead-letter",
                table.rows,
                table.measurement,
                exc,
            )
            self._dead_letter_rows(table, range(table.rows), str(exc))
            return
        except (StoreUnavailable, StoreAuthError, StoreError) as exc:
            # Auth and missing-database errors need an operator, not a retry loop that loses
            # data: spool, say so loudly in the log and /healthz, and keep trying.
            self._store_failed(type(exc).__name__, exc)
        except Exception as exc:  # an unexpected store error must not lose readings: spool them
            log.exception("unexpected error writing %s", table.measurement)
            self._store_failed(type(exc).__name__, exc)
        stored_ns = time.time_ns()
        metrics.store_write_seconds.observe(time.perf_counter() - started)
        metrics.rows_written.inc(report.written, table.measurement)
        metrics.store_up.set(1)
        if self._retry_delay != self._settings.retry_interval_s:
            log.info("store is back")
        self._retry_delay = self._settings.retry_interval_s
        self._observe_lag(table.frame, stored_ns)
        if report.rejected:
            rows = [rejected.row for rejected in report.rejected]
            reasons = {rejected.row: rejected.reason for rejected in report.rejected}
            log.warning("store refused %d %s row(s); kept in the dead-letter", len(rows), table.measurement)
            self._dead_letter_rows(table, rows, reasons)

    def _store_failed(self, error: str, exc: BaseException) -> NoReturn:
        metrics = self._metrics
        metrics.store_failures.inc(1, error)
        self.last_store_error = f"{error}: {exc}"
        if metrics.store_up.value() == 1:
            log.warning(
                "store unavailable (%s: %s): spooling, retrying in %.1fs", error, exc, self._retry_delay
            )
        metrics.store_up.set(0)
        self._next_store_try = time.monotonic() + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._settings.retry_max_interval_s)
        raise _StoreDown from exc

    def _observe_lag(self, frame: pl.DataFrame, stored_ns: int) -> None:
        if "time" not in frame.columns or frame.height == 0:
            return
        observed = frame.get_column("time").dt.epoch("ns").to_numpy()
        self._metrics.lag_observed.observe_many((stored_ns - observed) / _NS)
        if RECEIVED_AT in frame.columns:
            received = frame.get_column(RECEIVED_AT).drop_nulls().to_numpy()
            self._metrics.lag_received.observe_many((stored_ns - received.astype(np.int64)) / _NS)

    def _dead_letter_rows(
        self, table: Table, rows: Sequence[int] | range, reason: str | dict[int, str]
    ) -> None:
        now_ns = time.time_ns()
        records = []
        for row in rows:
            values = table.frame.row(row, named=True)
            why = reason if isinstance(reason, str) else reason.get(row, "refused by the store")
            records.append(store_rejected_record(table.measurement, values, why, now_ns))
        self._deadletter.add_rows(records)
        self._metrics.store_rejected_rows.inc(len(records))
        self._metrics.deadletters.inc(len(records), "store_rejected")

    # --- replay -------------------------------------------------------------------------------

    def _replay(self, budget_s: float) -> None:
        """Drain the spool, then held batches, into the store for at most about ``budget_s``."""
        try:
            self._drain(budget_s)
        finally:
            self._unhold_into_spool()

    def _drain(self, budget_s: float) -> None:
        spool = self._spool
        give_up_at = time.monotonic() + budget_s
        while spool:
            segment = spool.peek()
            assert segment is not None
            try:
                tables = spool.read(segment)
            except SpoolCorrupt as exc:
                target = spool.quarantine(segment)
                log.error("spool: %s; moved to %s, replay goes on", exc, target)
                continue
            if self._write_tables(tables):
                return  # store down again; the whole segment stays (rewriting is harmless)
            self._deadletter.sync()  # rows the store refused, before their segment goes
            spool.remove(segment)
            self._metrics.replayed_batches.inc()
            if not spool:
                log.info("spool drained: every spooled batch is in the store")
            if time.monotonic() >= give_up_at:
                return
        while self._held:
            batch = self._held[0]
            remaining = self._write_tables(batch.tables)
            if remaining:
                batch.tables = remaining
                return
            self._held.popleft()
            self._deadletter.sync()
            self._ack(batch.acks)

    def _unhold_into_spool(self) -> None:
        """Move held batches into the spool as far as it has room (they are newer than all it holds)."""
        while self._held:
            batch = self._held[0]
            try:
                self._spool.append(batch.tables)
            except SpoolFull:
                return
            self._held.popleft()
            self._metrics.spooled_batches.inc()
            self._deadletter.sync()
            self._ack(batch.acks)
        self._metrics.spool_full.set(0)


_EMPTY = object()
