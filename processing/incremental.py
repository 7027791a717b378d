"""What an incremental job works with: the windows new readings made dirty, its report, and the
runner's services (``IndexRunner``).

Index modules register, beside their pure function, how the runner keeps their rows up to date
(``IndexSpec.update``): a function of an ``IndexRunner``, a ``Dirty`` and a ``JobReport``. This
module sits below both the runner and the index modules, so neither reaches the other for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import polars as pl

from processing.windows import MINUTE_NS, floor, from_ns, next_start, window_start
from storage.base import TIME_DTYPE, epoch_ns


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

    def starts(self, window: str, spread: timedelta = timedelta(0)) -> set[int]:
        """Start (ns) of every ``window`` holding a new reading, or up to ``spread`` after one."""
        if self.times.is_empty():
            return set()
        frame = self._minutes().to_frame("time")
        starts = frame.select(window_start(pl.col("time"), window).unique())["time"]
        result = set(starts.cast(pl.Int64).to_list())
        if spread > timedelta(0):
            extra: set[int] = set()
            for start in list(result):
                moment = datetime.fromtimestamp(start / 1e9, tz=UTC)
                limit = moment + spread
                moment = next_start(moment, window)
                while moment <= limit:
                    extra.add(epoch_ns(moment))
                    moment = next_start(moment, window)
            result |= extra
        return result

    def days(self, spread: timedelta = timedelta(0)) -> list[datetime]:
        """The Paris days (their UTC start) holding dirty windows, in order."""
        if self.times.is_empty():
            return []
        times = self._minutes()
        if spread > timedelta(0):
            times = pl.concat([times, (times + spread).cast(TIME_DTYPE)])
        starts = times.to_frame("time").select(window_start(pl.col("time"), "1d").unique().sort())["time"]
        return [datetime.fromtimestamp(int(ns) / 1e9, tz=UTC) for ns in starts.cast(pl.Int64)]

    def _minutes(self) -> pl.Series:
        """The minutes holding new readings: every window (a Paris day too) starts on a minute,
        and a minute of the fleet holds thousands of readings."""
        minutes = (self.times.cast(pl.Int64) // MINUTE_NS * MINUTE_NS).unique()
        return minutes.cast(TIME_DTYPE).alias("time")

    def hour_spans(self) -> list[tuple[datetime, datetime]]:
        """The dirty hours as ``[start, end)`` runs of consecutive hours, cut at Paris midnight
        (so a run never holds more than a day of readings)."""
        return hour_spans(self.starts("1h"))


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
