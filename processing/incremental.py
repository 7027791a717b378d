"""What an incremental job works with: the windows new readings made dirty, its report, and the
runner's services (``IndexRunner``).

Index modules register, beside their pure function, how the runner keeps their rows up to date
(``IndexSpec.update``): a function of an ``IndexRunner``, a ``Dirty`` and a ``JobReport``. This
module sits below both the runner and the index modules, so neither reaches the other for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import polars as pl

from processing.windows import HOUR_NS, MINUTE_NS, WINDOW_WIDTHS, duration_ns, floor, from_ns, next_start
from storage.base import epoch_ns


@dataclass(slots=True)
class JobReport:
    """What one job did in one run."""

    job: str
    windows: int = 0
    rows_written: int = 0
    rows_read: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Dirty:
    """The observed times of new readings of one family: what must be recomputed."""

    times: pl.Series
    """Datetime("ns", "UTC") observed times; several readings in one window count once."""
    arrivals: pl.DataFrame | None = None
    """The readings observed within the horizon (``time``, ``received_at``) received after the
    lowest threshold of the family's jobs, new to this job or not: what tells whether today's
    throttled 1-day rows have pending readings. None in a backfill."""
    backfill: bool = False
    """Every window of the period is to be recomputed now, 1-day rows included."""
    new: pl.DataFrame | None = None
    """``time`` and ``received_at`` of the new readings (those of ``times``); None in a backfill."""

    _minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)
    """The minutes (ns) holding new readings, in order."""

    def __post_init__(self) -> None:
        # Every window (a Paris day too) starts on a minute, and a minute of the fleet holds
        # thousands of readings: the windows follow from these few numbers, in plain Python.
        minutes = (self.times.cast(pl.Int64) // MINUTE_NS * MINUTE_NS).drop_nulls().unique().sort()
        object.__setattr__(self, "_minutes", tuple(minutes.to_list()))

    def starts(self, window: str, spread: timedelta = timedelta(0)) -> set[int]:
        """Start (ns) of every ``window`` holding a new reading, or up to ``spread`` after one."""
        result = _window_starts(self._minutes, window)
        if spread > timedelta(0):
            extra: set[int] = set()
            for start in list(result):
                moment = from_ns(start)
                limit = moment + spread
                moment = next_start(moment, window)
                while moment <= limit:
                    extra.add(epoch_ns(moment))
                    moment = next_start(moment, window)
            result |= extra
        return result

    def days(self, spread: timedelta = timedelta(0)) -> list[datetime]:
        """The Paris days (their UTC start) holding dirty windows, in order."""
        shifted = [m + duration_ns(spread) for m in self._minutes] if spread > timedelta(0) else []
        return [from_ns(day) for day in sorted(_window_starts([*self._minutes, *shifted], "1d"))]

    def hour_spans(self) -> list[tuple[datetime, datetime]]:
        """The dirty hours as ``[start, end)`` runs of consecutive hours, cut at Paris midnight
        (so a run never holds more than a day of readings)."""
        return hour_spans(self.starts("1h"))


def _window_starts(minutes: Sequence[int], window: str) -> set[int]:
    """Start (ns) of every ``window`` holding one of ``minutes`` (ns)."""
    if window != "1d":
        step = duration_ns(WINDOW_WIDTHS[window])
        return {minute // step * step for minute in minutes}
    # A Paris day starts on a UTC hour (the offsets are whole hours): one floor per hour.
    hours = {minute // HOUR_NS * HOUR_NS for minute in minutes}
    return {epoch_ns(floor(from_ns(hour), "1d")) for hour in hours}


def hour_spans(hours: Iterable[int]) -> list[tuple[datetime, datetime]]:
    """Hour starts (ns) as ``[start, end)`` runs of consecutive hours, cut at Paris midnight."""
    spans: list[tuple[datetime, datetime]] = []
    for hour in sorted(hours):
        start = from_ns(hour)
        end = start + timedelta(hours=1)
        if spans and spans[-1][1] == start and floor(start, "1d") != start:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def in_starts(starts: set[int]) -> pl.Expr:
    """Rows whose ``time`` is one of the window ``starts`` (ns)."""
    return pl.col("time").cast(pl.Int64).is_in(sorted(starts))


def within(frame: pl.DataFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Rows of ``frame`` with ``time`` in ``[start, end)``."""
    return frame.filter((pl.col("time") >= start) & (pl.col("time") < end))


def day_range(day: datetime) -> tuple[datetime, datetime]:
    """``[start, end)`` of the Paris day starting at ``day``."""
    return day, next_start(day, "1d")


def day_and_history(
    runner: IndexRunner,
    measurement: str,
    day: datetime,
    report: JobReport,
    *,
    history: timedelta,
    column: str,
) -> tuple[pl.DataFrame, pl.DataFrame | None] | None:
    """Rows of ``measurement`` in the Paris day starting at ``day``, and in the ``history``
    before it (None when none has ``column``); None when the day's rows lack ``column``."""
    day_start, day_end = day_range(day)
    rows = runner.read(measurement, day_start, day_end, report)
    if rows.is_empty() or column not in rows.columns:
        return None
    past = runner.read(measurement, day_start - history, day_start, report)
    return rows, past if not past.is_empty() and column in past.columns else None


class IndexRunner(Protocol):
    """What an index's update function may ask of the runner (``processing.runner.Runner``)."""

    @property
    def now(self) -> datetime:
        """The time of the current run."""
        ...

    def read(
        self,
        measurement: str,
        start: datetime,
        end: datetime,
        report: JobReport,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``measurement`` in ``[start, end)``, counted in ``report``."""
        ...

    def read_raw(self, family: str, start: datetime, end: datetime, report: JobReport) -> pl.DataFrame:
        """Raw readings of ``[start, end)``, with each device's previous counter reading."""
        ...

    def dirty_hours(
        self, family: str, dirty: Dirty, report: JobReport
    ) -> list[tuple[datetime, datetime, pl.DataFrame]]:
        """``[start, end)`` and the readings of each span of dirty hours, previous counter
        readings in front, from what the runner keeps between runs where it can."""
        ...

    def write(self, measurement: str, frame: pl.DataFrame, tags: Sequence[str], report: JobReport) -> None:
        """Write ``frame`` (nothing when empty), counted in ``report``."""
        ...

    def air_hourly_means(
        self, start: datetime, end: datetime, dirty: Dirty, report: JobReport
    ) -> pl.DataFrame:
        """Device hourly means of the pollutants for the hours of ``[start, end)``, kept between runs."""
        ...


UpdateFunc = Callable[[IndexRunner, Dirty, JobReport], None]
"""How the runner keeps an index's rows up to date: recompute and write the rows of the windows
``dirty`` names, counting reads and writes in the report."""
