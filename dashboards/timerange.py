"""Time ranges: parsing (``-7d``, ``now``, ISO 8601), presets, and the resolution that fits one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processing.windows import WINDOW_WIDTHS

WINDOWS = WINDOW_WIDTHS
"""Aggregate resolutions written by processing (docs/measurements.md)."""

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w|y)$")
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


class TimeRangeError(ValueError):
    """A time or range that cannot be understood; the message says what is expected."""


EARLIEST = datetime(1678, 1, 1, tzinfo=UTC)
LATEST = datetime(2262, 1, 1, tzinfo=UTC)
"""Times the stores can hold: nanoseconds since 1970 in 64 bits, with a margin."""


def parse_time(text: str, now: datetime) -> datetime:
    """``now``, a relative time (``-90m``, ``-7d``, ``-1y``) or an ISO 8601 date/time (UTC if naive).

    Times outside ``EARLIEST`` .. ``LATEST`` are refused: no store holds them.
    """
    value = text.strip()
    if value in ("", "now"):
        return now
    match = _RELATIVE.match(value)
    try:
        if match:
            moment = now - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        moment = EARLIEST  # so far back that no calendar holds it: refused below
    except ValueError:
        raise TimeRangeError(
            f"cannot read time {text!r}: use 'now', a relative time like -7d, -12h, -30m, or ISO 8601 "
            "like 2026-11-01T00:00:00Z"
        ) from None
    if not EARLIEST < moment < LATEST:
        raise TimeRangeError(
            f"time {text!r} is out of range: times go from {EARLIEST:%Y-%m-%d} to {LATEST:%Y-%m-%d}"
        )
    return moment


def _parse_named(name: str, text: str, now: datetime) -> datetime:
    try:
        return parse_time(text, now)
    except TimeRangeError as exc:
        raise TimeRangeError(f"bad {name}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open UTC range ``[start, end)``."""

    start: datetime
    end: datetime

    @classmethod
    def parse(cls, start: str, end: str | None, now: datetime | None = None) -> TimeRange:
        """A range from two texts read by ``parse_time``; the end defaults to now."""
        now = now or datetime.now(UTC)
        begin, finish = _parse_named("start", start, now), _parse_named("end", end or "now", now)
        if begin >= finish:
            raise TimeRangeError(f"start {start!r} is not before end {end or 'now'!r}")
        return cls(begin, finish)

    @classmethod
    def last(cls, span: timedelta, now: datetime | None = None) -> TimeRange:
        """The range that ends now and lasts ``span``."""
        now = now or datetime.now(UTC)
        return cls(now - span, now)

    @property
    def span(self) -> timedelta:
        """How long the range lasts."""
        return self.end - self.start


def fitting_window(span: timedelta, max_points: int) -> str:
    """The finest aggregate resolution that keeps one series within ``max_points`` points.

    That gives 1 min for the last hours, 1 h for weeks, 1 day for years (with 2,000 points).
    """
    for name, width in WINDOWS.items():
        if span / width <= max_points:
            return name
    return "1d"


PRESETS: dict[str, timedelta] = {
    "3h": timedelta(hours=3),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "1y": timedelta(days=365),
    "5y": timedelta(days=5 * 365),
}
"""The ranges offered by the pages' time-range picker."""
