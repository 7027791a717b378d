"""The soak's dashboard load: 50 staff sessions refreshing their commune page every 30 s.

The load itself belongs to bench/dashboard_load.py; ``bench.soak.dashboard_sessions`` is a thin
adapter around one call, ``load(base_url, users, duration) -> stats``, run in its own process
(locust patches the standard library with gevent at import, which the soak's threads must not
see). This module starts that process and reads what it wrote.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.ingest_common import REPO


@dataclass
class DashboardStats:
    """What the sessions saw: every Dash callback together, and failures of any request."""

    callbacks: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


def start_load(
    base_url: str,
    users: int,
    duration: float,
    out: Path,
    *,
    user: str,
    password: str,
    log: Path,
    communes_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the sessions in a child process, on the communes of ``communes_file`` (None: the
    shipped registry's) in turn; ``read_stats(out)`` once it exits."""
    env = {**os.environ, "SOAK_DASHBOARD_USER": user, "SOAK_DASHBOARD_PASSWORD": password}
    if communes_file is not None:
        env["SMARTCITY_COMMUNES_FILE"] = str(communes_file)
    with log.open("ab") as sink:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.soak.dashboard_sessions",
                base_url,
                str(users),
                str(duration),
                str(out),
            ],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def read_stats(out: Path) -> DashboardStats | None:
    """The stats a finished load wrote, or None when it wrote none (it failed: see its log)."""
    if not out.exists():
        return None
    values: dict[str, Any] = json.loads(out.read_text())
    return DashboardStats(**values)
