"""Pieces shared by the pages: accessible tables and charts, the pickers, refusals."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import dash
import numpy as np
import plotly.graph_objects as go
from dash import ALL, Input, Output, State, dcc, html

from dashboards.auth import current_language
from dashboards.i18n import PARIS, Language, format_number, plotly_config, t
from dashboards.timerange import PRESETS, TimeRange

Cell = Any
"""A table cell: text or a component."""


def aria(**attributes: str) -> dict[str, Any]:
    """ARIA attributes as Dash keyword arguments: ``aria(live="polite")`` -> ``aria-live``."""
    return {f"aria-{name}": value for name, value in attributes.items()}


def table(
    caption: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]], table_id: str = ""
) -> html.Table:
    """A table with a caption and column headers marked as such, for screen readers."""
    return html.Table(
        [
            html.Caption(caption),
            html.Thead(html.Tr([html.Th(h, scope="col") for h in headers])),
            html.Tbody([html.Tr([html.Td(cell) for cell in row]) for row in rows]),
        ],
        className="data-table",
        **_optional_id(table_id),
    )


def _optional_id(component_id: str) -> dict[str, Any]:
    # Dash refuses id=None: a component without an id leaves the argument out.
    return {"id": component_id} if component_id else {}


def chart_box(
    graph_id: str,
    label: str,
    lang: Language,
    *,
    figure: go.Figure | None = None,
    alternative: list[Any] | None = None,
) -> html.Div:
    """A chart announced as a figure named ``label``, with its text alternative under it.

    The alternative (``{graph_id}-alt``: a summary and a "see the data" table) is
    ``chart_alternative`` of the figure unless given; a callback that fills the chart later
    fills it too.
    """
    graph: dict[str, Any] = {"id": graph_id, "config": plotly_config(lang)}
    title: str = label
    if figure is not None:  # a figure filled in later by a callback is left out
        figure, title, shown_alternative = present_chart(figure, lang)
        graph["figure"] = figure
        alternative = shown_alternative if alternative is None else alternative
    return html.Div(
        [
            html.P(title, id=f"{graph_id}-label", className="chart-label"),
            dcc.Graph(**graph),
            html.Div(alternative, id=f"{graph_id}-alt", className="chart-alt"),
        ],
        id=f"{graph_id}-box",
        role="figure",
        className="chart-box",
        **aria(labelledby=f"{graph_id}-label"),
    )


def chart_outputs(graph_id: str) -> list[Output]:
    """The outputs a callback that fills a ``chart_box`` returns ``present_chart``'s results to."""
    return [
        Output(graph_id, "figure"),
        Output(f"{graph_id}-label", "children"),
        Output(f"{graph_id}-alt", "children"),
    ]


def present_chart(figure: go.Figure, lang: Language) -> tuple[go.Figure, str, list[Any]]:
    """The figure without its title, the title, and its text alternative.

    The title is written in HTML above the chart, where it wraps on a phone instead of being cut
    off, and names the figure for screen readers.
    """
    title = figure.layout.title.text if figure.layout.title and figure.layout.title.text else ""
    if title:
        figure.update_layout(title={"text": ""}, margin={"t": 16})
    return figure, str(title), chart_alternative(figure, lang)


ALT_MAX_ROWS = 200
"""Most rows of a chart's "see the data" table; the CSV export gives the rest."""


def chart_alternative(figure: go.Figure, lang: Language) -> list[Any]:
    """A chart's text alternative: one sentence per series, and its values in a table.

    Built from the figure itself, so the text says exactly what is drawn. Values are written in
    the language's conventions (decimal comma in French), times as the axis shows them (Paris).
    """
    series = [trace for trace in figure.data if _values(trace, "y").size]
    unit = _axis_title(figure)
    if not series:
        messages = [a.text for a in figure.layout.annotations or () if a.text]
        return [html.P(messages[0] if messages else t(lang, "common.no_data"), className="chart-summary")]
    sentences = []
    for trace in series:
        ys = _values(trace, "y")
        xs = _xs(trace, len(ys), lang)
        texts = _texts(trace)
        numeric = ys.astype(float) if ys.dtype.kind in "biuf" else None
        if texts is not None or numeric is None:
            listed = ", ".join(
                f"{x} : {v}" if lang == "fr" else f"{x}: {v}" for x, v in zip(xs, texts or ys, strict=False)
            )
            sentences.append(t(lang, "chart.summary_list", name=trace.name or "", values=listed))
            continue
        finite = np.isfinite(numeric)
        if not finite.any():
            continue
        low, high = int(np.nanargmin(numeric)), int(np.nanargmax(numeric))
        last = int(np.flatnonzero(finite)[-1])
        sentences.append(
            t(
                lang,
                "chart.summary",
                name=trace.name or "",
                count=int(finite.sum()),
                first=xs[0],
                last_time=xs[last],
                low=_number(numeric[low], unit, lang),
                low_time=xs[low],
                high=_number(numeric[high], unit, lang),
                high_time=xs[high],
                last=_number(numeric[last], unit, lang),
            )
        )
    return [
        html.P(" ".join(sentences), className="chart-summary"),
        html.Details(
            [html.Summary(t(lang, "chart.show_data")), _data_table(series, unit, lang)],
            className="chart-data",
        ),
    ]


def _values(trace: Any, axis: str) -> np.ndarray:
    values = getattr(trace, axis, None)
    if values is None:
        return np.asarray([])
    return np.asarray(values)


def _xs(trace: Any, count: int, lang: Language) -> list[str]:
    """A trace's x values as text: the charts' Paris times (``2026-12-05 14:00``) as the language
    writes them (``05/12/2026 14:00``), anything else as it is."""
    if trace.x is None:
        return [str(i) for i in range(count)]
    written = []
    for x in trace.x:
        text = str(x)
        try:
            moment = datetime.strptime(text, "%Y-%m-%d %H:%M")
        except ValueError:
            written.append(text)
            continue
        written.append(moment.strftime("%d/%m/%Y %H:%M") if lang == "fr" else text)
    return written


def _texts(trace: Any) -> list[str] | None:
    hover = getattr(trace, "hovertext", None)
    if hover is not None and not isinstance(hover, str) and len(hover):
        return [str(h) for h in hover]
    return None


def _axis_title(figure: go.Figure) -> str:
    title = figure.layout.yaxis.title.text if figure.layout.yaxis and figure.layout.yaxis.title else None
    return str(title or "")


def _number(value: float, unit: str, lang: Language) -> str:
    if not math.isfinite(value):
        return "–"
    decimals = 0 if float(value).is_integer() else 2 if abs(value) < 10 else 1
    text = format_number(value, lang, decimals)
    return f"{text}\u00a0{unit}" if unit and "(" not in unit else text


def _data_table(series: Sequence[Any], unit: str, lang: Language) -> html.Table:
    """The series side by side on their common x values (newest last), at most ``ALT_MAX_ROWS``."""
    columns: list[dict[Any, str]] = []
    order: dict[Any, None] = {}
    for trace in series:
        ys = _values(trace, "y")
        xs = _xs(trace, len(ys), lang)
        texts = _texts(trace)
        cells: dict[Any, str] = {}
        for i, x in enumerate(xs[: len(ys)]):
            order.setdefault(x, None)
            value = ys[i]
            if texts is not None:
                cells[x] = texts[i]
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                cells[x] = _number(float(value), "", lang)
            else:
                cells[x] = str(value)
        columns.append(cells)
    keys = list(order)
    shown = keys[-ALT_MAX_ROWS:]
    rows = [[str(x), *[cells.get(x, "–") for cells in columns]] for x in shown]
    suffix = f" ({unit})" if unit else ""
    headers = [t(lang, "chart.x"), *[f"{trace.name or ''}{suffix}" for trace in series]]
    caption = t(lang, "chart.data_caption")
    if len(keys) > len(shown):
        caption += " " + t(lang, "chart.data_truncated", shown=len(shown), total=len(keys))
    return table(caption, headers, rows)


def field_picker(component_id: str, lang: Language, options: list[dict[str, str]], value: str) -> html.Div:
    """The labelled radio buttons that choose which field of a family a chart shows.

    Its buttons (``{component_id}-picker``) are replaced when the family changes, by the same
    callback that sets the store: the chosen field never belongs to another family.
    """
    return html.Div(
        [
            html.Div(field_choices(component_id, lang, options, value), id=f"{component_id}-picker"),
            dcc.Store(id=component_id, data=value),
        ],
        className="field-picker",
    )


def field_choices(component_id: str, lang: Language, options: list[dict[str, str]], value: str) -> list[Any]:
    """The content of a ``field_picker``: its label and its buttons."""
    pairs = [(option["value"], option["label"]) for option in options]
    return [
        html.Span(t(lang, "commune.field"), id=f"{component_id}-label", className="picker-label"),
        choices(component_id, t(lang, "commune.field"), pairs, value, kind="radio", store=False),
    ]


CUSTOM = "custom"
"""The picker value that selects the dates of the calendar."""


def range_picker(
    component_id: str, lang: Language, value: str, presets: Sequence[str] | None = None
) -> html.Div:
    """The time-range picker: radio buttons (keyboard-friendly) and a calendar for chosen dates.

    ``range_key`` turns what is picked into one key (``24h`` or ``custom:2026-11-01:2026-11-15``)
    that the data callbacks read through ``span_of``.
    """
    keys = list(presets or PRESETS)
    options = [(key, t(lang, f"range.{key}")) for key in keys]
    options.append((CUSTOM, t(lang, "range.custom")))
    return html.Div(
        [
            html.Span(t(lang, "common.range"), id=f"{component_id}-label", className="picker-label"),
            choices(
                component_id,
                t(lang, "common.range"),
                options,
                value if value in keys else keys[1],
                kind="radio",
            ),
            # Two labelled text fields rather than a calendar pop-up: typed with the keyboard,
            # read by screen readers, in the format the language writes dates.
            html.Div(
                [
                    _day_field(f"{component_id}-from", t(lang, "range.from"), lang),
                    _day_field(f"{component_id}-to", t(lang, "range.to"), lang),
                    html.P(id=f"{component_id}-error", className="form-error", **aria(live="polite")),
                ],
                className="date-fields",
            ),
            dcc.Store(id=f"{component_id}-key", data=value if value in keys else keys[1]),
        ],
        className="range-box",
    )


def register_range_picker(app: dash.Dash, component_id: str) -> None:
    """Keep the ``{component_id}-key`` store of a ``range_picker`` in step with what is picked."""
    register_choices(app, component_id)

    @app.callback(
        Output(f"{component_id}-key", "data"),
        Output(f"{component_id}-error", "children"),
        Input(component_id, "data"),
        Input(f"{component_id}-from", "value"),
        Input(f"{component_id}-to", "value"),
    )
    def on_range(choice: str, first: str | None, last: str | None) -> tuple[str, str]:
        days = [parse_day(text) for text in (first, last)]
        wrong = [text for text, day in zip((first, last), days, strict=True) if text and day is None]
        if wrong:
            return range_key(choice, None, None), t(current_language(), "dates.bad_date", text=wrong[0])
        return range_key(choice, days[0], days[1]), ""


DAY_FORMATS = ("%d/%m/%Y", "%Y-%m-%d")
"""How a day may be typed: as French writes it, or ISO 8601."""


def parse_day(text: str | None) -> str | None:
    """A typed day (``05/12/2026`` or ``2026-12-05``) as ISO ``2026-12-05``; None if it is not one."""
    for pattern in DAY_FORMATS:
        try:
            return datetime.strptime((text or "").strip(), pattern).date().isoformat()
        except ValueError:
            continue
    return None


def _day_field(component_id: str, label: str, lang: Language) -> html.Div:
    hint = t(lang, "dates.day_format")
    return html.Div(
        [
            html.Label(f"{label} ({hint})", htmlFor=component_id),
            dcc.Input(id=component_id, type="text", debounce=True, autoComplete="off", className="day-input"),
        ],
        className="day-field",
    )


def range_key(choice: str | None, start_date: str | None, end_date: str | None) -> str:
    """One key for the picked range: the preset, or ``custom:<first day>:<last day>``."""
    if choice == CUSTOM:
        if start_date and end_date:
            return f"{CUSTOM}:{start_date[:10]}:{end_date[:10]}"
        return "24h"
    return choice or "24h"


def span_of(key: str | None, now: datetime) -> TimeRange:
    """The range of a picker key: a preset ending now, or whole days (Paris time) of the calendar.

    An unknown or malformed key falls back to the last 24 hours.
    """
    if key and key.startswith(f"{CUSTOM}:"):
        try:
            _, first_text, last_text = key.split(":")
            first, last = sorted((date.fromisoformat(first_text), date.fromisoformat(last_text)))
        except ValueError:
            return TimeRange.last(PRESETS["24h"], now)
        start = datetime.combine(first, time(), PARIS).astimezone(UTC)
        end = datetime.combine(last + timedelta(days=1), time(), PARIS).astimezone(UTC)
        return TimeRange(start, end)
    return TimeRange.last(PRESETS.get(key or "", PRESETS["24h"]), now)


def refusal(lang: Language, insee: str) -> html.Div:
    """What a page shows instead of a commune the user may not see."""
    return html.Div(
        [html.H1(t(lang, "common.forbidden", insee=insee)), dcc.Link(t(lang, "nav.overview"), href="/")],
        className="refusal",
        role="alert",
        id="forbidden",
    )


ChoiceKind = Literal["tab", "radio"]
_SELECTED = {"tab": "aria-selected", "radio": "aria-checked"}
_GROUP = {"tab": "tablist", "radio": "radiogroup"}


def choices(
    component_id: str,
    label: str,
    options: Sequence[tuple[str, str]],
    value: str,
    *,
    kind: ChoiceKind,
    store: bool = True,
) -> html.Div:
    """One choice among buttons: WAI-ARIA tabs (``tablist``) or radio buttons (``radiogroup``).

    The chosen key is in the store ``component_id`` (made here unless ``store`` is False). Only
    the chosen button is in the Tab order; the arrow keys, Home and End move to another and
    choose it (``assets/choices.js``), as the ARIA practices describe; Enter and Space choose
    the focused one. ``register_choices`` keeps
    the states in step.
    """
    buttons = [
        html.Button(
            text,
            id=choice_id(component_id, key),
            role=kind,
            type="button",
            n_clicks=0,
            **_choice_state(kind, key == value),
            **(aria(controls=f"{component_id}-panel") if kind == "tab" else {}),
        )
        for key, text in options
    ]
    return html.Div(
        [
            html.Div(buttons, role=_GROUP[kind], className=f"choices choices--{kind}", **aria(label=label)),
            *([dcc.Store(id=component_id, data=value)] if store else []),
        ],
        className="choice-group",
    )


def choice_id(component_id: str, key: str) -> dict[str, str]:
    """The id of the button of ``key`` in the ``choices`` ``component_id``."""
    return {"choice": component_id, "key": key}


def dom_id(component_id: dict[str, str]) -> str:
    """The ``id`` attribute Dash writes for a dict id (keys sorted, values as JSON)."""
    return (
        "{" + ",".join(f"{json.dumps(k)}:{json.dumps(component_id[k])}" for k in sorted(component_id)) + "}"
    )


def _choice_state(kind: ChoiceKind, chosen: bool) -> dict[str, Any]:
    return {
        _SELECTED[kind]: "true" if chosen else "false",
        "tabIndex": "0" if chosen else "-1",
        "className": f"choice choice--{kind}" + (" choice--chosen" if chosen else ""),
    }


def tabs(component_id: str, label: str, options: Sequence[tuple[str, str]], value: str) -> html.Div:
    """WAI-ARIA tabs over a ``tab_panel``: ``choices`` of kind ``tab``."""
    return choices(component_id, label, options, value, kind="tab")


def tab_panel(component_id: str, value: str, children: list[Any]) -> html.Div:
    """The panel the ``tabs`` ``component_id`` control, labelled by the chosen tab."""
    return html.Div(
        children,
        id=f"{component_id}-panel",
        role="tabpanel",
        className="tabpanel",
        **aria(labelledby=dom_id(choice_id(component_id, value))),
    )


def register_choices(app: dash.Dash, component_id: str, kind: ChoiceKind = "radio") -> None:
    """Choose the button the user clicked (or reached with the arrow keys): store and states."""
    button = {"choice": component_id, "key": ALL}
    outputs = [
        Output(component_id, "data"),
        Output(button, _SELECTED[kind]),
        Output(button, "tabIndex"),
        Output(button, "className"),
    ]
    if kind == "tab":
        outputs.append(Output(f"{component_id}-panel", "aria-labelledby"))

    @app.callback(*outputs, Input(button, "n_clicks"), State(button, "id"), prevent_initial_call=True)
    def on_choice(clicks: list[int | None], ids: list[dict[str, str]]) -> list[Any]:
        triggered = dash.ctx.triggered_id
        # Buttons put in the page by another callback (a new family's fields) trigger with no click.
        if not isinstance(triggered, dict) or not any(clicks):
            raise dash.exceptions.PreventUpdate
        chosen = str(triggered["key"])
        states = [_choice_state(kind, i["key"] == chosen) for i in ids]
        result: list[Any] = [
            chosen,
            *([s[key] for s in states] for key in (_SELECTED[kind], "tabIndex", "className")),
        ]
        if kind == "tab":
            result.append(dom_id(choice_id(component_id, chosen)))
        return result
