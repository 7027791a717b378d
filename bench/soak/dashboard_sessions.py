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
    """Run the staff sessions against ``base_url`` for ``duration`` seconds.

    The seam to bench/dashboard_load.py: when it offers ``run_load(base_url, users, duration)``
    (returning this dataclass's fields, as a mapping or an object), that is what runs."""
    run_load = getattr(dashboard_load, "run_load", None)
    if run_load is not None:
        stats = run_load(base_url, users, duration)
        values = stats if isinstance(stats, dict) else vars(stats)
        return DashboardStats(**{k: v for k, v in values.items() if k in DashboardStats.__dataclass_fields__})
    return _staff_sessions(base_url, users, duration)


def _staff_sessions(base_url: str, users: int, duration: float) -> DashboardStats:
    """bench/dashboard_load.py's ``StaffSession`` (as of main), driven by locust as a library."""
    from collections import Counter

    import gevent
    from locust.env import Environment
    from locust.stats import calculate_response_time_percentile

    from sensors.communes import CommuneRegistry

    session = dashboard_load.StaffSession
    session.host = base_url
    session.communes = list(CommuneRegistry.load().codes)
    session.user = os.environ["SOAK_DASHBOARD_USER"]
    session.password = os.environ["SOAK_DASHBOARD_PASSWORD"]
    environment = Environment(user_classes=[session])
    runner = environment.create_local_runner()
    runner.start(users, spawn_rate=max(users / 10, 1))
    gevent.spawn_later(duration, runner.quit)
    runner.greenlet.join()
    merged: Counter[int] = Counter()
    stats = DashboardStats()
    for entry in environment.stats.entries.values():
        stats.requests += entry.num_requests
        stats.failures += entry.num_failures
        if entry.name.startswith("callback"):
            merged.update(entry.response_times)
            stats.callbacks += entry.num_requests
            stats.max_ms = max(stats.max_ms, entry.max_response_time or 0.0)
    if stats.callbacks:
        stats.p50_ms = calculate_response_time_percentile(merged, stats.callbacks, 0.5)
        stats.p95_ms = calculate_response_time_percentile(merged, stats.callbacks, 0.95)
    stats.errors = [f"{e.occurrences} x {e.name}: {e.error}" for e in environment.stats.errors.values()]
    return stats


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
