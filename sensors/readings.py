"""What the decoder produces: typed readings, and precise errors for what it refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

FieldValue = float | int | bool | str

ErrorLevel = Literal["message", "reading", "field"]
"""How much an error cost: the whole message, one reading of it, or one field of a reading."""

MESSAGE_REASONS: dict[str, str] = {
    "oversized": "the payload is larger than the decoder's limit",
    "not_utf8": "the payload is not valid UTF-8",
    "malformed_json": "the payload is not valid JSON (truncated, bad syntax, too deeply nested)",
    "bad_topic": "the topic does not match smartcity/v1/{insee}/{family}/{device_id}",
    "unknown_commune": "the INSEE code in the topic is not in the commune registry",
    "unknown_family": "the family in the topic is not one of the contract's families",
    "forbidden_field": "a camera payload has a key outside its allow-list (an image, a face, a plate...)",
    "batch_too_large": "the batch holds more readings than the decoder's limit",
    "internal_error": "the decoder itself failed (a bug: please report it with the payload)",
    "bad_uplink": "a LoRaWAN network server's message is not a well-formed uplink or status event",
    "unknown_device": "the DevEUI of a LoRaWAN uplink is not in the device map",
    "codec_error": "a LoRaWAN payload could not be decoded (codec failed, refused it, or is missing)",
}
"""Reasons that refuse the whole message: nothing in it is kept."""

READING_REASONS: dict[str, str] = {
    "not_an_object": "a reading is not a JSON object",
    "missing_timestamp": "a reading has no ts (native) or dateObserved (FIWARE)",
    "bad_timestamp": "a reading's time cannot be parsed, is before 2000 or more than a day ahead",
    "wrong_entity_type": "a FIWARE entity's type is not the data model of the topic's family",
    "empty_reading": "a reading has no valid field left",
}
"""Reasons that refuse one reading; the other readings of the batch are kept."""

FIELD_REASONS: dict[str, str] = {
    "unknown_field": "the field is not in the family's contract",
    "wrong_type": "the value is not of the field's kind (number, integer, boolean, text)",
    "invalid_choice": "the text value is not one of the field's allowed choices",
    "out_of_bounds": "the value is outside the field's physical bounds",
    "wrong_unit": "the FIWARE unitCode is unknown or cannot be converted to the field's unit",
}
"""Reasons that refuse one field; the reading keeps its other valid fields."""

REASONS: dict[str, str] = {**MESSAGE_REASONS, **READING_REASONS, **FIELD_REASONS}
"""Every reason code the decoder can give, with what it means."""


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

    ``reason`` is a short stable code suitable for a metric label (see ``REASONS``);
    ``detail`` says which field, which value and why, for a human.
    """

    reason: str
    detail: str
    index: int | None = None
    """Position of the refused reading in a batch, when the error concerns one reading."""
    field: str | None = None
    value: FieldValue | None = None
    """The refused value, when it was a scalar (in the contract's unit when it was converted)."""
    time_ns: int | None = None
    """The observed time of the reading concerned, when it could be parsed."""

    @property
    def level(self) -> ErrorLevel:
        """Whether this error refused the whole message, one reading or one field."""
        if self.reason in FIELD_REASONS:
            return "field"
        if self.reason in READING_REASONS:
            return "reading"
        return "message"


@dataclass(slots=True)
class Decoded:
    """The result of decoding one MQTT message: the good readings and the errors.

    ``insee``, ``family`` and ``device_id`` come from the topic; they are None only when the
    topic itself could not be parsed (``bad_topic``), so any other error can be attributed to a
    device.
    """

    readings: list[Reading] = field(default_factory=list)
    errors: list[DecodeError] = field(default_factory=list)
    insee: str | None = None
    family: str | None = None
    device_id: str | None = None
    private: bool = False
    """The message came from a family whose payloads are never kept (cameras), so whoever records
    a refusal keeps the topic, the size, a hash and the errors, never the bytes."""

    @property
    def ok(self) -> bool:
        """True when nothing in the message was refused."""
        return not self.errors

    @property
    def payload_is_private(self) -> bool:
        """True when the payload must not be kept anywhere, not even in a dead-letter.

        A camera payload may hold an image, a face or an identity (and one refused with
        ``forbidden_field`` did): whoever records the refusal keeps the topic, the size, a hash
        and the errors, never the bytes.
        """
        return self.private or any(error.reason == "forbidden_field" for error in self.errors)

    @property
    def refused(self) -> bool:
        """True when the whole message was refused (a message-level error): it kept nothing."""
        return any(error.reason in MESSAGE_REASONS for error in self.errors)
