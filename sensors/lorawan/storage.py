"""The Things Stack Storage Integration's answers, as the MQTT messages that were missed.

The Storage Integration keeps an application's uplinks (docs/contract.md section 11.5); its HTTP
API answers newline-delimited JSON, one ``{"result": <ApplicationUp>}`` per line. Republished on
``v3/{application_id}@{tenant_id}/devices/{device_id}/up``, they fill the gaps The Things Stack's
QoS 0 MQTT left; the ones the platform already has are no-ops (same uplink, same rows).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl


class StorageError(ValueError):
    """A line of the answer is not a stored ``ApplicationUp``; the message names the line."""


@dataclass(slots=True)
class StoredUplinks:
    """The MQTT messages of a Storage Integration answer."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)
    skipped: int = 0
    """Stored messages that are not data uplinks (join accepts, downlink events...)."""

    def frame(self) -> pl.DataFrame:
        """The messages in the publisher's frame (``simulator.publisher.publish_messages``)."""
        return pl.DataFrame(
            {
                "send_ns": list(range(len(self.messages))),
                "topic": [topic for topic, _ in self.messages],
                "payload": [payload for _, payload in self.messages],
                "readings": [1] * len(self.messages),
            },
            schema={"send_ns": pl.Int64, "topic": pl.String, "payload": pl.Binary, "readings": pl.Int64},
        )


def stored_uplinks(lines: Iterable[str], *, tenant: str = "ttn") -> StoredUplinks:
    """Parse the answer; ``tenant`` is used when an uplink does not name its own.

    Raises ``StorageError`` naming the first malformed line.
    """
    result = StoredUplinks()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as exc:
            raise StorageError(f"line {number}: not JSON: {exc}") from None
        if type(document) is not dict or "error" in document:
            raise StorageError(f"line {number}: not a stored message: {line.strip()[:200]}")
        up = document.get("result", document)
        if type(up) is not dict or type(up.get("uplink_message")) is not dict:
            result.skipped += 1
            continue
        ids = up.get("end_device_ids")
        if type(ids) is not dict or type(ids.get("application_ids")) is not dict:
            raise StorageError(f"line {number}: end_device_ids.application_ids is missing")
        application = ids["application_ids"].get("application_id")
        device = ids.get("device_id")
        if type(application) is not str or type(device) is not str:
            raise StorageError(f"line {number}: application_id or device_id is missing")
        network = up["uplink_message"].get("network_ids")
        own_tenant = network.get("tenant_id") if type(network) is dict else None
        topic = f"v3/{application}@{own_tenant or tenant}/devices/{device}/up"
        result.messages.append((topic, json.dumps(up, ensure_ascii=False).encode()))
    return result
