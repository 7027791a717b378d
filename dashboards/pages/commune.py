"""Commune page ``/commune/<insee>``: live aggregates per family, ATMO history, devices, events."""

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
from dashboards.chart_truth import thresholds_for
from dashboards.config import DashboardSettings
from dashboards.event_tables import alert_title, anomaly_cells, anomaly_headers, presence_cell
from dashboards.export import spreadsheet_csv
from dashboards.i18n import Language, format_datetime, format_duration, format_number, t, unit_decimals
from dashboards.links import device_href
from dashboards.pages.common import (
    aria,
    chart_box,
    chart_outputs,
    field_choices,
    field_picker,
    present_chart,
    range_picker,
    refusal,
    register_choices,
    register_range_picker,
    span_of,
    tab_panel,
    table,
    tabs,
)
from dashboards.presence import presence
from dashboards.timerange import fitting_window
from dashboards.views import (
    alert_summary,
    atmo_chart,
    family_chart,
    field_label,
    listed_devices,
    recent_alerts,
    recent_anomalies,
    scope_text,
    severity_text,
    show_message,
    with_lateness,
)
from sensors.families import Family, family_spec
from storage.base import TIME

PATH_TEMPLATE = "/commune/<insee>"


def layout(insee: str = "", **_: Any) -> Component:
    """The page skeleton for one commune, or a refusal when it is not the user's."""
    lang = current_language()
    data = current_data()
    try:
        commune = data.check(insee)
    except Forbidden:
        return refusal(lang, insee)
    except AccessError:
        return html.Main(html.H1(t(lang, "common.unknown")), id="content")
    first = Family.AIR_QUALITY.value
    options, field = field_options(first, lang)
    return html.Main(
        [
            dcc.Store(id="commune-insee", data=insee),
            html.H1(t(lang, "commune.title", name=commune.name, insee=insee)),
            range_picker("commune-range", lang, "24h"),
            html.P(id="commune-updated", className="updated", **aria(live="polite")),
            html.H2(t(lang, "commune.family"), className="visually-hidden"),
            tabs(
                "commune-family",
                t(lang, "commune.family"),
                [(f.value, t(lang, f"families.{f.value}")) for f in Family],
                first,
            ),
            tab_panel(
                "commune-family",
                first,
                [
                    field_picker("commune-field", lang, options, field),
                    chart_box("commune-chart", t(lang, "commune.chart_label"), lang),
                    html.Button(t(lang, "common.export"), id="commune-export", className="button"),
                    dcc.Download(id="commune-download"),
                ],
            ),
            chart_box("commune-atmo", t(lang, "commune.atmo_title"), lang),
            html.Div(id="commune-status"),
            dcc.Interval(id="commune-tick", interval=app_context().settings.refresh_s * 1000),
        ],
        id="content",
    )


def field_options(family: str, lang: Language) -> tuple[list[dict[str, str]], str]:
    """The numeric fields of a family as dropdown options, and the first one."""
    spec = family_spec(family)
    fields = spec.numeric_fields if spec else ()
    options = [{"label": field_label(f, lang), "value": f} for f in fields]
    return options, fields[0] if fields else ""


def family_panel(
    data: CommuneData,
    insee: str,
    family: str,
    field: str,
    *,
    range_key: str,
    lang: Language,
    settings: DashboardSettings,
    now: datetime,
) -> tuple[go.Figure, str]:
    """The family tab's chart and the 'updated at' line."""
    span = span_of(range_key, now)
    levels = thresholds_for(
        settings.alert_rules_file,
        family,
        field,
        window=fitting_window(span.span, settings.max_points),
        commune_level=True,
        insee=insee,
        lang=lang,
    )
    chart = family_chart(
        data,
        insee,
        family,
        field,
        span,
        lang=lang,
        max_points=settings.max_points,
        now=now,
        thresholds=levels,
    )
    return chart.figure, t(lang, "common.refresh", time=format_datetime(now, lang, seconds=True))


def atmo_panel(data: CommuneData, insee: str, range_key: str, lang: Language, now: datetime) -> go.Figure:
    """The ATMO history chart."""
    return atmo_chart(data, insee, span_of(range_key, now), lang).figure


def status_panel(
    data: CommuneData,
    insee: str,
    range_key: str,
    *,
    lang: Language,
    settings: DashboardSettings,
    now: datetime,
) -> list[Component]:
    """Device status, anomalies and alerts of the commune, as tables."""
    span = span_of(range_key, now)
    devices = presence(data, [insee], now, settings.online_after_periods)
    listed = with_lateness(data, insee, listed_devices(devices, settings.status_rows), now)
    device_rows = [
        [
            dcc.Link(row["device_id"], href=device_href(insee, row["device_id"])),
            t(lang, f"families.{row['family']}"),
            format_datetime(row["last_time"], lang, seconds=True),
            format_duration(row["silent_s"], lang),
            format_duration(row["lateness_s"], lang),
            presence_cell(row, lang),
        ]
        for row in listed.iter_rows(named=True)
    ]
    anomalies = recent_anomalies(data, insee, span)
    anomaly_rows = [anomaly_cells(row, lang, insee=insee) for row in anomalies.iter_rows(named=True)]
    alerts = recent_alerts(data, insee, span)
    alert_rows = [
        [
            format_datetime(row[TIME], lang),
            alert_title(row, lang),
            scope_text(row.get("scope"), lang),
            t(lang, f"state.{row.get('state')}"),
            severity_text(row.get("severity"), lang),
            alert_summary(row.get("summary"), lang),
        ]
        for row in alerts.iter_rows(named=True)
    ]
    c = "commune."
    return [
        table(
            devices_caption(devices, listed.height, lang),
            [t(lang, c + k) for k in ("device", "family", "last_seen", "silent", "lateness", "status")],
            device_rows,
            "commune-devices",
        ),
        table(
            t(lang, c + "anomalies"),
            anomaly_headers(lang, with_device=True),
            anomaly_rows,
            "commune-anomalies",
        ),
        table(
            t(lang, c + "alerts"),
            [t(lang, c + k) for k in ("start", "rule", "scope", "state", "severity", "summary")],
            alert_rows,
            "commune-alerts",
        ),
    ]


def devices_caption(devices: pl.DataFrame, listed: int, lang: Language) -> str:
    """The status table's caption: says how many devices are not listed, if any."""
    if listed >= devices.height:
        return t(lang, "commune.devices")
    offline = devices.height - int(devices.get_column("online").sum())
    return t(
        lang,
        "commune.devices_shown",
        shown=format_number(listed, lang, 0),
        total=format_number(devices.height, lang, 0),
        offline=format_number(offline, lang, 0),
    )


def export_csv(
    data: CommuneData,
    insee: str,
    family: str,
    field: str,
    *,
    range_key: str,
    lang: Language,
    settings: DashboardSettings,
    now: datetime,
) -> dict[str, Any]:
    """What the chart shows, as a CSV download a spreadsheet in ``lang`` opens as it is."""
    span = span_of(range_key, now)
    chart = family_chart(data, insee, family, field, span, lang=lang, max_points=settings.max_points)
    spec = family_spec(family)
    field_spec = spec.field(field) if spec else None
    places = unit_decimals(field_spec.unit if field_spec else "")
    return {
        "content": spreadsheet_csv(chart.frame, lang, dict.fromkeys(chart.frame.columns, places)),
        "filename": f"{insee}_{family}_{field}_{chart.window}_{range_key}.csv",
        "type": "text/csv;charset=utf-8",
    }


def _refused_figure(lang: Language, exc: AccessError) -> go.Figure:
    message = t(lang, "common.forbidden", insee=exc.insee) if isinstance(exc, Forbidden) else str(exc)
    figure = go.Figure(layout={"template": "none"})
    show_message(figure, message)
    return figure


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``; each reads through the signed-in user's rights."""

    register_range_picker(app, "commune-range")
    register_choices(app, "commune-family", "tab")
    register_choices(app, "commune-field")

    @app.callback(
        Output("commune-field-picker", "children"),
        Output("commune-field", "data", allow_duplicate=True),
        Input("commune-family", "data"),
        prevent_initial_call=True,
    )
    def on_family(family: str) -> tuple[list[Any], str]:
        lang = current_language()
        options, field = field_options(family, lang)
        return field_choices("commune-field", lang, options, field), field

    @app.callback(
        *chart_outputs("commune-chart"),
        Output("commune-updated", "children"),
        Input("commune-insee", "data"),
        Input("commune-family", "data"),
        Input("commune-field", "data"),
        Input("commune-range-key", "data"),
        Input("commune-tick", "n_intervals"),
    )
    def on_chart(
        insee: str, family: str, field: str, range_key: str, _: int | None
    ) -> tuple[go.Figure, str, list[Any], str]:
        spec = family_spec(family)
        if spec is None or field not in spec.numeric_fields:
            # The family changed and its first field is on its way: draw once, with both.
            raise dash.exceptions.PreventUpdate
        lang = current_language()
        try:
            figure, updated = family_panel(
                current_data(),
                insee,
                family,
                field,
                range_key=range_key,
                lang=lang,
                settings=app_context().settings,
                now=current_time(),
            )
        except AccessError as exc:
            figure, updated = _refused_figure(lang, exc), ""
        return *present_chart(figure, lang), updated

    @app.callback(
        *chart_outputs("commune-atmo"),
        Input("commune-insee", "data"),
        Input("commune-range-key", "data"),
        Input("commune-tick", "n_intervals"),
    )
    def on_atmo(insee: str, range_key: str, _: int | None) -> tuple[go.Figure, str, list[Any]]:
        lang = current_language()
        try:
            figure = atmo_panel(current_data(), insee, range_key, lang, current_time())
        except AccessError as exc:
            figure = _refused_figure(lang, exc)
        return present_chart(figure, lang)

    @app.callback(
        Output("commune-status", "children"),
        Input("commune-insee", "data"),
        Input("commune-range-key", "data"),
        Input("commune-tick", "n_intervals"),
    )
    def on_status(insee: str, range_key: str, _: int | None) -> list[Component]:
        lang = current_language()
        try:
            return status_panel(
                current_data(),
                insee,
                range_key,
                lang=lang,
                settings=app_context().settings,
                now=current_time(),
            )
        except Forbidden:
            return [refusal(lang, insee)]

    @app.callback(
        Output("commune-download", "data"),
        Input("commune-export", "n_clicks"),
        State("commune-insee", "data"),
        State("commune-family", "data"),
        State("commune-field", "data"),
        State("commune-range-key", "data"),
        prevent_initial_call=True,
    )
    def on_export(_: int | None, insee: str, family: str, field: str, range_key: str) -> dict[str, Any]:
        try:
            return export_csv(
                current_data(),
                insee,
                family,
                field,
                range_key=range_key,
                lang=current_language(),
                settings=app_context().settings,
                now=current_time(),
            )
        except AccessError:
            raise dash.exceptions.PreventUpdate from None
