"""The dashboards' production server: gunicorn, each worker process with an app of its own.

Workers do not share memory: each builds its app (and opens its store) after the fork, and
what must hold across them (sessions, sign-in counters) lives in the state file
(``dashboards.state``). gunicorn's own trust of ``X-Forwarded-*`` headers is turned off: the
``trusted_proxies`` setting (werkzeug's ``ProxyFix``) is the one place that decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from gunicorn.app.base import BaseApplication

from dashboards.config import DashboardSettings

log = logging.getLogger(__name__)

WSGIApp = Callable[..., Any]


def gunicorn_options(settings: DashboardSettings, host: str, port: int, *, workers: int) -> dict[str, Any]:
    """gunicorn's settings for the dashboards: threaded workers, no header trust, quiet logs."""
    return {
        "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
        "workers": workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": 60,
        "graceful_timeout": 20,
        "keepalive": 5,
        "preload_app": False,
        "secure_scheme_headers": {},
        "forwarded_allow_ips": "",
        "accesslog": "-" if settings.access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "smartcity-dashboard",
        "control_socket_disable": True,
    }


class DashboardServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running ``factory()`` (a WSGI app) in each of its workers."""

    def __init__(
        self,
        factory: Callable[[], WSGIApp],
        options: dict[str, Any],
        on_worker_exit: Callable[[], None] | None = None,
    ) -> None:
        self.factory = factory
        self.options = options
        self.on_worker_exit = on_worker_exit
        super().__init__()

    def load_config(self) -> None:
        """Apply ``options`` to gunicorn's configuration."""
        for key, value in self.options.items():
            self.cfg.set(key, value)
        if self.on_worker_exit is not None:
            callback = self.on_worker_exit
            self.cfg.set("worker_exit", lambda _server, _worker: callback())

    def load(self) -> WSGIApp:
        """The WSGI app of one worker."""
        return self.factory()


def serve(
    factory: Callable[[], WSGIApp],
    settings: DashboardSettings,
    host: str,
    port: int,
    *,
    workers: int,
    on_worker_exit: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM (gunicorn stops its workers gracefully, then exits)."""
    DashboardServer(factory, gunicorn_options(settings, host, port, workers=workers), on_worker_exit).run()
