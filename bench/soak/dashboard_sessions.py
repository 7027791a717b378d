"""The staff sessions of a soak, in their own process (locust's gevent patching stays here):

    python -m bench.soak.dashboard_sessions URL USERS DURATION OUT.json

Credentials go through ``SOAK_DASHBOARD_USER`` and ``SOAK_DASHBOARD_PASSWORD``.
"""

from __future__ import annotations

# locust must patch the standard library before anything else imports it.
from bench import dashboard_load  # isort: skip

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.soak.dashboard import DashboardStats


def load(base_url: str, users: int, duration: float) -> DashboardStats:
    """Run the staff sessions of bench/dashboard_load.py against ``base_url`` for ``duration``
    seconds, each on one of the served communes in turn."""
    from sensors.communes import CommuneRegistry

    got = dashboard_load.run_sessions(
        base_url,
        os.environ["SOAK_DASHBOARD_USER"],
        os.environ["SOAK_DASHBOARD_PASSWORD"],
        list(CommuneRegistry.load(os.environ.get("SMARTCITY_COMMUNES_FILE")).codes),
        users=users,
        duration=duration,
    )
    return DashboardStats(
        callbacks=got.callbacks,
        p50_ms=got.p50_ms,
        p95_ms=got.p95_ms,
        max_ms=got.max_ms,
        requests=got.requests,
        failures=got.errors,
        errors=[f"{count} x {message}" for message, count in got.error_messages.items()],
    )


def main(argv: list[str]) -> int:
    """Run the load and write its stats as JSON."""
    base_url, users, duration, out = argv
    started = time.monotonic()
    stats = load(base_url, int(users), float(duration))
    Path(out).write_text(json.dumps({**asdict(stats)}, indent=1))
    print(f"dashboard load: {stats} in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
