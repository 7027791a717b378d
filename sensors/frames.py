"""Decoded readings as polars frames in the store's convention (storage/base.py).

One frame per family, with columns ``time`` (``Datetime("ns", "UTC")``, the observed time),
the tags ``insee`` and ``device_id``, every field of the family (null where a reading did not
carry it) and ``received_at`` (Int64 ns since the epoch: when ingest received the message).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from sensors.families import FAMILIES, FieldKind, FieldSpec, family_spec
from sensors.lorawan.radio import MEASUREMENT_FIELDS
from sensors.readings import FieldValue, Reading

TAGS = ("insee", "device_id")
"""The tag columns of a raw reading frame."""
RECEIVED_AT = "received_at"
TIME_DTYPE = pl.Datetime("ns", "UTC")

FIELD_DTYPES: dict[FieldKind, pl.DataType] = {
    "float": pl.Float64(),
    "int": pl.Int64(),
    "bool": pl.Boolean(),
    "enum": pl.String(),
}
"""The store dtype of each field kind."""


def family_schema(family: str) -> dict[str, pl.DataType]:
    """The column schema of a family's raw reading frame, in column order."""
    schema: dict[str, pl.DataType] = {"time": TIME_DTYPE, "insee": pl.String(), "device_id": pl.String()}
    for field_spec in _fields(family):
        schema[field_spec.name] = FIELD_DTYPES[field_spec.kind]
    schema[RECEIVED_AT] = pl.Int64()
    return schema


def readings_to_frames(
    readings: Sequence[Reading],
    received_at_ns: int | Sequence[int] | None = None,
) -> dict[str, pl.DataFrame]:
    """Group readings by family into frames ready for ``Store.write(family, frame, tags=TAGS)``.

    ``received_at_ns`` is one arrival time for every reading, or one per reading (aligned with
    ``readings``), or None when unknown (the column is then null). Families with no reading get
    no frame. Raises ``ValueError`` for a reading of an unknown family or a misaligned
    ``received_at_ns``.
    """
    if (
        received_at_ns is not None
        and not isinstance(received_at_ns, int)
        and len(received_at_ns) != len(readings)
    ):
        raise ValueError(f"received_at_ns has {len(received_at_ns)} values for {len(readings)} readings")
    positions: dict[str, list[int]] = {}
    for position, reading in enumerate(readings):
        positions.setdefault(reading.family, []).append(position)
    frames: dict[str, pl.DataFrame] = {}
    for family, members in positions.items():
        group = [readings[position] for position in members]
        columns: dict[str, list[Any]] = {
            "time": [reading.time_ns for reading in group],
            "insee": [reading.insee for reading in group],
            "device_id": [reading.device_id for reading in group],
        }
        values = [reading.fields for reading in group]
        for field_spec in _fields(family):
            columns[field_spec.name] = _column(field_spec, values)
        if received_at_ns is None:
            columns[RECEIVED_AT] = [None] * len(group)
        elif isinstance(received_at_ns, int):
            columns[RECEIVED_AT] = [received_at_ns] * len(group)
        else:
            columns[RECEIVED_AT] = [received_at_ns[position] for position in members]
        frames[family] = pl.DataFrame(columns, schema=family_schema(family))
    return frames


def _column(field_spec: FieldSpec, values: list[dict[str, FieldValue]]) -> list[FieldValue | None]:
    # polars reads the ints of a hand-built Reading into a Float64 column as floats: no casting here.
    name = field_spec.name
    return [fields.get(name) for fields in values]


def _fields(family: str) -> tuple[FieldSpec, ...]:
    spec = family_spec(family)
    if spec is not None:
        return spec.fields
    # LoRaWAN radio metadata rides the readings' path under measurements of its own.
    extra = MEASUREMENT_FIELDS.get(family)
    if extra is not None:
        return extra
    known = ", ".join([*(f.value for f in FAMILIES), *MEASUREMENT_FIELDS])
    raise ValueError(f"reading of unknown family {family!r}: expected one of {known}")
