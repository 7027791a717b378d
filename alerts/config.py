"""Settings of the alert evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class AlertSettings(BaseModel):
    """Where the rules are, how often they are evaluated, and where deliveries are queued."""

    # A typo in [alerts] (or SMARTCITY_ALERTS__...) must stop start-up, not be ignored.
    model_config = ConfigDict(extra="forbid")

    rules_file: Path | None = None
    """The alert rules (TOML, see docs/alerts.md); ``smartcity alerts`` refuses to start without."""
    interval_s: float = Field(60.0, gt=0)
    """How often the rules are evaluated."""
    outbox_dir: Path = Path("var/outbox")
    """Messages waiting for delivery, one JSON file each; they survive a restart."""
    state_file: Path = Path("var/alerts_state.json")
    """The alerts' lifecycle state (pending, firing, resolved), kept across restarts."""
    audit_file: Path = Path("var/alerts_audit.jsonl")
    """One JSON line per delivery attempt, successful or not."""
    dashboard_url: str = "http://127.0.0.1:8050"
    """Base URL of the dashboards; messages link to ``{dashboard_url}/commune/<insee>``."""
    language: Literal["fr", "en"] = "fr"
    """Default language of messages; a commune's delivery settings may choose another."""
    templates_dir: Path | None = None
    """A directory of templates overriding the shipped ones, file by file."""
    delivery_interval_s: float = Field(2.0, gt=0)
    """How often the outbox is scanned for messages due (new or to retry)."""
