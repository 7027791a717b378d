"""The optional device topology: which network device each device reaches the platform through.

A CSV file with a header ``device_id,parent`` (extra columns such as ``insee`` or ``note`` are
ignored); ``parent`` is the device id of the gateway, switch or ONT in front of ``device_id``,
empty for a device directly connected. When a parent is offline, the offline alerts of the
devices behind it (at any depth) are suppressed: one message about the parent instead of one
per child. See docs/alerts.md.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime, timedelta
from pathlib import Path

from sensors.lorawan.radio import RADIO_MEASUREMENT
from sensors.topics import device_id_problem
from storage.base import Store

LEARNED_WINDOW = timedelta(days=1)
"""How far back the LoRaWAN radio rows are read to learn which gateway each device is behind."""


class TopologyError(ValueError):
    """The topology file is malformed; the message names the line."""


class Topology:
    """Device -> parent links, checked for unknown ids and cycles."""

    def __init__(self, parents: dict[str, str]) -> None:
        self._parents = dict(parents)
        for device in self._parents:
            self._check_cycle(device)

    def _check_cycle(self, device: str) -> None:
        seen = [device]
        current = self._parents.get(device)
        while current is not None:
            if current in seen:
                raise TopologyError(f"devices {' -> '.join([*seen, current])} form a cycle")
            seen.append(current)
            current = self._parents.get(current)

    def parent(self, device_id: str) -> str | None:
        """The device directly in front of ``device_id``, or None."""
        return self._parents.get(device_id)

    def ancestors(self, device_id: str) -> list[str]:
        """Every device between ``device_id`` and the core, nearest first."""
        chain = []
        current = self._parents.get(device_id)
        while current is not None:
            chain.append(current)
            current = self._parents.get(current)
        return chain

    def down_ancestor(self, device_id: str, offline: AbstractSet[str]) -> str | None:
        """The farthest offline ancestor of ``device_id`` (the root cause), or None."""
        found = None
        current = self._parents.get(device_id)
        while current is not None:
            if current in offline:
                found = current
            current = self._parents.get(current)
        return found

    def __len__(self) -> int:
        return len(self._parents)

    def with_links(self, parents: Mapping[str, str]) -> Topology:
        """This topology plus links learned elsewhere; the file's own links win."""
        try:
            return Topology({**parents, **self._parents})
        except TopologyError:
            return self  # a learned link closing a cycle must not stop alerting

    @classmethod
    def empty(cls) -> Topology:
        """A topology that knows no link (nothing is ever suppressed)."""
        return cls({})

    @classmethod
    def load(cls, path: str | Path) -> Topology:
        """Read a topology CSV; ``TopologyError`` naming the line on a problem."""
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise TopologyError(f"cannot read device topology {path}: {exc.strerror}") from exc
        # Comments are skipped, but errors still give the line number of the file.
        kept = [
            (no, line) for no, line in enumerate(text.splitlines(), 1) if not line.lstrip().startswith("#")
        ]
        reader = csv.DictReader(line for _, line in kept)
        if not {"device_id", "parent"} <= set(reader.fieldnames or []):
            raise TopologyError(f"{path}: expected a header with the columns device_id and parent")
        parents: dict[str, str] = {}
        for row in reader:
            line_no = kept[reader.line_num - 1][0]
            device = (row.get("device_id") or "").strip()
            parent = (row.get("parent") or "").strip()
            for what, value in (("device_id", device), ("parent", parent)):
                if value and device_id_problem(value) is not None:
                    raise TopologyError(f"{path}:{line_no}: {what} {value!r} is not a valid device id")
            if not device:
                raise TopologyError(f"{path}:{line_no}: device_id is empty")
            if device in parents:
                raise TopologyError(f"{path}:{line_no}: device {device!r} is listed twice")
            if parent == device:
                raise TopologyError(f"{path}:{line_no}: device {device!r} is its own parent")
            if parent:
                parents[device] = parent
        try:
            return cls(parents)
        except TopologyError as exc:
            raise TopologyError(f"{path}: {exc}") from None


def lorawan_parents(store: Store, now: datetime) -> dict[str, str]:
    """Each LoRaWAN device's gateway: the one that heard its latest uplink best.

    Read from ``lorawan_radio`` (docs/measurements.md), whose ``gateway_id`` is the gateway's
    platform id when the device map names it: a silent gateway is then the parent of the
    devices it served, like a switch in the topology file.
    """
    rows = store.read(RADIO_MEASUREMENT, start=now - LEARNED_WINDOW, end=now, fields=["gateway_id"])
    if rows.is_empty() or "gateway_id" not in rows.columns:
        return {}
    last = rows.drop_nulls("gateway_id").sort("time").group_by("device_id").last()
    return dict(zip(last["device_id"].to_list(), last["gateway_id"].to_list(), strict=True))
