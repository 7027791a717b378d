"""Intercommunalities: ``/epci`` lists the user's EPCI, ``/epci/<siren>`` compares its communes.

An EPCI page shows only the member communes the platform serves and the user may see
(``CommuneData.epci``): today's ATMO index side by side in a chart, with the same comparison in a
text table (traffic, devices online, open alerts, legal population).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dash
import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from dashboards.access import AccessError, CommuneData, Forbidden
from dashboards.auth import app_context, current_data, current_language, current_time
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, format_datetime, format_number, t
from dashboards.pages.common import aria, chart_box, table
from dashboards.pages.overview import atmo_cell, traffic_cell
from dashboards.views import atmo_color, atmo_text, overview_rows
from sensors.territory import Epci

INDEX_PATH = "/epci"
PATH_TEMPLATE = "/epci/<siren>"


def epci_href(siren: str) -> str:
    """The page of one EPCI."""
    return f"{INDEX_PATH}/{siren}"


def index_layout(**_: Any) -> Component:
    """Every EPCI with communes the user may see, and how many of its members are served."""
    lang = current_language()
    rows = [
        [
            dcc.Link(epci.name, href=epci_href(epci.siren)),
            t(lang, f"epci.kinds.{epci.kind}") if epci.kind in KINDS else epci.kind,
            epci.siren,
            ", ".join(c.name for c in communes),
            format_number(len(epci.members), lang, 0),
        ]
        for epci, communes in current_data().epcis()
    ]
    headers = [t(lang, f"epci.{key}") for key in ("name", "kind", "siren", "served", "members")]
    body: Component = (
        table(t(lang, "epci.index_caption"), headers, rows, table_id="epci-index")
        if rows
        else html.P(t(lang, "epci.none"))
    )
    return html.Main([html.H1(t(lang, "epci.index_title")), body], id="content")


KINDS = ("CC", "CA", "CU", "METRO", "MET69")


def layout(siren: str = "", **_: Any) -> Component:
    """The page skeleton of one EPCI, or a refusal when the user may see none of its communes."""
    lang = current_language()
    try:
        epci, communes = current_data().epci(siren)
    except Forbidden:
        return refusal(lang, siren)
    except AccessError:
        return html.Main(html.H1(t(lang, "epci.unknown")), id="content")
    return html.Main(
        [
            dcc.Store(id="epci-siren", data=siren),
            html.H1(title(epci, lang)),
            html.P(
                t(
                    lang,
                    "epci.summary",
                    served=format_number(len(communes), lang, 0),
                    members=format_number(len(epci.members), lang, 0),
                    siren=epci.siren,
                )
            ),
            html.P(id="epci-updated", className="updated", **aria(live="polite")),
            html.Div(id="epci-content"),
            dcc.Interval(id="epci-tick", interval=app_context().settings.refresh_s * 1000),
        ],
        id="content",
    )


def title(epci: Epci, lang: Language) -> str:
    """The heading of an EPCI page (also its browser title)."""
    return t(lang, "epci.title", name=epci.name)


def refusal(lang: Language, siren: str) -> html.Div:
    """What the page shows for an EPCI none of whose communes the user may see."""
    return html.Div(
        [html.H1(t(lang, "epci.forbidden", siren=siren)), dcc.Link(t(lang, "epci.nav"), href=INDEX_PATH)],
        className="refusal",
        role="alert",
        id="forbidden",
    )


def epci_content(
    data: CommuneData, siren: str, lang: Language, settings: DashboardSettings, now: datetime
) -> tuple[list[Component], str]:
    """The comparison chart and table of the EPCI's visible communes, and the 'updated at' line."""
    epci, communes = data.epci(siren)
    rows = overview_rows(data.within([c.insee for c in communes]), now, settings.online_after_periods)
    populations = {c.insee: c.population for c in communes}
    body = [
        chart_box("epci-atmo", t(lang, "epci.chart_label"), lang, figure=atmo_comparison(rows, lang)),
        comparison_table(rows, populations, epci, lang),
    ]
    return body, t(lang, "common.refresh", time=format_datetime(now, lang, seconds=True))


def atmo_comparison(rows: pl.DataFrame, lang: Language) -> go.Figure:
    """Today's ATMO index of each commune as a bar, coloured and labelled with its class."""
    figure = go.Figure(
        layout={
            "template": "none",
            "title": {"text": t(lang, "epci.chart_title")},
            "height": 320,
            "margin": {"l": 60, "r": 10, "t": 40, "b": 90},
            "yaxis": {
                "title": {"text": t(lang, "epci.chart_axis")},
                "range": [0, 7],
                "tickvals": [1, 2, 3, 4, 5, 6],
            },
            "showlegend": False,
        }
    )
    if rows.is_empty():
        return figure
    indices = (
        rows.get_column("atmo_index").to_list() if "atmo_index" in rows.columns else [None] * rows.height
    )
    labels = [atmo_text(index, lang) for index in indices]
    figure.add_trace(
        go.Bar(
            x=rows.get_column("name").to_list(),
            # No bar where there is no index yet: a missing index is not a zero.
            y=indices,
            text=labels,
            textposition="outside",
            marker={
                "color": [atmo_color(index) for index in indices],
                "line": {"color": "#111827", "width": 1},
            },
            name=t(lang, "epci.chart_series"),
            # The hover text is also what the text alternative lists, commune by commune.
            hovertext=labels,
            hovertemplate="%{x} — %{hovertext}<extra></extra>",
        )
    )
    return figure


def comparison_table(
    rows: pl.DataFrame, populations: dict[str, int | None], epci: Epci, lang: Language
) -> html.Table:
    """The member communes side by side: the same comparison as the chart, and more, in text."""
    lines = [
        [
            dcc.Link(f"{row['name']} ({row['insee']})", href=f"/commune/{row['insee']}"),
            format_number(populations.get(row["insee"]), lang, 0),
            atmo_cell(row, lang),
            traffic_cell(row, lang),
            f"{row['devices_online']} / {row['devices_total']}",
            str(row["open_alerts"]),
        ]
        for row in rows.iter_rows(named=True)
    ]
    headers = [
        t(lang, "overview.commune"),
        t(lang, "epci.population"),
        t(lang, "overview.atmo"),
        t(lang, "overview.traffic"),
        t(lang, "overview.devices"),
        t(lang, "overview.alerts"),
    ]
    return table(t(lang, "epci.table_caption", name=epci.name), headers, lines, table_id="epci-table")


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``."""

    @app.callback(
        Output("epci-content", "children"),
        Output("epci-updated", "children"),
        Input("epci-tick", "n_intervals"),
        State("epci-siren", "data"),
    )
    def refresh(_: int | None, siren: Any) -> tuple[list[Component], str]:
        lang = current_language()
        if not isinstance(siren, str):
            raise dash.exceptions.PreventUpdate
        try:
            return epci_content(current_data(), siren, lang, app_context().settings, current_time())
        except Forbidden:
            # A forged callback naming another EPCI gets the refusal, never its communes.
            return [refusal(lang, siren)], ""
