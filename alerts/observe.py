"""What each rule sees in the store at one evaluation: the latest value of every scope it covers,
and whether that value raises or clears the alert (with hysteresis).

Each condition builds one polars frame of the same shape (``OBSERVATION_COLUMNS``), computed
with expressions; Python objects are made only for the scopes that matter to the evaluator
(raised now, or already tracked), so a fleet of thousands of healthy devices costs little.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from alerts.rules import Rule
from storage.base import TIME, TIME_DTYPE, Store

OBSERVATION_COLUMNS = ("scope", "insee", "device_id", "value", "observed_at", "raised", "cleared", "family")


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


def scope_of(insee: str, device_id: str | None, extra: str | None = None) -> str:
    """The scope of an alert: the commune, a device of it, or one field of a device."""
    if not device_id or device_id == "_commune":
        return insee
    return f"{insee}/{device_id}" + (f"/{extra}" if extra else "")


def _scope_expr(columns: Sequence[str], *, with_field: bool = False) -> pl.Expr:
    """``scope_of`` as an expression (and the device id, null at commune level)."""
    if "device_id" not in columns:
        return pl.col("insee")
    device = pl.col("device_id")
    scope = pl.concat_str(pl.col("insee"), pl.lit("/"), device)
    if with_field and "field" in columns:
        scope = (
            pl.when(pl.col("field").fill_null("") != "")
            .then(pl.concat_str(scope, pl.lit("/"), pl.col("field")))
            .otherwise(scope)
        )
    return (
        pl.when(device.is_null() | (device == "") | (device == "_commune"))
        .then(pl.col("insee"))
        .otherwise(scope)
    )


def _device_expr(columns: Sequence[str]) -> pl.Expr:
    if "device_id" not in columns:
        return pl.lit(None, dtype=pl.String)
    device = pl.col("device_id")
    return pl.when(device.is_null() | (device == "") | (device == "_commune")).then(None).otherwise(device)


def observe(
    rule: Rule,
    store: Store,
    now: datetime,
    communes: Sequence[str],
    tracked: AbstractSet[str] = frozenset(),
) -> list[Observation]:
    """The observations of ``rule`` at ``now``: every scope raised, plus the ``tracked`` ones."""
    if rule.condition in ("above", "below", "index_at_least"):
        frame = _thresholds(rule, store, now, communes)
    elif rule.condition == "anomaly":
        frame = _anomalies(rule, store, now, communes)
    else:
        frame = _offline(rule, store, now, communes)
    if frame.is_empty():
        return []
    wanted = frame.filter(pl.col("raised") | pl.col("scope").is_in(list(tracked)))
    return [Observation(*row) for row in wanted.select(OBSERVATION_COLUMNS).iter_rows()]


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=dict.fromkeys(OBSERVATION_COLUMNS, pl.String)).with_columns(
        pl.col("raised", "cleared").cast(pl.Boolean)
    )


def _latest(frame: pl.DataFrame, value_column: str) -> pl.DataFrame:
    """The last non-null row of every series (tag combination) of a frame sorted by time."""
    keys = [c for c in ("insee", "device_id", "field") if c in frame.columns]
    return frame.drop_nulls(value_column).sort(TIME).group_by(keys, maintain_order=True).last()


def _thresholds(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> pl.DataFrame:
    field = rule.source_field or ""
    frame = store.read(
        rule.source_measurement,
        start=now - rule.default_lookback,
        end=now + timedelta(microseconds=1),
        where={"insee": list(communes)},
        fields=[field],
    )
    if frame.is_empty() or field not in frame.columns:
        return _empty()
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
    return latest.select(
        _scope_expr(latest.columns).alias("scope"),
        pl.col("insee"),
        _device_expr(latest.columns).alias("device_id"),
        value.alias("value"),
        pl.col(TIME).alias("observed_at"),
        raised.alias("raised"),
        cleared.alias("cleared"),
        pl.lit(rule.single_family).alias("family"),
    )


def _anomalies(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> pl.DataFrame:
    where: dict[str, str | list[str]] = {"insee": list(communes), "kind": str(rule.kind)}
    if rule.family != "*":
        where["family"] = rule.families
    if rule.field:
        where["field"] = rule.field
    frame = store.read(
        "anomalies", start=now - rule.default_lookback, end=now + timedelta(microseconds=1), where=where
    )
    if frame.is_empty() or "open" not in frame.columns:
        return _empty()
    latest = _latest(frame, "open")
    is_open = pl.col("open").cast(pl.Boolean)
    observed = (
        pl.col("observed").cast(pl.Float64) if "observed" in latest.columns else pl.lit(None, pl.Float64)
    )
    family = pl.col("family") if "family" in latest.columns else pl.lit(rule.single_family)
    return latest.select(
        _scope_expr(latest.columns, with_field=True).alias("scope"),
        pl.col("insee"),
        _device_expr(latest.columns).alias("device_id"),
        observed.alias("value"),
        pl.col(TIME).alias("observed_at"),
        is_open.alias("raised"),
        (~is_open).alias("cleared"),
        family.alias("family"),
    )


def _offline(rule: Rule, store: Store, now: datetime, communes: Sequence[str]) -> pl.DataFrame:
    frames = []
    for family in rule.families:
        seen = store.series(family, where={"insee": list(communes)})
        if seen.is_empty() or "device_id" not in seen.columns:
            continue
        minutes = (pl.lit(now).cast(TIME_DTYPE) - pl.col("last_time")).dt.total_microseconds() / 60e6
        limit = rule.silence_after(family).total_seconds() / 60.0
        frames.append(
            seen.select(
                _scope_expr(seen.columns).alias("scope"),
                pl.col("insee"),
                _device_expr(seen.columns).alias("device_id"),
                minutes.alias("value"),
                pl.col("last_time").alias("observed_at"),
                (minutes > limit).alias("raised"),
                (minutes <= limit).alias("cleared"),
                pl.lit(family).alias("family"),
            )
        )
    return pl.concat(frames) if frames else _empty()
