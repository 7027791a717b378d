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
from dashboards.i18n import Language, format_datetime, t
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
        index = row.get("atmo_index")
        colour = row.get("atmo_color") or atmo_color(index)
        # The class is written in the badge: its colour is never the only carrier of meaning.
        badge = html.Span(
            atmo_text(index, lang),
            className="atmo-badge",
            style={"backgroundColor": colour, "color": readable_text_color(colour)},
        )
        lines.append(
            [
                dcc.Link(f"{row['name']} ({row['insee']})", href=f"/commune/{row['insee']}"),
                badge,
                traffic_text(row.get("traffic_level"), lang),
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


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``."""

    @app.callback(
        Output("overview-content", "children"),
        Output("overview-updated", "children"),
        Input("overview-tick", "n_intervals"),
    )
    def refresh(_: int | None) -> tuple[list[Component], str]:
        return overview_content(current_data(), current_language(), app_context().settings, utc_now())
