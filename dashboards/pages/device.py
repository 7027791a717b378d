"""Device page ``/device/<insee>/<device_id>``: its status and details, its last readings, a chart
of one field (raw for short ranges, anomalies marked), its anomalies and its alerts."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import dash
import plotly.graph_objects as go
import polars as pl
from dash import Input, Output, dcc, html
from dash.development.base_component import Component

from alerts.topology import Topology
from dashboards import alert_desk
from dashboards.access import AccessError, CommuneData, Forbidden
from dashboards.auth import app_context, current_data, current_language, current_time
from dashboards.chart_truth import thresholds_for
from dashboards.config import DashboardSettings
from dashboards.event_tables import alert_title, anomaly_cells, anomaly_headers, presence_cell
from dashboards.i18n import Language, format_datetime, format_duration, format_quantity, t
from dashboards.links import device_href
from dashboards.pages import radio
from dashboards.pages.common import (
    aria,
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
from dashboards.presence import presence
from dashboards.timerange import TimeRange, fitting_window
from dashboards.views import RAW_MAX_SPAN, device_chart, field_label, recent_anomalies
from sensors.families import family_spec
from storage.base import TIME

PATH_TEMPLATE = "/device/<insee>/<device_id>"
RANGES = ("3h", "24h", "7d", "30d")
LAST_READINGS = 5
LAST_READINGS_SPAN = timedelta(hours=1)


def device_family(data: CommuneData, insee: str, device_id: str) -> str | None:
    """The family of a device of the commune, or None when the commune has no such device."""
    devices = data.devices([insee]).filter(pl.col("device_id") == device_id)
    return devices.get_column("family").item(0) if devices.height else None


def layout(insee: str = "", device_id: str = "", **_: Any) -> Component:
    """The page skeleton for one device, or a refusal when its commune is not the user's."""
    lang = current_language()
    data = current_data()
    # Dash hands over the path as the browser sent it: percent-encoded (device_href).
    insee, device_id = unquote(insee), unquote(device_id)
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
            html.Div(id="device-summary", **aria(live="polite")),
            range_picker("device-range", lang, "24h", RANGES),
            field_picker("device-field", lang, options, field),
            chart_box("device-chart", t(lang, "commune.chart_label"), lang),
            html.Div(id="device-anomalies"),
            html.Div(id="device-radio"),
            dcc.Interval(id="device-tick", interval=app_context().settings.refresh_s * 1000),
        ],
        id="content",
    )


@cache
def _topology(path: str, modified: float) -> Topology:
    return Topology.load(path)


def parent_of(settings: DashboardSettings, device_id: str) -> str | None:
    """The network device in front of ``device_id`` in the topology file, when there is one."""
    path = settings.topology_file
    if path is None or not Path(path).exists():
        return None
    try:
        return _topology(str(path), Path(path).stat().st_mtime).parent(device_id)
    except (OSError, ValueError):
        return None


def device_summary(
    data: CommuneData,
    key: dict[str, str],
    *,
    lang: Language,
    settings: DashboardSettings,
    now: datetime,
) -> list[Component]:
    """Status and details of the device, and its last readings with their units."""
    insee, device_id, family = key["insee"], key["device_id"], key["family"]
    commune = data.check(insee)
    devices = presence(data, [insee], now, settings.online_after_periods).filter(
        pl.col("device_id") == device_id
    )
    row = devices.row(0, named=True) if devices.height else {}
    parent = parent_of(settings, device_id)
    parent_cell: Any = (
        dcc.Link(parent, href=device_href(insee, parent)) if parent else t(lang, "device_page.no_parent")
    )
    spec = family_spec(family)
    period = row.get("period_s") or (spec.reporting_period_s if spec else None)
    details = [
        (t(lang, "commune.status"), presence_cell(row, lang) if row else t(lang, "device_page.never_seen")),
        (t(lang, "commune.family"), t(lang, f"families.{family}")),
        (t(lang, "device_page.commune"), dcc.Link(commune.name, href=f"/commune/{insee}")),
        (t(lang, "device_page.parent"), parent_cell),
        (t(lang, "device_page.period"), format_duration(period, lang)),
        (
            t(lang, "commune.last_seen"),
            t(
                lang,
                "device_page.seen_ago",
                time=format_datetime(row.get("last_time"), lang, seconds=True),
                ago=format_duration(row.get("silent_s"), lang),
            )
            if row
            else "–",
        ),
    ]
    summary = html.Dl(
        [part for name, value in details for part in (html.Dt(name), html.Dd(value))],
        className="device-details",
        id="device-details",
    )
    return [html.H2(t(lang, "device_page.details")), summary, last_readings(data, key, lang=lang, now=now)]


def last_readings(data: CommuneData, key: dict[str, str], *, lang: Language, now: datetime) -> html.Table:
    """The device's latest raw readings (last hour, newest first), every numeric field with its unit."""
    spec = family_spec(key["family"])
    fields = list(spec.numeric_fields) if spec else []
    recent = data.readings(
        key["family"],
        key["insee"],
        TimeRange(now - LAST_READINGS_SPAN, now + timedelta(minutes=1)),
        device_id=key["device_id"],
        fields=fields,
    )
    shown = recent.sort(TIME, descending=True).head(LAST_READINGS) if recent.height else recent
    specs = {f: spec.field(f) if spec else None for f in fields if f in shown.columns}
    units = {f: field.unit if field else "" for f, field in specs.items()}
    # Whole numbers (counts, counters) are written without a decimal.
    decimals = {f: 0 if field and field.kind == "int" else 1 for f, field in specs.items()}
    rows = [
        [format_datetime(row[TIME], lang, seconds=True)]
        + [format_quantity(row[f], u, lang, decimals[f]) for f, u in units.items()]
        for row in shown.iter_rows(named=True)
    ]
    headers = [t(lang, "device_page.time")] + [field_label(f, lang) for f in units]
    caption = t(lang, "device_page.last_readings", count=len(rows))
    return table(caption, headers, rows, "device-readings")


def device_alerts(
    data: CommuneData, key: dict[str, str], span: TimeRange, lang: Language, now: datetime
) -> html.Table:
    """The alert episodes about this device in the range (or still open)."""
    found = alert_desk.episodes(data, span, now, [key["insee"]]).filter(
        pl.col("device_id") == key["device_id"]
    )
    log = alert_desk.action_log(data, now, [key["insee"]])
    rows = []
    for row in found.iter_rows(named=True):
        ack = alert_desk.acknowledgement_of(log, row)
        rows.append(
            [
                format_datetime(row["started"], lang),
                format_datetime(row["ended"], lang) if row["ended"] else t(lang, "alert_desk.ongoing"),
                alert_title(row, lang),
                t(lang, f"state.{row['state']}"),
                t(lang, f"alert_desk.severity_{row['severity']}") if row["severity"] else "–",
                t(lang, "alert_desk.acked_by", user=ack.user, time=format_datetime(ack.at, lang))
                if ack
                else t(lang, "alert_desk.not_acked"),
            ]
        )
    headers = [t(lang, f"alert_desk.{k}") for k in ("started", "ended", "alert", "state", "severity", "ack")]
    return table(t(lang, "device_page.alerts"), headers, rows, "device-alert-table")


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
    window = "raw" if span.span <= RAW_MAX_SPAN else fitting_window(span.span, settings.max_points)
    levels = thresholds_for(
        settings.alert_rules_file,
        key["family"],
        field,
        window=window,
        commune_level=False,
        insee=insee,
        lang=lang,
    )
    chart = device_chart(
        data,
        insee,
        key["family"],
        device_id,
        field=field,
        span=span,
        lang=lang,
        max_points=settings.max_points,
        now=now,
        thresholds=levels,
    )
    anomalies = recent_anomalies(data, insee, span, device_id=device_id)
    rows = [anomaly_cells(row, lang) for row in anomalies.iter_rows(named=True)]
    headers = anomaly_headers(lang, with_device=False)
    return chart.figure, html.Div(
        [
            table(t(lang, "device.anomalies"), headers, rows, "device-anomaly-table"),
            device_alerts(data, key, span, lang, now),
        ]
    )


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``."""

    register_range_picker(app, "device-range")
    register_choices(app, "device-field")
    radio.register_callbacks(app)

    @app.callback(
        Output("device-summary", "children"),
        Input("device-key", "data"),
        Input("device-tick", "n_intervals"),
    )
    def on_summary(key: dict[str, str], _: int | None) -> list[Component]:
        lang = current_language()
        try:
            return device_summary(
                current_data(), key, lang=lang, settings=app_context().settings, now=current_time()
            )
        except AccessError:
            return [refusal(lang, str(key.get("insee", "")))]

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
                now=current_time(),
            )
        except AccessError:
            figure, anomalies = (
                go.Figure(layout={"template": "none"}),
                refusal(lang, str(key.get("insee", ""))),
            )
        return *present_chart(figure, lang), anomalies
