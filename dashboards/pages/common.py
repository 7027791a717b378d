"""Pieces shared by the pages: accessible tables, the range picker, refusals."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from dash import dcc, html

from dashboards.i18n import Language, t
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


def range_picker(
    component_id: str, lang: Language, value: str, presets: Sequence[str] | None = None
) -> html.Div:
    """The time-range picker: radio buttons (reachable and switchable with the keyboard)."""
    keys = list(presets or PRESETS)
    return html.Div(
        [
            html.Span(t(lang, "common.range"), id=f"{component_id}-label", className="picker-label"),
            dcc.RadioItems(
                id=component_id,
                options=[{"label": t(lang, f"range.{key}"), "value": key} for key in keys],
                value=value if value in keys else keys[1],
                inline=True,
                className="range-picker",
                labelClassName="range-option",
            ),
        ],
        role="group",
        **aria(labelledby=f"{component_id}-label"),
    )


def preset_range(key: str | None, now: datetime) -> TimeRange:
    """The range of a picker value (24 hours when the value is unknown)."""
    return TimeRange.last(PRESETS.get(key or "", PRESETS["24h"]), now)


def refusal(lang: Language, insee: str) -> html.Div:
    """What a page shows instead of a commune the user may not see."""
    return html.Div(
        [html.H1(t(lang, "common.forbidden", insee=insee)), dcc.Link(t(lang, "nav.overview"), href="/")],
        className="refusal",
        role="alert",
        id="forbidden",
    )
