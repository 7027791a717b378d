"""Settings of the dashboard server and its query API."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashboards.basemap import basemap


class ApiLimits(BaseModel):
    """What one query API call may ask for; past these, a clear 400 says what to narrow."""

    model_config = ConfigDict(extra="forbid")

    max_raw_days: float = Field(2.0, gt=0)
    """Longest range of raw readings (``/api/v1/readings``)."""
    max_days_by_window: dict[str, float] = Field(
        default_factory=lambda: {"1m": 7.0, "15m": 93.0, "1h": 5 * 366.0, "1d": 20 * 366.0}
    )
    """Longest range for each aggregate resolution."""
    max_rows: int = Field(2_000_000, ge=1)
    """Largest answer, in rows."""
    max_communes: int = Field(50, ge=1)


class DashboardSettings(BaseModel):
    """Where the dashboards listen and who may sign in."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8050, ge=1, le=65535)
    users_file: Path = Path("var/users.toml")
    secret_key: str | None = None
    """Signs session cookies; generated and kept next to the users file when not given."""
    session_max_age_s: int = Field(8 * 3600, ge=60)
    default_language: Literal["fr", "en"] = "fr"
    refresh_s: int = Field(30, ge=2)
    """How often the live pages refresh."""
    max_points: int = Field(2000, ge=100, le=20_000)
    """Most points one chart trace carries: the screen shows no more."""
    online_after_periods: float = Field(3.0, gt=0)
    """A device is shown offline when silent for this many of its reporting periods."""
    max_failed_signins: int = Field(5, ge=1)
    """Failed sign-ins allowed per user and per address within ``signin_window_s``."""
    signin_window_s: int = Field(900, ge=1)
    secure_cookies: bool = False
    """Set behind HTTPS so that the session cookie is never sent in clear."""
    api: ApiLimits = Field(default_factory=ApiLimits)
    basemap: str = "plan-ign"
    """The overview map's background: ``plan-ign``, ``openmaptiles``, ``none`` (no internet), or the
    URL of a MapLibre style (then say whom to credit in ``basemap_attribution``)."""
    basemap_attribution: str = ""

    @field_validator("basemap")
    @classmethod
    def _known_basemap(cls, value: str) -> str:
        basemap(value)  # raises a ValueError that names the accepted values
        return value
