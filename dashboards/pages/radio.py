"""The LoRaWAN radio section of the device page: the latest uplinks' gateway, RSSI and SNR.

Shown only for a device that has ``lorawan_radio`` rows in the range (docs/measurements.md);
empty for every other device.
"""

from __future__ import annotations

from datetime import datetime

import dash
import polars as pl
from dash import Input, Output, html
from dash.development.base_component import Component

from dashboards.access import AccessError, CommuneData
from dashboards.auth import current_data, current_language, current_time
from dashboards.i18n import Language, format_datetime, format_number, t
from dashboards.pages.common import span_of, table
from sensors.lorawan.radio import RADIO_MEASUREMENT, STATUS_MEASUREMENT
from storage.base import TIME

LATEST_UPLINKS = 10
"""Uplinks listed, newest first."""


def radio_section(
    data: CommuneData, key: dict[str, str], *, range_key: str, lang: Language, now: datetime
) -> Component:
    """The latest uplinks' radio metadata and the last known battery, or nothing."""
    span = span_of(range_key, now)
    insee, device_id = key["insee"], key["device_id"]
    uplinks = data.lorawan(RADIO_MEASUREMENT, insee, span, device_id=device_id)
    if uplinks.is_empty():
        return html.Div()
    latest = uplinks.sort(TIME, descending=True).head(LATEST_UPLINKS)
    rows = [
        [
            format_datetime(row[TIME], lang, seconds=True),
            row.get("gateway_id") or "–",
            format_number(row.get("rssi"), lang, 0),
            format_number(row.get("snr"), lang),
            format_number(row.get("gateways"), lang, 0),
            format_number(row.get("f_cnt"), lang, 0),
        ]
        for row in latest.iter_rows(named=True)
    ]
    headers = [t(lang, f"radio.{name}") for name in ("time", "gateway", "rssi", "snr", "gateways", "f_cnt")]
    parts: list[Component] = [table(t(lang, "radio.title"), headers, rows, "device-radio-table")]
    status = data.lorawan(STATUS_MEASUREMENT, insee, span, device_id=device_id)
    if not status.is_empty() and "battery" in status.columns:
        last = status.filter(pl.col("battery").is_not_null()).sort(TIME).tail(1)
        if last.height:
            row = last.row(0, named=True)
            parts.append(
                html.P(
                    t(
                        lang,
                        "radio.battery",
                        level=format_number(row["battery"], lang, 0),
                        when=format_datetime(row[TIME], lang),
                    ),
                    id="device-battery",
                )
            )
    return html.Section(parts)


def register_callbacks(app: dash.Dash) -> None:
    """Attach the section's callback to ``app`` (the device page calls it)."""

    @app.callback(
        Output("device-radio", "children"),
        Input("device-key", "data"),
        Input("device-range-key", "data"),
        Input("device-tick", "n_intervals"),
    )
    def on_radio(key: dict[str, str], range_key: str, _: int | None) -> Component:
        try:
            return radio_section(
                current_data(), key, range_key=range_key, lang=current_language(), now=current_time()
            )
        except AccessError:
            return html.Div()
