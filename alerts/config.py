"""Settings of the alert evaluator."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class AlertSettings(BaseModel):
    """Where the rules are, how often they are evaluated, and where deliveries are queued."""

    rules_file: Path | None = None
    interval_s: float = Field(60.0, gt=0)
    outbox_dir: Path = Path("var/outbox")
    dashboard_url: str = "http://127.0.0.1:8050"
