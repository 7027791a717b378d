"""Settings of the dashboard server and its query API."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashboards.agents import OidcSettings
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
    tokens_file: Path | None = None
    """API tokens (hashes, expiry, communes, last use); default ``tokens.sqlite`` beside the users file."""
    token_lifetime_days: int = Field(90, ge=1, le=366)
    """Lifetime of a new API token unless ``add-token --expires`` says otherwise."""
    oidc: OidcSettings | None = None
    """Sign-in of public agents through an OpenID Connect provider such as ProConnect."""
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
    status_rows: int = Field(100, ge=10, le=10_000)
    """Most devices the commune page's status table lists (offline ones first); its caption says
    how many more there are. A table of every device of a large commune is too heavy to build
    and send at each refresh."""
    alert_rules_file: Path | None = None
    """The alert rules (docs/alerts.md): charts draw the levels of the rules comparing them."""
    topology_file: Path | None = None
    """The devices CSV (device_id, parent) the alerts use (docs/alerts.md): device pages show the
    parent network device from it."""
    max_failed_signins: int = Field(5, ge=1)
    """Failed sign-ins allowed for one account from one client address within ``signin_window_s``."""
    max_failed_signins_per_account: int = Field(20, ge=1)
    """Failed sign-ins allowed for one account from all addresses together."""
    max_failed_signins_per_address: int = Field(50, ge=1)
    """Failed sign-ins allowed from one address over all accounts (an office behind one NAT)."""
    signin_window_s: int = Field(900, ge=1)
    session_idle_s: int = Field(2 * 3600, ge=60)
    """A session unused this long ends (an open live page keeps its session in use)."""
    secure_cookies: bool = False
    """Always mark cookies ``Secure``; they are anyway when the request came over HTTPS, directly
    or through a trusted proxy's ``X-Forwarded-Proto``."""
    trusted_proxies: int = Field(0, ge=0, le=5)
    """How many reverse proxies in front of the server append to ``X-Forwarded-For`` and set
    ``X-Forwarded-Proto``; 0 ignores those headers (anyone could forge them)."""
    state_file: Path | None = None
    """SQLite file of sessions and sign-in counters shared by the workers; next to the users
    file when not given."""
    workers: int = Field(2, ge=1, le=64)
    """Worker processes of the server (gunicorn); 1 with the DuckDB store, which one process owns."""
    threads: int = Field(4, ge=1, le=64)
    """Threads per worker."""
    access_log: bool = False
    """Log every request (client address, path, status) to standard output."""
    api: ApiLimits = Field(default_factory=ApiLimits)

    @property
    def state_path(self) -> Path:
        """The shared state file: ``state_file``, else next to the users file."""
        return self.state_file or Path(self.users_file).parent / "dashboard_state.sqlite3"

    basemap: str = "plan-ign"
    """The overview map's background: ``plan-ign``, ``openmaptiles``, ``none`` (no internet), or the
    URL of a MapLibre style (then say whom to credit in ``basemap_attribution``)."""
    basemap_attribution: str = ""

    @field_validator("basemap")
    @classmethod
    def _known_basemap(cls, value: str) -> str:
        basemap(value)  # raises a ValueError that names the accepted values
        return value
