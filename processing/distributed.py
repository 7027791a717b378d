"""Backfills on a Ray cluster: the runner's jobs as Ray tasks, one per commune and day.

``smartcity backfill --ray ADDRESS`` recomputes a period the way ``Runner.backfill`` does, with
the same job code, split into tasks that Ray spreads over its workers. Each task opens the
configured store itself, runs ``Runner.backfill`` over its slice and writes its results there;
only reports travel back to the driver, never readings. The slices give exactly the results of
the single-machine run:

* **Days.** Every job already works a Paris day at a time and reads the context it needs around
  that day from the store (the hour before a day for counters, the 24 hours before it for the
  EAQI running means, 28 days of hourly aggregates for the traffic profile, weeks of daily
  aggregates for the building baseline). A task over one day reads that same context, so the
  overlap the windows need is read, not shipped. A day's EAQI task also rewrites the first hours
  of the next day (a reading weighs on the 23 running means after it), as the last day of a
  single-machine backfill does: the next day's task writes the same values.
* **Communes.** Aggregates, ATMO, EAQI, camera and network indices, the traffic congestion and
  the building energy index of a commune depend on its own devices only, so their tasks read one
  commune (``Runner(communes=...)``, a tag filter on every store read).
* **The anomaly pass is split by day only.** A flatline's allowed duration is learned from the
  whole fleet's runs of each field, and a drift is a gap scaled by the fleet's spread of that
  gap: a commune's devices alone would give other thresholds, hence other anomalies. Each of
  its tasks reads a whole day of the fleet (with its 6 hours of context), as ``Runner`` does.
* **Stages.** The traffic congestion and the building energy index read the hourly and daily
  aggregates of earlier days, which other tasks of the same backfill write: they run once every
  aggregate task has finished. The anomaly tasks need nothing but raw readings and run alongside.

Writes are idempotent (same measurement, tags and time overwrite), so Ray may retry a task
whose worker died without changing the result.

``ray`` is an optional dependency (``pip install smartcity[ray]``), imported only here and only
when a backfill is sent to a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from processing.runner import JobReport, Runner, RunReport
from processing.windows import PARIS_TZ, floor, next_start
from storage import StoreSettings

log = logging.getLogger(__name__)

AFTER_AGGREGATES = frozenset({"traffic_congestion", "building_energy_daily"})
"""Jobs that read aggregates written by other tasks of the same backfill."""
FLEET_WIDE = "anomalies"
"""The job whose results for a device depend on devices of other communes."""


class DistributedError(RuntimeError):
    """A backfill cannot run on the cluster as configured; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Task:
    """One slice of a backfill: some jobs, over one day (or part of one), for one commune or all."""

    stage: str
    """``raw`` (from raw readings), ``anomalies`` (from raw readings, whole fleet) or
    ``indices`` (from the aggregates the ``raw`` stage wrote)."""
    start: datetime
    end: datetime
    jobs: tuple[str, ...]
    families: tuple[str, ...]
    commune: str | None
    """INSEE code, or None for the whole fleet."""

    @property
    def label(self) -> str:
        """What the task does, for progress lines."""
        where = self.commune or "all communes"
        return f"{self.stage} {where} {self.start.astimezone(PARIS_TZ).date().isoformat()}"


@dataclass(frozen=True, slots=True)
class TaskSettings:
    """What every task's runner needs besides its slice: the same clock and settings as the driver."""

    store: StoreSettings
    now: datetime
    horizon: timedelta
    settle: timedelta
    day_refresh: timedelta
    anomaly_options: dict[str, Any] = field(default_factory=dict)


def check_store(settings: StoreSettings) -> None:
    """Refuse a store that Ray workers cannot share."""
    if settings.backend == "duckdb":
        raise DistributedError(
            "--ray needs a store every Ray worker can reach and write at once; the embedded "
            f"DuckDB store ({settings.duckdb.path}) is a file that one process writes at a time. "
            "Use the InfluxDB store (store.backend = 'influxdb', or "
            "SMARTCITY_STORE__BACKEND=influxdb), or run the backfill without --ray."
        )


def days_of(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at Paris midnights, in order."""
    spans: list[tuple[datetime, datetime]] = []
    day = floor(start, "1d")
    while day < end:
        following = next_start(day, "1d")
        spans.append((max(start, day), min(end, following)))
        day = following
    return spans


def stage_of(job: str) -> str:
    """The stage a job's tasks belong to (see ``Task.stage``)."""
    if job.split(":", 1)[0] == FLEET_WIDE:
        return "anomalies"
    return "indices" if job in AFTER_AGGREGATES else "raw"


def plan(
    runner: Runner,
    start: datetime,
    end: datetime,
    *,
    jobs: Sequence[str] | None = None,
) -> list[Task]:
    """The tasks of a backfill of ``[start, end)`` by ``runner``'s jobs (``jobs`` names filter them
    as in ``Runner.backfill``), over every commune with devices of their families in the store.

    Tasks come in the order they may start: ``raw`` and ``anomalies`` tasks first, ``indices``
    tasks last.
    """
    chosen = [job for job in runner.jobs() if not jobs or job.name in jobs or job.name.split(":")[0] in jobs]
    found: set[str] = set()
    for family in runner.families:
        series = runner.store.series(family)
        if "insee" in series.columns:
            found.update(series["insee"].drop_nulls().to_list())
    communes = sorted(found)
    tasks: list[Task] = []
    for stage in ("raw", "anomalies", "indices"):
        staged = [job for job in chosen if stage_of(job.name) == stage]
        if not staged:
            continue
        names = tuple(job.name for job in staged)
        families = tuple(dict.fromkeys(job.family for job in staged))
        for day_start, day_end in days_of(start, end):
            scopes: list[str | None] = [None] if stage == "anomalies" else list(communes)
            tasks += [Task(stage, day_start, day_end, names, families, scope) for scope in scopes]
    return tasks


def run_task(task: Task, settings: TaskSettings) -> RunReport:
    """Run one task against the store (on a Ray worker, or anywhere)."""
    from storage import open_store

    store = open_store(settings.store)
    try:
        runner = Runner(
            store,
            families=task.families,
            communes=[task.commune] if task.commune is not None else None,
            horizon=settings.horizon,
            settle=settings.settle,
            day_refresh=settings.day_refresh,
            anomalies=task.stage == "anomalies",
            anomaly_options=settings.anomaly_options,
            clock=lambda: settings.now,
        )
        return runner.backfill(task.start, task.end, jobs=task.jobs)
    finally:
        store.close()


Progress = Callable[[int, int, Task, RunReport], None]
"""Called as each task finishes: tasks done, tasks in all, the task, its report."""


@contextmanager
def connected(address: str, **init_options: Any) -> Iterator[None]:
    """Connected to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:10001``,
    or ``local`` for a cluster of this machine alone, stopped on exit), unless already connected."""
    try:
        import ray
    except ImportError:
        raise DistributedError(
            "--ray needs the ray package: pip install 'smartcity[ray]' (the workers need it too)"
        ) from None
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address, **init_options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise DistributedError(f"cannot connect to the Ray cluster at {address!r}: {exc}") from exc
    try:
        yield
    finally:
        ray.shutdown()


def backfill(
    runner: Runner,
    store: StoreSettings,
    start: datetime,
    end: datetime,
    *,
    jobs: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> RunReport:
    """``runner.backfill(start, end, jobs=jobs)`` as tasks on the connected Ray cluster (see
    ``connected``), reading and writing ``store`` (the settings ``runner.store`` was opened with).

    Returns one report per job, summed over its tasks (``seconds`` is task time, not wall time).
    A task that failed as a whole (its store unreachable from a worker) marks each of its jobs
    failed; the other tasks' results stay written.
    """
    import ray

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("backfill needs time-zone-aware start and end")
    if end <= start:
        raise ValueError(f"backfill: end {end.isoformat()} is not after start {start.isoformat()}")
    check_store(store)
    settings = TaskSettings(
        store=store,
        now=runner.clock(),
        horizon=runner.horizon,
        settle=runner.settle,
        day_refresh=runner.day_refresh,
        anomaly_options=runner.anomaly_options,
    )
    tasks = plan(runner, start, end, jobs=jobs)
    remote = ray.remote(num_cpus=1, retry_exceptions=False)(run_task)
    shared = ray.put(settings)
    waiting_for_aggregates = [task for task in tasks if task.stage == "indices"]
    pending: dict[Any, Task] = {
        remote.remote(task, shared): task for task in tasks if task.stage != "indices"
    }
    reports: list[tuple[Task, RunReport]] = []
    while pending or waiting_for_aggregates:
        if waiting_for_aggregates and not any(t.stage == "raw" for t in pending.values()):
            pending.update({remote.remote(t, shared): t for t in waiting_for_aggregates})
            waiting_for_aggregates = []
        ready, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready[0])
        try:
            report: RunReport = ray.get(ready[0])
        except Exception as exc:
            log.error("backfill task %s failed: %s", task.label, exc)
            report = RunReport(
                jobs=[JobReport(job, error=f"{type(exc).__name__}: {exc}") for job in task.jobs]
            )
        reports.append((task, report))
        if progress is not None:
            progress(len(reports), len(tasks), task, report)
    return merge([report for _, report in reports], order=[job.name for job in runner.jobs()])


def merge(reports: Sequence[RunReport], *, order: Sequence[str]) -> RunReport:
    """One report per job, summed over ``reports``, in ``order`` (jobs not in it come last)."""
    totals: dict[str, JobReport] = {}
    for report in reports:
        for job in report.jobs:
            total = totals.setdefault(job.job, JobReport(job.job))
            total.windows += job.windows
            total.rows_read += job.rows_read
            total.rows_written += job.rows_written
            total.seconds += job.seconds
            if job.error is not None and total.error is None:
                total.error = job.error
    rank = {name: index for index, name in enumerate(order)}
    return RunReport(jobs=sorted(totals.values(), key=lambda job: rank.get(job.job, len(rank))))
