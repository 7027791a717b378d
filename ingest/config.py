"""Settings of the ingestor."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from sensors.topics import SUBSCRIPTION


class IngestSettings(BaseModel):
    """How ``smartcity ingest`` subscribes, batches, spools and reports."""

    topic: str = SUBSCRIPTION
    shared_group: str | None = None
    """When set, subscribe as ``$share/<group>/<topic>`` so several ingestors split the load."""
    client_id: str = "smartcity-ingest"
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0)
    batch_size: int = Field(5000, ge=1)
    batch_interval_s: float = Field(1.0, gt=0)
    spool_dir: Path = Path("var/spool")
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20)
    deadletter_file: Path = Path("var/deadletter.jsonl")
    metrics_port: int | None = Field(9108, ge=0, le=65535)
