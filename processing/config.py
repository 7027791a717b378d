"""Settings of the processing runner."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProcessingSettings(BaseModel):
    """How often ``smartcity process`` runs its jobs, and how far back it looks for late data."""

    model_config = ConfigDict(extra="forbid")

    interval_s: float = Field(60.0, gt=0)
    """Seconds between two runs."""
    horizon_s: float = Field(86_400.0, gt=0)
    """Readings observed up to this long ago are checked for late arrivals at every run; later
    corrections to older periods need ``smartcity backfill``."""
    settle_s: float = Field(900.0, ge=0)
    """Readings received up to this long before a job's watermark are looked at again, for
    those that reached the store after later ones (ingest batches, spool replays)."""
    day_refresh_s: float = Field(3600.0, gt=0)
    """How stale the 1-day aggregate rows may get: they need the whole day of readings (for the
    p95), so a day with new readings (today, or an earlier day whose late readings arrive) has
    them recomputed at most this often, and once more when it closes (``settle_s`` after
    midnight). Shorter windows and the indices follow every run. The jobs that read whole
    days run in a loop of their own, every ``min(day_refresh_s, anomaly_refresh_s)``."""
    hour_refresh_s: float = Field(300.0, ge=0)
    """How stale the open hour's 1-hour aggregate rows may get: their p95 needs every reading
    of the hour, so they are recomputed at most this often while the hour is open (a new minute
    updates its 1-minute and 15-minute rows at once), and once more when it closes. At most
    ``settle_s`` (a larger value counts as ``settle_s``); 0 recomputes them at every run."""
    anomalies: bool = True
    """Run the anomaly pass."""
    anomaly_refresh_s: float = Field(900.0, gt=0)
    """How stale the anomalies may get: the pass reads each day it checks whole (and six hours
    before it), so it runs at most this often, over the days holding readings received since
    its last run and today (for silent devices). Threshold alerts do not wait for it."""
    threads: int | None = Field(None, ge=1)
    """Threads the aggregates and the anomaly pass use at once; None: the cores this process may
    run on."""
