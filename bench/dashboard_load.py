"""Load on the dashboards: staff sessions on their commune pages, with the demo fleet running.

    .venv/bin/python -m bench.dashboard_load [--users 50] [--duration 600]

Starts ``smartcity demo`` (fleet, broker, ingest, processing, alerts and the dashboards served
by gunicorn, all on the embedded DuckDB store) as a child process, then runs ``--users``
simulated staff sessions with locust (as a library). Each session signs in, opens the page of
one commune and, every 30 s (locust's ``constant_pacing``), does what the page does:

* most often its refresh tick: the chart, ATMO and status callbacks;
* sometimes a switch of sensor-family tab (field options, then the chart);
* sometimes a switch of period (range key, then chart, ATMO and status);
* now and then a full reload of the page (HTML, layout, then every callback).

Reports per request kind and for all callbacks together: count, failures, p50/p95/max (ms),
the server's CPU seconds per callback (the demo's processes, fleet and processing included),
and ``uptime`` before and after, since the figures only mean something with the load beside them.
"""

from __future__ import annotations

# locust runs on gevent, which must patch the standard library before anything else imports it.
from locust import HttpUser, constant_pacing, task  # isort: skip

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import gevent
import psutil
from locust.env import Environment
from locust.stats import calculate_response_time_percentile

from sensors.communes import CommuneRegistry
from tests.dashboard_fixtures import dash_callback
from tests.servers import free_port, wait_until

FIELDS = {
    "air_quality": "pm25",
    "traffic": "intensity",
    "building": "activePower",
    "camera": "peopleCount",
    "network": "throughputIn",
}
RANGES = ("3h", "24h", "7d", "30d")
BANNER = re.compile(
    r"dashboards:\s+(?P<url>http://\S+?)/\s+sign in as '(?P<user>[^']+)' with password '(?P<pw>[^']+)'"
)
CALLBACK = "/_dash-update-component"


class StaffSession(HttpUser):
    """A member of a commune's staff keeping the commune's page open."""

    wait_time = constant_pacing(30)
    communes: ClassVar[list[str]] = []
    user = ""
    password = ""

    def on_start(self) -> None:
        page = self.client.get("/login", name="sign-in form").text
        match = re.search(r'name="csrf" value="([^"]+)"', page)
        token = match.group(1) if match else ""
        self.client.post(
            "/login",
            data={"user": self.user, "password": self.password, "csrf": token, "next": "/"},
            name="sign in",
            allow_redirects=False,
        )
        self.insee = random.choice(self.communes)
        self.family, self.range_key, self.tick = "air_quality", "24h", 0
        self.reload()

    def _callback(self, name: str, body: dict[str, Any]) -> None:
        self.client.post(CALLBACK, json=body, name=f"callback {name}")

    def chart(self) -> None:
        self._callback(
            "chart",
            dash_callback(
                [("commune-chart", "figure"), ("commune-updated", "children")],
                [
                    ("commune-insee", "data", self.insee),
                    ("commune-family", "value", self.family),
                    ("commune-field", "value", FIELDS[self.family]),
                    ("commune-range-key", "data", self.range_key),
                    ("commune-tick", "n_intervals", self.tick),
                ],
                "commune-tick.n_intervals",
            ),
        )

    def side_panels(self) -> None:
        inputs = [
            ("commune-insee", "data", self.insee),
            ("commune-range-key", "data", self.range_key),
            ("commune-tick", "n_intervals", self.tick),
        ]
        self._callback(
            "atmo", dash_callback([("commune-atmo", "figure")], inputs, "commune-tick.n_intervals")
        )
        self._callback(
            "status", dash_callback([("commune-status", "children")], inputs, "commune-tick.n_intervals")
        )

    def reload(self) -> None:
        self.client.get(f"/commune/{self.insee}", name="page /commune/<insee>")
        self.client.get("/_dash-layout", name="page layout")
        self.tick = 0
        self.chart()
        self.side_panels()

    @task(6)
    def refresh(self) -> None:
        """The page's 30-second tick."""
        self.tick += 1
        self.chart()
        self.side_panels()

    @task(2)
    def switch_family(self) -> None:
        """Another sensor-family tab: its fields, then its chart."""
        self.family = random.choice([f for f in FIELDS if f != self.family])
        self._callback(
            "family",
            dash_callback(
                [("commune-field", "options"), ("commune-field", "value")],
                [("commune-family", "value", self.family)],
                "commune-family.value",
            ),
        )
        self.chart()

    @task(2)
    def switch_period(self) -> None:
        """Another period: the range key, then everything that depends on it."""
        self.range_key = random.choice([r for r in RANGES if r != self.range_key])
        self._callback(
            "range",
            dash_callback(
                [("commune-range-key", "data")],
                [
                    ("commune-range", "value", self.range_key),
                    ("commune-range-dates", "start_date", None),
                    ("commune-range-dates", "end_date", None),
                ],
                "commune-range.value",
            ),
        )
        self.chart()
        self.side_panels()

    @task(1)
    def full_reload(self) -> None:
        """The browser reloads the page."""
        self.reload()


def start_demo(data_dir: Path, port: int) -> tuple[subprocess.Popen[str], str, str, str, list[str]]:
    """``smartcity demo`` as a child process; its URL, user and password once it serves."""
    process = subprocess.Popen(
        [sys.executable, "-m", "smartcity.cli", "demo", "--data-dir", str(data_dir), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True).start()
    wait_until(lambda: BANNER.search("".join(lines)) is not None, timeout=900, what="the demo's banner")
    match = BANNER.search("".join(lines))
    assert match
    return process, match["url"], match["user"], match["pw"], lines


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (gunicorn's worker)."""
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def uptime() -> str:
    """The machine's load, as ``uptime`` prints it."""
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def report(environment: Environment, cpu: float, duration: float) -> bool:
    """Print the figures; True when callbacks held p95 < 300 ms with no error."""
    stats = environment.stats
    print(f"\n{'request':<28}{'count':>8}{'fail':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    merged: Counter[int] = Counter()
    callbacks = failures = 0
    for entry in sorted(stats.entries.values(), key=lambda e: e.name):
        p50, p95 = entry.get_response_time_percentile(0.5), entry.get_response_time_percentile(0.95)
        print(
            f"{entry.name:<28}{entry.num_requests:>8}{entry.num_failures:>6}"
            f"{p50:>9.0f}{p95:>9.0f}{entry.max_response_time:>9.0f}"
        )
        if entry.name.startswith("callback"):
            merged.update(entry.response_times)
            callbacks += entry.num_requests
        failures += entry.num_failures
    p95 = calculate_response_time_percentile(merged, callbacks, 0.95) if callbacks else 0
    p50 = calculate_response_time_percentile(merged, callbacks, 0.5) if callbacks else 0
    print(f"{'all callbacks':<28}{callbacks:>8}{'':>6}{p50:>9.0f}{p95:>9.0f}")
    print(
        f"\n{callbacks / duration:.1f} callbacks/s; server CPU {cpu:.1f} s in {duration:.0f} s "
        f"({cpu / max(callbacks, 1) * 1000:.1f} ms CPU per callback, fleet and processing included); "
        f"{failures} failed request(s)"
    )
    for name, error in stats.errors.items():
        print(f"  error {name}: {error.occurrences} x {error.error}")
    held = p95 < 300 and failures == 0
    print(f"target (callbacks p95 < 300 ms, no error): {'held' if held else 'NOT held'}")
    return held


def main() -> int:
    """Run the benchmark; exit 1 when the target is not held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="staff sessions (default: 50)")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default: 600)")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="sessions started per second")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dashboard-load-") as tmp:
        print("starting the demo (fleet history first)...", flush=True)
        process, url, user, password, _ = start_demo(Path(tmp) / "demo", free_port())
        try:
            StaffSession.host = url
            StaffSession.communes = list(CommuneRegistry.load().codes)
            StaffSession.user, StaffSession.password = user, password
            environment = Environment(user_classes=[StaffSession])
            runner = environment.create_local_runner()
            print(f"load: {args.users} sessions for {args.duration:.0f} s on {url}", flush=True)
            print(f"uptime before: {uptime()}", flush=True)
            cpu_before, started = cpu_seconds(process.pid), time.monotonic()
            runner.start(args.users, spawn_rate=args.spawn_rate)
            gevent.spawn_later(args.duration, runner.quit)
            runner.greenlet.join()
            duration = time.monotonic() - started
            cpu = cpu_seconds(process.pid) - cpu_before
            print(f"uptime after:  {uptime()}", flush=True)
            held = report(environment, cpu, duration)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=180)
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
