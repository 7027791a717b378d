"""The versioned MQTT topic scheme: ``smartcity/v1/{insee}/{family}/{device_id}``.

The commune is in the topic so that the broker can give each commune's gateway credentials for
its own subtree (``smartcity/v1/78498/#``) and nothing else.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

ROOT = "smartcity"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"
SUBSCRIPTION = f"{PREFIX}/+/+/+"
"""The topic filter that matches every reading of every commune and family."""
DEADLETTER_PREFIX = f"{PREFIX}/_deadletter"

DEVICE_ID_MAX = 128
DEVICE_ID_PATTERN = re.compile(r"[^\W_][\w.:-]*(?: [\w.:-]+)*")
"""Device ids: Unicode letters and digits, ``._:-`` and single spaces between words, starting
with a letter or a digit, at most ``DEVICE_ID_MAX`` characters (``capteur école 3``). Always matched whole
(``fullmatch``) on the NFC form: French gateways name devices in French, and the store, the
query API and the dashboards escape what they need to. No ``/``, ``+``, ``#`` (topic levels
and wildcards), ``,`` (the API's list separator), quotes, backslashes or control characters."""


@dataclass(frozen=True, slots=True)
class Topic:
    """The parts of a reading topic."""

    insee: str
    family: str
    device_id: str

    def __str__(self) -> str:
        return reading_topic(self.insee, self.family, self.device_id)


def reading_topic(insee: str, family: str, device_id: str) -> str:
    """The topic on which a device publishes its readings."""
    return f"{PREFIX}/{insee}/{family}/{device_id}"


def parse_topic(topic: str) -> Topic | str:
    """Split a reading topic into its parts, or return why it is not one.

    Only the shape is checked here; whether the commune and family exist is the decoder's job.
    """
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != ROOT:
        return f"topic {topic!r} does not match {PREFIX}/{{insee}}/{{family}}/{{device_id}}"
    if parts[1] != VERSION:
        return f"topic {topic!r}: unsupported contract version {parts[1]!r} (expected {VERSION})"
    _, _, insee, family, device_id = parts
    problem = device_id_problem(device_id)
    if problem is not None:
        return f"topic {topic!r}: {problem}"
    return Topic(insee=insee, family=family, device_id=device_id)


def device_id_problem(device_id: str) -> str | None:
    """Why ``device_id`` is not a valid device id, or None when it is.

    A device id must already be in NFC form: ``é`` sent decomposed (``e`` + combining accent)
    would otherwise be a second, invisible spelling of the same device, with its own series.
    """
    if not unicodedata.is_normalized("NFC", device_id):
        nfc = unicodedata.normalize("NFC", device_id)
        return f"device id {device_id!r} is not in Unicode NFC form: send {nfc!r}"
    if len(device_id) > DEVICE_ID_MAX or not DEVICE_ID_PATTERN.fullmatch(device_id):
        return (
            f"device id {device_id!r} is not allowed: letters, digits, ._:- and single spaces "
            f"between words, starting with a letter or digit, at most {DEVICE_ID_MAX} characters"
        )
    return None
