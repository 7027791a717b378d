"""The durable outbox: every message is a JSON file on disk until a channel accepted it.

* ``pending/``: messages to send, new or waiting for a retry (with their attempt count and the
  time of the next attempt). They survive a restart, a crash or a receiver down for days.
* ``failed/``: messages a receiver refused as such (HTTP 400/413/415/422, SMTP 5xx for the
  recipients). Kept for the operator, who moves a file back to ``pending/`` to send it again.

Every attempt, successful or not, is appended to the audit trail (JSON lines).
Files are written to a temporary name then renamed, so a crash never leaves half a message.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from alerts.channels import Attempt, send_smtp, send_webhook

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 10.0
BACKOFF_MAX_S = 3600.0


@dataclass(slots=True)
class Envelope:
    """A message for one channel, with its delivery bookkeeping."""

    id: str
    """Idempotency key: the same for every attempt, so a receiver can drop duplicates."""
    channel: dict[str, Any]
    """``kind`` (webhook or smtp) and the channel's settings; secrets only by env var name."""
    payload: dict[str, Any]
    created_at: float
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def filename(self) -> str:
        """Oldest first when sorted by name."""
        return f"{int(self.created_at * 1000):015d}-{self.id}-{self.channel['kind']}.json"


def backoff_s(attempts: int, *, rng: random.Random | None = None) -> float:
    """Seconds before attempt ``attempts + 1``: exponential from 10 s, at most an hour, with
    jitter so that many messages to one recovering receiver do not arrive in one burst."""
    delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * float(2 ** min(30, max(0, attempts - 1))))
    jitter = float((rng or random).uniform(0.8, 1.0))
    return delay * jitter


Sender = Callable[[Envelope, float], Attempt]


class Outbox:
    """Messages waiting for delivery, on disk, with their audit trail."""

    def __init__(
        self,
        directory: Path,
        audit_file: Path,
        *,
        senders: Mapping[str, Sender] | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.pending_dir = directory / "pending"
        self.failed_dir = directory / "failed"
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        self.failed_dir.mkdir(parents=True, exist_ok=True)
        self.audit_file = audit_file
        self.audit_file.parent.mkdir(parents=True, exist_ok=True)
        self._client = http_client or httpx.Client(follow_redirects=False)
        self._senders: dict[str, Sender] = {
            "webhook": lambda env, now: send_webhook(
                env.channel, env.id, env.payload, now=now, client=self._client
            ),
            "smtp": lambda env, now: send_smtp(env.channel, env.id, env.payload),
            **(senders or {}),
        }

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def put(self, envelope: Envelope) -> Path:
        """Keep a message durably (fsync'd) until it is delivered."""
        envelope.next_attempt_at = envelope.next_attempt_at or envelope.created_at
        return self._write(self.pending_dir / envelope.filename, envelope)

    @staticmethod
    def _write(path: Path, envelope: Envelope) -> Path:
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(asdict(envelope), handle, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return path

    def pending(self) -> list[Envelope]:
        """Messages not delivered yet, oldest first."""
        return [self._read(p) for p in sorted(self.pending_dir.glob("*.json"))]

    def failed(self) -> list[Envelope]:
        """Messages a receiver refused for good, oldest first."""
        return [self._read(p) for p in sorted(self.failed_dir.glob("*.json"))]

    @staticmethod
    def _read(path: Path) -> Envelope:
        return Envelope(**json.loads(path.read_text("utf-8")))

    def deliver_due(self, now: datetime) -> list[tuple[Envelope, Attempt]]:
        """Make one attempt for every message whose time has come; return what happened.

        An exclusive lock on the outbox makes a second process on the same directory (``smartcity
        alerts test`` next to the running evaluator) wait instead of sending a message twice.
        """
        with (self.pending_dir.parent / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return self._deliver_due(now)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _deliver_due(self, now: datetime) -> list[tuple[Envelope, Attempt]]:
        stamp = now.timestamp()
        done: list[tuple[Envelope, Attempt]] = []
        for path in sorted(self.pending_dir.glob("*.json")):
            try:
                envelope = self._read(path)
            except FileNotFoundError:
                continue  # delivered meanwhile by another process
            except (OSError, ValueError, TypeError) as exc:
                log.error("outbox file %s is unreadable (%s); moved to failed/", path.name, exc)
                os.replace(path, self.failed_dir / path.name)
                continue
            if envelope.next_attempt_at > stamp:
                continue
            attempt = self._attempt(envelope, stamp)
            done.append((envelope, attempt))
            envelope.attempts += 1
            envelope.history.append({"at": stamp, "status": attempt.status, "error": attempt.error})
            envelope.history = envelope.history[-20:]
            if attempt.ok:
                path.unlink()
                outcome = "delivered"
            elif attempt.retryable:
                envelope.last_error = attempt.error
                envelope.next_attempt_at = stamp + backoff_s(envelope.attempts)
                self._write(path, envelope)
                outcome = "retry"
            else:
                envelope.last_error = attempt.error
                self._write(self.failed_dir / path.name, envelope)
                path.unlink()
                outcome = "failed"
            self._audit(envelope, attempt, outcome, stamp)
        return done

    def _attempt(self, envelope: Envelope, stamp: float) -> Attempt:
        sender = self._senders.get(str(envelope.channel.get("kind")))
        if sender is None:
            return Attempt(
                ok=False, retryable=False, error=f"unknown channel kind {envelope.channel.get('kind')!r}"
            )
        try:
            return sender(envelope, stamp)
        except Exception as exc:  # a bug in a channel must not stop the other deliveries
            log.exception("delivery of %s crashed", envelope.id)
            return Attempt(ok=False, retryable=True, error=f"internal error: {exc!r}")

    def audit(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to the audit trail (a delivery attempt, a staff action)."""
        with self.audit_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _audit(self, envelope: Envelope, attempt: Attempt, outcome: str, stamp: float) -> None:
        record = {
            "time": datetime.fromtimestamp(stamp, UTC).isoformat(),
            "message_id": envelope.id,
            "channel": envelope.channel.get("kind"),
            "target": attempt.target,
            "commune": envelope.payload.get("alert", {}).get("commune", {}).get("insee"),
            "type": envelope.payload.get("type"),
            "attempt": envelope.attempts,
            "outcome": outcome,
            "status": attempt.status,
            "error": attempt.error,
            "next_attempt_at": (
                datetime.fromtimestamp(envelope.next_attempt_at, UTC).isoformat()
                if outcome == "retry"
                else None
            ),
        }
        self.audit(record)
        level = logging.INFO if outcome == "delivered" else logging.WARNING
        log.log(level, "message %s via %s: %s %s", envelope.id, attempt.target, outcome, attempt.error or "")
