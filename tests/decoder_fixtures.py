"""Helpers for the decoder tests: a decoder with a fixed clock, and payloads built from the specs.

Sample values are derived from each field's bounds and choices, so the tests follow the
families when a field is added or a bound changes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.families import FAMILIES, FamilySpec, FieldSpec
from sensors.readings import FieldValue
from sensors.topics import reading_topic

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
NOW_NS = int(NOW.timestamp()) * 1_000_000_000
INSEE = "78498"  # Poissy, from the shipped registry
SPECS: list[FamilySpec] = list(FAMILIES.values())
FIWARE_SPECS: list[FamilySpec] = [spec for spec in SPECS if spec.fiware_type]


def make_decoder(**options: Any) -> Decoder:
    """A decoder over the shipped registry whose clock is fixed at ``NOW``."""
    return Decoder(CommuneRegistry.load(), clock=lambda: NOW_NS, **options)


def topic(family: str, device_id: str = "dev-1", insee: str = INSEE) -> str:
    """The reading topic of a device."""
    return reading_topic(insee, family, device_id)


def sample_value(field: FieldSpec, share: float = 0.25) -> FieldValue:
    """A valid value for ``field``: ``share`` of the way between its bounds, or a choice."""
    if field.kind == "bool":
        return True
    if field.kind == "enum":
        return field.choices[-1]
    assert field.minimum is not None and field.maximum is not None
    value = field.minimum + (field.maximum - field.minimum) * share
    if field.kind == "int":
        return int(value)
    return round(value, 3)


def sample_fields(spec: FamilySpec, share: float = 0.25) -> dict[str, FieldValue]:
    """A valid value for every field of a family."""
    return {field.name: sample_value(field, share) for field in spec.fields}


def encode(document: object) -> bytes:
    """A JSON payload, as a gateway would publish it."""
    return json.dumps(document).encode()


def iso(ns: int) -> str:
    """An RFC 3339 UTC date-time with millisecond precision."""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalized_entity(spec: FamilySpec, values: dict[str, FieldValue], observed: str) -> dict[str, Any]:
    """An NGSI v2 normalized entity, with the contract's unitCode on every field that has one."""
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:{spec.fiware_type}:dev-1",
        "type": spec.fiware_type,
        "dateObserved": {"type": "DateTime", "value": observed},
    }
    for name, value in values.items():
        field = spec.field(name)
        assert field is not None
        kind = {"bool": "Boolean", "enum": "Text"}.get(field.kind, "Number")
        attribute: dict[str, Any] = {"type": kind, "value": value}
        if field.unit_code:
            attribute["metadata"] = {"unitCode": {"type": "Text", "value": field.unit_code}}
        entity[name] = attribute
    return entity
