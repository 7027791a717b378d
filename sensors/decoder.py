"""The wire contract's decoder: one MQTT message (topic + bytes) in, typed readings out.

The decoder never raises on its input. What it refuses, it explains with a ``DecodeError``
whose ``reason`` is a stable code (``sensors.readings.REASONS``), at the smallest granularity
that is safe, so one bad value never loses the good data around it:

* a message-level error (bad topic, unknown commune, malformed JSON, a camera key outside
  the allow-list...)
  refuses the whole message;
* a reading-level error (no or bad timestamp, not an object...) refuses one reading of a batch;
* a field-level error (unknown field, wrong type, out of bounds, wrong unit) refuses one field;
  the reading keeps its other fields.

See docs/contract.md for the payload forms (native, FIWARE keyValues, NGSI v2 normalized).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES, FamilySpec, FieldSpec
from sensors.fiware import DESCRIPTIVE_ATTRIBUTES, LEGACY_ATTRIBUTE_NAMES, convert_unit
from sensors.readings import FIELD_REASONS, Decoded, DecodeError, FieldValue, Reading
from sensors.topics import Topic, parse_topic

NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000
MIN_TIME_NS = 946_684_800 * NS_PER_S
"""2000-01-01T00:00:00Z: no sensor of the platform observed anything before."""
MAX_AHEAD_NS = 86_400 * NS_PER_S
"""A reading more than a day ahead of the decoder's clock comes from a broken device clock."""

_NAIVE_EPOCH = datetime(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?(?:([Zz])|([+-])(\d\d):?(\d\d))",
    re.ASCII,  # \d would otherwise accept any Unicode digit
)
_DURATION = re.compile(
    r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:[.,]\d+)?)S)?)?",
    re.ASCII,
)
_MISSING: Any = object()
_DAYS_SINCE_EPOCH: dict[str, int] = {}
"""Days since 1970-01-01 per ``YYYY-MM-DD``: readings of a day share their date, so parsing it
once saves most of a timestamp's cost."""
_DATE_CACHE_SIZE = 4096
_JSON = json.JSONDecoder()
_HUGE = 1.7976931348623157e308
_MAX_SHOWN = 60
_TOPIC_CACHE_SIZE = 100_000


class _Problem(NamedTuple):
    """Why one field value is refused."""

    reason: str
    why: str
    value: FieldValue | None = None


def _shown(value: object) -> str:
    """A short repr of a refused value for an error detail (payloads can be huge)."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _scalar(value: object) -> FieldValue | None:
    if isinstance(value, int | float):  # bool is an int
        return value
    if isinstance(value, str) and len(value) <= _MAX_SHOWN:
        return value
    return None


# --- timestamps -------------------------------------------------------------------------------


def parse_rfc3339(text: str) -> int | str:
    """Nanoseconds since the epoch for an RFC 3339 / ISO 8601 date-time with an offset.

    Returns a sentence saying what is wrong when ``text`` is not one. Fractions of a second
    keep their nanoseconds; a leap second ``:60`` is read as the following second.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return _parse_iso_fallback(text)
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    days = _DAYS_SINCE_EPOCH.get(text[:10])
    if days is None:
        try:
            days = (datetime(int(year), int(month), int(day)) - _NAIVE_EPOCH).days
        except ValueError as exc:
            return f"{_shown(text)} is not a valid date-time: {exc}"
        if len(_DAYS_SINCE_EPOCH) >= _DATE_CACHE_SIZE:
            _DAYS_SINCE_EPOCH.clear()
        _DAYS_SINCE_EPOCH[text[:10]] = days
    hours, minutes, secs = int(hour), int(minute), int(second)
    if hours > 23 or minutes > 59 or secs > 60:
        return f"{_shown(text)} is not a valid date-time: time of day out of range"
    seconds = days * 86_400 + hours * 3600 + minutes * 60 + secs
    if not zulu:
        if int(off_h) > 23 or int(off_m) > 59:
            return f"{_shown(text)} is not a valid date-time: UTC offset out of range"
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds -= offset if sign == "+" else -offset
    nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    return seconds * NS_PER_S + nanos


def _parse_iso_fallback(text: str) -> int | str:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return f"{_shown(text)} is not an RFC 3339 date-time (e.g. 2025-03-14T09:26:53.589Z)"
    if parsed.tzinfo is None:
        return f"{_shown(text)} has no UTC offset: add Z or +01:00 so the instant is unambiguous"
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def _parse_duration_ns(text: str) -> int | None:
    """An ISO 8601 duration of weeks, days, hours, minutes and seconds, in ns (None if not one).

    Integer arithmetic only: an absurd duration gives an absurd instant, refused as such,
    rather than an overflow.
    """
    match = _DURATION.fullmatch(text)
    if match is None or text in ("P", "PT") or text.endswith("T"):
        return None
    weeks, days, hours, minutes, seconds = match.groups()
    whole_seconds, _, fraction = (seconds or "0").replace(",", ".").partition(".")
    total_s = (
        (int(weeks or 0) * 7 + int(days or 0)) * 86_400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
    )
    return (total_s + int(whole_seconds)) * NS_PER_S + (int(fraction[:9].ljust(9, "0")) if fraction else 0)


def parse_observed(text: str) -> int | str:
    """The observed instant of a date-time or of an ISO 8601 interval, in ns since the epoch.

    For an interval (``start/end``, ``start/duration`` or ``duration/end``) the instant is the
    END: the observation is complete then, which is also when a counter's count is final.
    """
    if "/" not in text:
        return parse_rfc3339(text)
    start_text, _, end_text = text.partition("/")
    if end_text.startswith("P"):
        start = parse_rfc3339(start_text)
        duration = _parse_duration_ns(end_text)
        if isinstance(start, str):
            return f"interval {_shown(text)}: start {start}"
        if duration is None:
            return f"interval {_shown(text)}: {_shown(end_text)} is not an ISO 8601 duration"
        return start + duration
    end = parse_rfc3339(end_text)
    if isinstance(end, str):
        return f"interval {_shown(text)}: end {end}"
    if start_text.startswith("P"):
        if _parse_duration_ns(start_text) is None:
            return f"interval {_shown(text)}: {_shown(start_text)} is not an ISO 8601 duration"
        return end
    start = parse_rfc3339(start_text)
    if isinstance(start, str):
        return f"interval {_shown(text)}: start {start}"
    if start > end:
        return f"interval {_shown(text)} ends before it starts"
    return end


def _epoch_ms_to_ns(value: int | float) -> int | str:
    # Python integers do not overflow: an absurd value is caught by _check_instant, with a hint.
    if type(value) is int:
        return value * NS_PER_MS
    if not math.isfinite(value):
        return f"ts {value!r} is not a finite number of milliseconds since 1970"
    whole = int(value)
    return whole * NS_PER_MS + round((value - whole) * NS_PER_MS)


def _check_instant(time_ns: int, now_ns: int, source: object) -> str | None:
    """Why an observed instant is not plausible, or None."""
    if time_ns < MIN_TIME_NS:
        hint = ""
        if isinstance(source, int | float) and not isinstance(source, bool) and source > 0:
            hint = " (it looks like epoch seconds: the contract wants epoch milliseconds)"
        return f"ts {_shown(source)} is before 2000-01-01{hint}"
    if time_ns > now_ns + MAX_AHEAD_NS:
        hint = ""
        if type(source) in (int, float):
            hint = " (it looks like epoch micro- or nanoseconds: the contract wants milliseconds)"
        return f"ts {_shown(source)} is more than a day in the future{hint}"
    return None


def _native_time(value: object) -> int | str:
    if type(value) is str:
        return parse_rfc3339(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _epoch_ms_to_ns(value)
    return f"ts {_shown(value)} is neither an RFC 3339 string nor a number of epoch milliseconds"


def _fiware_time(value: object) -> int | str:
    if type(value) is dict:  # NGSI v2 {"type": "DateTime", "value": ...}
        value = value.get("value")
        if type(value) is dict:  # NGSI-LD {"type": "Property", "value": {"@type": "DateTime", "@value": ...}}
            value = value.get("@value")
    if type(value) is str:
        return parse_observed(value)
    return f"dateObserved {_shown(value)} is not an ISO 8601 date-time or interval"


# --- field values -----------------------------------------------------------------------------


def coerce_value(spec: FieldSpec, value: object) -> FieldValue | _Problem:
    """``value`` typed for ``spec`` (int for int fields, float for float fields), or why not."""
    kind = spec.kind
    number: float | int
    if kind == "float":
        if type(value) is float:
            number = value
        elif type(value) is int:
            try:
                number = float(value)
            except OverflowError:
                return _Problem("out_of_bounds", f"{spec.name}: {_shown(value)} is out of any range")
        else:
            return _Problem(
                "wrong_type", f"{spec.name}: expected a number, got {_shown(value)}", _scalar(value)
            )
        if not math.isfinite(number):
            return _Problem("wrong_type", f"{spec.name}: expected a finite number, got {number!r}")
    elif kind == "int":
        if type(value) is int:
            number = value
        elif type(value) is float and value.is_integer():
            number = int(value)
        else:
            return _Problem(
                "wrong_type", f"{spec.name}: expected an integer, got {_shown(value)}", _scalar(value)
            )
    elif kind == "bool":
        if type(value) is bool:
            return value
        return _Problem(
            "wrong_type", f"{spec.name}: expected true or false, got {_shown(value)}", _scalar(value)
        )
    else:
        if type(value) is not str:
            return _Problem(
                "wrong_type", f"{spec.name}: expected a text value, got {_shown(value)}", _scalar(value)
            )
        if value not in spec.choices:
            return _Problem(
                "invalid_choice",
                f"{spec.name}: {_shown(value)} is not one of {', '.join(spec.choices)}",
                _scalar(value),
            )
        return value
    if (spec.minimum is not None and number < spec.minimum) or (
        spec.maximum is not None and number > spec.maximum
    ):
        shown = _shown(number) if isinstance(number, int) and abs(number) > 10**15 else f"{number:g}"
        unit = "" if spec.unit in ("", "1") else f" {spec.unit}"  # "0.5 1" would read as a typo
        return _Problem(
            "out_of_bounds",
            f"{spec.name}: {shown}{unit} is outside the physical bounds "
            f"[{_bound(spec.minimum)}, {_bound(spec.maximum)}]{unit}",
            number if abs(number) < 1e300 else None,
        )
    return number


_FieldCheck = tuple[FieldSpec, Any, float, float]
"""A field's spec, and what its common case needs: the Python type of a valid value as JSON
gives it (float or int) and the bounds (infinite values fail them)."""


def _field_check(spec: FieldSpec) -> _FieldCheck:
    fast_type = {"float": float, "int": int}.get(spec.kind)
    low = -_HUGE if spec.minimum is None else spec.minimum
    high = _HUGE if spec.maximum is None else spec.maximum
    return spec, fast_type, low, high


def _bound(bound: float | None) -> str:
    return "unbounded" if bound is None else f"{bound:g}"


def _unit_code(attribute: Mapping[str, Any]) -> str | _Problem | None:
    """The unit code of a normalized attribute: NGSI v2 ``metadata.unitCode`` (a text or a
    ``{"type": "Text", "value": ...}`` attribute), or NGSI-LD's ``unitCode`` member."""
    metadata = attribute.get("metadata")
    if metadata is None:
        unit = attribute.get("unitCode")
    elif type(metadata) is not dict:
        return _Problem("wrong_unit", f"metadata {_shown(metadata)} is not an object")
    else:
        unit = metadata.get("unitCode")
    if unit is None:
        return None
    if type(unit) is dict:
        unit = unit.get("value")
    if type(unit) is not str:
        return _Problem("wrong_unit", f"unitCode {_shown(unit)} is not a UN/CEFACT code")
    return unit


# --- the decoder ------------------------------------------------------------------------------


class Decoder:
    """Decodes MQTT messages of the wire contract; safe to share, never raises on input.

    ``clock`` returns the current time in ns since the epoch; it bounds how far in the future
    a reading may be (tests inject a fixed clock).
    """

    def __init__(
        self,
        registry: CommuneRegistry,
        *,
        max_payload_bytes: int = 256 * 1024,
        max_batch: int = 10_000,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.registry = registry
        self.max_payload_bytes = max_payload_bytes
        self.max_batch = max_batch
        self._clock = clock
        self._topics: dict[str, Topic] = {}
        self._fields: dict[str, dict[str, _FieldCheck]] = {
            spec.family.value: {f.name: _field_check(f) for f in spec.fields} for spec in FAMILIES.values()
        }
        self._specs: dict[str, FamilySpec] = {spec.family.value: spec for spec in FAMILIES.values()}
        self._ignored: dict[str, frozenset[str]] = {
            spec.family.value: DESCRIPTIVE_ATTRIBUTES | spec.ignored_attributes for spec in FAMILIES.values()
        }
        self._private_families = frozenset(spec.family.value for spec in FAMILIES.values() if spec.private)

    def decode(self, topic: str, payload: bytes) -> Decoded:
        """Decode one message: its readings, and an error for everything refused."""
        try:
            return self._decode(topic, payload)
        except Exception as exc:  # a decoder bug must never stop ingest: report it as an error
            return Decoded(
                errors=[DecodeError("internal_error", f"decoder failed: {type(exc).__name__}: {_shown(exc)}")]
            )

    def _parse_topic(self, topic: object) -> Topic | str:
        if type(topic) is not str:
            return f"topic {_shown(topic)} is not a string"
        cached = self._topics.get(topic)
        if cached is not None:
            return cached
        parsed = parse_topic(topic)
        if isinstance(parsed, Topic):
            if len(self._topics) >= _TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = parsed
        return parsed

    def _decode(self, topic: str, payload: bytes) -> Decoded:
        parsed = self._parse_topic(topic)
        if isinstance(parsed, str):
            # A topic too broken to parse may still say it came from a camera: keep it private.
            levels = topic.split("/") if type(topic) is str else []
            private = len(levels) > 3 and levels[3] in self._private_families
            return Decoded(errors=[DecodeError("bad_topic", parsed)], private=private)
        result = Decoded(
            insee=parsed.insee,
            family=parsed.family,
            device_id=parsed.device_id,
            private=parsed.family in self._private_families,
        )
        errors = result.errors
        if parsed.insee not in self.registry:
            errors.append(
                DecodeError(
                    "unknown_commune", f"commune {parsed.insee!r} (from the topic) is not in the registry"
                )
            )
            return result
        spec = self._specs.get(parsed.family)
        if spec is None:
            errors.append(
                DecodeError(
                    "unknown_family",
                    f"family {parsed.family!r} (from the topic) is not one of {', '.join(self._specs)}",
                )
            )
            return result
        if type(payload) is not bytes:
            if not isinstance(payload, bytes | bytearray | memoryview):
                errors.append(DecodeError("not_utf8", f"payload is a {type(payload).__name__}, not bytes"))
                return result
            payload = bytes(payload)
        if len(payload) > self.max_payload_bytes:
            errors.append(
                DecodeError(
                    "oversized",
                    f"payload of {len(payload)} bytes exceeds the limit of {self.max_payload_bytes} bytes",
                )
            )
            return result
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            errors.append(DecodeError("not_utf8", f"payload is not UTF-8: byte {exc.start} ({exc.reason})"))
            return result
        if text.startswith("\ufeff"):
            text = text[1:]
        try:
            document = _JSON.decode(text)
        except RecursionError:
            errors.append(DecodeError("malformed_json", "payload is nested too deeply"))
            return result
        except ValueError as exc:
            errors.append(DecodeError("malformed_json", f"payload is not valid JSON: {exc}"))
            return result
        allowed = spec.allowed_keys
        if allowed is not None:
            found = _find_unlisted(document, allowed)
            if found is not None:
                key, path = found
                errors.append(
                    DecodeError(
                        "forbidden_field",
                        f"{spec.family.value} payloads may only carry the keys of the contract's "
                        f"allow-list (no images, faces, plates or identities): key {_shown(path)} is "
                        "not in it, so the whole message is refused",
                        field=key if len(key) <= _MAX_SHOWN else key[: _MAX_SHOWN - 3] + "...",
                    )
                )
                return result
        items: list[Any] | tuple[Any, ...]
        if type(document) is list:
            items = document
            if len(items) > self.max_batch:
                errors.append(
                    DecodeError(
                        "batch_too_large",
                        f"batch of {len(items)} readings exceeds the limit of {self.max_batch}",
                    )
                )
                return result
            batch = True
        else:
            items = (document,)
            batch = False
        message = _Message(
            parsed,
            spec,
            self._fields[parsed.family],
            self._ignored[parsed.family],
            now_ns=self._clock(),
            errors=errors,
        )
        readings = result.readings
        for position, item in enumerate(items):
            index = position if batch else None
            if type(item) is not dict:
                errors.append(
                    DecodeError(
                        "not_an_object",
                        "a reading must be a JSON object, got "
                        + (f"a {type(item).__name__}" if message.private else _shown(item)),
                        index=index,
                        value=None if message.private else _scalar(item),
                    )
                )
                continue
            if "ts" in item or not ("type" in item or "dateObserved" in item):
                reading = _decode_native(message, item, index)
            else:
                reading = _decode_fiware(message, item, index)
            if reading is not None:
                readings.append(reading)
        return result


class _Message:
    """What every reading of one message shares while it is decoded."""

    __slots__ = ("errors", "fields", "ignored", "now_ns", "private", "spec", "topic")

    def __init__(
        self,
        topic: Topic,
        spec: FamilySpec,
        fields: dict[str, _FieldCheck],
        ignored: frozenset[str],
        *,
        now_ns: int,
        errors: list[DecodeError],
    ) -> None:
        self.topic = topic
        self.spec = spec
        self.fields = fields
        self.ignored = ignored
        self.now_ns = now_ns
        self.errors = errors
        # A camera's refused value might be personal: errors never echo its text.
        self.private = spec.private

    def field_error(self, problem: _Problem, name: str, index: int | None, time_ns: int) -> None:
        value, why = problem.value, problem.why
        if self.private and (problem.reason == "wrong_unit" or not isinstance(value, int | float)):
            # The detail would quote the text (or the unit code) the payload held.
            why = f"{name}: {FIELD_REASONS[problem.reason]} (text withheld: private payload)"
            if not isinstance(value, int | float):
                value = None
        self.errors.append(
            DecodeError(problem.reason, why, index=index, field=name, value=value, time_ns=time_ns)
        )

    def instant(
        self, parsed: int | str, raw: object, *, shown: object, field: str, index: int | None
    ) -> int | None:
        """The observed instant, or None after recording why it is refused.

        ``parsed`` is what the form's parser made of ``raw``: nanoseconds, or why it could not.
        """
        problem = parsed if isinstance(parsed, str) else _check_instant(parsed, self.now_ns, raw)
        if problem is not None:
            value = _scalar(shown)
            if self.private and not isinstance(raw, int | float):
                problem, value = f"{field} is not a valid time (text withheld: private payload)", None
            self.errors.append(DecodeError("bad_timestamp", problem, index=index, field=field, value=value))
            return None
        assert isinstance(parsed, int)
        return parsed

    def unknown_field(self, name: str, raw: object, index: int | None, time_ns: int) -> None:
        shown = "" if self.private else f" (value {_shown(raw)})"
        self.errors.append(
            DecodeError(
                "unknown_field",
                f"{_shown(name)} is not a field of {self.spec.family.value}{shown}",
                index=index,
                field=name,
                value=None if self.private else _scalar(raw),
                time_ns=time_ns,
            )
        )

    def reading(self, time_ns: int, values: dict[str, FieldValue], index: int | None) -> Reading | None:
        if not values:
            self.errors.append(
                DecodeError(
                    "empty_reading",
                    "reading has no valid field left, so it is dropped",
                    index=index,
                    time_ns=time_ns,
                )
            )
            return None
        topic = self.topic
        return Reading(topic.insee, topic.family, topic.device_id, time_ns, values)


def _decode_native(message: _Message, item: dict[str, Any], index: int | None) -> Reading | None:
    """One reading in the native form ``{"ts": ..., "<field>": <value>, ...}``."""
    raw_ts = item.get("ts", _MISSING)
    if raw_ts is _MISSING:
        message.errors.append(
            DecodeError(
                "missing_timestamp",
                "reading has no ts (RFC 3339 string or epoch milliseconds)",
                index=index,
            )
        )
        return None
    time_ns = message.instant(_native_time(raw_ts), raw_ts, shown=raw_ts, field="ts", index=index)
    if time_ns is None:
        return None
    fields = message.fields
    values: dict[str, FieldValue] = {}
    for name, raw in item.items():
        if name == "ts":
            continue
        check = fields.get(name)
        if check is None:
            message.unknown_field(name, raw, index, time_ns)
            continue
        field_spec, fast_type, low, high = check
        if type(raw) is fast_type and low <= raw <= high:  # the common case, checked inline
            values[name] = raw
            continue
        if raw is None:  # null means "not measured", as in the store
            continue
        value = coerce_value(field_spec, raw)
        if isinstance(value, _Problem):
            message.field_error(value, name, index, time_ns)
        else:
            values[name] = value
    return message.reading(time_ns, values, index)


def _decode_fiware(message: _Message, item: dict[str, Any], index: int | None) -> Reading | None:
    """One FIWARE entity, keyValues or NGSI v2 normalized (attribute by attribute)."""
    spec = message.spec
    entity_type = item.get("type")
    if spec.fiware_type is None or entity_type != spec.fiware_type:
        if spec.fiware_type is None:
            why = f"family {spec.family.value} has no FIWARE data model: send the native form with ts"
        elif entity_type is None:
            why = f'a FIWARE entity needs "type": {spec.fiware_type!r} (or send the native form with ts)'
        else:
            why = f"the topic's family {spec.family.value} expects {spec.fiware_type!r}"
        type_shown = "(withheld: private payload)" if message.private else _shown(entity_type)
        message.errors.append(
            DecodeError(
                "wrong_entity_type",
                f"entity type {type_shown} refused: {why}",
                index=index,
                field="type",
                value=None if message.private else _scalar(entity_type),
            )
        )
        return None
    raw_time = item.get("dateObserved", _MISSING)
    if raw_time is _MISSING:
        raw_time = item.get("dateObservedTo", _MISSING)
    if raw_time is _MISSING:
        message.errors.append(
            DecodeError(
                "missing_timestamp",
                "entity has no dateObserved (ISO 8601 date-time or interval)",
                index=index,
            )
        )
        return None
    shown = raw_time.get("value") if type(raw_time) is dict else raw_time
    time_ns = message.instant(
        _fiware_time(raw_time), raw_time, shown=shown, field="dateObserved", index=index
    )
    if time_ns is None:
        return None
    fields = message.fields
    ignored = message.ignored
    values: dict[str, FieldValue] = {}
    for key, attribute in item.items():
        if key in ignored:
            continue
        check = fields.get(key)
        if check is None:
            legacy = LEGACY_ATTRIBUTE_NAMES.get(key)
            check = fields.get(legacy) if legacy else None
            if check is None:
                message.unknown_field(key, attribute, index, time_ns)
                continue
        field_spec = check[0]
        name = field_spec.name
        raw = attribute
        unit: str | _Problem | None = None
        if type(attribute) is dict:  # NGSI v2 normalized: {"type": ..., "value": ..., "metadata": ...}
            if "value" not in attribute:
                problem_ = _Problem("wrong_type", f"{name}: normalized attribute without a value")
                message.field_error(problem_, name, index, time_ns)
                continue
            raw = attribute["value"]
            unit = _unit_code(attribute)
        if raw is None:
            continue
        if isinstance(unit, _Problem):
            message.field_error(unit, name, index, time_ns)
            continue
        if unit is not None and isinstance(raw, int | float) and not isinstance(raw, bool):
            try:
                converted = convert_unit(raw, unit, field_spec.unit_code)
            except OverflowError:  # an integer too large for any float: out of every bound
                problem_ = _Problem("out_of_bounds", f"{name}: {_shown(raw)} {unit} is out of any range")
                message.field_error(problem_, name, index, time_ns)
                continue
            if isinstance(converted, str):
                message.field_error(
                    _Problem("wrong_unit", f"{name}: {converted}", _scalar(raw)), name, index, time_ns
                )
                continue
            raw = converted
        value = coerce_value(field_spec, raw)
        if isinstance(value, _Problem):
            message.field_error(value, name, index, time_ns)
        else:
            values[name] = value
    return message.reading(time_ns, values, index)


_KeyPath = tuple[object, str | int] | None
"""Where a key sits in a payload, as a linked list ``(parent path, key or list index)``."""


def _find_unlisted(document: object, allowed: frozenset[str]) -> tuple[str, str] | None:
    """The first key anywhere in ``document`` that is not in ``allowed``, with its path, or None.

    Keys are compared exactly: an allow-list does not guess. Iterative, so a deeply nested
    payload cannot exhaust the stack; the path of a key is only spelled out when it is refused.
    """
    stack: list[tuple[object, _KeyPath]] = [(document, None)]
    while stack:
        node, path = stack.pop()
        if type(node) is dict:
            for key, child in node.items():
                if key not in allowed:
                    return key, _spell((path, key))
                if type(child) is dict or type(child) is list:
                    stack.append((child, (path, key)))
        elif type(node) is list:
            for position, child in enumerate(node):
                if type(child) is dict or type(child) is list:
                    stack.append((child, (path, position)))
    return None


def _spell(path: object) -> str:
    """``/a/b[0]/c`` from the linked path ``((((None, "a"), "b"), 0), "c")``."""
    parts: list[str] = []
    while isinstance(path, tuple):
        segment: object = path[1]
        path = path[0]
        parts.append(f"[{segment}]" if isinstance(segment, int) else f"/{segment}")
    return "".join(reversed(parts))
