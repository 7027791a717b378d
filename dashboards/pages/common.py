"""Pieces shared by the pages: accessible tables and charts, the pickers, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import quote

import dash
from dash import Input, Output, dcc, html

from dashboards.i18n import PARIS, Language, t
from dashboards.timerange import PRESETS, TimeRange

Cell = Any
"""A table cell: text or a component."""


def aria(**attributes: str) -> dict[str, Any]:
    """ARIA attributes as Dash keyword arguments: ``aria(live="polite")`` -> ``aria-live``."""
    return {f"aria-{name}": value for name, value in attributes.items()}


def table(
    caption: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]], table_id: str = ""
) -> html.Table:
    """A table with a caption and column headers marked as such, for screen readers."""
    return html.Table(
        [
            html.Caption(caption),
            html.Thead(html.Tr([html.Th(h, scope="col") for h in headers])),
            html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in rows]),
        ],
        className="data-table",
        id=table_id or None,
    )


def chart_box(graph_id: str, label: str, *, figure: Any = None, responsive: bool = False) -> html.Div:
    """A chart in a box that screen readers announce as a figure named ``label``."""
    graph: dict[str, Any] = {"id": graph_id, "config": {"displaylogo": False}}
    if responsive:
        graph["config"]["responsive"] = True
    if figure is not None:  # a figure filled in later by a callback is left out
        graph["figure"] = figure
    return html.Div(dcc.Graph(**graph), role="figure", **aria(label=label))


def field_picker(component_id: str, lang: Language, options: list[dict[str, str]], value: str) -> html.Div:
    """The labelled drop-down that chooses which field of a family a chart shows."""
    return html.Div(
        [
            html.Label(t(lang, "commune.field"), htmlFor=component_id),
            dcc.Dropdown(id=component_id, options=options, value=value, clearable=False),
        ],
        className="field-picker",
    )


CUSTOM = "custom"
"""The picker value that selects the dates of the calendar."""


def range_picker(
    component_id: str, lang: Language, value: str, presets: Sequence[str] | None = None
) -> html.Div:
    """The time-range picker: radio buttons (keyboard-friendly) and a calendar for chosen dates.

    ``range_key`` turns what is picked into one key (``24h`` or ``custom:2026-11-01:2026-11-15``)
    that the data callbacks read through ``span_of``.
    """
    keys = list(presets or PRESETS)
    options = [{"label": t(lang, f"range.{key}"), "value": key} for key in keys]
    options.append({"label": t(lang, "range.custom"), "value": CUSTOM})
    return html.Div(
        [
            html.Span(t(lang, "common.range"), id=f"{component_id}-label", className="picker-label"),
            dcc.RadioItems(
                id=component_id,
                options=options,
                value=value if value in keys else keys[1],
                inline=True,
                className="range-picker",
                labelClassName="range-option",
            ),
            dcc.DatePickerRange(
                id=f"{component_id}-dates",
                display_format="DD/MM/YYYY" if lang == "fr" else "YYYY-MM-DD",
                first_day_of_week=1,
                start_date_placeholder_text=t(lang, "range.from"),
                end_date_placeholder_text=t(lang, "range.to"),
                updatemode="bothdates",
                className="date-picker",
            ),
            dcc.Store(id=f"{component_id}-key", data=value if value in keys else keys[1]),
        ],
        role="group",
        **aria(labelledby=f"{component_id}-label"),
    )


def register_range_picker(app: dash.Dash, component_id: str) -> None:
    """Keep the ``{component_id}-key`` store of a ``range_picker`` in step with what is picked."""

    @app.callback(
        Output(f"{component_id}-key", "data"),
        Input(component_id, "value"),
        Input(f"{component_id}-dates", "start_date"),
        Input(f"{component_id}-dates", "end_date"),
    )
    def on_range(choice: str, start_date: str | None, end_date: str | None) -> str:
        return range_key(choice, start_date, end_date)


def range_key(choice: str | None, start_date: str | None, end_date: str | None) -> str:
    """One key for the picked range: the preset, or ``custom:<first day>:<last day>``."""
    if choice == CUSTOM:
        if start_date and end_date:
            return f"{CUSTOM}:{start_date[:10]}:{end_date[:10]}"
        return "24h"
    return choice or "24h"


def span_of(key: str | None, now: datetime) -> TimeRange:
    """The range of a picker key: a preset ending now, or whole days (Paris time) of the calendar.

    An unknown or malformed key falls back to the last 24 hours.
    """
    if key and key.startswith(f"{CUSTOM}:"):
        try:
            _, first_text, last_text = key.split(":")
            first, last = sorted((date.fromisoformat(first_text), date.fromisoformat(last_text)))
        except ValueError:
            return TimeRange.last(PRESETS["24h"], now)
        start = datetime.combine(first, time(), PARIS).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time(), PARIS).astimezone(UTC)
        return TimeRange(start, end)
    return TimeRange.last(PRESETS.get(key or "", PRESETS["24h"]), now)


def refusal(lang: Language, insee: str) -> html.Div:
    """What a page shows instead of a commune the user may not see."""
    return html.Div(
        [html.H1(t(lang, "common.forbidden", insee=insee)), dcc.Link(t(lang, "nav.overview"), href="/")],
        className="refusal",
        role="alert",
        id="forbidden",
    )


def device_href(insee: str, device_id: str) -> str:
    """The device page's URL, percent-encoded as UTF-8 (device ids hold spaces and accents)."""
    return f"/device/{quote(insee, safe='')}/{quote(device_id, safe='')}"
