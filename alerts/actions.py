"""What staff do about alerts: acknowledge one, silence a device or a commune for a while.

The dashboards write each action as one row of the ``alert_actions`` measurement of the store;
the evaluator reads them back at every evaluation and honours them (docs/alerts.md, "Acting on
alerts"). The store is the only thing both sides share, so nothing flows back up: the
dashboards never call the evaluator, and the evaluator never writes what the dashboards own.

This module is the one reading of those rows, for both sides: which silences are in force,
which alert an acknowledgement covers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import polars as pl

from storage.base import TIME, TIME_DTYPE, Store

MEASUREMENT = "alert_actions"
"""Where actions are kept (docs/measurements.md)."""
TAGS = ("insee", "kind", "id")
ActionKind = Literal["acknowledge", "silence", "end_silence"]
KINDS: tuple[ActionKind, ...] = ("acknowledge", "silence", "end_silence")
LOOKBACK = timedelta(days=400)
"""How far back actions are read: a maintenance window is at most ``MAX_SILENCE`` long."""
MAX_SILENCE = timedelta(days=90)
MAX_COMMENT = 500
_STRINGS = ("user", "comment", "rule", "scope", "device_id", "ends")


class ActionError(ValueError):
    """An action that cannot be taken as given; the message says what is expected.

    ``reason`` names the problem in one word, for interfaces that translate their messages.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Action:
    """One acknowledgement, silence, or early end of a silence."""

    id: str
    kind: ActionKind
    insee: str
    at: datetime
    user: str
    comment: str = ""
    """The acknowledgement's comment, or the silence's reason."""
    rule: str | None = None
    """Acknowledgement: the rule of the alert."""
    scope: str | None = None
    """Acknowledgement: the scope of the alert (``78498``, ``78498/<device>``, ``78498/<device>/<field>``)."""
    device_id: str | None = None
    """Silence: the one device silenced; None silences the whole commune."""
    until: datetime | None = None
    """Silence: when it ends by itself."""
    ends: str | None = None
    """End of a silence: the id of the silence ended early."""

    def covers(self, insee: str, device_id: str | None) -> bool:
        """Whether this silence applies to an alert of ``insee`` (and of ``device_id``)."""
        return self.insee == insee and (self.device_id is None or self.device_id == device_id)


def scope_commune(scope: str) -> str:
    """The commune of an alert scope (alerts/observe.py ``scope_of``)."""
    return scope.split("/", 1)[0]


def scope_device(scope: str) -> str | None:
    """The device of an alert scope, None for a commune-level alert."""
    parts = scope.split("/")
    return parts[1] if len(parts) > 1 else None


def _clean(text: str, what: str, *, required: bool) -> str:
    value = " ".join(text.split())
    if required and not value:
        raise ActionError(f"{what} is required", "required")
    if len(value) > MAX_COMMENT:
        raise ActionError(f"{what} is {len(value)} characters long: at most {MAX_COMMENT}", "too_long")
    return value


def acknowledge(insee: str, rule: str, scope: str, *, user: str, at: datetime, comment: str = "") -> Action:
    """An acknowledgement of the alert (``rule``, ``scope``) of a commune."""
    if not rule or scope_commune(scope) != insee:
        raise ActionError(f"scope {scope!r} is not an alert scope of commune {insee}", "scope")
    return Action(
        id=uuid.uuid4().hex,
        kind="acknowledge",
        insee=insee,
        at=at,
        user=_clean(user, "the user", required=True),
        comment=_clean(comment, "the comment", required=False),
        rule=rule,
        scope=scope,
    )


def silence(
    insee: str, *, user: str, at: datetime, until: datetime, reason: str, device_id: str | None = None
) -> Action:
    """A maintenance window: no message about the commune (or one device of it) until ``until``."""
    if until <= at:
        raise ActionError("the end of the silence must be in the future", "past")
    if until - at > MAX_SILENCE:
        raise ActionError(f"a silence lasts at most {MAX_SILENCE.days} days", "too_far")
    return Action(
        id=uuid.uuid4().hex,
        kind="silence",
        insee=insee,
        at=at,
        user=_clean(user, "the user", required=True),
        comment=_clean(reason, "the reason", required=True),
        device_id=device_id or None,
        until=until,
    )


def end_silence(silenced: Action, *, user: str, at: datetime) -> Action:
    """Ends ``silenced`` now, before its planned end."""
    if silenced.kind != "silence":
        raise ActionError(f"action {silenced.id} is not a silence", "unknown")
    return Action(
        id=uuid.uuid4().hex,
        kind="end_silence",
        insee=silenced.insee,
        at=at,
        user=_clean(user, "the user", required=True),
        ends=silenced.id,
    )


def to_frame(actions: Sequence[Action]) -> pl.DataFrame:
    """Rows of ``alert_actions`` (strings empty rather than null: InfluxDB keeps no null field)."""
    return pl.DataFrame(
        {
            TIME: pl.Series([a.at for a in actions]).cast(TIME_DTYPE),
            "insee": [a.insee for a in actions],
            "kind": [a.kind for a in actions],
            "id": [a.id for a in actions],
            **{name: [getattr(a, name) or "" for a in actions] for name in _STRINGS},
            "until_ns": pl.Series(
                [int(a.until.timestamp() * 1e9) if a.until else 0 for a in actions], dtype=pl.Int64
            ),
        }
    )


def record(store: Store, action: Action) -> None:
    """Keep ``action`` in the store, where the evaluator will find it."""
    store.write(MEASUREMENT, to_frame([action]), tags=list(TAGS))


def from_frame(frame: pl.DataFrame) -> list[Action]:
    """The actions of ``alert_actions`` rows, oldest first; unknown kinds are skipped."""
    if frame.is_empty() or "kind" not in frame.columns:
        return []
    present = frame.with_columns(
        [pl.lit("").alias(name) for name in _STRINGS if name not in frame.columns]
        + ([pl.lit(0, dtype=pl.Int64).alias("until_ns")] if "until_ns" not in frame.columns else [])
    ).sort(TIME)
    actions = []
    for row in present.iter_rows(named=True):
        if row["kind"] not in KINDS:
            continue
        until_ns = row["until_ns"] or 0
        actions.append(
            Action(
                id=row["id"],
                kind=row["kind"],
                insee=row["insee"],
                at=row[TIME].astimezone(UTC),
                until=datetime.fromtimestamp(until_ns / 1e9, UTC) if until_ns else None,
                **{name: row[name] or None for name in ("rule", "scope", "device_id", "ends")},
                user=row["user"] or "",
                comment=row["comment"] or "",
            )
        )
    return actions


def read(store: Store, now: datetime, communes: Sequence[str] | None = None) -> ActionLog:
    """The actions of the last ``LOOKBACK`` (of some communes only, when given)."""
    where = {"insee": list(communes)} if communes is not None else None
    frame = store.read(MEASUREMENT, start=now - LOOKBACK, end=now + timedelta(minutes=1), where=where)
    return ActionLog(tuple(from_frame(frame)))


@dataclass(frozen=True, slots=True)
class ActionLog:
    """A set of actions, and what they mean at a given moment."""

    actions: tuple[Action, ...]

    @classmethod
    def empty(cls) -> ActionLog:
        """No action at all."""
        return cls(())

    def silences(self, now: datetime) -> list[Action]:
        """Silences in force at ``now``: started, not over, not ended early."""
        ended = {a.ends for a in self.actions if a.kind == "end_silence"}
        return [
            a
            for a in self.actions
            if a.kind == "silence"
            and a.id not in ended
            and a.at <= now
            and a.until is not None
            and now < a.until
        ]

    def silence_of(self, insee: str, device_id: str | None, now: datetime) -> Action | None:
        """The silence in force over an alert of ``insee`` (and ``device_id``), the longest first."""
        covering = [s for s in self.silences(now) if s.covers(insee, device_id)]
        return max(covering, key=lambda s: s.until or now) if covering else None

    def acknowledgement(self, rule: str, scope: str, since: datetime) -> Action | None:
        """The latest acknowledgement of the alert (``rule``, ``scope``) made after ``since``.

        ``since`` is the start of the alert's episode: an acknowledgement of an earlier episode
        of the same rule and scope does not carry over to a new one.
        """
        matching = [
            a
            for a in self.actions
            if a.kind == "acknowledge" and a.rule == rule and a.scope == scope and a.at >= since
        ]
        return matching[-1] if matching else None

    def by_id(self, action_id: str) -> Action | None:
        """The action with this id."""
        return next((a for a in self.actions if a.id == action_id), None)
