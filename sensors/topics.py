"""The versioned MQTT topic scheme: ``smartcity/v1/{insee}/{family}/{device_id}``.

The commune is in the topic so that the broker can give each commune's gateway credentials for
its own subtree (``smartcity/v1/78498/#``) and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ROOT = "smartcity"
VERSION = "v1"
PREFIX = f"{ROOT}/{VERSION}"
SUBSCRIPTION = f"{PREFIX}/+/+/+"
"""The topic filter that matches every reading of every commune and family."""
DEADLETTER_PREFIX = f"{PREFIX}/_deadletter"

DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
"""Device ids: letters, digits and ``._:-``, at most 128 characters, so they are safe in a
topic level, a file name and a store tag."""


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
    if not DEVICE_ID_PATTERN.match(device_id):
        return f"topic {topic!r}: device id {device_id!r} is not allowed"
    return Topic(insee=insee, family=family, device_id=device_id)
