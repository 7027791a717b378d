"""Overview: every commune the user may see, on a map and in a table."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import dash
import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from dashboards.access import CommuneData
from dashboards.auth import app_context, current_data, current_language, current_time
from dashboards.basemap import Basemap, basemap
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, format_datetime, format_number, t
from dashboards.pages.common import aria, chart_box, table
from dashboards.views import (
    atmo_color,
    atmo_text,
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
            dcc.Location(id="overview-location", refresh="callback-nav"),
        ],
        id="content",
    )


def overview_content(
    data: CommuneData, lang: Language, settings: DashboardSettings, now: datetime
) -> tuple[list[Component], str]:
    """The map and the table of the user's communes, and the 'updated at' line."""
    rows = overview_rows(data, now, settings.online_after_periods)
    background = basemap(settings.basemap, settings.basemap_attribution)
    credit = t(lang, "map.credit", credit=background.attribution) if background.attribution else ""
    body = [
        chart_box(
            "overview-map",
            t(lang, "overview.map_title"),
            lang,
            figure=overview_map(rows, lang, background),
            alternative=map_alternative(rows, lang),
        ),
        html.P(credit, className="map-credit"),
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


MAP_HEIGHT_PX = 460
MAP_WIDTH_PX = 360
"""The map's height, and the narrowest width it is fitted for (a phone): every commune shows."""


def overview_map(rows: pl.DataFrame, lang: Language, background: Basemap) -> go.Figure:
    """The visible communes on a MapLibre map, coloured by today's ATMO class; a click opens one.

    Each commune is a dark ring under a disc of its ATMO colour, so the light colours (Bon is
    pale cyan) still stand out from any background; its name and class in words are in the
    tooltip, on the map when the style can write text, and in the text alternative.
    """
    title = t(lang, "overview.map_title")
    figure = go.Figure(
        layout={
            "template": "none",
            "height": MAP_HEIGHT_PX,
            "margin": {"l": 0, "r": 0, "t": 10, "b": 0},
            "showlegend": False,
            "map": {"style": background.style},
        }
    )
    if rows.is_empty():
        return figure
    names = rows.get_column("name").to_list()
    indices = rows.get_column("atmo_index").to_list()
    latitudes = rows.get_column("latitude").to_list()
    longitudes = rows.get_column("longitude").to_list()
    labels = [f"{name} — {atmo_text(index, lang)}" for name, index in zip(names, indices, strict=True)]
    insee = rows.get_column("insee").to_list()
    common: dict[str, Any] = {"lat": latitudes, "lon": longitudes, "customdata": insee}
    figure.add_trace(
        go.Scattermap(
            **common,
            mode="markers",
            marker={"size": 26, "color": "#111827"},
            hoverinfo="skip",
            name=title,
        )
    )
    disc: dict[str, Any] = {
        **common,
        "marker": {"size": 20, "color": [atmo_color(i) for i in indices]},
        "hovertext": labels,
        "hovertemplate": "%{hovertext}<extra></extra>",
        "name": t(lang, "overview.communes"),
    }
    if background.label_font:
        disc |= {
            "mode": "markers+text",
            "text": names,
            "textposition": "top center",
            "textfont": {"family": background.label_font, "size": 14, "color": "#111827"},
        }
    else:
        disc["mode"] = "markers"
    figure.add_trace(go.Scattermap(**disc))
    center, zoom = fit(latitudes, longitudes)
    figure.update_layout(map={"center": center, "zoom": zoom})
    return figure


def fit(latitudes: list[float], longitudes: list[float]) -> tuple[dict[str, float], float]:
    """Centre and Web-Mercator zoom showing every point on the narrowest map, with a margin."""
    center = {"lat": (max(latitudes) + min(latitudes)) / 2, "lon": (max(longitudes) + min(longitudes)) / 2}
    # MapLibre draws the world (360°) on 512 px at zoom 0; a degree of latitude is 1/cos(lat) longer.
    span_lon = max(max(longitudes) - min(longitudes), 0.05) * 1.6
    span_lat = max(max(latitudes) - min(latitudes), 0.03) * 1.6 / math.cos(math.radians(center["lat"]))
    zoom = min(
        math.log2(MAP_WIDTH_PX * 360 / (512 * span_lon)), math.log2(MAP_HEIGHT_PX * 360 / (512 * span_lat))
    )
    return center, round(min(max(zoom, 5.0), 13.0), 2)


def map_alternative(rows: pl.DataFrame, lang: Language) -> list[Any]:
    """What the map shows, in words: each commune and its ATMO class; the table below has the rest."""
    if rows.is_empty():
        return [html.P(t(lang, "common.no_data"), className="chart-summary")]
    communes = "; ".join(
        f"{name} — {atmo_text(index, lang)}"
        for name, index in zip(
            rows.get_column("name").to_list(), rows.get_column("atmo_index").to_list(), strict=True
        )
    )
    return [
        html.P(t(lang, "map.summary", count=rows.height, communes=communes), className="chart-summary"),
        html.A(t(lang, "map.data"), href="#overview-table"),
    ]


def commune_path(click: dict[str, Any] | None, visible: set[str]) -> str | None:
    """The page of the commune clicked on the map, when it is one the user may see."""
    points = (click or {}).get("points") or []
    insee = points[0].get("customdata") if points else None
    return f"/commune/{insee}" if isinstance(insee, str) and insee in visible else None


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``."""

    @app.callback(
        Output("overview-content", "children"),
        Output("overview-updated", "children"),
        Input("overview-tick", "n_intervals"),
    )
    def refresh(_: int | None) -> tuple[list[Component], str]:
        return overview_content(current_data(), current_language(), app_context().settings, current_time())

    @app.callback(
        Output("overview-location", "href"),
        Input("overview-map", "clickData"),
        prevent_initial_call=True,
    )
    def open_commune(click: dict[str, Any] | None) -> str:
        visible = {c.insee for c in current_data().communes()}
        path = commune_path(click, visible)
        if path is None:
            raise dash.exceptions.PreventUpdate
        return path
