"""Translations (``dashboards/locales/*.toml``) and French/English number and date formats.

Every date shown is in Europe/Paris time, whatever the language; French writes a decimal comma
and a narrow no-break space between thousands (``12,5 µg/m³``, ``1 234``).
"""

from __future__ import annotations

import math
import tomllib
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any, Literal
from zoneinfo import ZoneInfo

Language = Literal["fr", "en"]
LANGUAGES: tuple[Language, ...] = ("fr", "en")
PARIS = ZoneInfo("Europe/Paris")
_NNBSP = "\u202f"  # narrow no-break space: French thousands separator
_NBSP = "\u00a0"  # between a number and its unit


def language(value: object, default: Language = "fr") -> Language:
    """``value`` when it names a supported language, else ``default``."""
    for code in LANGUAGES:
        if value == code:
            return code
    return default


@cache
def _catalog(lang: Language) -> dict[str, str]:
    text = resources.files("dashboards").joinpath(f"locales/{lang}.toml").read_text("utf-8")
    flat: dict[str, str] = {}

    def walk(prefix: str, node: dict[str, Any]) -> None:
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(name + ".", value)
            else:
                flat[name] = str(value)

    walk("", tomllib.loads(text))
    return flat


def has_text(key: str) -> bool:
    """Whether the catalogues have ``key`` (in French, the reference language)."""
    return key in _catalog("fr")


def t(lang: Language, key: str, **values: object) -> str:
    """The text of ``key`` in ``lang`` (French when missing there, the key when missing everywhere)."""
    text = _catalog(lang).get(key) or _catalog("fr").get(key) or key
    return text.format(**values) if values else text


def format_number(value: float | int | None, lang: Language, decimals: int = 1) -> str:
    """A number in the language's conventions; an en dash for a missing value."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    text = f"{value:,.{decimals}f}"
    if lang == "fr":
        return text.replace(",", _NNBSP).replace(".", ",")
    return text


def format_quantity(value: float | int | None, unit: str, lang: Language, decimals: int = 1) -> str:
    """A number with its unit, e.g. ``12,5 µg/m³``; fractions (unit ``1``) are shown in %."""
    if unit == "1" and value is not None:
        return format_number(value * 100, lang, decimals) + f"{_NBSP}%"
    number = format_number(value, lang, decimals)
    return f"{number}{_NBSP}{unit}" if unit and value is not None else number


def format_datetime(moment: datetime | None, lang: Language, *, seconds: bool = False) -> str:
    """A moment in Europe/Paris time: ``28/11/2026 14:05`` (fr) or ``2026-11-28 14:05`` (en)."""
    if moment is None:
        return "–"
    local = moment.astimezone(PARIS)
    clock = "%H:%M:%S" if seconds else "%H:%M"
    return local.strftime(("%d/%m/%Y " if lang == "fr" else "%Y-%m-%d ") + clock)


def format_duration(seconds: float | None, lang: Language) -> str:
    """A duration in the largest sensible unit: ``45 s``, ``3,5 min``, ``2,0 h``, ``4,0 j``."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    for limit, divisor, unit_fr, unit_en in (
        (120, 1, "s", "s"),
        (7200, 60, "min", "min"),
        (172800, 3600, "h", "h"),
    ):
        if abs(seconds) < limit:
            decimals = 0 if divisor == 1 else 1
            unit = unit_fr if lang == "fr" else unit_en
            return f"{format_number(seconds / divisor, lang, decimals)}{_NBSP}{unit}"
    return f"{format_number(seconds / 86400, lang, 1)}{_NBSP}{'j' if lang == 'fr' else 'd'}"


def plotly_separators(lang: Language) -> str:
    """Plotly's ``layout.separators``: decimal then thousands character."""
    return f",{_NNBSP}" if lang == "fr" else ".,"


UNIT_DECIMALS = {
    "µg/m³": 1,
    "mg/m³": 2,
    "ppm": 0,
    "°C": 1,
    "1": 3,
    "vehicles": 0,
    "km/h": 1,
    "kWh": 2,
    "kW": 2,
    "people": 0,
    "fps": 1,
    "dBm": 2,
    "bit/s": 0,
    "frames": 0,
    "ms": 1,
    "%": 1,
}
"""Decimals worth showing for each unit of ``sensors.families``: what the sensors resolve, no more."""


def unit_decimals(unit: str) -> int:
    """How many decimals a value in ``unit`` is written with (tables, tooltips, exports)."""
    return UNIT_DECIMALS.get(unit, 2)


def unit_text(unit: str, lang: Language) -> str:
    """A unit as written in ``lang``: words are translated (``véhicules``), symbols kept (``µg/m³``)."""
    return t(lang, f"units.{unit}") if unit and has_text(f"units.{unit}") else unit


PLOTLY_TOOLS_REMOVED = [
    "zoom2d",
    "pan2d",
    "select2d",
    "lasso2d",
    "zoomIn2d",
    "zoomOut2d",
    "autoScale2d",
    "toggleSpikelines",
    "hoverClosestCartesian",
    "hoverCompareCartesian",
    "sendChartToCloud",
    "sendDataToCloud",
]
"""Plotly tools that only a mouse can use (each one more Tab stop for keyboard users), and those
that would send the data to Plotly's cloud."""


def plotly_config(lang: Language) -> dict[str, object]:
    """``dcc.Graph``'s config: Plotly's own texts in ``lang`` (``assets/plotly-locale-fr.js``), few
    tools, and a chart that follows its box's width (down to a phone's)."""
    return {
        "displaylogo": False,
        "locale": lang,
        "modeBarButtonsToRemove": PLOTLY_TOOLS_REMOVED,
        "responsive": True,
        # A public body's data never leaves for Plotly's cloud: no "share", "edit in Chart Studio"
        # nor "send data" button, and no link to plotly's site under the chart.
        "showSendToCloud": False,
        "showEditInChartStudio": False,
        "showLink": False,
    }
