"""What the pages show, as plain functions of a user's ``CommuneData``: frames and figures.

The Dash callbacks are thin wrappers around these, so tests and benchmarks call them directly
with a user, and every read goes through the rights check of ``CommuneData``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import plotly.graph_objects as go
import polars as pl

from dashboards.access import COMMUNE_DEVICE, CommuneData
from dashboards.chart_truth import Threshold, add_thresholds, follow_period, mark_unfinished, split_unfinished
from dashboards.day_one import atmo_so_far, current_flow
from dashboards.downsample import m4
from dashboards.i18n import (
    PARIS,
    Language,
    format_datetime,
    format_number,
    has_text,
    plotly_separators,
    t,
    unit_decimals,
    unit_text,
)
from dashboards.presence import presence
from dashboards.timerange import TimeRange, fitting_window
from sensors.families import family_spec
from storage.base import TIME

ATMO_CLASSES = ("bon", "moyen", "degrade", "mauvais", "tres_mauvais", "extremement_mauvais")
"""The six ATMO classes (arrêté du 10 juillet 2020), index 1 to 6; keys into the locales."""
ATMO_COLORS = ("#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#872181")
"""Official ATMO colours, index 1 to 6 (used when a stored row carries none)."""
RAW_MAX_SPAN = timedelta(days=1)
"""Device pages show raw readings up to this range, aggregates beyond."""
TIME_FORMAT = "%Y-%m-%d %H:%M"
MINMAX_COLOR = "#6B7280"
"""The min and max lines around a mean: grey, yet 4.8:1 against the white page."""


def atmo_text(index: int | None, lang: Language) -> str:
    """The written ATMO class of an index (1-6), or 'no data'."""
    if index is None or not 1 <= index <= 6:
        return t(lang, "atmo.none")
    return t(lang, f"atmo.{ATMO_CLASSES[index - 1]}")


def traffic_text(level: int | None, lang: Language) -> str:
    """A congestion level (0 free-flowing to 4 jammed) in words, with the level itself."""
    if level is None or not 0 <= level <= 4:
        return t(lang, "traffic.none")
    return f"{t(lang, f'traffic.level_{level}')} ({level}/4)"


def atmo_color(index: int | None) -> str:
    """The official colour of an index (grey without data)."""
    return ATMO_COLORS[index - 1] if index is not None and 1 <= index <= 6 else "#BDBDBD"


def readable_text_color(background: str) -> str:
    """Black or white, whichever contrasts more with a ``#RRGGBB`` background (WCAG luminance)."""
    channels = [int(background[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return "#000000" if (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) else "#FFFFFF"


def paris_day_start(now: datetime) -> datetime:
    """Midnight Europe/Paris of the day of ``now``, as an aware datetime."""
    local = now.astimezone(PARIS)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _local_times(frame: pl.DataFrame) -> list[str]:
    return (
        frame.get_column(TIME).dt.convert_time_zone("Europe/Paris").dt.strftime(TIME_FORMAT).to_list()
        if frame.height
        else []
    )


def show_message(figure: go.Figure, text: str) -> None:
    """Write ``text`` across a chart that has nothing to draw (no data, no right to see it)."""
    figure.add_annotation(text=text, showarrow=False, xref="paper", yref="paper")


def _base_layout(lang: Language, title: str, y_title: str = "") -> go.Layout:
    # The empty template keeps plotly's default theme (about 10 KiB) out of every payload.
    return go.Layout(
        template="none",
        title={"text": title},
        separators=plotly_separators(lang),
        margin={"l": 60, "r": 20, "t": 50, "b": 50},
        height=380,
        xaxis={
            "tickformat": "%d/%m %H:%M" if lang == "fr" else "%m-%d %H:%M",
            # Plotly's default hover date spells months in English: numbers read in both languages.
            "hoverformat": "%d/%m/%Y %H:%M" if lang == "fr" else "%Y-%m-%d %H:%M",
            "title": {"text": ""},
        },
        yaxis={"title": {"text": y_title}},
        legend={"orientation": "h", "y": -0.2},
        hovermode="x unified",
    )


# -- overview -------------------------------------------------------------------------------


def overview_rows(data: CommuneData, now: datetime, online_after_periods: float) -> pl.DataFrame:
    """One row per visible commune: today's ATMO, traffic state, devices online/total, open alerts."""
    communes = data.communes()
    base = pl.DataFrame(
        {
            "insee": [c.insee for c in communes],
            "name": [c.name for c in communes],
            "latitude": [c.latitude for c in communes],
            "longitude": [c.longitude for c in communes],
        },
        schema={"insee": pl.String, "name": pl.String, "latitude": pl.Float64, "longitude": pl.Float64},
    )
    if base.is_empty():
        return base
    codes = base.get_column("insee").to_list()
    today = TimeRange(paris_day_start(now), paris_day_start(now) + timedelta(days=1))
    atmo = data.index("atmo_daily", codes, today, fields=["index", "label", "color"])
    atmo = _latest(atmo, ["insee"], {"index": pl.Int64, "label": pl.String, "color": pl.String}).rename(
        {"index": "atmo_index", "label": "atmo_label", "color": "atmo_color"}
    )
    traffic = data.index(
        "traffic_congestion",
        codes,
        TimeRange(now - timedelta(hours=2), now + timedelta(minutes=1)),
        fields=["level", "label"],
        where={"device_id": COMMUNE_DEVICE},
    )
    traffic = _latest(traffic, ["insee"], {"level": pl.Int64, "label": pl.String}).rename(
        {"level": "traffic_level", "label": "traffic_label"}
    )
    devices = presence(data, codes, now, online_after_periods)
    device_counts = devices.group_by("insee").agg(
        pl.col("online").sum().cast(pl.Int64).alias("devices_online"),
        pl.len().cast(pl.Int64).alias("devices_total"),
    )
    alerts = data.open_alerts(codes, now)
    alert_counts = (
        alerts.group_by("insee").agg(pl.len().cast(pl.Int64).alias("open_alerts"))
        if alerts.height
        else pl.DataFrame(schema={"insee": pl.String, "open_alerts": pl.Int64})
    )
    # Day one: the index so far and the last complete day, the flow before any profile exists.
    so_far = atmo_so_far(data, codes, paris_day_start(now), now)
    flow = current_flow(data, codes, now)
    return (
        base.join(atmo, on="insee", how="left")
        .join(so_far, on="insee", how="left")
        .join(traffic, on="insee", how="left")
        .join(flow, on="insee", how="left")
        .join(device_counts, on="insee", how="left")
        .join(alert_counts, on="insee", how="left")
        .with_columns(pl.col("devices_online", "devices_total", "open_alerts").fill_null(0))
    )


def _latest(
    frame: pl.DataFrame, keys: list[str], fields: dict[str, type[pl.DataType] | pl.DataType]
) -> pl.DataFrame:
    schema = {**dict.fromkeys(keys, pl.String), **fields}
    if frame.is_empty():
        return pl.DataFrame(schema=schema)
    present = frame.with_columns(
        [pl.lit(None, dtype=dtype).alias(name) for name, dtype in fields.items() if name not in frame.columns]
    )
    return present.sort(TIME).group_by(keys).last().select(list(schema))


# -- commune page ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Chart:
    """A figure and the frame it was drawn from (what the CSV export writes)."""

    figure: go.Figure
    frame: pl.DataFrame
    window: str


def family_chart(
    data: CommuneData,
    insee: str,
    family: str,
    field: str,
    span: TimeRange,
    *,
    lang: Language,
    max_points: int,
    now: datetime | None = None,
    thresholds: Sequence[Threshold] = (),
) -> Chart:
    """Commune-level aggregates of one field: mean line within its min–max band.

    The resolution is the finest that keeps the series within ``max_points``, and M4 still
    caps it should a resolution hold more rows than expected.
    """
    spec = family_spec(family)
    field_spec = spec.field(field) if spec else None
    unit = field_spec.unit if field_spec else ""
    window = data.kept_window(family, span, fitting_window(span.span, max_points))
    moment = now or span.end
    if field_spec is not None and field_spec.counter:
        return _counter_chart(
            data,
            insee,
            family,
            field,
            span,
            window=window,
            unit=unit,
            lang=lang,
            max_points=max_points,
            now=moment,
        )
    columns = [f"{field}_mean", f"{field}_min", f"{field}_max", f"{field}_count"]
    frame = data.aggregates(family, [insee], span, window, fields=columns)
    title = t(lang, "commune.chart_title", field=field_label(field, lang), window=t(lang, f"window.{window}"))
    figure = go.Figure(layout=_base_layout(lang, title, unit_label(unit, lang)))
    follow_period(figure, span, lang)
    add_thresholds(figure, list(thresholds))
    if frame.is_empty() or f"{field}_mean" not in frame.columns:
        show_message(figure, t(lang, "common.no_data"))
        return Chart(figure, frame, window)
    frame = frame.select(TIME, "insee", *[c for c in columns if c in frame.columns])
    exported = frame
    frame, incomplete = split_unfinished(frame, f"{field}_mean", window, moment, f"{field}_count")
    frame = frame.with_columns(
        pl.when(pl.col(f"{field}_mean").is_null()).then(None).otherwise(pl.col(c)).alias(c)
        for c in (f"{field}_min", f"{field}_max")
        if c in frame.columns
    )
    # The max line, then the min line filled up to it: a band the mean runs through.
    for kind, fill in (("max", None), ("min", "tonexty")):
        shown = m4(frame, f"{field}_{kind}", max_points)
        figure.add_trace(
            go.Scattergl(
                x=_local_times(shown),
                y=shown.get_column(f"{field}_{kind}").to_numpy(),
                mode="lines",
                # 4.8:1 against white: graphics need 3:1 (WCAG 1.4.11).
                line={"width": 1, "color": MINMAX_COLOR},
                fill=fill,
                fillcolor="rgba(156, 163, 175, 0.35)",
                name=t(lang, f"stat.{kind}"),
            )
        )
    shown = m4(frame, f"{field}_mean", max_points)
    figure.add_trace(
        go.Scattergl(
            x=_local_times(shown),
            y=shown.get_column(f"{field}_mean").to_numpy(),
            mode="lines",
            line={"width": 2, "color": "#1D4ED8"},
            name=t(lang, "stat.mean"),
        )
    )
    mark_unfinished(figure, incomplete, f"{field}_mean", lang)
    return Chart(figure, exported, window)


def _counter_chart(
    data: CommuneData,
    insee: str,
    family: str,
    field: str,
    span: TimeRange,
    *,
    window: str,
    unit: str,
    lang: Language,
    max_points: int,
    now: datetime,
) -> Chart:
    """A cumulative counter (energy meter, error counters): how much it grew in each window."""
    columns = [f"{field}_increase", f"{field}_resets", f"{field}_count"]
    frame = data.aggregates(family, [insee], span, window, fields=columns)
    title = t(
        lang, "commune.counter_title", field=field_label(field, lang), window=t(lang, f"window.{window}")
    )
    figure = go.Figure(layout=_base_layout(lang, title, unit_label(unit, lang)))
    follow_period(figure, span, lang)
    if frame.is_empty() or f"{field}_increase" not in frame.columns:
        show_message(figure, t(lang, "common.no_data"))
        return Chart(figure, frame, window)
    frame = frame.select(TIME, "insee", *[c for c in columns if c in frame.columns])
    exported = frame
    frame, incomplete = split_unfinished(frame, f"{field}_increase", window, now, f"{field}_count")
    shown = m4(frame, f"{field}_increase", max_points)
    figure.add_trace(
        go.Scattergl(
            x=_local_times(shown),
            y=shown.get_column(f"{field}_increase").to_numpy(),
            mode="lines",
            line={"width": 2, "color": "#1D4ED8", "shape": "hv"},
            name=t(lang, "stat.increase"),
        )
    )
    mark_unfinished(figure, incomplete, f"{field}_increase", lang)
    return Chart(figure, exported, window)


def atmo_chart(data: CommuneData, insee: str, span: TimeRange, lang: Language) -> Chart:
    """Daily ATMO index as bars in their official colours, the class written on the axis and bars."""
    days = TimeRange(span.start - timedelta(days=1), span.end) if span.span < timedelta(days=7) else span
    frame = data.index(
        "atmo_daily", [insee], days, fields=["index", "label", "color", "complete", "pollutant"]
    )
    figure = go.Figure(layout=_base_layout(lang, t(lang, "commune.atmo_title")))
    figure.update_layout(
        xaxis={"type": "category", "title": {"text": ""}},
        margin={"l": 150, "r": 20, "t": 50, "b": 60},
        yaxis={
            "range": [0, 6.5],
            "tickvals": list(range(1, 7)),
            "ticktext": [atmo_text(i, lang) for i in range(1, 7)],
        },
        height=320,
        hovermode="closest",
    )
    if frame.is_empty() or "index" not in frame.columns:
        show_message(figure, t(lang, "common.no_data"))
        return Chart(figure, frame, "1d")
    indices = frame.get_column("index").to_list()
    day_format = "%d/%m/%Y" if lang == "fr" else "%Y-%m-%d"
    days_text = frame.get_column(TIME).dt.convert_time_zone("Europe/Paris").dt.strftime(day_format).to_list()
    figure.add_trace(
        go.Bar(
            x=days_text,
            y=[i if i is not None else 0.15 for i in indices],
            marker={"color": [atmo_color(i) for i in indices], "line": {"color": "#222222", "width": 0.5}},
            text=[atmo_text(i, lang) for i in indices] if len(indices) <= 45 else None,
            textposition="inside",
            hovertext=[atmo_text(i, lang) for i in indices],
            hovertemplate="%{x}: %{hovertext}<extra></extra>",
            name="ATMO",
        )
    )
    return Chart(figure, frame, "1d")


def listed_devices(devices: pl.DataFrame, limit: int) -> pl.DataFrame:
    """The devices a table lists: all of them when they fit in ``limit``, else the offline ones
    first (they are what staff look for), then online ones, in table order."""
    if devices.height <= limit:
        return devices
    return devices.sort(pl.col("online"), maintain_order=True).head(limit)


def with_lateness(data: CommuneData, insee: str, devices: pl.DataFrame, now: datetime) -> pl.DataFrame:
    """``devices`` (rows of ``presence``) plus ``lateness_s``: how long their readings took to
    arrive (``received_at - time``), median over the last hour of raw readings.

    Only these devices' readings are read, so the cost follows the rows shown, not the commune's
    fleet.
    """
    if devices.is_empty():
        return devices.with_columns(pl.lit(None, dtype=pl.Float64).alias("lateness_s"))
    recent = TimeRange(now - timedelta(hours=1), now + timedelta(minutes=1))
    lateness = []
    for family in devices.get_column("family").unique().sort().to_list():
        ids = devices.filter(pl.col("family") == family).get_column("device_id").to_list()
        raw = data.readings(family, insee, recent, fields=["received_at"], device_id=ids)
        if raw.is_empty() or "received_at" not in raw.columns:
            continue
        lateness.append(
            raw.group_by("device_id").agg(
                ((pl.col("received_at") - pl.col(TIME).dt.epoch("ns")) / 1e9).median().alias("lateness_s"),
                pl.lit(family).alias("family"),
            )
        )
    if lateness:
        return devices.join(pl.concat(lateness), on=["family", "device_id"], how="left")
    return devices.with_columns(pl.lit(None, dtype=pl.Float64).alias("lateness_s"))


def recent_anomalies(
    data: CommuneData, insee: str, span: TimeRange, limit: int = 50, device_id: str | None = None
) -> pl.DataFrame:
    """The latest anomalies that started in the range, newest first."""
    frame = data.anomalies([insee], span, device_id=device_id)
    return frame.sort(TIME, descending=True).head(limit) if frame.height else frame


def recent_alerts(data: CommuneData, insee: str, span: TimeRange, limit: int = 50) -> pl.DataFrame:
    """The latest alert transitions in the range, newest first."""
    frame = data.alerts([insee], span)
    return frame.sort(TIME, descending=True).head(limit) if frame.height else frame


# -- device page ----------------------------------------------------------------------------


def device_chart(
    data: CommuneData,
    insee: str,
    family: str,
    device_id: str,
    *,
    field: str,
    span: TimeRange,
    lang: Language,
    max_points: int,
    now: datetime | None = None,
    thresholds: Sequence[Threshold] = (),
) -> Chart:
    """One device's field: raw readings (M4-downsampled) up to a day, aggregates beyond; anomalies marked."""
    spec = family_spec(family)
    field_spec = spec.field(field) if spec else None
    unit = field_spec.unit if field_spec else ""
    if span.span <= RAW_MAX_SPAN:
        window = "raw"
        frame = data.readings(family, insee, span, device_id=device_id, fields=[field])
        value = field
    else:
        window = data.kept_window(family, span, fitting_window(span.span, max_points), level="device")
        value = f"{field}_increase" if field_spec is not None and field_spec.counter else f"{field}_mean"
        frame = data.aggregates(
            family,
            [insee],
            span,
            window,
            level="device",
            device_id=device_id,
            fields=[value, f"{field}_count"],
        )
    window_text = t(lang, "window.raw") if window == "raw" else t(lang, f"window.{window}")
    figure = go.Figure(
        layout=_base_layout(
            lang,
            t(lang, "device.chart_title", field=field_label(field, lang), window=window_text),
            unit_label(unit, lang),
        )
    )
    follow_period(figure, span, lang)
    add_thresholds(figure, list(thresholds))
    if frame.is_empty() or value not in frame.columns:
        show_message(figure, t(lang, "common.no_data"))
        return Chart(figure, frame, window)
    if frame.get_column(value).dtype == pl.Boolean:
        frame = frame.with_columns(pl.col(value).cast(pl.Float64))
    incomplete = frame.head(0)
    if window != "raw":
        frame, incomplete = split_unfinished(frame, value, window, now or span.end, f"{field}_count")
    shown = m4(frame, value, max_points)
    figure.add_trace(
        go.Scattergl(
            x=_local_times(shown),
            y=shown.get_column(value).to_numpy(),
            mode="lines",
            name=field_label(field, lang),
            line={"color": "#1D4ED8"},
        )
    )
    anomalies = data.anomalies([insee], span, device_id=device_id)
    if anomalies.height and "field" in anomalies.columns:
        marks = anomalies.filter(pl.col("field") == field)
        if marks.height:
            figure.add_trace(
                go.Scatter(
                    x=_local_times(marks),
                    y=marks.get_column("observed").to_list() if "observed" in marks.columns else None,
                    mode="markers",
                    # A distinct symbol, not only a colour, marks anomalies.
                    marker={"symbol": "x", "size": 12, "color": "#B91C1C", "line": {"width": 2}},
                    text=[t(lang, f"kind.{k}") for k in marks.get_column("kind").to_list()],
                    hovertemplate="%{text}: %{y}<extra></extra>",
                    name=t(lang, "device.anomalies"),
                )
            )
    mark_unfinished(figure, incomplete, value, lang)
    return Chart(figure, frame, window)


def field_label(field: str, lang: Language) -> str:
    """The human name of a field in ``lang`` (the field's own name when untranslated)."""
    text = t(lang, f"fields.{field}")
    return field if text == f"fields.{field}" else text


def unit_label(unit: str, lang: Language) -> str:
    """The unit as shown on an axis, in ``lang`` (fractions are shown as 0–1 with a word)."""
    return t(lang, "common.fraction") if unit == "1" else unit_text(unit, lang)


def severity_text(severity: str | None, lang: Language) -> str:
    """An alert rule's severity (``warning``, ``critical``...) in words of ``lang``."""
    return _known(lang, "severity", severity) if severity else ""


_SUMMARIES = (
    (re.compile(r"condition cleared before the 'for' delay: never fired"), "never_fired"),
    (re.compile(r"suppressed: parent device (?P<parent>\S+) is offline"), "suppressed"),
    (re.compile(r"notified now that the parent device is back"), "parent_back"),
    (re.compile(r"(?P<state>\w+): (?P<what>.+) = (?P<value>-?[\d.]+|\?)"), "measured"),
)
"""The summaries the alert engine stores (in English, for logs), and their catalogue keys."""


def scope_text(scope: str | None, lang: Language) -> str:
    """An alert's scope (``78498/air_quality``, ``78498/net-78498-01``) with family names in words."""
    return " / ".join(_known(lang, "families", part) for part in (scope or "").split("/"))


def alert_summary(summary: str | None, lang: Language) -> str:
    """An alert event's stored summary in ``lang``, numbers in its conventions.

    The engine keeps one English sentence per event; the dashboards read it back into its parts,
    so a French user reads ``active : hors ligne = 12,62``. Unknown sentences are shown as stored.
    """
    text = summary or ""
    for pattern, key in _SUMMARIES:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        parts = match.groupdict()
        if key == "measured":
            value = parts["value"]
            if value != "?":
                parts["value"] = format_number(float(value), lang, _decimals_of(value))
            parts["state"] = _known(lang, "state", parts["state"])
            what = parts["what"]
            parts["what"] = (
                field_label(what, lang) if has_text(f"fields.{what}") else _known(lang, "kind", what)
            )
        return t(lang, f"summary.{key}", **parts)
    return text


def _known(lang: Language, group: str, name: str) -> str:
    """``name`` translated when the catalogue's ``group`` has it, else as it is."""
    return t(lang, f"{group}.{name}") if has_text(f"{group}.{name}") else name


def _decimals_of(number: str) -> int:
    return len(number.partition(".")[2])


def value_text(value: float | None, unit: str, lang: Language) -> str:
    """A measured value rounded to its unit's precision, with the unit in ``lang``."""
    text = format_number(value, lang, unit_decimals(unit))
    return f"{text}\u00a0{unit_text(unit, lang)}" if unit and unit != "1" and value is not None else text


def when(moment: datetime | None, lang: Language) -> str:
    """A moment written for a table cell."""
    return format_datetime(moment, lang)
