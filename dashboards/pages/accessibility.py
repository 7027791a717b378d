"""Accessibility statement ``/accessibilite``, as French public bodies publish (RGAA 4.1)."""

from __future__ import annotations

from typing import Any

from dash import html
from dash.development.base_component import Component

from dashboards.auth import current_language
from dashboards.i18n import t

PATH = "/accessibilite"
SECTIONS = (
    "state",
    "results",
    "exceptions",
    "derogations",
    "alternatives",
    "technologies",
    "contact",
    "appeal",
)
"""The parts of the statement, in the order of the RGAA model."""


def layout(**_: Any) -> Component:
    """The statement: conformity, what is not yet accessible, how to ask for help or complain."""
    lang = current_language()
    body: list[Component] = [html.H1(t(lang, "a11y.title")), html.P(t(lang, "a11y.intro"))]
    for section in SECTIONS:
        body.append(html.H2(t(lang, f"a11y.{section}_title")))
        body.extend(html.P(paragraph) for paragraph in t(lang, f"a11y.{section}").split("\n\n"))
    return html.Main(body, id="content", className="statement")
