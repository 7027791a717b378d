"""A small client of the dashboards' query API, for notebooks: answers come back as polars frames.

    from smartcity.client import Client

    client = Client("http://localhost:8050", token="sct_...")
    air = client.aggregates("air_quality", communes=["78498"], start="-7d", every="1h")

Times are given as ``now``, relative (``-7d``, ``-12h``, ``-30m``), ISO 8601 text or aware
``datetime`` objects; answers carry a ``time`` column in UTC. Every error of the server is
raised as an ``ApiError`` subclass carrying the server's message.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx
import polars as pl

ARROW_MEDIA_TYPE = "application/vnd.apache.arrow.stream"
TimeArg = str | datetime


class ApiError(Exception):
    """The server refused a call; ``status`` is the HTTP status, ``message`` the server's reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class BadRequest(ApiError):
    """400: a parameter is wrong, or the answer would be too large (the message says which)."""


class Unauthorized(ApiError):
    """401: no token, or a token the server does not know (revoked?)."""


class Forbidden(ApiError):
    """403: a commune the token's user may not see."""


_ERRORS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 403: Forbidden}


def _time(value: TimeArg | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("give time-zone-aware datetimes (e.g. datetime(..., tzinfo=UTC))")
        return value.isoformat()
    return value


def _joined(values: Sequence[str] | str | None) -> str | None:
    if values is None:
        return None
    return values if isinstance(values, str) else ",".join(values)


class Client:
    """The query API of one smartcity server, with one user's API token."""

    def __init__(
        self, url: str, token: str, *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None
    ):
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}", "Accept": ARROW_MEDIA_TYPE},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def _get(self, path: str, params: dict[str, Any]) -> pl.DataFrame:
        query = {key: value for key, value in params.items() if value is not None}
        query["format"] = "arrow"
        response = self._http.get(path, params=query)
        if response.status_code != 200:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text or response.reason_phrase
            raise _ERRORS.get(response.status_code, ApiError)(response.status_code, message)
        return pl.read_ipc_stream(io.BytesIO(response.content))

    def communes(self) -> pl.DataFrame:
        """The communes this token may see: INSEE code, name, department, position."""
        return self._get("/communes", {})

    def aggregates(
        self,
        family: str,
        *,
        communes: Sequence[str] | None = None,
        start: TimeArg = "-1d",
        end: TimeArg | None = None,
        every: str = "1h",
        fields: Sequence[str] | None = None,
        stats: Sequence[str] | None = None,
        level: str = "commune",
        devices: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Rolling aggregates (``<field>_mean``, ``_min``, ``_max``, ``_p95``, ``_count``).

        ``every`` is the resolution (1m, 15m, 1h, 1d); ``level`` is ``commune`` (one series per
        commune) or ``device``; ``fields`` and ``stats`` narrow the columns.
        """
        return self._get(
            f"/aggregates/{family}",
            {
                "communes": _joined(communes),
                "start": _time(start),
                "end": _time(end),
                "every": every,
                "fields": _joined(fields),
                "stats": _joined(stats),
                "level": level,
                "devices": _joined(devices),
            },
        )

    def atmo(
        self, *, communes: Sequence[str] | None = None, start: TimeArg = "-30d", end: TimeArg | None = None
    ) -> pl.DataFrame:
        """The daily ATMO index: ``index`` (1-6, null without enough data), ``label``, ``color``..."""
        return self._get("/atmo", {"communes": _joined(communes), "start": _time(start), "end": _time(end)})

    def index(
        self,
        name: str,
        *,
        communes: Sequence[str] | None = None,
        start: TimeArg = "-7d",
        end: TimeArg | None = None,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Any index measurement: ``eaqi_hourly``, ``traffic_congestion``, ``building_energy_daily``..."""
        return self._get(
            f"/indices/{name}",
            {
                "communes": _joined(communes),
                "start": _time(start),
                "end": _time(end),
                "fields": _joined(fields),
            },
        )

    def anomalies(
        self,
        *,
        communes: Sequence[str] | None = None,
        start: TimeArg = "-7d",
        end: TimeArg | None = None,
        kinds: Sequence[str] | None = None,
        families: Sequence[str] | None = None,
        devices: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Anomalies that started in the range (kind, field, observed, expected, score, open...)."""
        return self._get(
            "/anomalies",
            {
                "communes": _joined(communes),
                "start": _time(start),
                "end": _time(end),
                "kinds": _joined(kinds),
                "families": _joined(families),
                "devices": _joined(devices),
            },
        )

    def alerts(
        self,
        *,
        communes: Sequence[str] | None = None,
        start: TimeArg = "-7d",
        end: TimeArg | None = None,
        states: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Alert transitions (pending, firing, resolved) in the range."""
        return self._get(
            "/alerts",
            {
                "communes": _joined(communes),
                "start": _time(start),
                "end": _time(end),
                "states": _joined(states),
            },
        )

    def readings(
        self,
        family: str,
        *,
        commune: str,
        start: TimeArg = "-1h",
        end: TimeArg | None = None,
        fields: Sequence[str] | None = None,
        devices: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Raw readings of one commune over a short range (the server caps it, 2 days by default)."""
        return self._get(
            f"/readings/{family}",
            {
                "communes": commune,
                "start": _time(start),
                "end": _time(end),
                "fields": _joined(fields),
                "devices": _joined(devices),
            },
        )
