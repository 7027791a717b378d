"""Per-job watermarks kept in the store (measurement ``_watermarks``, docs/measurements.md).

A watermark is the latest ``received_at`` (arrival time, ns) of the raw readings a job has
processed. The row of a job is written at the start of the current UTC day, so the measurement
grows by one row per job and day however often the runner runs (a later write of the same day
overwrites the earlier one), and no retention policy drops it as too old.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from processing.windows import from_ns
from storage.base import TIME_DTYPE, Store, Write, epoch_ns

MEASUREMENT = "_watermarks"
LOOKBACK = timedelta(days=400)
"""How far back the last watermark row of a job is looked for."""


class Watermarks:
    """Read and write the watermarks of jobs in a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, job: str, *, now: datetime | None = None) -> int | None:
        """The job's watermark (ns), or None when it never ran."""
        found = self.get_with_run_time(job, now=now)
        return found[0] if found else None

    def get_with_run_time(self, job: str, *, now: datetime | None = None) -> tuple[int, int] | None:
        """The job's watermark and the time (ns) of the run that set it, or None."""
        now = now or datetime.now(UTC)
        rows = self.store.read(
            MEASUREMENT,
            start=now - LOOKBACK,
            end=now + timedelta(days=2),
            where={"job": job},
            fields=["processed_until", "updated_at"],
        )
        if rows.is_empty() or "processed_until" not in rows.columns:
            return None
        rows = rows.drop_nulls("processed_until").sort("time")
        if rows.is_empty():
            return None
        last = rows.row(-1, named=True)
        updated = last.get("updated_at")
        mark = int(last["processed_until"])
        return mark, int(updated) if updated is not None else mark

    def snapshot(self, *, now: datetime | None = None) -> dict[str, tuple[int, int]]:
        """Every job's watermark and run time (as ``get_with_run_time``), in one read."""
        now = now or datetime.now(UTC)
        rows = self.store.read(MEASUREMENT, start=now - LOOKBACK, end=now + timedelta(days=2))
        if rows.is_empty() or "processed_until" not in rows.columns:
            return {}
        if "updated_at" not in rows.columns:
            rows = rows.with_columns(updated_at=pl.lit(None, pl.Int64))
        last = (
            rows.drop_nulls("processed_until")
            .sort("time")
            .group_by("job")
            .agg(pl.col("processed_until").last(), pl.col("updated_at").last())
        )
        return {
            str(job): (int(mark), int(updated) if updated is not None else int(mark))
            for job, mark, updated in last.select("job", "processed_until", "updated_at").iter_rows()
        }

    def set(self, job: str, processed_until: int, *, now: datetime | None = None) -> None:
        """Record that ``job`` has processed every reading received up to ``processed_until``.

        ``now`` is the time of the run (``updated_at``), by default the wall clock.
        """
        self.set_many({job: processed_until}, now=now)

    def set_many(self, marks: dict[str, int], *, now: datetime | None = None) -> None:
        """``set`` for several jobs, in one write."""
        write = self.write_of(marks, now=now)
        if write is not None:
            self.store.write(write.measurement, write.frame, tags=write.tags)

    @staticmethod
    def write_of(marks: dict[str, int], *, now: datetime | None = None) -> Write | None:
        """The store write ``set_many`` makes (None when ``marks`` is empty), for a writer that
        stores it with its results in one ``Store.write_many``."""
        if not marks:
            return None
        now = now or datetime.now(UTC)
        day = datetime(now.year, now.month, now.day, tzinfo=UTC)
        row = pl.DataFrame(
            {
                "time": [day] * len(marks),
                "job": list(marks),
                "processed_until": list(marks.values()),
                "updated_at": [epoch_ns(now)] * len(marks),
            },
            schema={
                "time": TIME_DTYPE,
                "job": pl.String,
                "processed_until": pl.Int64,
                "updated_at": pl.Int64,
            },
        )
        return Write(MEASUREMENT, row, ["job"])

    def all(self, *, now: datetime | None = None) -> dict[str, datetime]:
        """Every job's watermark as a UTC datetime, for reports."""
        now = now or datetime.now(UTC)
        rows = self.store.read(MEASUREMENT, start=now - LOOKBACK, end=now + timedelta(days=2))
        if rows.is_empty() or "processed_until" not in rows.columns:
            return {}
        last = rows.sort("time").group_by("job").agg(pl.col("processed_until").drop_nulls().last())
        return {
            str(job): from_ns(int(value))
            for job, value in last.iter_rows()
            if value is not None  # a job whose rows all lack the field has no watermark
        }
