"""Message text: numbers, units and times in French (or English) conventions, and the templates
operators can override.

Templates are ``string.Template`` files (``$name`` placeholders, ``$$`` for a dollar sign), one
per language and part: ``{lang}/{kind}.subject``, ``{kind}.txt``, ``{kind}.html`` with ``kind``
in ``firing``, ``resolved``, ``test``. A file in the operator's templates directory replaces
the shipped one of the same name. Every placeholder must be a known variable (``VARIABLES``):
a typo is refused at start-up, not discovered in a commune's mailbox.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
KINDS = ("firing", "resolved", "test")
PARTS = ("subject", "txt", "html")
MessageKind = Literal["firing", "resolved", "test"]

VARIABLES: dict[str, str] = {
    "commune": "name of the commune, e.g. Poissy",
    "insee": "INSEE code of the commune, e.g. 78498",
    "rule": "name of the rule",
    "title": "title of the rule (its 'title' key, or one made from its condition)",
    "description": "the rule's 'description' key (empty when none)",
    "severity": "info, warning or critical",
    "severity_label": "the severity in the message's language (Information, Avertissement, Critique)",
    "summary": "one sentence saying what was measured, e.g. 'PM10, moyenne sur 15 min : 62,5 µg/m³'",
    "value": "the measured value with its unit, French decimal comma (the worst one of a group)",
    "threshold": "the raise level with its unit",
    "clear_threshold": "the clear level with its unit",
    "unit": "the unit of the value",
    "field": "the field compared (e.g. pm10_mean), or the anomaly kind",
    "field_label": "the field in words, e.g. 'PM10, moyenne sur 15 min' (empty for offline and anomaly)",
    "measurement": "the measurement read (e.g. air_quality_15m_commune)",
    "time": "when the evaluation saw it, Europe/Paris time",
    "since": "when the condition started (firing) or when the alert fired (resolved), Europe/Paris",
    "duration": "how long the alert lasted (resolved messages)",
    "count": "how many devices or scopes the message is about",
    "items": "the list of devices or scopes with their values (an HTML list in .html templates)",
    "dependants": "devices silenced because a device in front of them is offline (may be empty)",
    "acknowledged": "who acknowledged the alert on the dashboards, when, with their comment (may be empty)",
    "link": "the commune's dashboard page, {dashboard_url}/commune/<insee>",
}

SEVERITY_LABELS = {
    "fr": {"info": "Information", "warning": "Avertissement", "critical": "Critique"},
    "en": {"info": "Information", "warning": "Warning", "critical": "Critical"},
}


class TemplateError(ValueError):
    """A template uses an unknown variable or bad syntax; the message names the file."""


def format_number(value: float, language: str = "fr") -> str:
    """A number as people of ``language`` write it: ``1 234,5`` in French, ``1,234.5`` in English.

    At most two decimals, trailing zeros dropped; integers without decimals.
    """
    if math.isnan(value):
        return "?"
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if language == "fr":
        # Thousands with a narrow no-break space, decimals with a comma (Imprimerie nationale).
        text = text.replace(",", "\u202f").replace(".", ",")
    return text


def format_quantity(value: float | None, unit: str, language: str = "fr") -> str:
    """A value and its unit, separated by a no-break space; ``?`` when the value is unknown."""
    if value is None:
        return "?"
    number = format_number(value, language)
    return f"{number}\u00a0{unit}" if unit else number


def format_time(moment: datetime, language: str = "fr") -> str:
    """A moment in Europe/Paris time: ``28/11/2026 à 14:45`` or ``2026-11-28 14:45 (Paris)``."""
    local = moment.astimezone(PARIS)
    if language == "fr":
        return local.strftime("%d/%m/%Y à %H:%M (heure de Paris)")
    return local.strftime("%Y-%m-%d %H:%M (Paris time)")


def format_span(span: timedelta, language: str = "fr") -> str:
    """A duration in words: ``2 h 05 min`` / ``2 h 05 min``; ``3 j 4 h`` / ``3 d 4 h``."""
    minutes = max(0, round(span.total_seconds() / 60))
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    day = "j" if language == "fr" else "d"
    if days:
        return f"{days}\u00a0{day} {hours}\u00a0h"
    if hours:
        return f"{hours}\u00a0h {mins:02d}\u00a0min"
    return f"{mins}\u00a0min"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A message ready to send."""

    subject: str
    text: str
    html: str


class Templates:
    """The message templates: the shipped ones, overridden file by file from a directory."""

    def __init__(self, override_dir: Path | None = None) -> None:
        self._templates: dict[tuple[str, str, str], Template] = {}
        for language in ("fr", "en"):
            for kind in KINDS:
                for part in PARTS:
                    self._templates[(language, kind, part)] = self._load(override_dir, language, kind, part)

    @staticmethod
    def _load(override_dir: Path | None, language: str, kind: str, part: str) -> Template:
        name = f"{language}/{kind}.{part}"
        candidate = override_dir / name if override_dir else None
        if candidate is not None and candidate.is_file():
            text, source = candidate.read_text("utf-8"), str(candidate)
        else:
            text = resources.files("alerts").joinpath(f"templates/{name}").read_text("utf-8")
            source = f"alerts/templates/{name}"
        template = Template(text)
        if not template.is_valid():
            raise TemplateError(
                f"template {source}: a '$' is not followed by a name (write $$ for a dollar sign)"
            )
        unknown = sorted(set(template.get_identifiers()) - set(VARIABLES))
        if unknown:
            raise TemplateError(
                f"template {source}: unknown variable(s) {', '.join('$' + u for u in unknown)}; "
                f"expected some of {', '.join('$' + v for v in VARIABLES)}"
            )
        return template

    def render(
        self,
        kind: MessageKind,
        language: str,
        variables: Mapping[str, str],
        *,
        html_items: str,
        html_dependants: str,
    ) -> Rendered:
        """Fill the three parts of a message; HTML gets escaped values and list markup."""
        escaped = {key: html.escape(value) for key, value in variables.items()}
        escaped["items"] = html_items
        escaped["dependants"] = html_dependants
        subject = self._templates[(language, kind, "subject")].substitute(variables)
        return Rendered(
            # One line: a newline in a subject would break (or inject) email headers.
            subject=re.sub(r"\s*[\r\n]+\s*", " ", subject).strip(),
            # Empty variables (no list, no description) leave blank runs: keep one blank line.
            text=re.sub(r"\n{3,}", "\n\n", self._templates[(language, kind, "txt")].substitute(variables)),
            html=self._templates[(language, kind, "html")].substitute(escaped),
        )
