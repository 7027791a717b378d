"""Alerts page ``/alerts``: every alert of the user's communes, filtered; acknowledge and silence.

Acknowledgements and silences are written to the store (``dashboards.alert_desk``), where the
alert evaluator reads them: what the page does is honoured by the next evaluation.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import dash
import polars as pl
from dash import Input, Output, State, dcc, html
from dash.development.base_component import Component

from alerts.actions import Action, ActionError
from dashboards import alert_desk
from dashboards.access import AccessError, CommuneData, Forbidden
from dashboards.auth import app_context, current_data, current_language, current_time
from dashboards.i18n import PARIS, Language, format_datetime, t
from dashboards.links import device_href
from dashboards.pages.common import aria, range_picker, register_range_picker, span_of, table

PATH = "/alerts"
RANGES = ("24h", "7d", "30d")
ALL = "*"
SEVERITIES = ("critical", "warning", "info")
UNTIL_FORMATS = ("%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M")
"""How the end of a silence may be typed (Paris time): as French writes it, or ISO 8601."""
UNTIL_SHOWN = {"fr": "%d/%m/%Y %H:%M", "en": "%Y-%m-%d %H:%M"}
"""How the proposed end is written, as each language writes dates elsewhere on the pages."""


def layout(commune: str = "", **_: Any) -> Component:
    """The page skeleton: filters, the alerts table, and the two forms."""
    lang = current_language()
    data = current_data()
    communes = data.communes()
    commune_options = [{"label": t(lang, "alert_desk.all_communes"), "value": ALL}] + [
        {"label": f"{c.name} ({c.insee})", "value": c.insee} for c in communes
    ]
    chosen = commune if any(c.insee == commune for c in communes) else ALL
    own = [{"label": f"{c.name} ({c.insee})", "value": c.insee} for c in communes]
    default_until = (current_time().astimezone(PARIS) + timedelta(hours=2)).strftime(UNTIL_SHOWN[lang])
    return html.Main(
        [
            html.H1(t(lang, "alert_desk.title")),
            html.P(t(lang, "alert_desk.intro")),
            html.Div(
                [
                    _labelled("alerts-commune", t(lang, "alert_desk.commune"), commune_options, chosen),
                    html.Div(
                        [
                            html.Span(
                                t(lang, "alert_desk.state"), id="alerts-state-label", className="picker-label"
                            ),
                            dcc.RadioItems(
                                id="alerts-state",
                                options=[
                                    {"label": t(lang, "alert_desk.open_only"), "value": "open"},
                                    {"label": t(lang, "alert_desk.every_state"), "value": ALL},
                                ],
                                value="open",
                                inline=True,
                                className="range-picker",
                                labelClassName="range-option",
                            ),
                        ],
                        role="group",
                        **aria(labelledby="alerts-state-label"),
                    ),
                    html.Div(
                        [
                            html.Span(
                                t(lang, "alert_desk.severity"),
                                id="alerts-severity-label",
                                className="picker-label",
                            ),
                            dcc.Checklist(
                                id="alerts-severity",
                                options=[
                                    {"label": t(lang, f"alert_desk.severity_{s}"), "value": s}
                                    for s in SEVERITIES
                                ],
                                value=list(SEVERITIES),
                                inline=True,
                                className="range-picker",
                                labelClassName="range-option",
                            ),
                        ],
                        role="group",
                        **aria(labelledby="alerts-severity-label"),
                    ),
                    range_picker("alerts-range", lang, "7d", RANGES),
                ],
                className="alert-filters",
            ),
            html.P(id="alerts-updated", className="updated", **aria(live="polite")),
            html.Div(id="alerts-table"),
            html.Section(
                [
                    html.H2(t(lang, "alert_desk.ack_title"), id="alerts-ack-heading"),
                    _labelled("alerts-ack-target", t(lang, "alert_desk.ack_target"), [], None),
                    _text_area("alerts-ack-comment", t(lang, "alert_desk.ack_comment")),
                    html.Button(t(lang, "alert_desk.ack_button"), id="alerts-ack", className="button"),
                    html.P(id="alerts-ack-result", role="status", className="action-result"),
                ],
                className="alert-form",
                **aria(labelledby="alerts-ack-heading"),
            ),
            html.Section(
                [
                    html.H2(t(lang, "alert_desk.silence_title"), id="alerts-silence-heading"),
                    html.P(t(lang, "alert_desk.silence_help")),
                    _labelled(
                        "alerts-silence-commune",
                        t(lang, "alert_desk.commune"),
                        own,
                        own[0]["value"] if own else None,
                    ),
                    _labelled("alerts-silence-device", t(lang, "alert_desk.silence_device"), [], ALL),
                    html.Div(
                        [
                            html.Label(t(lang, "alert_desk.silence_until"), htmlFor="alerts-silence-until"),
                            # Typed, as the range's days are: a browser's date-time field writes the
                            # browser's language (12/06/2026, 10:58 AM on a French page).
                            dcc.Input(
                                id="alerts-silence-until",
                                type="text",
                                value=default_until,
                                autoComplete="off",
                                className="until-input",
                            ),
                        ],
                        className="field-picker",
                    ),
                    _text_area("alerts-silence-reason", t(lang, "alert_desk.silence_reason")),
                    html.Button(
                        t(lang, "alert_desk.silence_button"), id="alerts-silence", className="button"
                    ),
                    html.P(id="alerts-silence-result", role="status", className="action-result"),
                    html.Div(id="alerts-silences"),
                    _labelled("alerts-unsilence-target", t(lang, "alert_desk.unsilence_target"), [], None),
                    html.Button(
                        t(lang, "alert_desk.unsilence_button"), id="alerts-unsilence", className="button"
                    ),
                    html.P(id="alerts-unsilence-result", role="status", className="action-result"),
                ],
                className="alert-form",
                **aria(labelledby="alerts-silence-heading"),
            ),
            dcc.Store(id="alerts-acted", data=0),
            dcc.Interval(id="alerts-tick", interval=app_context().settings.refresh_s * 1000),
        ],
        id="content",
    )


def _labelled(component_id: str, label: str, options: list[dict[str, str]], value: str | None) -> html.Div:
    return html.Div(
        [
            html.Label(label, htmlFor=component_id),
            dcc.Dropdown(id=component_id, options=options, value=value, clearable=False),
        ],
        className="field-picker",
    )


def _text_area(component_id: str, label: str) -> html.Div:
    return html.Div(
        [html.Label(label, htmlFor=component_id), dcc.Textarea(id=component_id, value="", maxLength=500)],
        className="field-picker",
    )


def _acknowledged(ack: Action | None, lang: Language) -> str:
    if ack is None:
        return t(lang, "alert_desk.not_acked")
    text = t(lang, "alert_desk.acked_by", user=ack.user, time=format_datetime(ack.at, lang))
    return t(lang, "alert_desk.with_comment", text=text, comment=ack.comment) if ack.comment else text


def refusal_text(exc: AccessError | ActionError, lang: Language) -> str:
    """Why an action was refused, in ``lang``."""
    if isinstance(exc, Forbidden):
        reason = t(lang, "common.forbidden", insee=exc.insee)
    elif isinstance(exc, ActionError):
        reason = t(lang, f"alert_desk.error_{exc.reason}")
    else:
        reason = str(exc)
    return t(lang, "alert_desk.refused", reason=reason)


def _severity(value: object, lang: Language) -> str:
    return t(lang, f"alert_desk.severity_{value}") if value in SEVERITIES else str(value or "–")


def alerts_panel(
    data: CommuneData,
    *,
    commune: str,
    state: str,
    severities: list[str],
    range_key: str,
    lang: Language,
    now: datetime,
) -> tuple[list[Component], list[dict[str, str]], list[dict[str, str]], str]:
    """The alerts table, the open alerts one may acknowledge, the silences one may end, and 'updated'."""
    codes = None if commune in ("", ALL) else [commune]
    span = span_of(range_key, now)
    found = alert_desk.episodes(data, span, now, codes)
    if state == "open":
        found = found.filter(pl.col("state") != "resolved")
    found = found.filter(pl.col("severity").is_in(severities))
    log = alert_desk.action_log(data, now, codes)
    names = {c.insee: c.name for c in data.communes()}
    rows: list[list[Any]] = []
    acknowledgeable: list[dict[str, str]] = []
    for row in found.iter_rows(named=True):
        ack = alert_desk.acknowledgement_of(log, row)
        quiet = alert_desk.silence_over(log, row, now)
        title = row[f"title_{lang}"] or row["rule"]
        device = row["device_id"]
        where = (
            dcc.Link(device, href=device_href(row["insee"], device))
            if device
            else t(lang, "alert_desk.whole_commune")
        )
        rows.append(
            [
                format_datetime(row["started"], lang),
                format_datetime(row["ended"], lang) if row["ended"] else t(lang, "alert_desk.ongoing"),
                dcc.Link(names.get(row["insee"], row["insee"]), href=f"/commune/{row['insee']}"),
                title,
                where,
                t(lang, f"state.{row['state']}"),
                _severity(row["severity"], lang),
                _acknowledged(ack, lang),
                t(lang, "alert_desk.silenced_until", time=format_datetime(quiet.until, lang))
                if quiet
                else "–",
            ]
        )
        if row["state"] != "resolved" and ack is None:
            acknowledgeable.append(
                {
                    "label": " — ".join(
                        (
                            names.get(row["insee"], row["insee"]),
                            title,
                            device or t(lang, "alert_desk.whole_commune"),
                        )
                    ),
                    "value": f"{row['insee']}|{row['rule']}|{row['scope']}",
                }
            )
    headers = [
        t(lang, f"alert_desk.{k}")
        for k in ("started", "ended", "commune", "alert", "scope", "state", "severity", "ack", "silence")
    ]
    silences = log.silences(now)
    silence_rows = [
        [
            names.get(s.insee, s.insee),
            s.device_id or t(lang, "alert_desk.whole_commune"),
            format_datetime(s.until, lang),
            s.user,
            s.comment,
        ]
        for s in silences
    ]
    silence_headers = [t(lang, f"alert_desk.{k}") for k in ("commune", "scope", "until", "by", "reason")]
    endable = [
        {
            "label": " — ".join(
                (
                    names.get(s.insee, s.insee),
                    s.device_id or t(lang, "alert_desk.whole_commune"),
                    format_datetime(s.until, lang),
                )
            ),
            "value": s.id,
        }
        for s in silences
    ]
    body: list[Component] = [
        table(t(lang, "alert_desk.caption", count=len(rows)), headers, rows, "alerts-list"),
        table(t(lang, "alert_desk.silences_caption"), silence_headers, silence_rows, "alerts-silence-list"),
    ]
    return (
        body,
        acknowledgeable,
        endable,
        t(lang, "common.refresh", time=format_datetime(now, lang, seconds=True)),
    )


def parse_until(text: str | None) -> datetime:
    """A typed end of silence (``06/12/2026 18:30`` or ISO) in Paris time; ``ActionError`` if not one."""
    for pattern in UNTIL_FORMATS:
        try:
            return datetime.strptime(" ".join(str(text or "").split()), pattern).replace(tzinfo=PARIS)
        except ValueError:
            continue
    raise ActionError("the end of the silence must be a date and time", "date")


def register_callbacks(app: dash.Dash) -> None:
    """Attach this page's callbacks to ``app``; every action is checked against the user's rights."""

    register_range_picker(app, "alerts-range")

    @app.callback(
        Output("alerts-table", "children"),
        Output("alerts-ack-target", "options"),
        Output("alerts-unsilence-target", "options"),
        Output("alerts-updated", "children"),
        Input("alerts-commune", "value"),
        Input("alerts-state", "value"),
        Input("alerts-severity", "value"),
        Input("alerts-range-key", "data"),
        Input("alerts-tick", "n_intervals"),
        Input("alerts-acted", "data"),
    )
    def on_filters(
        commune: str, state: str, severities: list[str], range_key: str, _: int | None, __: int
    ) -> tuple[list[Component], list[dict[str, str]], list[dict[str, str]], str]:
        lang = current_language()
        try:
            return alerts_panel(
                current_data(),
                commune=commune,
                state=state,
                severities=list(severities or []),
                range_key=range_key,
                lang=lang,
                now=current_time(),
            )
        except AccessError as exc:
            return [html.P(str(exc), role="alert")], [], [], ""

    @app.callback(
        Output("alerts-silence-device", "options"),
        Output("alerts-silence-device", "value"),
        Input("alerts-silence-commune", "value"),
    )
    def on_silence_commune(insee: str | None) -> tuple[list[dict[str, str]], str]:
        lang = current_language()
        options = [{"label": t(lang, "alert_desk.whole_commune"), "value": ALL}]
        if not insee:
            return options, ALL
        try:
            devices = current_data().devices([insee]).get_column("device_id").to_list()
        except AccessError:
            return options, ALL
        return options + [{"label": d, "value": d} for d in devices], ALL

    @app.callback(
        Output("alerts-ack-result", "children"),
        Output("alerts-acted", "data", allow_duplicate=True),
        Input("alerts-ack", "n_clicks"),
        State("alerts-ack-target", "value"),
        State("alerts-ack-comment", "value"),
        State("alerts-acted", "data"),
        prevent_initial_call=True,
    )
    def on_acknowledge(_: int | None, target: str | None, comment: str | None, acted: int) -> tuple[str, int]:
        lang = current_language()
        if not target:
            return t(lang, "alert_desk.ack_choose"), acted
        insee, rule, scope = target.split("|", 2)
        try:
            alert_desk.acknowledge(
                current_data(), insee, rule, scope, comment=comment or "", now=current_time()
            )
        except (AccessError, ActionError) as exc:
            return refusal_text(exc, lang), acted
        return t(lang, "alert_desk.ack_done"), acted + 1

    @app.callback(
        Output("alerts-silence-result", "children"),
        Output("alerts-acted", "data", allow_duplicate=True),
        Input("alerts-silence", "n_clicks"),
        State("alerts-silence-commune", "value"),
        State("alerts-silence-device", "value"),
        State("alerts-silence-until", "value"),
        State("alerts-silence-reason", "value"),
        State("alerts-acted", "data"),
        prevent_initial_call=True,
    )
    def on_silence(
        _: int | None,
        insee: str | None,
        device: str | None,
        until: str | None,
        reason: str | None,
        acted: int,
    ) -> tuple[str, int]:
        lang = current_language()
        try:
            end = parse_until(until)
            action = alert_desk.silence(
                current_data(),
                str(insee or ""),
                None if device in (None, ALL) else device,
                until=end,
                reason=reason or "",
                now=current_time(),
            )
        except (AccessError, ActionError) as exc:
            return refusal_text(exc, lang), acted
        return t(lang, "alert_desk.silence_done", time=format_datetime(action.until, lang)), acted + 1

    @app.callback(
        Output("alerts-unsilence-result", "children"),
        Output("alerts-acted", "data", allow_duplicate=True),
        Input("alerts-unsilence", "n_clicks"),
        State("alerts-unsilence-target", "value"),
        State("alerts-acted", "data"),
        prevent_initial_call=True,
    )
    def on_unsilence(_: int | None, target: str | None, acted: int) -> tuple[str, int]:
        lang = current_language()
        if not target:
            return t(lang, "alert_desk.unsilence_choose"), acted
        try:
            alert_desk.end_silence(current_data(), target, current_time())
        except (AccessError, ActionError) as exc:
            return refusal_text(exc, lang), acted
        return t(lang, "alert_desk.unsilence_done"), acted + 1
