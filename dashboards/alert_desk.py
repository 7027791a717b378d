"""The alerts of a user's communes as staff act on them: one row per alert episode, with who
acknowledged it and the silence over it; and the actions they take, checked against their rights.

Actions go to the store (``alert_actions``, read by the alert evaluator through
``alerts.actions``): the dashboards never call the evaluator, so data still flows one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import polars as pl

from alerts import actions
from alerts.actions import Action, ActionLog
from dashboards.access import CommuneData
from dashboards.timerange import TimeRange
from sensors.families import Family
from storage.base import TIME

FAMILIES = [f.value for f in Family]

EPISODE_SCHEMA: dict[str, pl.DataType] = {
    "insee": pl.String(),
    "rule": pl.String(),
    "scope": pl.String(),
    "device_id": pl.String(),
    "started": pl.Datetime("ns", "UTC"),
    "ended": pl.Datetime("ns", "UTC"),
    "state": pl.String(),
    "severity": pl.String(),
    "summary": pl.String(),
    "title_fr": pl.String(),
    "title_en": pl.String(),
}


def action_log(data: CommuneData, now: datetime, communes: Sequence[str] | None = None) -> ActionLog:
    """The staff actions of the user's communes (all of them, or those asked)."""
    return actions.read(data.store, now, data.resolve(communes))


def episodes(
    data: CommuneData, span: TimeRange, now: datetime, communes: Sequence[str] | None = None
) -> pl.DataFrame:
    """One row per alert episode seen in ``span`` or still open at ``now``, newest first.

    An episode runs from an alert's first transition after a ``resolved`` one to its next
    ``resolved`` (``ended``, null while open). Open alerts are looked for 90 days back, so one
    that started before the range still shows.
    """
    codes = data.resolve(communes)
    lookback = TimeRange(min(span.start, now - timedelta(days=90)), max(span.end, now + timedelta(minutes=1)))
    events = data.alerts(codes, lookback)
    if events.is_empty() or "state" not in events.columns:
        return pl.DataFrame(schema=EPISODE_SCHEMA)
    for name in ("severity", "summary", "title_fr", "title_en"):
        if name not in events.columns:
            events = events.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    key = ["insee", "rule", "scope"]
    numbered = events.sort(TIME).with_columns(
        # Each resolved closes its episode: the next transition opens a new one.
        (pl.col("state") == "resolved")
        .cast(pl.Int32)
        .shift(1, fill_value=0)
        .cum_sum()
        .over(key)
        .alias("_episode")
    )
    grouped = numbered.group_by([*key, "_episode"]).agg(
        pl.col(TIME).first().alias("started"),
        pl.col(TIME).last().alias("_last"),
        pl.col("state").last(),
        pl.col("severity").drop_nulls().last(),
        pl.col("summary").last(),
        pl.col("title_fr").drop_nulls().last().fill_null(pl.col("rule").first()),
        pl.col("title_en").drop_nulls().last().fill_null(pl.col("rule").first()),
    )
    shown = grouped.filter(
        (pl.col("state") != "resolved") | ((pl.col("_last") >= span.start) & (pl.col("started") < span.end))
    )
    return (
        shown.with_columns(
            pl.when(pl.col("state") == "resolved").then(pl.col("_last")).alias("ended"),
            pl.col("scope").str.split("/").list.get(1, null_on_oob=True).alias("device_id"),
        )
        .with_columns(
            # A family after the commune is a family-wide scope of older histories, not a device.
            pl.when(~pl.col("device_id").is_in(FAMILIES)).then(pl.col("device_id")).alias("device_id")
        )
        .select(list(EPISODE_SCHEMA))
        .cast(pl.Schema(EPISODE_SCHEMA))
        .sort("started", descending=True)
    )


def acknowledgement_of(log: ActionLog, row: dict[str, object]) -> Action | None:
    """The acknowledgement of an episode row of ``episodes``."""
    started = row["started"]
    assert isinstance(started, datetime)
    return log.acknowledgement(str(row["rule"]), str(row["scope"]), started)


def silence_over(log: ActionLog, row: dict[str, object], now: datetime) -> Action | None:
    """The silence in force over an episode row of ``episodes``."""
    device = row.get("device_id")
    return log.silence_of(str(row["insee"]), str(device) if device else None, now)


def acknowledge(
    data: CommuneData, insee: str, rule: str, scope: str, *, comment: str, now: datetime
) -> Action:
    """Acknowledge an alert of a commune of the user (``Forbidden`` otherwise)."""
    data.check(insee)
    action = actions.acknowledge(insee, rule, scope, user=data.user.name, at=now, comment=comment)
    actions.record(data.store, action)
    return action


def silence(
    data: CommuneData, insee: str, device_id: str | None, *, until: datetime, reason: str, now: datetime
) -> Action:
    """Silence a commune of the user, or one of its devices, until ``until``."""
    data.check(insee)
    action = actions.silence(
        insee, user=data.user.name, at=now, until=until, reason=reason, device_id=device_id
    )
    actions.record(data.store, action)
    return action


def end_silence(data: CommuneData, silence_id: str, now: datetime) -> Action:
    """End a silence of one of the user's communes now."""
    found = action_log(data, now).by_id(silence_id)
    if found is None:
        raise actions.ActionError(f"no silence {silence_id} among your communes", "unknown")
    data.check(found.insee)
    action = actions.end_silence(found, user=data.user.name, at=now)
    actions.record(data.store, action)
    return action
