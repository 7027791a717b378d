"""What the decoder produces: typed readings, and precise errors for what it refused."""

from __future__ import annotations

from dataclasses import dataclass, field

FieldValue = float | int | bool | str


@dataclass(slots=True)
class Reading:
    """One observation of one device, with its observed time.

    ``fields`` holds only the fields present in the payload, already converted to the
    contract's units and checked against the family's bounds.
    """

    insee: str
    family: str
    device_id: str
    time_ns: int
    """Observed time, nanoseconds since the Unix epoch, UTC."""
    fields: dict[str, FieldValue]


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why (part of) a message was refused.

    ``reason`` is a short stable code suitable for a metric label (``malformed_json``,
    ``out_of_bounds``, ``unknown_commune``, ``forbidden_field``...); ``detail`` says which field,
    which value and why, for a human.
    """

    reason: str
    detail: str
    index: int | None = None
    """Position of the refused reading in a batch, when the error concerns one reading."""
    field: str | None = None


@dataclass(slots=True)
class Decoded:
    """The result of decoding one MQTT message: the good readings and the errors."""

    readings: list[Reading] = field(default_factory=list)
    errors: list[DecodeError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing in the message was refused."""
        return not self.errors
