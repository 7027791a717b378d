"""The dead-letter: every message the decoder refused (wholly or partly), kept with its payload.

Each refused message becomes one JSON record, appended to a local JSONL file (fsynced before the
message is acknowledged, so the record is as durable as a stored reading) and published, best
effort, on ``<prefix>/<reason>/<original topic>`` (by default ``smartcity/v1/_deadletter/...``)
for whoever watches. The file is the record of truth; the topic is a convenience.

A record::

    {"received_at": "2026-11-28T13:45:20.123456789Z", "received_at_ns": 1795873520123456789,
     "topic": "smartcity/v1/78498/air_quality/aq-1", "reason": "malformed_json",
     "detail": "payload is not valid JSON: ...", "refused": true, "kept_readings": 0,
     "errors": [{"reason": ..., "detail": ..., "index": ..., "field": ..., "value": ...}],
     "payload": "<the original payload as text>"}

``payload_base64`` replaces ``payload`` when the payload is not UTF-8. Rows the store itself
refused become records of reason ``store_rejected`` with the row instead of a payload.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from sensors.readings import Decoded, DecodeError

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
"""Publishes one dead-letter record (topic, JSON bytes); must not block."""

TOPIC_PAYLOAD_LIMIT = 64 * 1024
"""Payloads larger than this are cut in the published copy (the file keeps them whole), so a
dead-letter message never exceeds the broker's message size limit."""


def format_ns(time_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. ``2026-11-28T13:45:20.123456789Z``."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def _error_dict(error: DecodeError) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": error.reason, "detail": error.detail}
    if error.index is not None:
        out["index"] = error.index
    if error.field is not None:
        out["field"] = error.field
    if error.value is not None:
        out["value"] = error.value
    if error.time_ns is not None:
        out["time"] = format_ns(error.time_ns)
    return out


def _payload_fields(payload: bytes, limit: int | None) -> dict[str, Any]:
    cut = limit is not None and len(payload) > limit
    body = payload[:limit] if cut and limit is not None else payload
    try:
        fields: dict[str, Any] = {"payload": body.decode("utf-8")}
    except UnicodeDecodeError:
        # Cutting may split a character: the published copy then falls back to base64 too.
        fields = {"payload_base64": base64.b64encode(body).decode("ascii")}
    if cut:
        fields["payload_truncated"] = True
        fields["payload_bytes"] = len(payload)
    return fields


def message_record(topic: str, payload: bytes, received_at_ns: int, decoded: Decoded) -> dict[str, Any]:
    """The dead-letter record of one message the decoder refused, wholly or in part."""
    first = decoded.errors[0]
    return {
        "received_at": format_ns(received_at_ns),
        "received_at_ns": received_at_ns,
        "topic": topic,
        "reason": first.reason,
        "detail": first.detail,
        "refused": decoded.refused,
        "kept_readings": len(decoded.readings),
        "errors": [_error_dict(error) for error in decoded.errors],
    }


def store_rejected_record(measurement: str, row: dict[str, Any], reason: str, now_ns: int) -> dict[str, Any]:
    """The dead-letter record of one row the store refused (its payload is long gone: keep the row)."""
    return {
        "received_at": format_ns(now_ns),
        "received_at_ns": now_ns,
        "topic": None,
        "reason": "store_rejected",
        "detail": reason,
        "measurement": measurement,
        "row": row,
    }


def deadletter_topic(prefix: str, reason: str, topic: str | None) -> str:
    """``<prefix>/<reason>/<original topic>``; at least 6 levels deep with the default prefix, so
    it never matches the 5-level reading subscription ``smartcity/v1/+/+/+``."""
    return f"{prefix}/{reason}/{topic}" if topic else f"{prefix}/{reason}"


class DeadLetter:
    """Appends dead-letter records to a JSONL file and publishes them on the dead-letter topic."""

    def __init__(self, path: Path, *, topic_prefix: str, publish: Publish | None = None) -> None:
        self.path = path
        self.topic_prefix = topic_prefix
        self._publish = publish
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._dirty = False
        # Records are added by the batcher thread and synced by the writer thread.
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any], payload: bytes | None = None) -> None:
        """Append one record (buffered until ``sync``) and publish it.

        ``payload`` is the original message payload, stored whole in the file and cut to
        ``TOPIC_PAYLOAD_LIMIT`` on the topic.
        """
        file_record = record if payload is None else {**record, **_payload_fields(payload, None)}
        line = json.dumps(file_record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._file.write(line)
            self._dirty = True
        if self._publish is None:
            return
        topic_record = (
            record if payload is None else {**record, **_payload_fields(payload, TOPIC_PAYLOAD_LIMIT)}
        )
        topic = deadletter_topic(self.topic_prefix, str(record["reason"]), record.get("topic"))
        try:
            self._publish(topic, json.dumps(topic_record, ensure_ascii=False, default=str).encode())
        except Exception:  # the file holds the record; a failed publish must not stop ingest
            log.exception("dead-letter: publishing on %s failed (the record is in %s)", topic, self.path)

    def add_message(self, topic: str, payload: bytes, received_at_ns: int, decoded: Decoded) -> str:
        """Record a message the decoder refused (wholly or in part); returns the reason recorded."""
        record = message_record(topic, payload, received_at_ns, decoded)
        if decoded.payload_is_private:
            # A camera payload refused for an image, face or identity field: keeping its bytes
            # would keep exactly what the contract forbids. The size and the errors say enough.
            self.add({**record, "payload_withheld": True, "payload_bytes": len(payload)})
        else:
            self.add(record, payload)
        return str(record["reason"])

    def add_rows(self, records: Sequence[dict[str, Any]]) -> None:
        """Record several rows the store refused."""
        for record in records:
            self.add(record)

    def sync(self) -> None:
        """Make every record added so far durable (flush and fsync); call before acknowledging."""
        with self._lock:
            if not self._dirty:
                return
            self._file.flush()
            self._dirty = False
            fileno = self._file.fileno()
        os.fsync(fileno)

    def close(self) -> None:
        """Sync and close the file."""
        self.sync()
        self._file.close()
