"""Fixtures of the alerting tests: a real HTTP server that records requests, a real SMTP server
(aiosmtpd), an injectable clock, and helpers that write store frames in docs/measurements.md's
schema (so the tests do not depend on processing).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from alerts.engine import Evaluator
from alerts.outbox import Outbox
from alerts.rules import RulesFile, parse_rules
from alerts.signing import verify
from sensors.communes import CommuneRegistry
from storage.base import TIME_DTYPE, Store
from storage.duckdb_store import DuckDBStore
from tests.servers import free_port

SECRET = "s3cr3t-for-tests"
SECRET_ENV = "SMARTCITY_TEST_WEBHOOK_SECRET"
START = datetime(2026, 7, 14, 10, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand: ``for`` delays and cooldowns without waiting."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        """Move forward by ``timedelta(**kwargs)`` and return the new time."""
        self.now += timedelta(**kwargs)
        return self.now


@dataclass
class Recorded:
    """One request the webhook receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 200

    @property
    def json(self) -> dict[str, Any]:
        """The decoded JSON body."""
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class WebhookReceiver:
    """A real HTTP server on a free port; answers with the queued statuses, then 200."""

    port: int = field(default_factory=free_port)
    requests: list[Recorded] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hold: threading.Event | None = None
    """When set to an event, each answer waits for it (a receiver slower than the timeout)."""
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The receiver's hook URL."""
        return f"http://127.0.0.1:{self.port}/hooks/mail"

    def start(self) -> None:
        """Listen (again) on the same port."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(Recorded(self.path, dict(self.headers.items()), body, status))
                if receiver.hold is not None:
                    receiver.hold.wait(timeout=30)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}' if status < 300 else b'{"error": "boom"}')

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening (a receiver that is down refuses connections)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def received(self) -> list[Recorded]:
        """Every request received, in order, whatever it was answered."""
        with self._lock:
            return list(self.requests)

    def accepted(self) -> list[Recorded]:
        """The requests answered with a 2xx: the messages the receiver took."""
        return [r for r in self.received() if 200 <= r.status < 300]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver, running."""
    server = WebhookReceiver()
    server.start()
    yield server
    server.stop()


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps what it receives."""

    port: int
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)


class _SinkHandler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd hook name)
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.sink.messages.append(message)
        self.sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"


def start_smtp(**controller_kwargs: Any) -> tuple[SmtpSink, Any]:
    """Start an aiosmtpd Controller on a free port; returns the sink and the controller."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink(port=free_port())
    controller = Controller(_SinkHandler(sink), hostname="127.0.0.1", port=sink.port, **controller_kwargs)
    controller.start()
    return sink, controller


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    """A plain SMTP server on a free port (no TLS, no auth: a local relay)."""
    sink, controller = start_smtp()
    yield sink
    controller.stop()


def verify_request(request: Recorded, *, now: datetime) -> int:
    """Check the HMAC signature of a recorded request as a receiver would."""
    return verify(SECRET, request.headers.get("X-Smartcity-Signature"), request.body, now=now.timestamp())


# -- store frames in the shared schema ------------------------------------------------------


def commune_aggregate(store: Store, insee: str, times: list[datetime], values: list[float]) -> None:
    """Rows of ``air_quality_15m_commune`` with ``pm10_mean`` (other stats too, as processing writes)."""
    frame = pl.DataFrame(
        {
            "time": times,
            "insee": [insee] * len(times),
            "pm10_mean": values,
            "pm10_max": [v * 1.2 for v in values],
            "pm10_count": [15] * len(times),
        },
        schema_overrides={"pm10_count": pl.Int64},
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    store.write("air_quality_15m_commune", frame, tags=["insee"])


def raw_readings(store: Store, family: str, insee: str, devices: list[str], times: list[datetime]) -> None:
    """One raw reading per device and time (the values do not matter for offline rules)."""
    rows = [(t, insee, d) for t in times for d in devices]
    field_name = {"network": "latency", "air_quality": "pm10", "building": "temperature"}.get(
        family, "latency"
    )
    frame = pl.DataFrame(
        {
            "time": [r[0] for r in rows],
            "insee": [r[1] for r in rows],
            "device_id": [r[2] for r in rows],
            field_name: [12.5] * len(rows),
        }
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    store.write(family, frame, tags=["insee", "device_id"])


# -- a whole alerting set-up ----------------------------------------------------------------


@dataclass
class AlertWorld:
    """A store, rules, an outbox directory and a clock; ``evaluator()`` builds one (again)."""

    tmp: Path
    store: Store
    rules: RulesFile
    registry: CommuneRegistry
    clock: FakeClock
    dashboard_url: str = "https://tableaux.example.fr"
    topology_csv: str | None = None
    _outboxes: list[Outbox] = field(default_factory=list)

    def evaluator(self) -> Evaluator:
        """A fresh evaluator on the same state file and outbox (what a restart gives)."""
        outbox = Outbox(self.tmp / "outbox", self.tmp / "audit.jsonl")
        self._outboxes.append(outbox)
        topology = None
        if self.topology_csv is not None:
            from alerts.topology import Topology

            path = self.tmp / "devices.csv"
            path.write_text(self.topology_csv)
            topology = Topology.load(path)
        return Evaluator(
            self.rules,
            self.store,
            self.registry,
            outbox,
            state_file=self.tmp / "state.json",
            dashboard_url=self.dashboard_url,
            topology=topology,
            clock=self.clock,
        )

    def audit(self) -> list[dict[str, Any]]:
        """The audit trail's records."""
        path = self.tmp / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def close(self) -> None:
        """Close outboxes and the store."""
        for outbox in self._outboxes:
            outbox.close()
        self.store.close()


def webhook_delivery(url: str, recipients: list[str] | None = None) -> dict[str, Any]:
    """A ``[delivery]`` table with a webhook to ``url``."""
    return {
        "recipients": recipients or ["astreinte@ville-poissy.example"],
        "webhook": {"url": url, "secret_env": SECRET_ENV, "timeout_s": 5},
    }


def make_world(
    tmp_path: Path,
    rules: Sequence[Mapping[str, Any]],
    delivery: Mapping[str, Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    clock: FakeClock | None = None,
    store: Store | None = None,
) -> AlertWorld:
    """Build an ``AlertWorld`` from rules written as TOML would parse them."""
    os.environ[SECRET_ENV] = SECRET
    registry = CommuneRegistry.load()
    data = {
        "defaults": dict(defaults or {"cooldown": "30m"}),
        "delivery": dict(delivery),
        "rules": list(rules),
    }
    return AlertWorld(
        tmp=tmp_path,
        store=store if store is not None else DuckDBStore(tmp_path / "store.duckdb"),
        rules=parse_rules(data, registry),
        registry=registry,
        clock=clock or FakeClock(),
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait on a condition with a deadline (never a bare sleep)."""
    from tests.servers import wait_until

    wait_until(condition, timeout=timeout, what=what)
