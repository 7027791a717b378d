"""Settings of the dashboard server and its query API."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class DashboardSettings(BaseModel):
    """Where the dashboards listen and who may sign in."""

    host: str = "127.0.0.1"
    port: int = Field(8050, ge=1, le=65535)
    users_file: Path = Path("var/users.toml")
    secret_key: str | None = None
    """Signs session cookies; generated and kept in ``var/`` when not given."""
    session_max_age_s: int = Field(8 * 3600, ge=60)
