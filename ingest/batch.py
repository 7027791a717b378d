"""Turning received messages into one batch of store tables.

The builder decodes each message as it arrives (spreading the CPU over the batch period),
keeps its readings, its refusals and its acknowledgement, and when asked converts everything at
once into one frame per measurement: the raw families (``sensors.frames.readings_to_frames``)
and ``rejected_readings`` (docs/measurements.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import polars as pl

from ingest.conflicts import resolve_same_instant
from ingest.deadletter import DeadLetter, conflict_record
from ingest.metrics import IngestMetrics
from ingest.tables import Table
from sensors.decoder import Decoder
from sensors.frames import RECEIVED_AT, TAGS, readings_to_frames
from sensors.readings import Decoded, Reading

REJECTED_MEASUREMENT = "rejected_readings"
REJECTED_TAGS = ("insee", "family", "device_id", "reason")
"""Tags hold only what the platform chooses (its communes, families, reason codes) and the
broker-vouched device: the ``field`` name is a sender's choice, so it is a string field, never a
tag (a message of 3,000 invented keys must not create 3,000 series)."""
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    "time": pl.Datetime("ns", "UTC"),
    "insee": pl.String(),
    "family": pl.String(),
    "device_id": pl.String(),
    "reason": pl.String(),
    "field": pl.String(),
    "value": pl.Float64(),
    "detail": pl.String(),
}

UNATTRIBUTABLE = frozenset({"bad_topic", "unknown_commune", "unknown_family", "internal_error"})
"""Message-level reasons whose topic does not name a real device of a known commune and family:
no ``rejected_readings`` row for them (a stranger could otherwise create series at will)."""


class Message(NamedTuple):
    """One MQTT message as the network thread hands it over."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at_ns: int
    generation: int
    """Which broker connection delivered it: an acknowledgement is only valid on that one."""


class Ack(NamedTuple):
    """What acknowledging one message takes."""

    mid: int
    qos: int
    generation: int


@dataclass(slots=True)
class Batch:
    """Tables to store, and the messages to acknowledge once they are durable."""

    tables: list[Table]
    acks: list[Ack]
    messages: int
    readings: int
    rejected: int

    @property
    def rows(self) -> int:
        """Rows over every table."""
        return sum(table.rows for table in self.tables)


@dataclass(slots=True)
class _Rejected:
    time: list[int] = field(default_factory=list)
    insee: list[str] = field(default_factory=list)
    family: list[str] = field(default_factory=list)
    device_id: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    field_name: list[str] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.time)

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "time": self.time,
                "insee": self.insee,
                "family": self.family,
                "device_id": self.device_id,
                "reason": self.reason,
                "field": self.field_name,
                "value": self.value,
                "detail": self.detail,
            },
            schema=REJECTED_SCHEMA,
        )


class BatchBuilder:
    """Accumulates decoded messages until the writer flushes them as one ``Batch``."""

    def __init__(
        self,
        decoder: Decoder,
        deadletter: DeadLetter,
        metrics: IngestMetrics,
        *,
        rejected_rows_per_device: int = 100,
    ) -> None:
        self._decoder = decoder
        self._deadletter = deadletter
        self._metrics = metrics
        self._rejected_cap = rejected_rows_per_device
        self._reset()

    def _reset(self) -> None:
        self._readings: list[Reading] = []
        self._received: list[int] = []
        self._rejected = _Rejected()
        self._rejected_per_device: dict[tuple[str, str, str], int] = {}
        self._acks: list[Ack] = []

    @property
    def rows(self) -> int:
        """Rows the batch would hold now."""
        return len(self._readings) + len(self._rejected)

    @property
    def messages(self) -> int:
        """Messages in the batch."""
        return len(self._acks)

    def add(self, message: Message) -> None:
        """Decode one message into the batch; its refusals go to the dead-letter now."""
        self._acks.append(Ack(message.mid, message.qos, message.generation))
        decoded = self._decoder.decode(message.topic, message.payload)
        readings = decoded.readings
        if readings:
            self._readings.extend(readings)
            self._received.extend([message.received_at_ns] * len(readings))
        if decoded.errors:
            self._refused(message, decoded)

    def _refused(self, message: Message, decoded: Decoded) -> None:
        metrics = self._metrics
        for error in decoded.errors:
            metrics.errors.inc(1, error.reason)
        reason = self._deadletter.add_message(message.topic, message.payload, message.received_at_ns, decoded)
        metrics.deadletters.inc(1, reason)
        if decoded.insee is None or decoded.family is None or decoded.device_id is None:
            return
        unknown = sum(1 for error in decoded.errors if error.reason == "unknown_field")
        if unknown:
            metrics.unknown_fields.inc(unknown, decoded.family)
        device = (decoded.insee, decoded.family, decoded.device_id)
        written = self._rejected_per_device.get(device, 0)
        room = self._rejected_cap - written
        errors = [error for error in decoded.errors if error.reason not in UNATTRIBUTABLE]
        if len(errors) > room:
            metrics.rejected_rows_capped.inc(len(errors) - max(room, 0))
            errors = errors[: max(room, 0)]
        self._rejected_per_device[device] = written + len(errors)
        rejected = self._rejected
        same_instant: dict[int, int] = {}
        for error in errors:
            # Without an observed time, the arrival time stands in, nudged by the reading's index;
            # several refusals at one instant are nudged a nanosecond apart so that none overwrites
            # another (the field name is not a tag, so it no longer tells them apart).
            base = error.time_ns if error.time_ns is not None else message.received_at_ns + (error.index or 0)
            nudge = same_instant.get(base, 0)
            same_instant[base] = nudge + 1
            time_ns = base + nudge
            value = error.value
            rejected.time.append(time_ns)
            rejected.insee.append(decoded.insee)
            rejected.family.append(decoded.family)
            rejected.device_id.append(decoded.device_id)
            rejected.reason.append(error.reason)
            rejected.field_name.append(error.field or "")
            rejected.value.append(
                float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
            )
            rejected.detail.append(error.detail)

    def _one_per_instant(self, family: str, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame with one reading per device and instant (``ingest.conflicts``); each
        conflict is counted and dead-lettered."""
        fields = [column for column in frame.columns if column not in (*TAGS, "time", RECEIVED_AT)]
        frame, conflicts = resolve_same_instant(frame, fields)
        if conflicts:
            self._metrics.conflicts.inc(sum(len(c.dropped) for c in conflicts), family)
            now_ns = time.time_ns()
            for conflict in conflicts:
                self._deadletter.add(conflict_record(family, conflict, now_ns))
        return frame

    def take(self) -> Batch:
        """The batch built so far, as store tables; the builder starts a new one."""
        tables = [
            Table(family, self._one_per_instant(family, frame), TAGS)
            for family, frame in readings_to_frames(self._readings, self._received).items()
        ]
        for table in tables:
            self._metrics.readings.inc(table.rows, table.measurement)
        rejected = len(self._rejected)
        if rejected:
            tables.append(Table(REJECTED_MEASUREMENT, self._rejected.frame(), REJECTED_TAGS))
        batch = Batch(
            tables=tables,
            acks=self._acks,
            messages=len(self._acks),
            readings=len(self._readings),
            rejected=rejected,
        )
        self._reset()
        return batch
