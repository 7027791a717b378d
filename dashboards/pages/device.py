"""Device page ``/device/<insee>/<device_id>``: a device's fields, raw for short ranges, anomalies marked."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dash
import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from dashboards.access import AccessError, CommuneData, Forbidden, utc_now
from dashboards.auth import app_context, current_data, current_language
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, format_datetime, format_number, t
from dashboards.pages.common import (
    chart_box,
    chart_outputs,
    field_picker,
    present_chart,
    range_picker,
    refusal,
    register_choices,
    register_range_picker,
    span_of,
    table,
)
from dashboards.pages.commune import field_options
from dashboards.views import device_chart, field_label, recent_anomalies
from storage.base import TIME

PATH_TEMPLATE = "/device/<insee>/<device_id>"
RANGES = ("3h", "24h", "7d", "30d")


def device_family(data: CommuneData, insee: str, device_id: str) -> str | None:
    """The family of a device of the commune, or None when the commune has no such device."""
    devices = data.devices([insee]).filter(pl.col("device_id") == device_id)
    return devices.get_column("family").item(0) if devices.height else None


def layout(insee: str = "", device_id: str = "", **_: Any) -> Component:
    """The page skeleton for one device, or a refusal when its commune is not the user's."""
    lang = current_language()
    data = current_data()
    try:
        commune = data.check(insee)
        family = device_family(data, insee, device_id)
    except Forbidden:
        return refusal(lang, insee)
    except AccessError:
        family = None
    if family is None:
        return html.Main(html.H1(t(lang, "common.unknown")), id="content")
    options, field = field_options(family, lang)
    return html.Main(
        [
            dcc.Store(id="device-key", data={"insee": insee, "device_id": device_id, "family": family}),
            html.H1(t(lang, "device.title", device=device_id, name=commune.name)),
            html.P(
                dcc.Link(t(lang, "commune.title", name=commune.name, insee=insee), href=f"/commune/{insee}")
            ),
            range_picker("device-range", lang, "24h", RANGES),
            field_picker("device-field", lang, options, field),
            chart_box("device-chart", t(lang, "commune.chart_label"), lang),
            html.Div(id="device-anomalies"),
            dcc.Interval(id="device-tick", interval=app_context().settings.refresh_s * 1000),
        ],
        id="content",
    )


def device_panel(
    data: CommuneData,
    key: dict[str, str],
    field: str,
    *,
    range_key: str,
    lang: Language,
    settings: DashboardSettings,
    now: datetime,
) -> tuple[go.Figure, Component]:
    """The device chart and its anomalies table."""
    span = span_of(range_key, now)
    insee, device_id = key["insee"], key["device_id"]
    chart = device_chart(
        data,
        insee,
        key["family"],
        device_id,
        field=field,
        span=span,
        lang=lang,
        max_points=settings.max_points,
    )
    anomalies = recent_anomalies(data, insee, span, device_id=device_id)
    rows = [
        [
            format_datetime(row[TIME], lang),
            field_label(row.get("field") or "", lang),
            t(lang, f"kind.{row.get('kind')}"),
            format_number(row.get("observed"), lang),
            format_number(row.get("expected"), lang),
        ]
        for row in anomalies.iter_rows(named=True)
    ]
    headers = [t(lang, f"commune.{k}") for k in ("start", "field", "kind", "observed", "expected")]
    return chart.figure, table(t(lang, "device.anomalies"), headers, rows, "device-anomaly-table")


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``."""

    register_range_picker(app, "device-range")
    register_choices(app, "device-field")

    @app.callback(
        *chart_outputs("device-chart"),
        Output("device-anomalies", "children"),
        Input("device-key", "data"),
        Input("device-field", "data"),
        Input("device-range-key", "data"),
        Input("device-tick", "n_intervals"),
    )
    def on_device(
        key: dict[str, str], field: str, range_key: str, _: int | None
    ) -> tuple[go.Figure, str, list[Any], Component]:
        lang = current_language()
        try:
            figure, anomalies = device_panel(
                current_data(),
                key,
                field,
                range_key=range_key,
                lang=lang,
                settings=app_context().settings,
                now=utc_now(),
            )
        except AccessError:
            figure, anomalies = (
                go.Figure(layout={"template": "none"}),
                refusal(lang, str(key.get("insee", ""))),
            )
        return *present_chart(figure, lang), anomalies
