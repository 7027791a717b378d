"""What each rule sees in the store at one evaluation: the latest value of every scope it covers,
and whether that value raises or clears the alert (with hysteresis).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from alerts.rules import Rule
from storage.base import TIME, Store, TagFilter


@dataclass(frozen=True, slots=True)
class Observation:
    """The latest state of one scope for one rule."""

    scope: str
    insee: str
    device_id: str | None
    value: float | None
    observed_at: datetime
    raised: bool
    """The value is past the raise level: an inactive alert starts."""
    cleared: bool
    """The value is back past the clear level: an active alert ends."""
    family: str = ""
    detail: str = ""


def scope_of(insee: str, device_id: str | None, extra: str | None = None) -> str:
    """The scope of an alert: the commune, a device of it, or one field of a device."""
    if not device_id or device_id == "_commune":
        return insee
    return f"{insee}/{device_id}" + (f"/{extra}" if extra else "")


def observe(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> list[Observation]:
    """The observations of ``rule`` at ``now`` for the given communes."""
    if rule.condition in ("above", "below", "index_at_least"):
        return _thresholds(rule, store, now, communes)
    if rule.condition == "anomaly":
        return _anomalies(rule, store, now, communes)
    return _offline(rule, store, now, communes)


def _latest(frame: pl.DataFrame, value_column: str) -> pl.DataFrame:
    """The last non-null row of every series (tag combination) of a frame sorted by time."""
    keys = [c for c in ("insee", "device_id", "field") if c in frame.columns]
    return frame.drop_nulls(value_column).sort(TIME).group_by(keys, maintain_order=True).last()


def _thresholds(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> list[Observation]:
    field = rule.source_field or ""
    frame = store.read(
        rule.source_measurement,
        start=now - rule.default_lookback,
        end=now + timedelta(microseconds=1),
        where={"insee": list(communes)},
        fields=[field],
    )
    if frame.is_empty() or field not in frame.columns:
        return []
    latest = _latest(frame.with_columns(pl.col(field).cast(pl.Float64)), field)
    raise_at, clear_at = rule.raise_value, rule.clear_value
    assert raise_at is not None and clear_at is not None  # guaranteed by validation
    value = pl.col(field)
    if rule.condition == "below":
        raised, cleared = value < raise_at, value >= clear_at
    elif rule.condition == "above":
        raised, cleared = value > raise_at, value <= clear_at
    else:  # index class at or above
        raised, cleared = value >= raise_at, value < clear_at
    latest = latest.with_columns(raised.alias("_raised"), cleared.alias("_cleared"))
    has_device = "device_id" in latest.columns
    return [
        Observation(
            scope=scope_of(row["insee"], row.get("device_id") if has_device else None),
            insee=row["insee"],
            device_id=(row.get("device_id") if has_device and row.get("device_id") != "_commune" else None),
            value=row[field],
            observed_at=row[TIME],
            raised=bool(row["_raised"]),
            cleared=bool(row["_cleared"]),
            family=rule.single_family,
        )
        for row in latest.iter_rows(named=True)
    ]


def _anomalies(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> list[Observation]:
    where: dict[str, str | list[str]] = {"insee": list(communes), "kind": str(rule.kind)}
    if rule.family != "*":
        where["family"] = rule.families
    if rule.field:
        where["field"] = rule.field
    frame = store.read(
        "anomalies", start=now - rule.default_lookback, end=now + timedelta(microseconds=1), where=where
    )
    if frame.is_empty() or "open" not in frame.columns:
        return []
    latest = _latest(frame, "open")
    observations = []
    for row in latest.iter_rows(named=True):
        is_open = bool(row["open"])
        observed = row.get("observed")
        observations.append(
            Observation(
                scope=scope_of(row["insee"], row.get("device_id"), row.get("field") or None),
                insee=row["insee"],
                device_id=row.get("device_id"),
                value=float(observed) if observed is not None else None,
                observed_at=row[TIME],
                raised=is_open,
                cleared=not is_open,
                family=str(row.get("family") or rule.single_family),
                detail=str(row.get("field") or ""),
            )
        )
    return observations


def _offline(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> list[Observation]:
    observations = []
    where: TagFilter = {"insee": list(communes)}
    for family in rule.families:
        seen = store.series(family, where=where)
        if seen.is_empty() or "device_id" not in seen.columns:
            continue
        silence = rule.silence_after(family)
        for row in seen.iter_rows(named=True):
            last: datetime = row["last_time"]
            silent_for = now - last
            is_offline = silent_for > silence
            observations.append(
                Observation(
                    scope=scope_of(row["insee"], row["device_id"]),
                    insee=row["insee"],
                    device_id=row["device_id"],
                    value=silent_for.total_seconds() / 60.0,
                    observed_at=last,
                    raised=is_offline,
                    cleared=not is_offline,
                    family=family,
                )
            )
    return observations
