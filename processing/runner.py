"""The processing runner: reads raw readings from a store, runs the jobs, writes results back.

Incremental and correct under late data:

* every job has a watermark (``processing.watermarks``): the latest ``received_at`` of the raw
  readings it has processed;
* a run asks the store for the arrival times of the readings observed within ``horizon`` of
  now and received after the watermark (minus a ``settle`` margin, for readings received
  before the watermark but written to the store after it, as ingest batches and spools them):
  those are new. The store filters (``Store.arrivals``), so a run reads what arrived, not the
  horizon;
* the windows those new readings fall in are *dirty*: each job recomputes exactly its dirty
  windows from the stored raw readings and rewrites them. Late or back-filled readings make old
  windows dirty, so their aggregates are corrected; nothing else is touched;
* a store write of the same (measurement, tags, time) overwrites, so running twice gives the
  same result (idempotent). ``backfill`` recomputes every window of a period, whatever the
  watermarks say; readings older than ``horizon`` need it.

What a run reads follows what arrived, not the size of the day:

* 1 min, 15 min and 1 h aggregates: each dirty window is computed from its own readings only
  (a new minute: that minute, its quarter, its hour; the minute and the quarter in one pass over
  the quarter's readings), every device of them (a commune window needs all its devices). The
  open hour's 1-hour rows (a p95 over up to an hour of the fleet) are recomputed at most every
  ``hour_refresh`` (5 minutes by default, never more than ``settle``), and once more after the
  hour closes (``_OpenHour``); the minute's and quarter's rows follow every run. The raw
  readings of the latest hours (from the hour ``settle`` ago) are kept between runs
  (``Runner.recent_hour``): a run reads again only the minutes holding a reading the kept hour
  does not hold yet, so a new minute of the fleet reads that minute. An older hour (late data)
  is read whole, and kept while run after run reads it, so a backlog being drained (a gateway
  flushing the hours it held) reads each reading once. The settle margin's readings count as
  new only when the previous run's arrivals did not hold them (``_not_seen_before``). Of the
  minute's and quarter's device rows, a run writes those of the devices whose readings it
  brought, from each one's first new reading on (``_changed_devices``): a fleet reports all
  through the minute, so every run sees a minute in two parts, and the other devices' rows
  are what the last run wrote. Commune rows, which any new reading changes, are all written.
* Families with counters (energy meter, error counters) need each device's previous reading
  for the increase of its first reading in a window: a window's readings are aggregated after
  each device's last readings before them, from the kept hour and the hour before it (kept
  too), and for a device with no reading there, its last reading of the counter earlier in the
  day (``_counter_prefix``; asked once per hour and device, ``Runner.earlier_readings``), so
  increases come out as a full recompute gives them. A reading that arrives late changes the
  increase of its device's next reading too: that reading's minute is recomputed with the
  late one's (``_next_counter_minutes``). A backfill
  reads whole days from the hour before midnight (``COUNTER_LOOKBACK``).
* 1-day aggregate rows need the whole day (a p95 does not compose). A day with readings
  received since their last refresh (today, or a closed day whose late readings arrive) is
  read whole and recomputed at most every ``day_refresh`` (1 hour by default): that is how
  stale a daily row may get, and what keeps a backlog of yesterday draining all morning from
  reading yesterday at every run. A closed day (ended at least ``settle`` ago) is recomputed
  once more when it closes. A day row is always computed from every reading of the day, never
  patched (``_Refresh``, ``_DailyRows``). They are a job of their own (``aggregates_1d:<family>``),
  run with the indices computed from them (``IndexSpec.from_daily_rows``) and the anomaly pass.
* ATMO and EAQI need device hourly means with their coverage rule (processing.indices.air).
  The stored ``air_quality_1h_commune`` aggregates cannot give them (a commune mean over every
  reading is not the worst device's hourly mean, and a reading count is not the minutes
  covered), so the runner keeps the hourly means it computed from raw readings between runs,
  by hour, and recomputes only the hours with new readings (or not kept: after a restart); a
  kept latest hour gives them from per-slot partial sums (``slot_partials``), of which only
  the minutes read again are recomputed.
  ATMO of a day and EAQI of a day (with the 24 hours before it) are then recomputed from the
  kept hours at every run, as cheap as a group-by of a few thousand rows.
* The anomaly pass reads each day it checks whole, with its context (``_anomalies_job``), so
  it runs at most every ``anomaly_refresh`` (15 minutes by default): over the days holding
  readings received since its last pass, and today (silence is only seen by looking).

The jobs that read whole days (``Job.whole_days``) run after the others, whose results are
stored before they start. ``run_forever`` runs them in a loop of their own, in a thread, every
``whole_days_interval``: a pass over the day so far reads a day of the fleet, which takes
minutes for a large one, and the minute aggregates do not wait for it. ``run_once`` and
``backfill`` run every job in turn.

Results equal a full recompute (``backfill``) of the same readings: the same rows, counts,
p95, classes and times; means computed by a polars group-by may differ in the last bit
(polars sums a group in an order that depends on the frame around it).

Finding what arrived is one ``Store.arrivals`` query per family and run, from the lowest
threshold its jobs need: each job's watermark or settle margin, and for a job whose days are
due for a refresh (``_Refresh``), the arrivals since its last refresh. A job that never ran needs
the whole horizon. ``RunReport.arrivals_read`` counts the rows it returned: about ``settle``
of readings per run, where reading the horizon cost 16 million rows for 2,000 stations.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, get_args

import polars as pl

import processing.indices  # noqa: F401 - the index modules register themselves in the catalogue
from processing.aggregates import aggregate_all, spec_of
from processing.config import ProcessingSettings
from processing.incremental import Dirty, JobReport, day_range, hour_spans, in_starts, within
from processing.indices.air import (
    hourly_means,
    means_from_partials,
    slot_ns,
    slot_of,
    slot_partials,
)
from processing.indices.scales import POLLUTANTS
from processing.watermarks import Watermarks
from processing.windows import (
    HOUR_NS,
    MINUTE_NS,
    WINDOW_WIDTHS,
    duration_ns,
    floor,
    from_ns,
    next_start,
    window_start,
)
from sensors.catalogue import LEVEL_TAGS, LEVELS, WINDOWS, Level, aggregate_measurement, indices
from sensors.families import FAMILIES, Family
from storage.base import TIME_DTYPE, Store, Write, WriteReport, epoch_ns

__all__ = ["Dirty", "Job", "JobReport", "RunReport", "Runner", "hour_spans"]

log = logging.getLogger(__name__)

DEFAULT_HORIZON = timedelta(hours=24)
DEFAULT_SETTLE = timedelta(minutes=15)
ANOMALY_CONTEXT = timedelta(hours=6)
"""Readings before the first dirty day given to the anomaly pass, so that rolling medians and
flatlines have their past; anomalies starting in that context are left as they were."""
DEFAULT_DAY_REFRESH = timedelta(hours=1)
DEFAULT_HOUR_REFRESH = timedelta(minutes=5)
DEFAULT_ANOMALY_REFRESH = timedelta(minutes=15)
COUNTER_LOOKBACK = timedelta(hours=1)
"""Readings before a day that counters need: the first increase of the day needs the last
reading of the day before."""
SUB_DAY_WINDOWS = tuple(w for w in WINDOWS if w != "1d")
HOURLY_CACHE_EXTRA = timedelta(days=2)
"""Hourly means are kept this long past the horizon: a day's EAQI needs the 24 hours before it."""


@dataclass(slots=True)
class RunReport:
    """What a run did, job by job."""

    jobs: list[JobReport] = field(default_factory=list)
    arrivals_read: int = 0
    """Rows read to find what arrived: the readings of the horizon received after the lowest
    threshold of each family's jobs (see ``Runner._arrivals_threshold``)."""
    arrivals_seconds: float = 0.0
    storing_seconds: float = 0.0
    """Time spent storing the jobs' results (``Store.write_many``), apart from any job's: a run
    stores what it holds before a job reads, and that write is not the reading job's work."""

    @property
    def rows_written(self) -> int:
        """Rows written by every job."""
        return sum(job.rows_written for job in self.jobs)

    @property
    def failed(self) -> list[JobReport]:
        """Jobs that raised."""
        return [job for job in self.jobs if job.error is not None]


JobFunc = Callable[["Runner", Dirty, JobReport], None]


@dataclass(frozen=True, slots=True)
class Job:
    """A job: its name (the watermark key), the raw family it follows, and what it does."""

    name: str
    family: str
    run: JobFunc
    refresh: timedelta | None = None
    """How often the job recomputes the days its readings fall in, when it throttles them (the
    1-day rows, the anomaly pass: each reads its days whole): the arrivals read must then also
    reach back to its last refresh, not only to the job's watermark (``_Refresh``)."""
    whole_days: bool = False
    """Reads whole days (the 1-day rows, the indices computed from them, the anomaly pass): run
    after the others, and by ``run_forever`` in a loop of their own (``Part``)."""


Part = Literal["all", "incremental", "whole_days"]
"""Which jobs a runner runs: every one; those that follow what arrived minute by minute (the 1
min, 15 min and 1 h aggregates and the indices); or those that read whole days (``Job.whole_days``)."""


class Runner:
    """Runs the processing jobs against a store. See the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        families: Iterable[str] | None = None,
        communes: Iterable[str] | None = None,
        horizon: timedelta = DEFAULT_HORIZON,
        settle: timedelta = DEFAULT_SETTLE,
        day_refresh: timedelta = DEFAULT_DAY_REFRESH,
        hour_refresh: timedelta = DEFAULT_HOUR_REFRESH,
        anomaly_refresh: timedelta = DEFAULT_ANOMALY_REFRESH,
        anomalies: bool = True,
        anomaly_options: dict[str, Any] | None = None,
        part: Part = "all",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if part not in get_args(Part):
            raise ValueError(f"part must be one of {', '.join(get_args(Part))}, not {part!r}")
        self.store = store
        self.families = [Family(f).value for f in (families or [f.value for f in FAMILIES])]
        # Only these communes' readings are read (None: all). Right for every job but the
        # anomaly pass, whose thresholds are learned from the whole fleet (processing.distributed).
        self.communes = sorted(set(communes)) if communes is not None else None
        self.horizon = horizon
        self.settle = settle
        self.day_refresh = day_refresh
        # A restarted runner knows which hours' rows are stale only through the settle margin
        # (``_OpenHour``): they may not wait longer than it.
        self.hour_refresh = min(hour_refresh, settle)
        self.anomaly_refresh = anomaly_refresh
        self.anomalies = anomalies
        self.anomaly_options = dict(anomaly_options or {})
        self.part = part
        self.clock = clock
        self.watermarks = Watermarks(store)
        self._now = clock()
        self._previous_now = self._now
        self._run = 0
        # Device hourly means of air_quality by hour start (ns), with the run that computed
        # them: valid until a reading of their hour arrives, which makes the hour dirty.
        self._hourly: dict[int, tuple[int, pl.DataFrame]] = {}
        # The arrivals (``time``, ``received_at``) each family's last run read, with its number:
        # what tells the settle margin's stragglers from readings already processed.
        self._arrived_before: dict[str, tuple[int, pl.DataFrame]] = {}
        # Raw readings of the latest hours by (family, hour start), refreshed minute by minute.
        self._recent: dict[tuple[str, int], _KeptHour] = {}
        # What ``earlier_readings`` found by (family, span start ns, counters): asked of the store
        # once per device, not at every run, until a reading arrives in the range it read.
        self._earlier: dict[tuple[str, int, tuple[str, ...]], _EarlierReadings] = {}
        # By job: the open hour whose 1-hour rows were last computed, and when, and the hours
        # whose 1-hour rows wait for a refresh (``_OpenHour``).
        self._hour_refreshed: dict[str, tuple[int, datetime]] = {}
        self._hour_pending: dict[str, set[int]] = {}
        # Watermarks as the run began, and those it sets (written once, at its end).
        self._marks: dict[str, tuple[int, int]] = {}
        self._marks_out: dict[str, int] = {}
        # A run's results, with the report of the job that made each, until the run stores them
        # with its watermarks in one ``Store.write_many`` (None: outside a run, written at once).
        self._pending: list[tuple[Write, JobReport]] | None = None
        self._storing_seconds = 0.0

    @classmethod
    def from_settings(
        cls,
        store: Store,
        settings: ProcessingSettings,
        *,
        families: Iterable[str] | None = None,
        anomalies: bool = True,
    ) -> Runner:
        """The runner ``settings`` (``[processing]``) describe, over ``store``: what ``smartcity
        process`` runs, and the demo's processing thread. ``anomalies=False`` skips the anomaly
        pass whatever the settings say (``--no-anomalies``)."""
        return cls(
            store,
            families=families,
            horizon=timedelta(seconds=settings.horizon_s),
            settle=timedelta(seconds=settings.settle_s),
            day_refresh=timedelta(seconds=settings.day_refresh_s),
            hour_refresh=timedelta(seconds=settings.hour_refresh_s),
            anomaly_refresh=timedelta(seconds=settings.anomaly_refresh_s),
            anomalies=settings.anomalies and anomalies,
        )

    # -- jobs ----------------------------------------------------------------------------------

    def jobs(self) -> list[Job]:
        """The jobs of this runner's ``part``, in the order they must run (indices read the
        aggregates; those that read whole days come last)."""
        every: list[Job] = [Job(f"aggregates:{f}", f, _aggregates_job) for f in self.families]
        for family in self.families:
            every += [
                Job(name, family, spec.update)
                for name, spec in indices().items()
                if spec.family == family and not spec.from_daily_rows
            ]
        every += [
            Job(f"aggregates_1d:{f}", f, _daily_job, refresh=self.day_refresh, whole_days=True)
            for f in self.families
        ]
        for family in self.families:
            every += [
                Job(name, family, spec.update, whole_days=True)
                for name, spec in indices().items()
                if spec.family == family and spec.from_daily_rows
            ]
        if self.anomalies:
            every += [
                Job(f"anomalies:{f}", f, _anomalies_job, refresh=self.anomaly_refresh, whole_days=True)
                for f in self.families
            ]
        if self.part == "all":
            return every
        return [job for job in every if job.whole_days == (self.part == "whole_days")]

    def with_part(self, part: Part) -> Runner:
        """A runner of the same store and settings that runs ``part`` of the jobs."""
        return Runner(
            self.store,
            families=self.families,
            communes=self.communes,
            horizon=self.horizon,
            settle=self.settle,
            day_refresh=self.day_refresh,
            hour_refresh=self.hour_refresh,
            anomaly_refresh=self.anomaly_refresh,
            anomalies=self.anomalies,
            anomaly_options=self.anomaly_options,
            part=part,
            clock=self.clock,
        )

    # -- runs ----------------------------------------------------------------------------------

    def run_once(self) -> RunReport:
        """Process what arrived since each job's watermark; return what was done."""
        self._start_run()
        self._pending = []
        try:
            return self._run_jobs()
        finally:
            self._pending = None

    def _run_jobs(self) -> RunReport:
        report = RunReport()
        self._storing_seconds = 0.0
        jobs = self.jobs()
        # Read before any job runs: a job moves only its own watermark, so these stay the
        # values each job would have read when its turn came.
        marks = {job.name: self.mark(job.name) for job in jobs}
        arrivals: dict[str, pl.DataFrame] = {}
        stored_before_whole_days = False
        for job in jobs:
            if job.whole_days and not stored_before_whole_days:
                # Jobs that read whole days may take long: what the others computed is stored
                # first, not held behind them (their watermarks still move with the run's end).
                self._store_pending()
                stored_before_whole_days = True
            if job.family not in arrivals:
                # One read per family, from the lowest threshold any of its jobs needs.
                family_jobs = [j for j in jobs if j.family == job.family]
                started = time.perf_counter()
                arrivals[job.family] = self._arrivals(
                    job.family, self._arrivals_threshold(family_jobs, marks)
                )
                report.arrivals_read += arrivals[job.family].height
                self._drop_earlier_overtaken(job.family, arrivals[job.family])
                report.arrivals_seconds += time.perf_counter() - started
            seen = arrivals[job.family]
            found = marks[job.name]
            mark = found[0] if found else None
            threshold = self._new_after(found)
            new = seen if threshold is None else seen.filter(pl.col("received_at") > threshold)
            new = self._not_seen_before(job.family, found, new)
            dirty = Dirty(new["time"], arrivals=seen, new=new)
            job_report = self._run_job(job, dirty)
            report.jobs.append(job_report)
            # ``seen`` holds every reading of the horizon received after a threshold at or below
            # ``mark``: its latest arrival is the horizon's, or nothing later than ``mark`` arrived.
            known = [int(v) for v in (seen["received_at"].max(), mark) if v is not None]  # type: ignore[arg-type]
            if job_report.error is None and known:
                self.set_mark(job.name, max(known))
        self._store_pending(with_marks=True)
        report.storing_seconds = self._storing_seconds
        self._marks_out = {}
        self._arrived_before = {family: (self._run, seen) for family, seen in arrivals.items()}
        return report

    def _not_seen_before(self, family: str, found: tuple[int, int] | None, new: pl.DataFrame) -> pl.DataFrame:
        """``new`` without the readings of the settle margin that the previous run already gave
        this job.

        The margin makes every reading received up to ``settle`` before the last run new again,
        for the few written to the store after it. Recomputing all of them costs ``settle`` of
        readings at every run: little at real time, where the kept hours hold them
        (``recent_hour``), but every window of a backlog being drained (a gateway flushing a
        day) or of a replay. A reading of the margin is a straggler when the previous run's
        arrivals did not hold it: counted by ``time`` and ``received_at``, as ``_unseen_minutes``
        does. Only when the previous run of this runner set the job's watermark (it ran, and its
        results were stored); otherwise the whole margin stays new.
        """
        before = self._arrived_before.get(family)
        if (
            found is None
            or before is None
            or before[0] != self._run - 1
            or found[1] != epoch_ns(self._previous_now)
        ):
            return new
        mark = found[0]
        again = new.filter(pl.col("received_at") <= mark)
        if again.is_empty():
            return new
        keys = ["time", "received_at"]
        lowest = again["received_at"].min()
        previously = (
            before[1].filter(pl.col("received_at").is_between(lowest, mark)).group_by(keys).len("before")
        )
        unseen = (
            again.group_by(keys)
            .len("now")
            .join(previously, on=keys, how="left")
            .filter(pl.col("before").is_null() | (pl.col("before") < pl.col("now")))
            .select(keys)
        )
        return pl.concat([new.filter(pl.col("received_at") > mark), again.join(unseen, on=keys, how="semi")])

    def _store_pending(self, *, with_marks: bool = False) -> None:
        """Store the results the run holds in one ``Store.write_many``, with the run's watermarks
        at its end (they move only with the results). When the store fails, the jobs whose
        results were in it fail, their watermarks stay, and the next run redoes them."""
        pending, self._pending = self._pending or [], []
        marks = self.watermarks.write_of(self._marks_out, now=self._now) if with_marks else None
        writes = [write for write, _ in pending] + ([marks] if marks is not None else [])
        if not writes:
            return
        started = time.perf_counter()
        try:
            results = self.store.write_many(writes)
        except Exception as exc:
            log.exception("processing run: storing its results failed")
            jobs = {job.name: job for job in self.jobs()}
            for failed in {id(job): job for _, job in pending}.values():
                failed.error = failed.error or f"{type(exc).__name__}: {exc}"
                self._forget(jobs[failed.job])
                self._marks_out = {
                    key: mark
                    for key, mark in self._marks_out.items()
                    if key != failed.job and not key.startswith(f"{failed.job}/")
                }
            return
        finally:
            self._storing_seconds += time.perf_counter() - started
        for (write, job), result in zip(pending, results, strict=False):
            _count_written(write.measurement, result, job)

    def backfill(self, start: datetime, end: datetime, *, jobs: Sequence[str] | None = None) -> RunReport:
        """Recompute every window of ``[start, end)`` from the stored readings, whatever the watermarks."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("backfill needs time-zone-aware start and end")
        if end <= start:
            raise ValueError(f"backfill: end {end.isoformat()} is not after start {start.isoformat()}")
        self._start_run()
        # Every minute of the period is dirty: the windows of every size follow.
        grid = pl.datetime_range(
            floor(start, "1m"),
            end.astimezone(UTC),
            "1m",
            closed="left",
            eager=True,
            time_unit="ns",
            time_zone="UTC",
        )
        dirty = Dirty(grid.cast(TIME_DTYPE), backfill=True)
        report = RunReport()
        for job in self.jobs():
            if jobs and job.name not in jobs and job.name.split(":")[0] not in jobs:
                continue
            report.jobs.append(self._run_job(job, dirty))
        self._save_marks()
        return report

    def run_forever(self, interval_s: float, *, stop: Callable[[], bool] = lambda: False) -> None:
        """``run_once`` every ``interval_s`` seconds until ``stop()`` is true.

        A runner of every job runs them in two loops (``with_part``): the jobs that follow what
        arrived, every ``interval_s``, and in a thread of its own, those that read whole days,
        every ``whole_days_interval``: a pass over the day so far may take minutes, and the
        minute aggregates must not wait for it.
        """
        if self.part != "all":
            self._loop(interval_s, stop)
            return
        slow = self.with_part("whole_days")
        thread = threading.Thread(
            target=slow._loop,
            args=(max(interval_s, self.whole_days_interval.total_seconds()), stop),
            name="processing-whole-days",
            daemon=True,
        )
        thread.start()
        self.with_part("incremental")._loop(interval_s, stop)
        # Left by an interrupt instead (stop() still false), the daemon thread dies with the process.
        thread.join()

    @property
    def whole_days_interval(self) -> timedelta:
        """How often ``run_forever`` runs the jobs that read whole days: as often as the first
        of them may refresh its days (each throttles itself, ``_Refresh``)."""
        return min(self.day_refresh, self.anomaly_refresh) if self.anomalies else self.day_refresh

    def _loop(self, interval_s: float, stop: Callable[[], bool]) -> None:
        while not stop():
            started = time.monotonic()
            try:
                report = self.run_once()
                slowest = max(report.jobs, key=lambda job: job.seconds, default=None)
                # The run's time and its slowest job: what an operator watching the lag asks first.
                log.info(
                    "processing run (%s): %.2f s, %d rows read, %d written by %d jobs (storing %.2f s), "
                    "%d failed%s",
                    self.part,
                    time.monotonic() - started,
                    sum(job.rows_read for job in report.jobs),
                    report.rows_written,
                    len(report.jobs),
                    report.storing_seconds,
                    len(report.failed),
                    f"; slowest {slowest.job} {slowest.seconds:.2f} s" if slowest else "",
                )
            except Exception:
                # One bad run (store down) must not stop the scheduler: the next run catches up.
                log.exception("processing run (%s) failed; retrying at the next interval", self.part)
            deadline = started + interval_s
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))

    # -- helpers used by the jobs --------------------------------------------------------------

    @property
    def now(self) -> datetime:
        """The time of the current run."""
        return self._now

    def read(
        self,
        measurement: str,
        start: datetime,
        end: datetime,
        report: JobReport,
        fields: Sequence[str] | None = None,
        *,
        devices: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rows of ``measurement`` in ``[start, end)`` (``fields`` only, and of ``devices``
        only, when given), counted in ``report``."""
        if self._pending:
            self._store_pending()  # a job may read what an earlier one wrote (indices, aggregates)
        where: dict[str, list[str]] = {}
        if self.communes is not None:
            where["insee"] = list(self.communes)
        if devices is not None:
            where["device_id"] = sorted(set(devices))
        frame = self.store.read(measurement, start=start, end=end, where=where or None, fields=fields)
        report.rows_read += frame.height
        return frame

    def dirty_hours(
        self, family: str, dirty: Dirty, report: JobReport
    ) -> list[tuple[datetime, datetime, pl.DataFrame]]:
        """The readings of each span of dirty hours, with each device's previous counter
        readings in front: in a run, hour by hour from the kept hours (``recent_hour``: what
        the aggregates job already read costs nothing more); in a backfill, runs of
        consecutive hours read whole."""
        if dirty.backfill:
            return [
                (start, end, self.read_raw(family, start, end, report)) for start, end in dirty.hour_spans()
            ]
        hours = []
        for hour in sorted(dirty.starts("1h")):
            frame, _ = self.recent_hour(family, hour, dirty, report)
            rows = _with_counter_prefix(self, family, hour, frame, report)
            hours.append((from_ns(hour), from_ns(hour + HOUR_NS), rows))
        return hours

    def earlier_readings(
        self, family: str, start: datetime, counters: Sequence[str], devices: Iterable[str], report: JobReport
    ) -> pl.DataFrame:
        """Each of ``devices``' last reading of each of ``counters`` earlier in the day than
        ``COUNTER_LOOKBACK`` before ``start``, in time order (``_earlier_in_day``).

        A device is looked for once per span start: one with no such reading (a fleet that began
        reporting this hour, a gateway back from an outage) is not asked for again at the next
        run, which for thousands of devices would be one query naming every one of them a minute.
        A reading arriving in that range drops what was found (``_drop_earlier_overtaken``).
        """
        wanted = set(devices)
        key = (family, epoch_ns(start), tuple(counters))
        memo = self._earlier.setdefault(key, _EarlierReadings(set(), None, self._run))
        memo.run = self._run
        missing = sorted(wanted - memo.asked)
        if missing:
            earliest, end = _earlier_span(start)
            older = self.read(family, earliest, end, report, fields=counters, devices=missing)
            last = _last_counter_readings(older, counters)
            if memo.found is not None and not memo.found.is_empty():
                last = pl.concat([memo.found, last], how="diagonal_relaxed").sort("time", maintain_order=True)
            memo.found = last
            memo.asked.update(missing)
        assert memo.found is not None  # set by the first call, which misses every device
        return memo.found.filter(pl.col("device_id").is_in(list(wanted)))

    def _drop_earlier_overtaken(self, family: str, arrived: pl.DataFrame) -> None:
        """Forget what ``earlier_readings`` found for a span start when one of the ``arrived``
        readings falls in the range it read (a late reading can be a device's last one there)."""
        if arrived.is_empty():
            return
        times = arrived["time"].cast(pl.Int64)
        for key in [key for key in self._earlier if key[0] == family]:
            earliest, end = _earlier_span(from_ns(key[1]))
            if times.is_between(epoch_ns(earliest), epoch_ns(end), closed="left").any():
                del self._earlier[key]

    def read_raw(self, family: str, start: datetime, end: datetime, report: JobReport) -> pl.DataFrame:
        """Raw readings of ``family`` in ``[start, end)``, with the previous reading of each
        device's counters that an increase at ``start`` needs (``_read_raw``)."""
        return _read_raw(self, family, start, end, report)

    def air_hourly_means(
        self, start: datetime, end: datetime, dirty: Dirty, report: JobReport
    ) -> pl.DataFrame:
        """Device hourly means of the pollutants (``hourly_means``) for the hours of ``[start, end)``.

        Hours kept from earlier runs are reused unless ``dirty`` has new readings in them; the
        others are read from the raw readings (all fields, as a full recompute reads them) and
        kept. The result is the same frame as ``hourly_means`` of the raw readings of the period.
        """
        first = epoch_ns(floor(start, "1h"))
        hours = list(range(first, epoch_ns(end), HOUR_NS))
        fresh = dirty.starts("1h")
        stale = [
            hour
            for hour in hours
            if hour not in self._hourly or (hour in fresh and self._hourly[hour][0] != self._run)
        ]
        period = FAMILIES[Family.AIR_QUALITY].reporting_period_s
        recent_from = self._recent_from()
        kept = {hour for hour in stale if hour >= recent_from or ("air_quality", hour) in self._recent}
        for hour in kept:
            self._hourly[hour] = (self._run, self._recent_means(hour, dirty, report, period))
        for span_start, span_end in hour_spans(hour for hour in stale if hour not in kept):
            raw = self.read("air_quality", span_start, span_end, report)
            means = (
                _EMPTY_HOURLY if raw.is_empty() else hourly_means(raw, POLLUTANTS, reporting_period_s=period)
            )
            by_hour = {
                int(key[0]): part.drop("_hour")
                for key, part in means.with_columns(_hour=pl.col("time").cast(pl.Int64))
                .partition_by("_hour", as_dict=True)
                .items()
            }
            for hour in range(epoch_ns(span_start), epoch_ns(span_end), HOUR_NS):
                self._hourly[hour] = (self._run, by_hour.get(hour, _EMPTY_HOURLY))
        return pl.concat([self._hourly[hour][1] for hour in hours])

    def recent_hour(
        self, family: str, hour: int, dirty: Dirty, report: JobReport
    ) -> tuple[pl.DataFrame, set[int] | None]:
        """Raw readings of ``family`` in the hour starting at ``hour`` (ns), as the store holds
        them, and the minutes (ns) read again in this run (None: the whole hour was).

        An hour of the latest ones (see ``_recent_from``) is kept between runs, and a run reads
        again only its minutes holding a new reading (``dirty``) it does not hold yet: a minute
        with no new reading holds what it held when it was read, as the arrivals and their
        settle margin say (the same rule that lets a run recompute only its dirty windows).
        An older hour is read whole, and kept while run after run reads it (a backlog being
        drained). A job that fails drops its family's kept hours, so that the next run reads,
        and recomputes, them whole.
        """
        kept = self._kept_hour(family, hour, dirty, report)
        return kept.frame, kept.minutes

    def _recent_from(self) -> int:
        """Start (ns) of the oldest hour kept between runs: the hour ``settle`` before the
        previous run, where the readings a run may still receive, or see again, fall."""
        # No more than an hour further back: after a long pause the hours between are read
        # whole, as they would be without keeping.
        since = max(min(self._now, self._previous_now), self._now - timedelta(hours=1))
        return epoch_ns(floor(since - self.settle, "1h"))

    def _kept_hour(self, family: str, hour: int, dirty: Dirty, report: JobReport) -> _KeptHour:
        key = (family, hour)
        kept = self._recent.get(key)
        if kept is None:
            frame = self.read(family, from_ns(hour), from_ns(hour + HOUR_NS), report)
            kept = _KeptHour(frame, self._run, None)
            self._recent[key] = kept
            return kept
        already = set() if kept.run != self._run else kept.minutes
        if already is None:
            return kept  # read whole in this run
        if kept.run != self._run:
            kept.checked = set()
            kept.new = None
        # Minutes already checked in this run (by another job) hold nothing unseen.
        stale = {m for m in dirty.starts("1m") if hour <= m < hour + HOUR_NS} - already - kept.checked
        kept.checked |= stale
        if stale:
            stale = _unseen_minutes(kept.frame, dirty, stale)
        if stale:
            minute = pl.col("time").cast(pl.Int64) // MINUTE_NS * MINUTE_NS
            fresh = [
                self.read(family, start, end, report)
                for start, end in _spans(sorted(stale), MINUTE_NS, HOUR_NS)
            ]
            held = minute.is_in(sorted(stale))
            added = _not_held(kept.frame.filter(held), [f for f in fresh if f.width])
            kept.new = added if kept.new is None else pl.concat([kept.new, added], how="vertical_relaxed")
            frames = [kept.frame.filter(~held), *fresh]
            kept.frame = pl.concat([f for f in frames if f.width], how="diagonal_relaxed")
            kept.stale_minutes |= stale
        kept.run, kept.minutes = self._run, already | stale
        return kept

    def new_in_hour(self, family: str, hour: int) -> pl.DataFrame | None:
        """Device tags and ``time`` of the readings of the kept hour starting at ``hour`` (ns)
        that this run read and the hour did not hold before; None: this run read the hour whole
        (or keeps none of it), every reading of it counts as new."""
        kept = self._recent.get((family, hour))
        if kept is None or kept.minutes is None:
            return None
        if kept.run != self._run or kept.new is None:
            return _NEW_NONE
        return kept.new

    def counter_prefix_changed(self, family: str, hour: int, prefix: pl.DataFrame) -> pl.DataFrame | None:
        """The devices whose counters' previous readings before the hour starting at ``hour``
        (ns) differ from those its windows were last computed with (None: not known, every
        device counts as changed); ``prefix`` becomes what they were computed with."""
        kept = self._recent.get((family, hour))
        if kept is None:
            return None
        before, kept.prefix = kept.prefix, prefix
        if before is None or set(before.columns) != set(prefix.columns):
            return None
        columns = sorted(prefix.columns)
        gone = before.select(columns).join(prefix.select(columns), on=columns, how="anti", nulls_equal=True)
        came = prefix.select(columns).join(before.select(columns), on=columns, how="anti", nulls_equal=True)
        return pl.concat([gone, came]).select(_DEVICE).unique()

    def keep_recent(self, family: str, raw: pl.DataFrame) -> None:
        """Keep the latest hours of ``raw`` (every reading of them, as just read in this run),
        and for counters the hour before them, whose last readings their first increases need."""
        first = self._recent_from() - (HOUR_NS if _counters(family) else 0)
        if raw.is_empty():
            return
        hours = raw.select((pl.col("time").cast(pl.Int64) // HOUR_NS * HOUR_NS).unique())[:, 0]
        for hour in hours.filter(hours >= first).to_list():
            part = raw.filter(pl.col("time").cast(pl.Int64).is_between(hour, hour + HOUR_NS, closed="left"))
            self._recent[(family, int(hour))] = _KeptHour(part, self._run, None)

    def _recent_means(self, hour: int, dirty: Dirty, report: JobReport, period: float) -> pl.DataFrame:
        """``hourly_means`` of a kept hour, from its coverage slots (only those of the minutes
        read again are recomputed)."""
        kept = self._kept_hour("air_quality", hour, dirty, report)
        if kept.frame.is_empty():
            return _EMPTY_HOURLY
        if kept.means is not None and kept.partials is not None and not kept.stale_minutes:
            # The settle margin makes the hour dirty again with nothing read again in it.
            return kept.means
        if kept.partials is None:
            kept.partials = slot_partials(kept.frame, POLLUTANTS, reporting_period_s=period)
        elif kept.stale_minutes:
            slots = sorted({m // slot_ns(period) for m in kept.stale_minutes})
            stale = slot_of(period).is_in(slots)
            fresh = slot_partials(kept.frame.filter(stale), POLLUTANTS, reporting_period_s=period)
            kept.partials = pl.concat(
                [kept.partials.filter(~pl.col("slot").is_in(slots)), fresh], how="diagonal_relaxed"
            )
        kept.stale_minutes = set()
        kept.means = means_from_partials(kept.partials, POLLUTANTS, reporting_period_s=period)
        return kept.means

    def write(self, measurement: str, frame: pl.DataFrame, tags: Sequence[str], report: JobReport) -> None:
        """Write ``frame`` (nothing when empty), counted in ``report``."""
        fields = [c for c in frame.columns if c != "time" and c not in tags]
        # A row without any value (an hour where no index could be computed) is not a point.
        frame = frame.filter(pl.any_horizontal(pl.col(fields).is_not_null())) if fields else frame
        if frame.is_empty():
            return
        if self._pending is not None:
            self._pending.append((Write(measurement, frame, list(tags)), report))
            return
        _count_written(measurement, self.store.write(measurement, frame, tags=list(tags)), report)

    def mark(self, key: str) -> tuple[int, int] | None:
        """The watermark ``key`` and the time of the run that set it, as this run began."""
        return self._marks.get(key)

    def set_mark(self, key: str, value: int) -> None:
        """Set the watermark ``key``; written with the others at the end of the run."""
        self._marks_out[key] = value

    def _save_marks(self) -> None:
        # One write per run: a run that dies before it redoes its work next time, idempotently.
        self.watermarks.set_many(self._marks_out, now=self._now)
        self._marks_out = {}

    def _start_run(self) -> None:
        # The settle margin reaches back from the previous run (``_new_after``): its hour is kept.
        self._previous_now = self._now
        self._now = self.clock()
        self._run += 1
        self._marks = self.watermarks.snapshot(now=self._now)
        self._marks_out = {}
        # Hours observed before the horizon never turn dirty, so what is kept of them could go
        # stale: they are dropped once no EAQI day (the day and the 24 hours before) needs them.
        oldest = epoch_ns(self._now - self.horizon - HOURLY_CACHE_EXTRA)
        self._hourly = {hour: kept for hour, kept in self._hourly.items() if hour >= oldest}
        recent_from = self._recent_from()
        # An older hour the previous run read stays too: a backlog being drained (a gateway
        # flushing yesterday) fills it minute by minute, run after run, as the clock fills today's.
        self._recent = {
            key: kept
            for key, kept in self._recent.items()
            if key[1] >= recent_from or kept.run >= self._run - 1
        }
        self._earlier = {
            key: found
            for key, found in self._earlier.items()
            if key[1] >= recent_from or found.run >= self._run - 1
        }

    def _new_after(self, found: tuple[int, int] | None) -> int | None:
        """The ``received_at`` above which readings are new to a job whose watermark and last
        run time are ``found`` (None: the job never ran, every reading is new)."""
        if found is None:
            return None
        # Readings received after the watermark are new; so are those received shortly before
        # the last run that may have reached the store only after it.
        return min(found[0], found[1] - duration_ns(self.settle))

    def _arrivals_threshold(
        self, jobs: Sequence[Job], marks: dict[str, tuple[int, int] | None]
    ) -> int | None:
        """The lowest ``received_at`` threshold the ``jobs`` of one family need (None: all).

        Each job needs the readings new to it; a job that throttles its days also needs the
        readings received since their last refresh, when one is due.
        """
        thresholds: list[int] = []
        for job in jobs:
            after = self._new_after(marks[job.name])
            if after is None:
                return None
            thresholds.append(after)
            if job.refresh is not None:
                due, pending_after = _Refresh(self, job.name, job.refresh).due()
                if due and pending_after is None:
                    return None
                if due and pending_after is not None:
                    thresholds.append(pending_after)
        return min(thresholds) if thresholds else None

    def _arrivals(self, family: str, received_after_ns: int | None) -> pl.DataFrame:
        """``time`` and ``received_at`` of the readings observed within the horizon and received
        after ``received_after_ns``: the store filters, so a run reads what arrived, not the
        horizon."""
        return self.store.arrivals(
            family,
            start=self._now - self.horizon,
            end=self._now + timedelta(days=2),
            received_after_ns=received_after_ns,
        )

    def _run_job(self, job: Job, dirty: Dirty) -> JobReport:
        report = JobReport(job.name)
        started, stored_before = time.perf_counter(), self._storing_seconds
        try:
            job.run(self, dirty, report)
        except Exception as exc:
            # One failing job (a bug, a store error) must not stop the others; its watermark
            # stays, so the next run retries its windows.
            log.exception("processing job %s failed", job.name)
            report.error = f"{type(exc).__name__}: {exc}"
            self._forget(job)
        # The results of earlier jobs stored before this one read are the run's storing time.
        report.seconds = time.perf_counter() - started - (self._storing_seconds - stored_before)
        return report

    def _forget(self, job: Job) -> None:
        """Drop what a failed job's family kept between runs, so that the next run reads, and
        recomputes, its hours whole."""
        self._recent = {key: kept for key, kept in self._recent.items() if key[0] != job.family}
        self._earlier = {key: found for key, found in self._earlier.items() if key[0] != job.family}
        self._hour_refreshed.pop(job.name, None)


@dataclass(slots=True)
class _KeptHour:
    """Raw readings of one hour of one family, kept between runs (``Runner.recent_hour``)."""

    frame: pl.DataFrame
    run: int
    """The last run that read some of it."""
    minutes: set[int] | None
    """Minutes (ns) that run read again; None: it read the whole hour."""
    partials: pl.DataFrame | None = None
    """Coverage-slot partials of the hourly means (air quality), once computed."""
    stale_minutes: set[int] = field(default_factory=set)
    """Minutes read again since ``partials`` were computed."""
    means: pl.DataFrame | None = None
    """The hourly means ``partials`` give, once computed."""
    checked: set[int] = field(default_factory=set)
    """Minutes ``run`` checked for readings the hour did not hold."""
    new: pl.DataFrame | None = None
    """Device tags and ``time`` of the readings ``run`` read that the hour did not hold
    before (None when ``minutes`` is: every reading is)."""
    prefix: pl.DataFrame | None = None
    """The counters' previous readings its windows were last computed with (``_counter_prefix``)."""


@dataclass(slots=True)
class _EarlierReadings:
    """What ``Runner.earlier_readings`` found for one span start of one family."""

    asked: set[str]
    """Devices looked for."""
    found: pl.DataFrame | None
    """The last counter readings of those that had any (None: nothing asked yet)."""
    run: int
    """The last run that used it."""


def _count_written(measurement: str, result: WriteReport, report: JobReport) -> None:
    report.rows_written += result.written
    for rejected in result.rejected[:5]:
        log.warning("%s: the store refused row %d: %s", measurement, rejected.row, rejected.reason)


_DEVICE = list(LEVEL_TAGS["device"])
_NEW_NONE = pl.DataFrame(schema={"insee": pl.String, "device_id": pl.String, "time": TIME_DTYPE})


def _not_held(held: pl.DataFrame, read: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Device tags and ``time`` of the rows of ``read`` that ``held`` (the same minutes as kept
    before) does not hold as they are: a new reading, or one the store now holds otherwise."""
    if not read:
        return _NEW_NONE
    fresh = pl.concat(read, how="diagonal_relaxed")
    if set(fresh.columns) == set(held.columns):
        columns = fresh.columns
        held = held.select(pl.col(c).cast(fresh.schema[c], strict=False) for c in columns)
        fresh = fresh.join(held, on=columns, how="anti", nulls_equal=True)
    return fresh.select(pl.col(_DEVICE).cast(pl.String), pl.col("time").cast(TIME_DTYPE))


def _unseen_minutes(frame: pl.DataFrame, dirty: Dirty, minutes: set[int]) -> set[int]:
    """The ``minutes`` (ns) holding a new reading that ``frame`` does not hold yet.

    The settle margin makes the readings received shortly before the last run new again at
    every run: most of them are already kept. A reading is known by its time and its
    ``received_at`` (counted, as readings of several devices may share both).
    """
    if dirty.new is None or "received_at" not in frame.columns:
        return minutes
    minute = pl.col("time").cast(pl.Int64) // MINUTE_NS * MINUTE_NS
    new = dirty.new.filter(minute.is_in(sorted(minutes)))
    keys = ["time", "received_at"]
    arrived = new.group_by(keys).len("arrived")
    kept = (
        frame.join(arrived.select("time").unique(), on="time", how="semi")
        .select(pl.col("time"), pl.col("received_at").cast(pl.Int64))
        .group_by(keys)
        .len("kept")
    )
    unseen = arrived.join(kept, on=keys, how="left").filter(
        pl.col("kept").is_null() | (pl.col("kept") < pl.col("arrived"))
    )
    return set(unseen.select(minute.unique())[:, 0].to_list())


def _spans(starts: Sequence[int], step: int, limit: int) -> list[tuple[datetime, datetime]]:
    """Sorted window ``starts`` (ns) of length ``step`` as ``[start, end)`` runs of consecutive
    windows, none longer than ``limit``."""
    spans: list[tuple[int, int]] = []
    for start in starts:
        if spans and spans[-1][1] == start and start - spans[-1][0] < limit:
            spans[-1] = (spans[-1][0], start + step)
        else:
            spans.append((start, start + step))
    return [(from_ns(a), from_ns(b)) for a, b in spans]


_EMPTY_HOURLY = pl.DataFrame(
    schema={
        "time": TIME_DTYPE,
        "insee": pl.String,
        "device_id": pl.String,
        **dict.fromkeys(POLLUTANTS, pl.Float64),
    }
)


def _counters(family: str) -> list[str]:
    spec = spec_of(family)
    return [name for name in spec.numeric_fields if (field := spec.field(name)) is not None and field.counter]


def _read_raw(runner: Runner, family: str, start: datetime, end: datetime, report: JobReport) -> pl.DataFrame:
    """Raw readings of ``[start, end)``, with what counters need before ``start``.

    A counter's increase needs each device's previous reading. A full recompute reads each day
    from ``COUNTER_LOOKBACK`` before it, so for a span inside a day the previous reading is the
    device's last one since then: read the lookback before the span, and only when a device
    has none there, its last reading of the counter earlier in the day. The increases come out
    exactly as in the full recompute.
    """
    counters = _counters(family)
    if not counters:
        return runner.read(family, start, end, report)
    raw = runner.read(family, start - COUNTER_LOOKBACK, end, report)
    present = [c for c in counters if c in raw.columns]
    if raw.is_empty() or not present:
        return raw
    inside, before = raw.filter(pl.col("time") >= start), raw.filter(pl.col("time") < start)
    previous = _earlier_in_day(runner, family, start, report, inside=inside, before=before, counters=present)
    # Every such reading is older than the lookback: in front of ``raw``, time order holds.
    return raw if previous.is_empty() else pl.concat([previous, raw], how="diagonal_relaxed")


def _earlier_span(start: datetime) -> tuple[datetime, datetime]:
    """Where a counter's previous reading is looked for when the lookback before ``start`` has
    none: from the lookback before the day's start to the lookback before ``start``."""
    return floor(start, "1d") - COUNTER_LOOKBACK, start - COUNTER_LOOKBACK


def _earlier_in_day(
    runner: Runner,
    family: str,
    start: datetime,
    report: JobReport,
    *,
    inside: pl.DataFrame,
    before: pl.DataFrame,
    counters: Sequence[str],
) -> pl.DataFrame:
    """Each counter's last reading, earlier in the day than the lookback before ``start``, of
    the devices that carry it in ``inside`` (readings from ``start`` on) but not in ``before``
    (the lookback's): what their first increase after a silence needs. Empty when none."""
    device = _DEVICE
    earliest, end = _earlier_span(start)
    if end <= earliest or not counters:
        return inside.clear()

    def carrying(frame: pl.DataFrame, counter: str) -> pl.DataFrame:
        if counter not in frame.columns:
            return pl.DataFrame(schema=dict.fromkeys(device, pl.String))
        return frame.filter(pl.col(counter).is_not_null()).select(device).unique()

    unknown = pl.concat(
        [carrying(inside, c).join(carrying(before, c), on=device, how="anti") for c in counters]
    ).unique()
    if unknown.is_empty():
        return inside.clear()
    found = runner.earlier_readings(family, start, counters, unknown["device_id"].to_list(), report)
    return found.join(unknown, on=device, how="semi")


def _nothing_new() -> Dirty:
    # Built on use, not at import: a Dirty sorts its times on polars' thread pool, and a pool
    # started at import in a process that then forks (gunicorn's master) deadlocks its children.
    return Dirty(pl.Series("time", [], dtype=TIME_DTYPE))


class _OpenHour:
    """When a job recomputes the 1-hour rows of an hour (the module docstring has the rules).

    An hour's p95 needs every reading of the hour, so a new minute cannot update it: while the
    hour is open its rows are recomputed at most every ``hour_refresh``, and an hour left stale
    is recomputed once it closes, or when ``hour_refresh`` has passed, new readings or not.
    What is stale is known only to this runner: a runner started again recomputes the minutes
    of the settle margin before the last run (``Runner._new_after``), which hold every reading
    a stale row may lack as long as ``hour_refresh`` is at most ``settle``.
    """

    def __init__(self, runner: Runner, job: str) -> None:
        self.runner = runner
        self.job = job
        self.now = epoch_ns(runner.now)
        self.pending = runner._hour_pending.setdefault(job, set())
        self._done: set[int] = set()

    def due(self, hour: int) -> bool:
        """Whether the 1-hour rows of ``hour`` (start, ns) are to be computed in this run."""
        if hour + HOUR_NS <= self.now:
            return True  # closed
        last = self.runner._hour_refreshed.get(self.job)
        return last is None or last[0] != hour or self.runner.now - last[1] >= self.runner.hour_refresh

    def computed(self, hour: int) -> None:
        """The 1-hour rows of ``hour`` were computed in this run, from every reading of it."""
        self.pending.discard(hour)
        self._done.add(hour)
        if hour + HOUR_NS > self.now:
            self.runner._hour_refreshed[self.job] = (hour, self.runner.now)

    def skipped(self, hour: int) -> None:
        """``hour`` has new readings its 1-hour rows do not hold yet."""
        if hour not in self._done:
            self.pending.add(hour)

    def overdue(self) -> list[int]:
        """Hours left stale by earlier runs whose 1-hour rows are due now."""
        return sorted(hour for hour in self.pending if hour not in self._done and self.due(hour))


class _Refresh:
    """When a job that reads its days whole (the 1-day rows, the anomaly pass) recomputes them:
    at most every ``every``, the days holding readings received since its last refresh, late
    readings of a closed day as much as today's. A day read whole at every run would cost, at
    every run, a day of the fleet: a backlog of yesterday draining all day, or today by evening.

    Its state is the watermark ``<job>/refreshed``: the latest arrival the last refresh saw, and
    when it ran. Readings received since are pending, and the run's arrivals read reaches back
    to them when a refresh is due (``Runner._arrivals_threshold``).
    """

    def __init__(self, runner: Runner, job: str, every: timedelta) -> None:
        self.runner = runner
        self.key = f"{job}/refreshed"
        self.every = every

    def due(self) -> tuple[bool, int | None]:
        """Whether a refresh may run now, and the ``received_at`` above which readings are
        pending for it (None: every reading, as none was ever refreshed)."""
        refreshed = self.runner.mark(self.key)
        if refreshed is None:
            return True, None
        if self.runner.now - from_ns(refreshed[1]) < self.every:
            return False, None
        return True, min(refreshed[0], refreshed[1] - duration_ns(self.runner.settle))

    def pending(self, dirty: Dirty) -> pl.DataFrame | None:
        """The arrivals (``time``, ``received_at``) a refresh running now covers: None when
        none is due, empty when one is due and nothing arrived since the last."""
        due, after = self.due()
        if not due:
            return None
        arrivals = (
            dirty.arrivals
            if dirty.arrivals is not None
            else pl.DataFrame(schema={"time": TIME_DTYPE, "received_at": pl.Int64})
        )
        return arrivals if after is None else arrivals.filter(pl.col("received_at") > after)

    def update(self, dirty: Dirty) -> tuple[str, int]:
        """The watermark a refresh running now sets: what it saw, as of now."""
        latest = dirty.arrivals["received_at"].max() if dirty.arrivals is not None else None
        previous = self.runner.mark(self.key)
        if latest is None:
            return self.key, previous[0] if previous is not None else 0
        return self.key, int(latest)  # type: ignore[arg-type]


class _DailyRows:
    """Which days' 1-day rows a job recomputes in this run (the module docstring has the rules).

    Two entries of ``_watermarks`` hold its state: ``<job>/refreshed`` (``_Refresh``: the last
    refresh of the days with new readings) and ``<job>/closed-days`` (the last closed day whose
    row was recomputed after it closed).
    """

    def __init__(self, runner: Runner, job: str, dirty: Dirty) -> None:
        self.runner = runner
        self.dirty = dirty
        self.job = job
        self.refresh = _Refresh(runner, job, runner.day_refresh)
        self.closed_key = f"{job}/closed-days"
        self._updates: list[tuple[str, int]] = []

    def due(self) -> list[datetime]:
        """The days (their UTC start) whose 1-day rows a run recomputes now (a backfill's come
        from the aggregates job)."""
        runner, marks = self.runner, self.runner.watermarks
        now = runner.now
        days: set[datetime] = set()
        last_closed = floor(floor(now - runner.settle, "1d") - timedelta(hours=1), "1d")
        finalised = marks.get(self.closed_key, now=now)
        if finalised is None or finalised < epoch_ns(last_closed):
            # Each day gets one recompute once closed: its last refresh while open may be up to
            # day_refresh old. A runner stopped longer than the horizon leaves older days to
            # backfill, as it leaves their late readings.
            day = (
                max(from_ns(finalised), now - runner.horizon - timedelta(days=1))
                if finalised
                else last_closed
            )
            day = floor(day, "1d")
            while day <= last_closed:
                if finalised is None or epoch_ns(day) > finalised:
                    days.add(day)
                day = next_start(day, "1d")
            self._updates.append((self.closed_key, epoch_ns(last_closed)))
        pending = self.refresh.pending(self.dirty)
        if pending is not None and not pending.is_empty():
            # A device's clock ahead of Paris may stamp tomorrow: its day is computed once it comes.
            today = floor(now, "1d")
            days |= {day for day in Dirty(pending["time"]).days() if day <= today}
            self._updates.append(self.refresh.update(self.dirty))
        return sorted(days)

    def done(self) -> None:
        """Record the refreshes of this run (call it once every row is written)."""
        for key, value in self._updates:
            self.runner.set_mark(key, value)


def _aggregates_job(runner: Runner, dirty: Dirty, report: JobReport) -> None:
    family = next(f for f in runner.families if report.job.endswith(f":{f}"))
    starts = {window: dirty.starts(window) for window in SUB_DAY_WINDOWS}
    if dirty.backfill:
        # Each day read once, whole: its 1-day rows (a p95 needs every reading of the day) and
        # its dirty shorter windows come from the same frame.
        for day in sorted(dirty.days()):
            _aggregate_day(runner, family, day, report, windows=list(WINDOWS), starts=starts)
        return
    # A run goes window by window from the kept hours (a counter's increase needs each device's
    # previous reading, which they bring along); the 1-day rows are ``_daily_job``'s.
    hours = _OpenHour(runner, report.job)
    for hour in sorted(starts["1h"]):
        _aggregate_hour(runner, family, hour, dirty, report, starts=starts, hours=hours)
    if _counters(family):
        # A meter's new reading may be the last before an hour with nothing new (it came once
        # that hour was over): that hour's first increase now starts from it.
        current = epoch_ns(floor(runner.now, "1h"))
        for hour in sorted({h + HOUR_NS for h in starts["1h"]} - starts["1h"]):
            if hour <= current:
                _aggregate_hour(
                    runner, family, hour, dirty, report, starts=starts, hours=hours, after_late=True
                )
    for hour in hours.overdue():
        frame, _ = runner.recent_hour(family, hour, _nothing_new(), report)
        rows = _with_counter_prefix(runner, family, hour, frame, report)
        _aggregate_windows(runner, family, ["1h"], rows, hour=hour, starts={"1h": {hour}}, report=report)
        hours.computed(hour)


def _daily_job(runner: Runner, dirty: Dirty, report: JobReport) -> None:
    """The 1-day rows of the days ``_DailyRows`` says are due, each from the day read whole (a
    p95 does not compose). A backfill's come from the aggregates job, which reads whole days."""
    if dirty.backfill:
        return
    family = report.job.split(":", 1)[1]
    daily = _DailyRows(runner, report.job, dirty)
    for day in daily.due():
        _aggregate_day(runner, family, day, report, windows=["1d"], starts={})
    daily.done()


def _aggregate_day(
    runner: Runner,
    family: str,
    day: datetime,
    report: JobReport,
    *,
    windows: list[str],
    starts: dict[str, set[int]],
) -> None:
    """Aggregate the day starting at ``day``, read whole, over ``windows``, and write its 1-day
    rows and the shorter windows of ``starts``."""
    day_start, day_end = day_range(day)
    raw = _read_raw(runner, family, day_start, day_end, report)
    if raw.is_empty():
        return
    results = aggregate_all(raw, family, windows=windows)
    for window in windows:
        rows = _within_windows(results, family, window, span=(day_start, day_end), starts=starts)
        _write_windows(runner, family, window, rows, report)


def _aggregate_hour(
    runner: Runner,
    family: str,
    hour: int,
    dirty: Dirty,
    report: JobReport,
    *,
    starts: dict[str, set[int]],
    hours: _OpenHour | None,
    after_late: bool = False,
) -> None:
    """The windows of one hour holding readings new to the kept hour (``Runner.recent_hour``):
    the new minute's and its quarter's, from the quarter's readings; the hour's, from the hour's,
    when ``hours`` says they are due. ``after_late``: the hour holds nothing new but follows one
    that does, so only the windows of the meters whose previous reading changed are redone.

    The settle margin makes the readings of the last minutes before the previous run new again
    at every run; those the kept hour already holds were computed and written by that run.
    """
    frame, fresh = runner.recent_hour(family, hour, dirty, report)
    if frame.is_empty():
        return
    minutes = {m for m in starts["1m"] if hour <= m < hour + HOUR_NS}
    if fresh is not None:
        minutes &= fresh
    if not minutes and not after_late:
        return
    counters = _counters(family)
    # The counters' previous readings, found once for the quarters and the hour (it may read).
    prefix = _counter_prefix(runner, family, hour, frame, report) if counters else None
    devices = _changed_devices(runner, family, hour, prefix)
    if after_late and devices is None:
        devices = _late_devices(runner, family, hour)
        if devices is None:  # the hour before was read whole: any meter's reading may be new
            minutes = set(_minutes_of(frame))
    if counters:
        minutes |= _next_counter_minutes(frame, counters, minutes, devices, hour)
    if not minutes:
        return
    touched = pl.Series("time", sorted(minutes), dtype=pl.Int64).cast(TIME_DTYPE)
    new_minutes = Dirty(touched)
    wanted = {window: new_minutes.starts(window) for window in SUB_DAY_WINDOWS}
    # The minutes' and the quarters' windows in one pass over the quarters' readings (the
    # minutes' readings are among them): one engine call, not one per window.
    quarter = window_start(pl.col("time"), "15m").cast(pl.Int64)
    if prefix is not None:
        # An increase needs each device's previous reading: every reading from the first wanted
        # quarter on (none missing between two wanted quarters), after the last ones before it.
        first = min(wanted["15m"])
        last = max(wanted["15m"]) + 15 * MINUTE_NS
        before = pl.concat(
            [prefix, frame.filter(quarter < first)],
            how="diagonal_relaxed",
        )
        quarters = pl.concat(
            [
                _last_counter_readings(before, counters),
                frame.filter(quarter.is_between(first, last, closed="left")),
            ],
            how="diagonal_relaxed",
        )
    else:
        quarters = frame.filter(quarter.is_in(sorted(wanted["15m"])))
    _aggregate_windows(
        runner,
        family,
        ["1m", "15m"],
        quarters,
        hour=hour,
        starts=wanted,
        report=report,
        devices=devices,
    )
    if hours is not None:
        if not hours.due(hour):
            hours.skipped(hour)
            return
        hours.computed(hour)
    rows = frame if prefix is None else pl.concat([prefix, frame], how="diagonal_relaxed")
    _aggregate_windows(runner, family, ["1h"], rows, hour=hour, starts=wanted, report=report)


def _with_counter_prefix(
    runner: Runner, family: str, hour: int, frame: pl.DataFrame, report: JobReport
) -> pl.DataFrame:
    """The kept hour ``frame``, after what its counters' first increases need (nothing for a
    family without counters)."""
    if not _counters(family) or frame.is_empty():
        return frame
    return pl.concat([_counter_prefix(runner, family, hour, frame, report), frame], how="diagonal_relaxed")


def _counter_prefix(
    runner: Runner, family: str, hour: int, frame: pl.DataFrame, report: JobReport
) -> pl.DataFrame:
    """Each device's last reading of each counter before the hour starting at ``hour`` (ns), as
    ``_read_raw`` finds it for a span starting there: in the hour before (kept between runs
    like the hour itself), or, for a device with none there, earlier in the day. ``frame`` is
    the hour's readings: only its devices are looked for earlier."""
    counters = _counters(family)
    earlier, _ = runner.recent_hour(family, hour - HOUR_NS, _nothing_new(), report)
    found = _last_counter_readings(earlier, counters)
    present = [c for c in counters if c in frame.columns]
    previous = _earlier_in_day(
        runner, family, from_ns(hour), report, inside=frame, before=earlier, counters=present
    )
    # Every such reading is older than the hour before: in front of it, time order holds.
    return found if previous.is_empty() else pl.concat([previous, found], how="diagonal_relaxed")


def _last_counter_readings(frame: pl.DataFrame, counters: Sequence[str]) -> pl.DataFrame:
    """Each device's last reading carrying each counter of ``frame`` (one row per device and
    counter, the same row once when it is the last for several), in time order."""
    device = _DEVICE
    present = [c for c in counters if c in frame.columns]
    if frame.is_empty() or not present:
        return frame.clear()
    last = [
        frame.filter(pl.col(c).is_not_null()).sort("time").group_by(device).agg(pl.all().last())
        for c in present
    ]
    return pl.concat(last, how="diagonal_relaxed").unique(keep="first").sort("time", maintain_order=True)


def _aggregate_windows(
    runner: Runner,
    family: str,
    windows: list[str],
    rows: pl.DataFrame,
    *,
    hour: int,
    starts: dict[str, set[int]],
    report: JobReport,
    devices: pl.DataFrame | None = None,
) -> None:
    """Aggregate ``rows`` (readings of the hour starting at ``hour``) over ``windows`` and write
    the windows of ``starts``; of the device rows, only those ``devices`` says changed (None:
    all)."""
    if rows.is_empty():
        return
    results = aggregate_all(rows, family, windows=windows)
    span = (from_ns(hour), from_ns(hour + HOUR_NS))
    for window in windows:
        rows_of = _within_windows(results, family, window, span=span, starts=starts)
        if devices is not None:
            rows_of["device"] = _changed_rows(rows_of["device"], devices, window)
        _write_windows(runner, family, window, rows_of, report)


def _changed_devices(
    runner: Runner, family: str, hour: int, prefix: pl.DataFrame | None
) -> pl.DataFrame | None:
    """The devices whose windows in the hour starting at ``hour`` may differ from what earlier
    runs wrote, each with the time (``since``) from which they may: that of its first reading
    new to this run (a counter's increase also changes at the device's next reading, so every
    later window of the hour is included), or the hour's start when the counters' previous
    readings changed. None: every device's windows may (the hour was read whole)."""
    # Asked first: it also records the prefix these windows are computed with.
    changed = runner.counter_prefix_changed(family, hour, prefix) if prefix is not None else _NEW_NONE
    new = runner.new_in_hour(family, hour)
    if new is None or changed is None:
        return None
    whole = changed.select(pl.col(c).cast(pl.String) for c in _DEVICE).with_columns(
        pl.lit(hour, dtype=pl.Int64).alias("since")
    )
    since = new.group_by(_DEVICE).agg(pl.col("time").min().cast(pl.Int64).alias("since"))
    return pl.concat([since, whole]).group_by(_DEVICE).agg(pl.col("since").min())


def _late_devices(runner: Runner, family: str, hour: int) -> pl.DataFrame | None:
    """The devices with readings new to this run in the hour before the one starting at
    ``hour`` (ns), each with the hour's start as the time its windows may change from
    (``_changed_devices``); None: that hour was read whole, every device may have one."""
    new = runner.new_in_hour(family, hour - HOUR_NS)
    if new is None:
        return None
    return new.select(_DEVICE).unique().with_columns(pl.lit(hour, dtype=pl.Int64).alias("since"))


def _minutes_of(frame: pl.DataFrame) -> list[int]:
    """The minutes (ns) ``frame``'s readings fall in."""
    minute = pl.col("time").cast(pl.Int64) // MINUTE_NS * MINUTE_NS
    return frame.select(minute.unique())[:, 0].to_list()


def _next_counter_minutes(
    frame: pl.DataFrame, counters: Sequence[str], minutes: set[int], devices: pl.DataFrame | None, hour: int
) -> set[int]:
    """Minutes of the hour starting at ``hour`` (ns) to recompute for the counters besides
    ``minutes``: a reading that arrives late falls between two its device already had, and the
    later one's increase now starts from it. Taken wide, as the rows written are (``devices``,
    ``_changed_devices``): the minutes of each device's counter readings from its first new one
    on, and of the reading after each; None: from every reading of ``minutes``."""
    present = [c for c in counters if c in frame.columns]
    if not present:
        return set()
    time_ns = pl.col("time").cast(pl.Int64)
    minute = time_ns // MINUTE_NS * MINUTE_NS
    readings = frame.filter(pl.any_horizontal(pl.col(c).is_not_null() for c in present)).select(
        *(pl.col(c).cast(pl.String) for c in _DEVICE), time_ns.alias("time")
    )
    if devices is None:
        new = minute.is_in(sorted(minutes))
    else:
        readings = readings.join(devices, on=_DEVICE, how="left")
        new = (pl.col("time") >= pl.col("since")).fill_null(False)
    found = (
        readings.sort([*_DEVICE, "time"])
        .with_columns(pl.col("time").shift(-1).over(_DEVICE).alias("next"))
        .filter(new)
        .select(
            pl.concat_list(minute, pl.col("next") // MINUTE_NS * MINUTE_NS).explode().drop_nulls().unique()
        )
    )
    return {m for m in found[:, 0].to_list() if hour <= m < hour + HOUR_NS}


def _changed_rows(rows: pl.DataFrame, devices: pl.DataFrame, window: str) -> pl.DataFrame:
    """The device ``rows`` of ``window`` ending after their device's ``since``: those that may
    differ from what earlier runs wrote (``_changed_devices``)."""
    if rows.is_empty():
        return rows
    end = pl.col("time").cast(pl.Int64) + duration_ns(WINDOW_WIDTHS[window])
    keys = devices.with_columns(pl.col(c).cast(rows.schema[c]) for c in _DEVICE)
    return rows.join(keys, on=_DEVICE, how="inner").filter(end > pl.col("since")).drop("since")


def _within_windows(
    results: dict[str, pl.DataFrame],
    family: str,
    window: str,
    *,
    span: tuple[datetime, datetime],
    starts: dict[str, set[int]],
) -> dict[Level, pl.DataFrame]:
    """The rows of ``results`` of ``window`` that a run writes: in ``[start, end)`` and, below a
    day, in a dirty window."""
    out: dict[Level, pl.DataFrame] = {}
    for level in LEVELS:
        rows = within(results[aggregate_measurement(family, window, level)], *span)
        out[level] = rows if window == "1d" else rows.filter(in_starts(starts[window]))
    return out


def _write_windows(
    runner: Runner, family: str, window: str, rows: dict[Level, pl.DataFrame], report: JobReport
) -> None:
    for level, out in rows.items():
        report.windows += out.height
        runner.write(aggregate_measurement(family, window, level), out, list(LEVEL_TAGS[level]), report)


def _anomalies_job(runner: Runner, dirty: Dirty, report: JobReport) -> None:
    try:
        from processing.anomalies import detect_anomalies
        from processing.anomalies.spikes import SIDE
    except ImportError:  # the anomaly pass is optional: aggregates and indices run without it
        log.warning("processing.anomalies is not available: anomaly detection skipped")
        return
    family = report.job.split(":", 1)[1]
    # A spike is judged with the readings after it: those of a day's last minutes come after
    # midnight, so the first readings of a day make the day before dirty too, and its pass reads them.
    after = timedelta(seconds=SIDE * FAMILIES[Family(family)].reporting_period_s)
    refresh = _Refresh(runner, report.job, runner.anomaly_refresh)
    if dirty.backfill:
        times = dirty.times
    else:
        # A pass reads its days whole: it runs every anomaly_refresh, not at every run.
        pending = refresh.pending(dirty)
        if pending is None:
            return
        times = pending["time"]
    days = set(Dirty(times).days()) | set(Dirty((times - after).cast(TIME_DTYPE)).days())
    # Silence is only seen by looking: the current day is always checked, new data or not. A
    # backfill recomputes its period and nothing else: split into day tasks, each would redo today.
    if not dirty.backfill:
        days.add(floor(runner.now, "1d"))
    for day in sorted(days):
        # One day at a time, always with the same context before it, so that a day's anomalies
        # come out the same whichever run computes them (and memory stays one day's).
        day_start, day_end = day_range(day)
        end = min(day_end + after, runner.now + timedelta(seconds=1))
        raw = runner.read(family, day_start - ANOMALY_CONTEXT, end, report)
        if raw.is_empty():
            continue
        rejected = _with_rejected_columns(
            runner.read("rejected_readings", day_start - ANOMALY_CONTEXT, end, report)
        )
        found = detect_anomalies(
            raw,
            family,
            rejected=rejected if not rejected.is_empty() else None,
            now=min(end, runner.now),
            **runner.anomaly_options,
        )
        out = _owned_by_day(found, day_start, day_end)
        report.windows += out.height
        tags = [c for c in ("insee", "family", "device_id", "field", "kind") if c in out.columns]
        runner.write("anomalies", out, tags, report)
    if not dirty.backfill:
        runner.set_mark(*refresh.update(dirty))


def _owned_by_day(found: pl.DataFrame, day_start: datetime, day_end: datetime) -> pl.DataFrame:
    """The anomalies a day's pass writes: those starting that day, and those that started before
    and run into it.

    The second kind closes what an earlier day left open (a device offline at midnight that came
    back in the morning): the pass finds it again with the same start, so the rewrite replaces
    the open row instead of adding one.
    """
    start_ns = int(day_start.timestamp() * 1e9)
    runs_into_day = (pl.col("time") < day_start) & (
        pl.col("end_ns").is_null() | (pl.col("end_ns") >= start_ns)
    )
    return found.filter(((pl.col("time") >= day_start) & (pl.col("time") < day_end)) | runs_into_day)


def _with_rejected_columns(frame: pl.DataFrame) -> pl.DataFrame:
    """``rejected_readings`` with its optional columns present.

    A store returns only the tags and fields some row carries: ``field`` is empty (so absent) for
    refusals of a whole message, ``value`` null when the refused value was not a number. When no
    row of the period has one, the column is missing altogether.
    """
    missing = [
        pl.lit(None, dtype).alias(name)
        for name, dtype in (("field", pl.String), ("value", pl.Float64))
        if name not in frame.columns
    ]
    return frame.with_columns(missing) if missing else frame
