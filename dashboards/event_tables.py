"""Cells of the device, anomaly and alert tables shared by the commune and device pages.

Every value carries its unit: a reading in its field's unit, an offline anomaly's silence and
expected period as durations (its ``field`` is empty: it is about the whole device).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from dash import dcc, html
from dash.development.base_component import Component

from dashboards.i18n import Language, format_datetime, format_duration, format_quantity, t
from dashboards.links import device_href
from dashboards.views import field_label
from sensors.families import family_spec
from storage.base import TIME

Cell = Any

ANOMALY_COLUMNS = ("start", "end", "device", "field", "kind", "observed", "expected")


def presence_cell(row: dict[str, Any], lang: Language) -> Component:
    """The state of a ``presence`` row in words and a symbol (colour is never the only signal)."""
    online = bool(row.get("online"))
    text = ("● " if online else "✕ ") + t(lang, "common.online" if online else "common.offline")
    reason = row.get("offline_reason")
    if not online and reason:
        text += f" ({t(lang, f'presence.{reason}')})"
    return html.Span(text, className="online" if online else "offline")


def _end(row: dict[str, Any], lang: Language) -> str:
    if row.get("open"):
        return t(lang, "commune.open")
    end_ns = row.get("end_ns")
    if end_ns is None:
        return "–"
    return format_datetime(pl.Series([end_ns]).cast(pl.Datetime("ns", "UTC")).item(), lang)


def anomaly_value(row: dict[str, Any], value: float | None, lang: Language) -> str:
    """An anomaly's observed or expected value with its unit."""
    if row.get("kind") == "offline":
        return format_duration(value, lang)
    spec = family_spec(str(row.get("family") or ""))
    field = spec.field(str(row.get("field") or "")) if spec else None
    return format_quantity(value, field.unit if field else "", lang)


def anomaly_field(row: dict[str, Any], lang: Language) -> str:
    """What an anomaly is about: the field, or the whole device for an offline one."""
    field = str(row.get("field") or "")
    return field_label(field, lang) if field else t(lang, "presence.whole_device")


def anomaly_cells(row: dict[str, Any], lang: Language, *, insee: str | None = None) -> list[Cell]:
    """One anomaly as table cells; with ``insee``, a device column linking to its page."""
    cells: list[Cell] = [format_datetime(row[TIME], lang), _end(row, lang)]
    if insee is not None:
        cells.append(dcc.Link(row["device_id"], href=device_href(insee, row["device_id"])))
    cells += [
        anomaly_field(row, lang),
        t(lang, f"kind.{row.get('kind')}"),
        anomaly_value(row, row.get("observed"), lang),
        anomaly_value(row, row.get("expected"), lang),
    ]
    return cells


def anomaly_headers(lang: Language, *, with_device: bool) -> list[str]:
    """Column headers matching ``anomaly_cells``."""
    return [t(lang, f"commune.{k}") for k in ANOMALY_COLUMNS if with_device or k != "device"]


def alert_title(row: dict[str, Any], lang: Language) -> str:
    """An alert's title in ``lang`` (its rule name for histories written before titles were)."""
    return str(row.get(f"title_{lang}") or row.get("rule") or "")
