"""Tumbling windows: which window a timestamp falls in.

Windows shorter than a day are aligned on UTC (a minute, a quarter-hour, an hour start at the
same instant everywhere). Day windows start at midnight Europe/Paris, because "today" for commune
staff is a French calendar day: such a day lasts 23 hours at the spring DST change and 25 hours at
the autumn one.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import polars as pl

from sensors.catalogue import WINDOWS

PARIS: Final = "Europe/Paris"
PARIS_TZ: Final = ZoneInfo(PARIS)
WINDOW_WIDTHS: Final[dict[str, timedelta]] = {
    "1m": timedelta(minutes=1),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}
"""The nominal width of each window (a Paris day lasts 23 or 25 hours when the clocks change)."""

MINUTE_NS: Final = 60 * 1_000_000_000
HOUR_NS: Final = 60 * MINUTE_NS
DAY_NS: Final = 24 * HOUR_NS
_FIXED_MINUTES: Final[dict[str, int]] = {"1m": 1, "15m": 15, "1h": 60}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def check_window(window: str) -> str:
    """Return ``window`` when it is one of ``WINDOWS``; raise ``ValueError`` naming them otherwise."""
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}: expected one of {', '.join(WINDOWS)}")
    return window


def window_start(time: pl.Expr, window: str) -> pl.Expr:
    """The start of the window holding each ``time`` (a ``Datetime(..., "UTC")`` expression).

    Readable and general; ``window_start_ns`` is the fast path used on large frames.
    """
    check_window(window)
    if window == "1d":
        # truncate() on a zoned datetime truncates in local time, so this is Paris midnight,
        # DST included; midnight is never ambiguous in Paris (changes happen at 02:00/03:00).
        return time.dt.convert_time_zone(PARIS).dt.truncate("1d").dt.convert_time_zone("UTC")
    return time.dt.truncate(window)


def _offset_segments(lo_ns: int, hi_ns: int) -> list[tuple[int, int]]:
    """(UTC instant in ns, Paris UTC offset in ns from then on), covering [lo_ns, hi_ns]."""
    hour = lo_ns // HOUR_NS * HOUR_NS - DAY_NS
    segments: list[tuple[int, int]] = []
    while hour <= hi_ns + DAY_NS:
        instant = _EPOCH + timedelta(microseconds=hour // 1000)
        offset = instant.astimezone(PARIS_TZ).utcoffset()
        offset_ns = int(offset.total_seconds()) * 1_000_000_000 if offset is not None else 0
        if not segments or segments[-1][1] != offset_ns:
            segments.append((hour, offset_ns))
        # Paris changes offset on whole UTC hours, so stepping hour by hour finds every change;
        # a day's step is taken when the next day has the same offset at its start and end.
        next_day = hour + DAY_NS
        end_offset = (_EPOCH + timedelta(microseconds=next_day // 1000)).astimezone(PARIS_TZ).utcoffset()
        hour = next_day if end_offset == offset else hour + HOUR_NS
    return segments


def _piecewise(value: pl.Expr, segments: list[tuple[int, int]]) -> pl.Expr:
    """The offset of the segment holding each ``value`` (ns)."""
    expr: pl.Expr = pl.lit(segments[0][1], dtype=pl.Int64)
    for start, offset in segments[1:]:
        expr = pl.when(value >= start).then(pl.lit(offset, dtype=pl.Int64)).otherwise(expr)
    return expr


def window_start_ns(time_ns: pl.Expr, window: str, lo_ns: int, hi_ns: int) -> pl.Expr:
    """Window starts as Int64 ns since the epoch, for times in ``[lo_ns, hi_ns]`` (Int64 ns).

    Integer arithmetic only: converting every row to Paris time is the slow part of a large
    aggregation, and the Paris offset only changes twice a year, so it is applied piecewise.
    """
    check_window(window)
    if window != "1d":
        step = _FIXED_MINUTES[window] * MINUTE_NS
        return time_ns // step * step
    segments = _offset_segments(lo_ns, hi_ns)
    local_midnight = (time_ns + _piecewise(time_ns, segments)) // DAY_NS * DAY_NS
    # The offset in force at local midnight: changes happen at 01:00 UTC, i.e. after midnight
    # in Paris, so midnight has the offset of the previous evening (local segments shifted).
    local_segments = [(start + offset, offset) for start, offset in segments]
    return local_midnight - _piecewise(local_midnight, local_segments)


def floor(instant: datetime, window: str) -> datetime:
    """The start of the window holding ``instant`` (an aware datetime), as a UTC datetime."""
    check_window(window)
    instant = instant.astimezone(UTC)
    if window == "1d":
        local = instant.astimezone(PARIS_TZ)
        midnight = datetime(local.year, local.month, local.day, tzinfo=PARIS_TZ)
        return midnight.astimezone(UTC)
    step = timedelta(minutes=_FIXED_MINUTES[window])
    return _EPOCH + ((instant - _EPOCH) // step) * step


def next_start(start: datetime, window: str) -> datetime:
    """The start of the window after the one starting at ``start``."""
    check_window(window)
    if window == "1d":
        local = start.astimezone(PARIS_TZ)
        # Add a day in local wall-clock terms, then re-floor: 23 h and 25 h days come out right.
        tomorrow = (local.replace(tzinfo=None) + timedelta(days=1, hours=2)).replace(tzinfo=PARIS_TZ)
        return floor(tomorrow, "1d")
    return start.astimezone(UTC) + timedelta(minutes=_FIXED_MINUTES[window])


def duration_ns(delta: timedelta) -> int:
    """``delta`` in nanoseconds (window widths and margins beside times held as ns)."""
    return int(delta.total_seconds() * 1e9)


def from_ns(ns: int) -> datetime:
    """The aware UTC datetime of nanoseconds since the epoch (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)
