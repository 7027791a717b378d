"""The ingestor: MQTT consumer, writer thread, spool, dead-letter and metrics, wired together.

``Ingestor`` runs in the background (threads) so tests and the demo can embed it;
``smartcity ingest`` runs one until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass

from ingest.batch import BatchBuilder
from ingest.config import IngestSettings
from ingest.deadletter import DeadLetter
from ingest.lorawan import LorawanDecoder
from ingest.metrics import IngestMetrics, MetricsServer
from ingest.mqtt import MqttConsumer
from ingest.spool import Spool
from ingest.writer import STOP, Inbox, Writer
from sensors.communes import CommuneRegistry
from sensors.config import MqttSettings
from sensors.decoder import Decoder
from storage.base import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Snapshot:
    at: float
    messages: float
    rows: float
    errors: float


class Ingestor:
    """One ingestor: subscribe, decode, batch, store or spool, acknowledge, report."""

    def __init__(
        self,
        mqtt_settings: MqttSettings,
        settings: IngestSettings,
        store: Store,
        registry: CommuneRegistry,
        *,
        decoder: Decoder | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.metrics = IngestMetrics()
        self.inbox: Inbox = queue.SimpleQueue()
        self.consumer = MqttConsumer(mqtt_settings, settings, self.inbox, self.metrics)
        self.spool = Spool(settings.spool_dir, settings.spool_max_bytes)
        self.deadletter = DeadLetter(
            settings.deadletter_file,
            topic_prefix=settings.deadletter_topic,
            publish=self.consumer.publish if settings.deadletter_publish else None,
        )
        if decoder is None:
            decoder = LorawanDecoder(registry, settings.lorawan) if settings.lorawan else Decoder(registry)
        builder = BatchBuilder(
            decoder,
            self.deadletter,
            self.metrics,
            rejected_rows_per_device=settings.rejected_rows_per_device,
        )
        self.writer = Writer(
            inbox=self.inbox,
            builder=builder,
            store=store,
            spool=self.spool,
            deadletter=self.deadletter,
            acknowledger=self.consumer,
            metrics=self.metrics,
            settings=settings,
            on_drain=self.consumer.space_available,
        )
        self._server: MetricsServer | None = None
        if settings.metrics_port is not None:
            self._server = MetricsServer(
                self.metrics, self.health, settings.metrics_host, settings.metrics_port
            )
        self._stopped = False
        self._stop_lock = threading.Lock()
        self._last = _Snapshot(time.monotonic(), 0, 0, 0)

    @property
    def metrics_port(self) -> int | None:
        """The port of ``/metrics`` and ``/healthz`` (None when not served)."""
        return self._server.port if self._server else None

    def start(self) -> None:
        """Start serving metrics, the writer, and the connection to the broker."""
        if self._server:
            self._server.start()
            log.info("metrics on http://%s:%d/metrics", self.settings.metrics_host, self._server.port)
        self.writer.start()
        self.consumer.start()

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop consuming, flush and acknowledge what was received, disconnect; True when clean.

        The store stays open: it belongs to the caller.

        Messages that arrive during the shutdown are left unacknowledged: the broker keeps them in
        the session for the next start.
        """
        with self._stop_lock:
            if self._stopped:
                return True
            self._stopped = True
        self.consumer.pause()
        self.inbox.put(STOP)
        flushed = self.writer.join(timeout)
        if not flushed:
            log.error("writer did not finish within %.0fs; what it holds stays unacknowledged", timeout)
        self.consumer.stop()
        self.deadletter.close()
        if self._server:
            self._server.stop()
        clean = flushed and self.writer.failure is None
        log.info("ingest stopped%s", "" if clean else " (not cleanly: see above)")
        return clean

    def health(self) -> tuple[bool, str]:
        """Whether the ingestor works, and why not: for ``/healthz``."""
        problems: list[str] = []
        if not self.writer.alive:
            problems.append(f"writer stopped: {self.writer.failure!r}")
        elif (stalled := self.writer.stalled_s) > self.settings.stall_after_s:
            problems.append(f"stalled: no progress for {stalled:.0f}s")
        if not self.consumer.connected:
            problems.append("not connected to the broker")
        elif self.consumer.subscribe_error:
            problems.append(self.consumer.subscribe_error)
        elif not self.consumer.subscribed:
            problems.append("not subscribed yet")
        if self.writer.spool_full:
            problems.append("spool full and store down: acknowledgements withheld")
        if problems:
            return False, "unhealthy: " + "; ".join(problems)
        detail = "ok"
        if self.metrics.store_up.value() == 0:
            detail += (
                f" (store down, spooling: {self.spool.batches} batch(es) waiting; "
                f"last error: {self.writer.last_store_error})"
            )
        return True, detail

    def log_stats(self) -> None:
        """Log one line of throughput, errors, spool and lag since the previous call."""
        metrics = self.metrics
        now = time.monotonic()
        current = _Snapshot(
            now, metrics.messages.total(), metrics.rows_written.total(), metrics.errors.total()
        )
        elapsed = max(now - self._last.at, 1e-9)
        p95 = metrics.lag_received.quantile(0.95)
        log.info(
            "ingest: %.0f msg/s, %.0f rows/s written, %d errors; spool %d batch(es) %d bytes; "
            "held %d msg; received->stored p95 <= %s; store %s",
            (current.messages - self._last.messages) / elapsed,
            (current.rows - self._last.rows) / elapsed,
            current.errors - self._last.errors,
            self.spool.batches,
            self.spool.bytes,
            metrics.held_messages.value(),
            "n/a" if math.isnan(p95) else f"{p95:g}s",
            "up" if metrics.store_up.value() else "DOWN",
        )
        self._last = current
