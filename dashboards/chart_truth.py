"""What keeps a chart honest: its axis spans the period asked for, an interval still running or
short of readings is marked rather than drawn as a drop, and the levels that matter are lines.

Levels come from two places: the alert rules that compare this very series (``above``/``below``
rules of the rules file named by ``DashboardSettings.alert_rules_file``), and the ATMO class
bounds of the arrêté du 10 juillet 2020 that docs/indices.md cites (``processing.indices.scales``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path

import plotly.graph_objects as go
import polars as pl

from alerts.rules import RulesFile, load_rules
from dashboards.i18n import PARIS, Language, format_quantity, t
from dashboards.timerange import WINDOWS, TimeRange
from processing.indices.scales import ATMO
from sensors.communes import CommuneRegistry
from sensors.families import family_spec
from storage.base import TIME

INCOMPLETE_SHARE = 0.9
"""An interval with fewer readings than this share of the series' usual count is incomplete."""
AXIS_FORMAT = "%Y-%m-%d %H:%M"
DAY_TICKS_AFTER = timedelta(days=3)
ATMO_BAD_CLASS = 4
"""The ATMO class "mauvais": its lower bound is the level drawn."""


@dataclass(frozen=True, slots=True)
class Threshold:
    """A horizontal level on a chart, with what it is."""

    value: float
    label: str
    kind: str
    """``rule`` (an alert rule's raise level) or ``regulatory``."""


def _local(moment: datetime) -> str:
    return moment.astimezone(PARIS).strftime(AXIS_FORMAT)


def follow_period(figure: go.Figure, span: TimeRange, lang: Language) -> None:
    """The x axis spans exactly the chosen period, data or not; past a few days, ticks are days."""
    figure.update_xaxes(type="date", range=[_local(span.start), _local(span.end)], autorange=False)
    if span.span > DAY_TICKS_AFTER:
        figure.update_xaxes(tickformat="%d/%m/%Y" if lang == "fr" else "%Y-%m-%d")


def split_unfinished(
    frame: pl.DataFrame, value: str, window: str, now: datetime, count: str | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(frame with incomplete intervals' ``value`` set to null, those incomplete intervals).

    An interval is incomplete when it has not ended at ``now`` (its aggregate covers only part
    of it), or when it holds clearly fewer readings than the series usually does (a device
    silent in it): for a counter, both would read as a drop that never happened.
    """
    if frame.is_empty() or window not in WINDOWS:
        return frame, frame.head(0)
    now_ns = int(now.timestamp() * 1e9)
    width_ns = int(WINDOWS[window].total_seconds() * 1e9)
    running = pl.col(TIME).dt.epoch("ns") + width_ns > now_ns
    short = pl.lit(False)
    if count is not None and count in frame.columns:
        usual = frame.get_column(count).median()
        if isinstance(usual, int | float) and usual > 0:
            short = pl.col(count).fill_null(0) < usual * INCOMPLETE_SHARE
    flagged = frame.with_columns((running | short).alias("_incomplete"))
    incomplete = flagged.filter(pl.col("_incomplete")).drop("_incomplete")
    kept = flagged.with_columns(
        pl.when(pl.col("_incomplete")).then(None).otherwise(pl.col(value)).alias(value)
    ).drop("_incomplete")
    return kept, incomplete


def mark_unfinished(figure: go.Figure, incomplete: pl.DataFrame, value: str, lang: Language) -> None:
    """Incomplete intervals as hollow markers named as such, apart from the line."""
    if incomplete.is_empty() or value not in incomplete.columns:
        return
    figure.add_trace(
        go.Scatter(
            x=incomplete.get_column(TIME)
            .dt.convert_time_zone("Europe/Paris")
            .dt.strftime(AXIS_FORMAT)
            .to_list(),
            y=incomplete.get_column(value).to_list(),
            mode="markers",
            marker={"symbol": "circle-open", "size": 10, "color": "#B45309", "line": {"width": 2}},
            name=t(lang, "truth.incomplete"),
            hovertemplate="%{y} — " + t(lang, "truth.incomplete") + "<extra></extra>",
        )
    )


def add_thresholds(figure: go.Figure, thresholds: list[Threshold]) -> None:
    """Each level as a dashed line labelled with what it is (the label says it, not the colour)."""
    for level in thresholds:
        figure.add_hline(
            y=level.value,
            line={"dash": "dash" if level.kind == "rule" else "dot", "color": "#7C2D12", "width": 1.5},
            # On a white ground at the right end, so the label stays readable over the data.
            annotation={
                "text": level.label,
                "font": {"size": 11, "color": "#7C2D12"},
                "bgcolor": "rgba(255, 255, 255, 0.85)",
            },
            annotation_position="top right",
        )


@cache
def _rules(path: str, modified: float) -> RulesFile | None:
    try:
        return load_rules(path, CommuneRegistry.load())
    except (OSError, ValueError):
        return None


def rule_thresholds(
    rules_file: Path | None, measurement: str, column: str, *, insee: str, unit: str, lang: Language
) -> list[Threshold]:
    """The raise levels of the ``above``/``below`` rules comparing ``measurement.column`` in ``insee``."""
    if rules_file is None or not Path(rules_file).exists():
        return []
    rules = _rules(str(rules_file), Path(rules_file).stat().st_mtime)
    if rules is None:
        return []
    found = []
    for rule in rules.rules:
        if rule.condition not in ("above", "below") or not rule.covers(insee):
            continue
        if rule.source_measurement != measurement or rule.source_field != column or rule.raise_value is None:
            continue
        title = rule.title_in(lang) or rule.name
        level = format_quantity(rule.raise_value, unit, lang)
        found.append(Threshold(rule.raise_value, t(lang, "truth.rule", title=title, level=level), "rule"))
    return found


def regulatory_thresholds(field: str, unit: str, lang: Language) -> list[Threshold]:
    """The lower bound of ATMO class "mauvais" for a pollutant of the index (docs/indices.md)."""
    bounds = ATMO.upper.get(field)
    if bounds is None:
        return []
    level = float(bounds[ATMO_BAD_CLASS - 2])
    text = t(lang, "truth.atmo", level=format_quantity(level, unit, lang))
    return [Threshold(level, text, "regulatory")]


def thresholds_for(
    rules_file: Path | None,
    family: str,
    field: str,
    *,
    window: str,
    commune_level: bool,
    insee: str,
    lang: Language,
) -> list[Threshold]:
    """Every level worth a line on the chart of ``field`` at ``window`` (``raw``: the readings)."""
    spec = family_spec(family)
    field_spec = spec.field(field) if spec else None
    if field_spec is None or field_spec.counter:
        return []
    if window == "raw":
        measurement, column = family, field
    else:
        measurement = f"{family}_{window}" + ("_commune" if commune_level else "")
        column = f"{field}_mean"
    unit = field_spec.unit
    return rule_thresholds(rules_file, measurement, column, insee=insee, unit=unit, lang=lang) + (
        regulatory_thresholds(field, unit, lang) if family == "air_quality" else []
    )
