"""Overview: every commune the user may see, on an offline map and in a table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dash
import polars as pl
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from dashboards.access import CommuneData, utc_now
from dashboards.auth import app_context, current_data, current_language
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, format_datetime, format_number, t
from dashboards.pages.common import aria, chart_box, table
from dashboards.views import (
    atmo_color,
    atmo_text,
    overview_map,
    overview_rows,
    readable_text_color,
    traffic_text,
)

PATH = "/"


def layout(**_: Any) -> Component:
    """The page skeleton; ``overview_content`` fills it and refreshes it."""
    lang = current_language()
    return html.Main(
        [
            html.H1(t(lang, "overview.title")),
            html.P(id="overview-updated", className="updated", **aria(live="polite")),
            html.Div(id="overview-content"),
            dcc.Interval(id="overview-tick", interval=app_context().settings.refresh_s * 1000),
        ],
        id="content",
    )


def overview_content(
    data: CommuneData, lang: Language, settings: DashboardSettings, now: datetime
) -> tuple[list[Component], str]:
    """The map and the table of the user's communes, and the 'updated at' line."""
    rows = overview_rows(data, now, settings.online_after_periods)
    body = [
        chart_box(
            "overview-map", t(lang, "overview.map_title"), figure=overview_map(rows, lang), responsive=True
        ),
        _table(rows, lang),
    ]
    return body, t(lang, "common.refresh", time=format_datetime(now, lang, seconds=True))


def _table(rows: pl.DataFrame, lang: Language) -> html.Table:
    lines = []
    for row in rows.iter_rows(named=True):
        lines.append(
            [
                dcc.Link(f"{row['name']} ({row['insee']})", href=f"/commune/{row['insee']}"),
                atmo_cell(row, lang),
                traffic_cell(row, lang),
                f"{row['devices_online']} / {row['devices_total']}",
                str(row["open_alerts"]),
            ]
        )
    headers = [
        t(lang, "overview.commune"),
        t(lang, "overview.atmo"),
        t(lang, "overview.traffic"),
        t(lang, "overview.devices"),
        t(lang, "overview.alerts"),
    ]
    return table(t(lang, "overview.table_caption"), headers, lines, table_id="overview-table")


def _badge(index: int | None, lang: Language, colour: str | None = None) -> html.Span:
    shown = colour or atmo_color(index)
    # The class is written in the badge: its colour is never the only carrier of meaning.
    return html.Span(
        atmo_text(index, lang),
        className="atmo-badge",
        style={"backgroundColor": shown, "color": readable_text_color(shown)},
    )


def atmo_cell(row: dict[str, Any], lang: Language) -> list[Component]:
    """Today's index; before it is complete, the day so far (provisional) and the last complete day."""
    index = row.get("atmo_index")
    if index is not None:
        return [_badge(index, lang, row.get("atmo_color"))]
    cell: list[Component] = []
    provisional = row.get("atmo_provisional_index")
    if provisional is not None:
        cell += [
            _badge(provisional, lang),
            html.Span(
                " " + t(lang, "day_one.provisional", hours=row.get("atmo_hours") or 0),
                className="provisional",
            ),
        ]
    else:
        cell.append(html.Span(atmo_text(None, lang)))
    if row.get("atmo_last_index") is not None:
        day = format_datetime(row["atmo_last_day"], lang)[:10]
        cell += [
            html.Br(),
            html.Span(t(lang, "day_one.last_day", day=day, label=atmo_text(row["atmo_last_index"], lang))),
        ]
    return cell


def traffic_cell(row: dict[str, Any], lang: Language) -> str:
    """The congestion level against the profile; before a profile exists, the current flow."""
    level = row.get("traffic_level")
    if level is not None or row.get("flow_per_hour") is None:
        return traffic_text(level, lang)
    return t(
        lang,
        "day_one.flow",
        flow=format_number(row["flow_per_hour"], lang, 0),
        speed=format_number(row.get("speed_kmh"), lang, 0),
    )


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``."""

    @app.callback(
        Output("overview-content", "children"),
        Output("overview-updated", "children"),
        Input("overview-tick", "n_intervals"),
    )
    def refresh(_: int | None) -> tuple[list[Component], str]:
        return overview_content(current_data(), current_language(), app_context().settings, utc_now())
