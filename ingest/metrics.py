"""Metrics of the ingestor in the Prometheus text format, served over HTTP with ``/healthz``.

Small on purpose: counters, gauges and histograms with labels, updated from the ingestor's
threads, rendered on demand. Each metric has one writing thread (the MQTT network thread for
what arrives, the writer thread for the rest), so plain Python arithmetic under the GIL is
enough; the lock only keeps a render from seeing a half-created label set.
"""

from __future__ import annotations

import errno
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LabelValues = tuple[str, ...]

EPHEMERAL_PORTS_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_port_range() -> range | None:
    """The ports the kernel gives outgoing connections (Linux), or None where unknown."""
    try:
        low, high = (int(part) for part in EPHEMERAL_PORTS_FILE.read_text().split())
    except (OSError, ValueError):
        return None
    return range(low, high + 1)


class MetricsPortUnavailable(OSError):
    """The metrics port cannot be listened on; the message says why and what to do."""


def _bind_failure(host: str, port: int, exc: OSError) -> MetricsPortUnavailable:
    message = f"cannot serve /metrics and /healthz on {host}:{port}: {exc.strerror or exc}"
    if exc.errno == errno.EADDRINUSE:
        message += (
            " (another process listens there, or an outgoing connection used this port as its "
            "local port less than a minute ago: its TIME_WAIT holds the port for 60 s"
        )
        ephemeral = ephemeral_port_range()
        if ephemeral is not None and port in ephemeral:
            message += (
                f"; {port} is in the kernel's range for outgoing connections "
                f"{ephemeral.start}-{ephemeral.stop - 1}: choose ingest.metrics_port below it"
            )
        message += ")"
    return MetricsPortUnavailable(exc.errno, message)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in zip(names, values, strict=True))
    return "{" + inner + "}"


def _format_number(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and float(value).is_integer()):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A value that only goes up (messages, rows, errors)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[LabelValues, float] = {} if labels else {(): 0}

    def inc(self, amount: float = 1, *labels: str) -> None:
        """Add ``amount`` to the series with these label values."""
        values = self._values
        if labels in values:
            values[labels] += amount
        else:
            with self._lock:
                values[labels] = values.get(labels, 0) + amount

    def value(self, *labels: str) -> float:
        """The current value of one series (0 when never incremented)."""
        return self._values.get(labels, 0)

    def total(self) -> float:
        """The sum over every label set."""
        with self._lock:
            return sum(self._values.values())

    def items(self) -> list[tuple[LabelValues, float]]:
        """Every (label values, value) pair."""
        with self._lock:
            return sorted(self._values.items())

    def render(self) -> list[str]:
        lines = self.header()
        for labels, value in self.items():
            lines.append(f"{self.name}{_format_labels(self.label_names, labels)} {_format_number(value)}")
        return lines


class Gauge(Counter):
    """A value that goes up and down (spool depth, queue length); may be computed on render."""

    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        *,
        function: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self._function = function

    def track(self, function: Callable[[], float]) -> None:
        """Compute the gauge with ``function`` at each render."""
        self._function = function

    def set(self, value: float, *labels: str) -> None:
        """Set the series with these label values."""
        with self._lock:
            self._values[labels] = value

    def value(self, *labels: str) -> float:
        """The current value (computed when the gauge has a function)."""
        if self._function is not None and not labels:
            return self._function()
        return super().value(*labels)

    def items(self) -> list[tuple[LabelValues, float]]:
        """Every (label values, value) pair."""
        if self._function is not None:
            return [((), self._function())]
        return super().items()


class Histogram(_Metric):
    """Distribution of a duration (write latency, end-to-end lag) over fixed buckets, in seconds."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = np.asarray(sorted(buckets), dtype=np.float64)
        self._counts = np.zeros(len(self.buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.observe_many(np.asarray([value], dtype=np.float64))

    def observe_many(self, values: np.ndarray) -> None:
        """Record many observations at once (vectorised: one call per stored batch)."""
        if values.size == 0:
            return
        slots = np.searchsorted(self.buckets, values, side="left")
        counts = np.bincount(slots, minlength=len(self.buckets) + 1)
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())
            self._count += int(values.size)

    @property
    def count(self) -> int:
        """How many observations were recorded."""
        return self._count

    def quantile(self, q: float) -> float:
        """An upper bound of the ``q`` quantile (the bucket bound it falls in), NaN when empty."""
        with self._lock:
            counts = self._counts.copy()
        total = int(counts.sum())
        if total == 0:
            return math.nan
        index = int(np.searchsorted(np.cumsum(counts), q * total, side="left"))
        return float(self.buckets[index]) if index < len(self.buckets) else math.inf

    def render(self) -> list[str]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total_sum, count = self._sum, self._count
        lines = self.header()
        for bound, cum in zip(self.buckets, cumulative[:-1], strict=True):
            lines.append(f'{self.name}_bucket{{le="{_format_number(float(bound))}"}} {int(cum)}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {int(cumulative[-1])}')
        lines.append(f"{self.name}_sum {_format_number(total_sum)}")
        lines.append(f"{self.name}_count {count}")
        return lines


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400)


class IngestMetrics:
    """Every metric the ingestor exposes (``smartcity_ingest_*``)."""

    def __init__(self) -> None:
        p = "smartcity_ingest_"
        self.messages = Counter(
            p + "messages_total",
            "MQTT messages received on the readings topics, counted as each batch is decoded.",
        )
        self.bytes = Counter(p + "bytes_total", "Payload bytes received.")
        self.readings = Counter(p + "readings_total", "Readings decoded and accepted, by family.", ["family"])
        self.rows_written = Counter(
            p + "rows_written_total",
            "Rows written to the store (directly or replayed from the spool), by measurement.",
            ["measurement"],
        )
        self.errors = Counter(
            p + "errors_total",
            "Decoder refusals by reason (message, reading or field level; see docs/contract.md).",
            ["reason"],
        )
        self.deadletters = Counter(
            p + "deadletter_messages_total",
            "Messages written to the dead-letter, by the reason of their first error.",
            ["reason"],
        )
        self.unknown_fields = Counter(
            p + "unknown_fields_total",
            "Field names refused as unknown_field, by family (the names are in the dead-letter).",
            ["family"],
        )
        self.rejected_rows_capped = Counter(
            p + "rejected_rows_capped_total",
            "Refusals not written to rejected_readings because their device hit its per-batch cap "
            "(they stay in the dead-letter file).",
        )
        self.conflicts = Counter(
            p + "conflicting_readings_total",
            "Readings dropped because a later reading of the same device and instant in the same "
            "batch disagreed with them, by family.",
            ["family"],
        )
        self.acked = Counter(p + "acked_messages_total", "Messages acknowledged to the broker.")
        self.batches = Counter(p + "batches_total", "Batches flushed, by outcome.", ["outcome"])
        self.store_failures = Counter(
            p + "store_failures_total", "Store writes that failed and were spooled, by error.", ["error"]
        )
        self.store_rejected_rows = Counter(
            p + "store_rejected_rows_total", "Rows the store refused individually (sent to the dead-letter)."
        )
        self.spooled_batches = Counter(p + "spooled_batches_total", "Batches appended to the spool.")
        self.replayed_batches = Counter(
            p + "replayed_batches_total", "Spooled batches replayed into the store."
        )
        self.spool_bytes = Gauge(p + "spool_bytes", "Bytes held in the on-disk spool.")
        self.spool_batches = Gauge(p + "spool_batches", "Batches held in the on-disk spool.")
        self.spool_full = Gauge(
            p + "spool_full", "1 while the spool is full and acknowledgements are withheld."
        )
        self.held_messages = Gauge(
            p + "held_messages",
            "Messages received but not yet acknowledged (batching, or withheld while the spool is full).",
        )
        self.queue_depth = Gauge(
            p + "queue_depth", "Messages waiting between the MQTT thread and the writer."
        )
        self.connected = Gauge(p + "broker_connected", "1 while connected to the broker.")
        self.store_up = Gauge(p + "store_up", "1 while the last store write succeeded.")
        self.store_write_seconds = Histogram(
            p + "store_write_seconds",
            "Duration of one store write (one measurement of one batch).",
            LATENCY_BUCKETS,
        )
        self.lag_observed = Histogram(
            p + "lag_observed_seconds",
            "Per reading, from its observed time to when it was stored (lateness plus ingest delay).",
            LAG_BUCKETS,
        )
        self.lag_received = Histogram(
            p + "lag_received_seconds",
            "Per reading, from its arrival at the ingestor to when it was stored.",
            LAG_BUCKETS,
        )

    def all(self) -> Iterable[_Metric]:
        """Every metric, in render order."""
        return [value for value in vars(self).values() if isinstance(value, _Metric)]

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"


HealthCheck = Callable[[], tuple[bool, str]]


class MetricsServer:
    """``GET /metrics`` (Prometheus text format) and ``GET /healthz`` on a thread of its own."""

    def __init__(self, metrics: IngestMetrics, health: HealthCheck, host: str, port: int) -> None:
        metrics_ref, health_ref = metrics, health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._answer(200, metrics_ref.render(), "text/plain; version=0.0.4; charset=utf-8")
                elif path == "/healthz":
                    ok, detail = health_ref()
                    self._answer(200 if ok else 503, detail + "\n", "text/plain; charset=utf-8")
                else:
                    self._answer(404, "not found: try /metrics or /healthz\n", "text/plain")

            def _answer(self, status: int, body: str, content_type: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                # Scrapes every few seconds would drown the ingestor's own log.
                return

        ephemeral = ephemeral_port_range()
        if port and ephemeral is not None and port in ephemeral:
            log.warning(
                "metrics port %d is in the kernel's range for outgoing connections (%d-%d): any "
                "connection of this machine may hold it, and a restarted worker may then not bind "
                "it for a minute; choose ingest.metrics_port below %d",
                port,
                ephemeral.start,
                ephemeral.stop - 1,
                ephemeral.start,
            )
        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise _bind_failure(host, port, exc) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingest-metrics", daemon=True)

    @property
    def port(self) -> int:
        """The port actually listened on (useful when 0 was asked)."""
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
