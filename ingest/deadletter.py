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
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ingest.conflicts import Conflict
from sensors.readings import Decoded, DecodeError
from sensors.topics import reading_topic

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], None]
"""Publishes one dead-letter record (topic, JSON bytes); must not block."""

TOPIC_PAYLOAD_LIMIT = 64 * 1024
"""Payloads larger than this are cut in the published copy (the file keeps them whole), so a
dead-letter message never exceeds the broker's message size limit."""


TOPIC_ERRORS_LIMIT = 100
"""At most this many errors in the published copy of a record (``errors_truncated`` then gives
the count; the file keeps them all): a payload of thousands of invented keys stays one modest
message on the dead-letter topic."""


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


def withheld_payload_fields(payload: bytes, decoded: Decoded) -> dict[str, Any]:
    """What a record keeps of a private payload instead of its bytes: the key refused (when one
    was), the size and a SHA-256."""
    fields: dict[str, Any] = {
        "payload_withheld": True,
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    refused_key = next((e.field for e in decoded.errors if e.reason == "forbidden_field"), None)
    if refused_key is not None:
        fields["refused_key"] = refused_key
    return fields


def _no_publish(topic: str, body: bytes) -> None:
    return None


def conflict_record(family: str, conflict: Conflict, now_ns: int) -> dict[str, Any]:
    """The dead-letter record of readings dropped because a later reading of the same device and
    instant, in the same batch, disagreed with them (``ingest.conflicts``)."""
    topic = reading_topic(conflict.insee, family, conflict.device_id)
    fields = ", ".join(conflict.fields)
    record: dict[str, Any] = {
        "received_at": format_ns(now_ns),
        "received_at_ns": now_ns,
        "topic": topic,
        "reason": "conflicting_readings",
        "detail": (
            f"{len(conflict.dropped) + 1} readings of this device at {format_ns(conflict.time_ns)} in one "
            f"batch disagree on {fields}: the last received was kept whole, the others dropped"
        ),
        "time": format_ns(conflict.time_ns),
        "fields": list(conflict.fields),
        "kept": conflict.kept,
        "dropped": conflict.dropped,
    }
    return record


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
        self._publish_now: Publish = publish if publish is not None else _no_publish
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")
        self._dirty = False
        self._unpublished: list[tuple[str, bytes]] = []
        # Records are added by the batcher thread and synced by the writer thread.
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any], payload: bytes | None = None) -> None:
        """Append one record (buffered until ``sync``, which also publishes it).

        ``payload`` is the original message payload, stored whole in the file and cut to
        ``TOPIC_PAYLOAD_LIMIT`` on the topic.
        """
        file_record = record if payload is None else {**record, **_payload_fields(payload, None)}
        line = json.dumps(file_record, ensure_ascii=False, default=str) + "\n"
        publication: tuple[str, bytes] | None = None
        if self._publish is not None:
            topic_record = (
                record if payload is None else {**record, **_payload_fields(payload, TOPIC_PAYLOAD_LIMIT)}
            )
            errors = topic_record.get("errors")
            if isinstance(errors, list) and len(errors) > TOPIC_ERRORS_LIMIT:
                topic_record = {
                    **topic_record,
                    "errors": errors[:TOPIC_ERRORS_LIMIT],
                    "errors_truncated": len(errors),
                }
            topic = deadletter_topic(self.topic_prefix, str(record["reason"]), record.get("topic"))
            publication = (topic, json.dumps(topic_record, ensure_ascii=False, default=str).encode())
        with self._lock:
            self._file.write(line)
            self._dirty = True
            if publication is not None:
                self._unpublished.append(publication)

    def add_message(self, topic: str, payload: bytes, received_at_ns: int, decoded: Decoded) -> str:
        """Record a message the decoder refused (wholly or in part); returns the reason recorded."""
        record = message_record(topic, payload, received_at_ns, decoded)
        if decoded.payload_is_private:
            # A camera payload may hold an image, a face or a plate: keeping its bytes would keep
            # exactly what the contract forbids. The key refused, the size and a hash say enough
            # (the hash tells a resent payload from a new one without revealing it).
            self.add({**record, **withheld_payload_fields(payload, decoded)})
        else:
            self.add(record, payload)
        return str(record["reason"])

    def add_rows(self, records: Sequence[dict[str, Any]]) -> None:
        """Record several rows the store refused."""
        for record in records:
            self.add(record)

    def sync(self) -> None:
        """Make every record added so far durable (flush and fsync), then publish them.

        Call before acknowledging their messages. The topic only ever carries records the file
        already holds: the file is the record of truth.
        """
        with self._lock:
            if not self._dirty:
                return
            self._file.flush()
            self._dirty = False
            fileno = self._file.fileno()
            unpublished, self._unpublished = self._unpublished, []
        os.fsync(fileno)
        for topic, body in unpublished:
            try:
                self._publish_now(topic, body)
            except Exception:  # the file holds the record; a failed publish must not stop ingest
                log.exception("dead-letter: publishing on %s failed (the record is in %s)", topic, self.path)

    def close(self) -> None:
        """Sync and close the file."""
        self.sync()
        self._file.close()
