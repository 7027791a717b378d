"""The wire contract's decoder for whole batches of MQTT messages, straight into store frames.

``BatchDecoder`` gives exactly what ``sensors.decoder.Decoder`` gives message by message (the
same readings, the same errors), at a fraction of the cost for the common case. It works in two
tiers:

* **the fast path** takes a message only when it can vouch for all of it: the topic names a
  known commune and family; the payload is one native reading whose every key is ``ts`` or a
  field of the family, with the JSON type the field needs and within its bounds (checked by
  msgspec while it parses, in C, against one ``msgspec.Struct`` per family); ``ts`` is epoch
  milliseconds or a plain ``YYYY-MM-DDThh:mm:ss[.fff]Z``; at least one field has a value. The
  timestamps are parsed and checked (before 2000, more than a day ahead) over the whole batch
  at once in polars, and the frames are built directly from the decoded columns;
* **everything else** (FIWARE forms, batches, a field out of bounds, an unknown key, a bad
  timestamp, malformed JSON...) goes to the reference decoder, message by message, so its
  readings and its errors are the reference's by construction.

The fast path never refuses anything: a message it cannot vouch for is simply handed over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import msgspec
import polars as pl

from sensors.decoder import MAX_AHEAD_NS, MIN_TIME_NS, NS_PER_MS, Decoder
from sensors.families import FAMILIES, FamilySpec, FieldSpec
from sensors.frames import RECEIVED_AT, TIME_DTYPE, family_schema, readings_to_frames
from sensors.readings import Decoded
from sensors.topics import Topic, parse_topic

_INT64_MAX = 2**63 - 1
_HUGE = 1.7976931348623157e308
_MIN_TS_MS = MIN_TIME_NS // NS_PER_MS
_MAX_TS_MS = _INT64_MAX // NS_PER_MS
"""Epoch milliseconds the fast path takes (in ns they fit an Int64); the reference has the rest."""
_PLAIN_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?Z$"
"""The one RFC 3339 shape the fast path parses; any other spelling goes to the reference."""
_PLAIN_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"
_TOPIC_CACHE_SIZE = 100_000
_POSITION = "__position"


@dataclass(slots=True)
class BatchResult:
    """What a batch of messages decodes to."""

    frames: dict[str, pl.DataFrame]
    """One frame per family with readings (``sensors.frames.family_schema``), rows in the order
    of the messages (and of the readings within a message)."""
    refused: list[tuple[int, Decoded]] = field(default_factory=list)
    """``(position in the batch, the reference decoder's result)`` of every message with at
    least one error, in batch order."""
    fast: int = 0
    """How many messages the fast path decoded (the rest went to the reference decoder)."""

    @property
    def readings(self) -> int:
        """Readings over every family."""
        return sum(frame.height for frame in self.frames.values())


def _number_type(spec: FieldSpec) -> Any:
    if spec.kind == "float":
        low = -_HUGE if spec.minimum is None else float(spec.minimum)
        high = _HUGE if spec.maximum is None else float(spec.maximum)
        return Annotated[float, msgspec.Meta(ge=low, le=high)]
    # Ints must also fit the store's Int64 column; larger ones are the reference's to judge.
    low_int = -_INT64_MAX - 1 if spec.minimum is None else math.ceil(spec.minimum)
    high_int = _INT64_MAX if spec.maximum is None else math.floor(spec.maximum)
    return Annotated[int, msgspec.Meta(ge=low_int, le=high_int)]


def _field_type(spec: FieldSpec) -> Any:
    if spec.kind in ("float", "int"):
        return _number_type(spec)
    if spec.kind == "bool":
        return bool
    return Literal[spec.choices]


def struct_for(spec: FamilySpec) -> type[msgspec.Struct]:
    """A Struct that decodes exactly the native readings of ``spec`` the fast path vouches for."""
    fields: list[tuple[str, Any, Any]] = [
        ("ts", Annotated[int, msgspec.Meta(ge=_MIN_TS_MS, le=_MAX_TS_MS)] | str, msgspec.NODEFAULT)
    ]
    fields += [(f.name, _field_type(f) | None, None) for f in spec.fields]
    return msgspec.defstruct(f"Native_{spec.family.value}", fields, forbid_unknown_fields=True, gc=False)


def _fast_path_allowed(spec: FamilySpec) -> bool:
    """Every key the fast path takes passes the family's privacy allow-list, if it has one."""
    allowed = spec.allowed_keys
    return allowed is None or {"ts", *(f.name for f in spec.fields)} <= allowed


class BatchDecoder:
    """Decodes batches of MQTT messages; the same results as ``reference``, message by message."""

    def __init__(self, reference: Decoder) -> None:
        self.reference = reference
        self._decoders: dict[str, msgspec.json.Decoder[Any]] = {
            spec.family.value: msgspec.json.Decoder(struct_for(spec))
            for spec in FAMILIES.values()
            if _fast_path_allowed(spec)
        }
        self._field_names: dict[str, list[str]] = {
            spec.family.value: [f.name for f in spec.fields] for spec in FAMILIES.values()
        }
        self._topics: dict[str, Topic | None] = {}

    def _fast_topic(self, topic: str) -> Topic | None:
        """The parts of a topic the fast path may take (known commune and family), else None."""
        known = self._topics.get(topic, False)
        if known is not False:
            return known  # type: ignore[return-value]
        parsed = parse_topic(topic) if type(topic) is str else None
        result = (
            parsed
            if isinstance(parsed, Topic)
            and parsed.family in self._decoders
            and parsed.insee in self.reference.registry
            else None
        )
        if len(self._topics) >= _TOPIC_CACHE_SIZE:
            self._topics.clear()
        self._topics[topic] = result
        return result

    def decode(
        self, topics: Sequence[str], payloads: Sequence[bytes], received_at_ns: Sequence[int]
    ) -> BatchResult:
        """Decode messages ``topics[i]``/``payloads[i]`` received at ``received_at_ns[i]``."""
        count = len(topics)
        if len(payloads) != count or len(received_at_ns) != count:
            raise ValueError("topics, payloads and received_at_ns must be aligned")
        limit = self.reference.max_payload_bytes
        by_family: dict[str, tuple[list[int], list[Topic], list[Any]]] = {}
        slow: list[int] = []
        for position in range(count):
            topic = self._fast_topic(topics[position])
            payload = payloads[position]
            if topic is None or type(payload) is not bytes or len(payload) > limit:
                slow.append(position)
                continue
            try:
                reading = self._decoders[topic.family].decode(payload)
            except (msgspec.ValidationError, msgspec.DecodeError):
                slow.append(position)
                continue
            group = by_family.get(topic.family)
            if group is None:
                group = by_family[topic.family] = ([], [], [])
            group[0].append(position)
            group[1].append(topic)
            group[2].append(reading)
        now_ns = self.reference._clock()
        frames: dict[str, list[pl.DataFrame]] = {}
        fast = 0
        for family, group in by_family.items():
            frame, rejected = self._frame(family, group, received_at_ns, now_ns)
            slow.extend(rejected)
            fast += frame.height
            if frame.height:
                frames.setdefault(family, []).append(frame)
        slow.sort()
        refused: list[tuple[int, Decoded]] = []
        slow_readings = []
        slow_received: list[int] = []
        slow_positions: list[int] = []
        decode = self.reference.decode
        for position in slow:
            decoded = decode(topics[position], payloads[position])
            if decoded.errors:
                refused.append((position, decoded))
            if decoded.readings:
                slow_readings.extend(decoded.readings)
                slow_received.extend([received_at_ns[position]] * len(decoded.readings))
                slow_positions.extend([position] * len(decoded.readings))
        if slow_readings:
            positions_series = pl.Series(_POSITION, slow_positions, pl.Int64)
            for family, frame in readings_to_frames(slow_readings, slow_received).items():
                # readings_to_frames groups by family in reading order: take each group's positions.
                members = [i for i, reading in enumerate(slow_readings) if reading.family == family]
                frames.setdefault(family, []).append(frame.with_columns(positions_series.gather(members)))
        return BatchResult(
            frames={family: _in_order(parts) for family, parts in frames.items()},
            refused=refused,
            fast=fast,
        )

    def _frame(
        self,
        family: str,
        group: tuple[list[int], list[Topic], list[Any]],
        received_at_ns: Sequence[int],
        now_ns: int,
    ) -> tuple[pl.DataFrame, list[int]]:
        """The frame of the readings whose time and content the fast path vouches for, and the
        positions of the others (for the reference decoder).

        ``group`` is the family's messages that msgspec decoded: positions, topics, readings.
        """
        positions, topics, readings = group
        names = self._field_names[family]
        columns = list(zip(*(msgspec.structs.astuple(reading) for reading in readings), strict=True))
        stamps = columns[0]
        schema = family_schema(family)
        frame = pl.DataFrame(
            {
                _POSITION: positions,
                "ts_ms": [stamp if type(stamp) is int else None for stamp in stamps],
                "ts_text": [stamp if type(stamp) is str else None for stamp in stamps],
                "insee": [topic.insee for topic in topics],
                "device_id": [topic.device_id for topic in topics],
                **{name: columns[index + 1] for index, name in enumerate(names)},
                RECEIVED_AT: [received_at_ns[position] for position in positions],
            },
            schema={
                _POSITION: pl.Int64(),
                "ts_ms": pl.Int64(),
                "ts_text": pl.String(),
                **{name: dtype for name, dtype in schema.items() if name != "time"},
            },
        )
        text = pl.col("ts_text")
        parsed_text = (
            pl.when(text.str.contains(_PLAIN_UTC))
            .then(text.str.to_datetime(_PLAIN_UTC_FORMAT, time_unit="ns", time_zone="UTC", strict=False))
            .dt.epoch("ns")
        )
        time_ns = pl.coalesce(pl.col("ts_ms") * NS_PER_MS, parsed_text)
        has_value = pl.any_horizontal([pl.col(name).is_not_null() for name in names])
        vouched = (time_ns.is_between(MIN_TIME_NS, now_ns + MAX_AHEAD_NS).fill_null(False) & has_value).alias(
            "vouched"
        )
        checked = frame.with_columns(time_ns.alias("time_ns"), vouched)
        flags = checked.get_column("vouched")
        rejected = [] if flags.all() else checked.filter(~flags).get_column(_POSITION).to_list()
        out = (
            checked.lazy()
            .filter(pl.col("vouched"))
            .select(
                pl.col("time_ns")
                .cast(pl.Datetime("ns"))
                .dt.replace_time_zone("UTC")
                .cast(TIME_DTYPE)
                .alias("time"),
                *[name for name in schema if name != "time"],
                _POSITION,
            )
            .collect()
        )
        return out, rejected


def _in_order(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """One family's frames from both paths, back in message order, without the position."""
    frame = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")
    if len(parts) > 1:
        frame = frame.sort(_POSITION, maintain_order=True)
    return frame.drop(_POSITION)
