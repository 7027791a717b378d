"""Durations written the way operators write them: ``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: object) -> timedelta:
    """A duration from ``"15m"``-style text or a number of seconds; ``ValueError`` otherwise."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '15m', '1h' or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("expected a duration of zero or more")
        return timedelta(seconds=float(value))
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text and _PART.sub("", text) == "":
            return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
    raise ValueError("expected a duration such as '90s', '15m', '1h30m', '2d' or a number of seconds")


def format_duration(value: timedelta) -> str:
    """The shortest ``"1h30m"``-style text for a duration (whole seconds)."""
    seconds = round(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
