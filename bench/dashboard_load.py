"""Load on the dashboards: staff sessions on their commune pages, with the demo fleet running.

    .venv/bin/python -m bench.dashboard_load [--users 50] [--duration 600]

Starts ``smartcity demo`` as a child process, as ``./dev demo`` does: the simulated fleet
publishing over MQTT to the embedded broker, ingest, processing and alerts every 15 s, and the
dashboards served by gunicorn, all on the embedded DuckDB store, in one gunicorn worker (the
DuckDB file belongs to one process). Once the fleet's history is stored and the demo serves, it
measures the demo alone for ``--baseline`` seconds, then runs ``--users`` staff sessions with
locust (as a library) for ``--duration`` seconds. ``--url`` runs the sessions against a server
that is already running instead.

Each session is a browser tab driven by ``bench.dash_client``: it signs in, loads its commune's
page (HTML, ``/_dash-layout``, ``/_dash-dependencies``) and fires the callbacks the page fires
on load, built from the app's own callback map. Then at the pace of the page's own
``dcc.Interval`` (the dashboards' refresh, 30 s by default; ``--think`` sets another) the
interval ticks, and on some of those steps the user first switches sensor-family tab or period
(a click on the button: the callbacks the click sets off) or reloads the page. Any answer but
200 is an error: the run then fails (exit status 2).

Prints, per request kind and for all callbacks together, count, errors and p50/p95/max (ms);
requests/s; the CPU seconds of the server's processes (``/proc``: gunicorn's master and worker)
per 1,000 callbacks three ways: all of it (the demo's own work included), less the demo's own
work at the rate measured alone just before, and gunicorn's request threads alone (a floor:
DuckDB and polars run the queries in threads of their own); and ``uptime`` before and after,
since the figures only mean something with the machine's load beside them. Exit status 1 when
callbacks miss p95 < 300 ms.
"""

from __future__ import annotations

# locust runs on gevent, which must patch the standard library before anything else imports it.
from locust import HttpUser, task  # isort: skip

import argparse
import itertools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import gevent
from locust.env import Environment
from locust.stats import calculate_response_time_percentile

from bench.dash_client import (
    CALLBACK,
    DEPENDENCIES,
    LAYOUT,
    Callback,
    CallbackFailed,
    Component,
    DashPage,
    callbacks_of,
)
from bench.soak.procstat import uptime
from sensors.communes import CommuneRegistry
from tests.servers import free_port, wait_until

TARGET_P95_MS = 300.0
STEPS = ("tab", "period", "tick", "tick", "tick", "tab", "tick", "period", "tick", "reload")
"""What a session does at each step, in turn: ``tick`` is the page's refresh alone; ``tab`` and
``period`` a click, then the refresh; ``reload`` the browser reloading the page."""
BANNER = re.compile(r"dashboards:\s+(?P<url>http://\S+?)/\s+sign in as '(?P<user>[^']+)'")


def _chosen(component: Component) -> bool:
    return "true" in (component.props.get("aria-selected"), component.props.get("aria-checked"))


def _is_tab(component: Component) -> bool:
    return component.type == "Button" and component.props.get("role") == "tab"


def _is_period(component: Component) -> bool:
    # The range picker's buttons (dashboards.pages.common.range_picker), its calendar aside.
    group = component.component_id
    return (
        component.type == "Button"
        and isinstance(group, dict)
        and str(group.get("choice", "")).endswith("-range")
        and group.get("key") != "custom"
    )


class StaffSession(HttpUser):
    """A member of a commune's staff keeping the commune's page open in a browser tab."""

    abstract = True
    think_s: float | None = None
    """Seconds from one step's start to the next; None: the page's interval, as in the browser."""
    user = ""
    password = ""
    communes: ClassVar[Sequence[str]] = ()
    _numbers: ClassVar[Iterator[int]] = itertools.count()

    def on_start(self) -> None:
        number = next(self._numbers)
        self.insee = self.communes[number % len(self.communes)]
        self.steps = itertools.cycle(STEPS)
        self.page: DashPage | None = None
        self.pace_s, self.step_started = 30.0, time.monotonic()
        self.sign_in()
        self.reload()

    def _get(self, path: str, name: str) -> Any:
        with self.client.get(path, name=name, catch_response=True) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
                raise CallbackFailed(f"GET {path}: {answer.status_code}")
            return answer

    def sign_in(self) -> None:
        """The sign-in form, then its POST with the form's CSRF token."""
        form = self._get("/login", "sign-in form").text
        match = re.search(r'name="csrf" value="([^"]+)"', form)
        with self.client.post(
            "/login",
            data={"user": self.user, "password": self.password, "csrf": match.group(1) if match else ""},
            name="sign in",
            allow_redirects=False,
            catch_response=True,
        ) as answer:
            if answer.status_code != 302 or "/login" in answer.headers.get("Location", "/login"):
                answer.failure(f"sign-in refused: {answer.status_code}")

    def _post(self, callback: Callback, body: dict[str, Any]) -> Any:
        with self.client.post(
            CALLBACK, json=body, name=f"callback {callback.name}", catch_response=True
        ) as answer:
            if answer.status_code != 200:
                answer.failure(f"{answer.status_code}: {answer.text[:200]}")
                raise CallbackFailed(f"callback {callback.output}: {answer.status_code}")
            return answer.json()

    def reload(self) -> None:
        """What the browser fetches and fires to show the commune's page."""
        path = f"/commune/{self.insee}"
        try:
            self._get(path, "page /commune/<insee>")
            layout = self._get(LAYOUT, "page layout").json()
            dependencies = self._get(DEPENDENCIES, "page dependencies").json()
            self.page = DashPage(callbacks_of(dependencies), self._post)
            self.page.load(layout, path)
            intervals = [
                c.props.get("interval") for c in self.page.components.values() if c.type == "Interval"
            ]
            self.pace_s = self.think_s or min((float(ms) / 1000 for ms in intervals if ms), default=30.0)
        except CallbackFailed:
            self.page = None  # counted as a failure already; the next step loads the page again

    def _switch(self, wanted: Any) -> None:
        assert self.page is not None
        buttons = self.page.find(wanted)
        chosen = [i for i, key in enumerate(buttons) if _chosen(self.page.components[key])]
        if buttons:
            self.page.click(buttons[((chosen[0] if chosen else -1) + 1) % len(buttons)])

    def wait_time(self) -> float:
        """Until the next step is due: one step per pace, whatever the step took."""
        return max(0.0, self.pace_s - (time.monotonic() - self.step_started))

    @task
    def step(self) -> None:
        """One step of ``STEPS``: a tab, a period or a reload, then (but after a reload) the refresh."""
        self.step_started = time.monotonic()
        action = next(self.steps)
        if self.page is None or action == "reload":
            self.reload()
            return
        try:
            if action == "tab":
                self._switch(_is_tab)
            elif action == "period":
                self._switch(_is_period)
            self.page.tick()
        except CallbackFailed:
            self.page = None


@dataclass(frozen=True)
class LoadStats:
    """What a load run measured."""

    users: int
    duration_s: float
    requests: int
    callbacks: int
    errors: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    per_request: dict[str, dict[str, float]]
    error_messages: dict[str, int]

    @property
    def requests_per_s(self) -> float:
        """All requests (pages, layouts, callbacks, sign-ins) per second."""
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def held(self) -> bool:
        """Whether callbacks held the target: p95 < 300 ms with no error."""
        return self.callbacks > 0 and self.errors == 0 and self.p95_ms < TARGET_P95_MS


def run_sessions(
    base_url: str,
    user: str,
    password: str,
    communes: Sequence[str],
    *,
    users: int,
    duration: float,
    spawn_rate: float = 5.0,
    think_s: float | None = None,
) -> LoadStats:
    """``users`` staff sessions of ``user`` on ``communes`` (in turn) against ``base_url`` for
    ``duration`` seconds; their statistics."""
    session = type(
        "Session",
        (StaffSession,),
        {
            "abstract": False,
            "host": base_url,
            "user": user,
            "password": password,
            "communes": tuple(communes),
            "think_s": think_s,
            "_numbers": itertools.count(),
        },
    )
    environment = Environment(user_classes=[session])
    runner = environment.create_local_runner()
    started = time.monotonic()
    runner.start(users, spawn_rate=spawn_rate)
    gevent.spawn_later(duration, runner.quit)
    runner.greenlet.join()
    return _stats(environment, users, time.monotonic() - started)


def _stats(environment: Environment, users: int, duration: float) -> LoadStats:
    stats = environment.stats
    merged: Counter[int] = Counter()
    callbacks = requests = errors = 0
    slowest = 0.0
    per_request: dict[str, dict[str, float]] = {}
    for entry in stats.entries.values():
        per_request[entry.name] = {
            "count": entry.num_requests,
            "errors": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5) or 0.0,
            "p95_ms": entry.get_response_time_percentile(0.95) or 0.0,
            "max_ms": entry.max_response_time or 0.0,
        }
        requests += entry.num_requests
        errors += entry.num_failures
        if entry.name.startswith("callback "):
            merged.update(entry.response_times)
            callbacks += entry.num_requests
            slowest = max(slowest, entry.max_response_time or 0.0)
    messages = {f"{e.method} {e.name}: {e.error}": e.occurrences for e in stats.errors.values()}
    # An exception in a session's code is an error of the bench, never to be taken for a figure.
    for crash in environment.runner.exceptions.values() if environment.runner else ():
        message = f"exception: {crash['msg']}"
        messages[message] = messages.get(message, 0) + crash["count"]
        errors += crash["count"]

    def percentile(share: float) -> float:
        return float(calculate_response_time_percentile(merged, callbacks, share)) if callbacks else 0.0

    return LoadStats(
        users=users,
        duration_s=duration,
        requests=requests,
        callbacks=callbacks,
        errors=errors,
        p50_ms=percentile(0.5),
        p95_ms=percentile(0.95),
        max_ms=slowest,
        per_request=per_request,
        error_messages=messages,
    )


# -- the server's CPU ---------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn's master and its workers), from ``/proc``."""
    found = [pid]
    for index in itertools.count():
        if index >= len(found):
            return found
        for thread in Path(f"/proc/{found[index]}/task").glob("*"):
            try:
                found += [int(child) for child in (thread / "children").read_text().split()]
            except OSError:
                continue
    return found


def _stat_cpu(path: Path, ticks: int) -> float:
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes so far (``/proc/<pid>/stat``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(_stat_cpu(Path(f"/proc/{pid}/stat"), ticks) for pid in pids)


def thread_cpu(pids: Sequence[int]) -> dict[str, float]:
    """CPU seconds of each living thread of these processes, by ``pid/tid``."""
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        f"{pid}/{task.name}": _stat_cpu(task / "stat", ticks)
        for pid in pids
        for task in Path(f"/proc/{pid}/task").glob("*")
    }


@dataclass(frozen=True)
class ServerCpu:
    """The server's CPU seconds during the load, three ways (see ``report``)."""

    total: float
    demo_alone: float | None
    """The demo's own work over the same span, from its rate measured alone just before."""
    request_threads: float
    """Threads that appeared during the load: gunicorn's request threads (started on demand)."""


@contextmanager
def measured_cpu(pids: Sequence[int], demo_rate: float | None) -> Iterator[list[ServerCpu]]:
    """Measures the CPU of ``pids`` over the ``with`` block; the result is in the list it yields."""
    result: list[ServerCpu] = []
    threads_before, total_before, started = thread_cpu(pids), cpu_seconds(pids), time.monotonic()
    yield result
    threads_after = thread_cpu(pids)
    new = sum(cpu for key, cpu in threads_after.items() if key not in threads_before)
    span = time.monotonic() - started
    alone = demo_rate * span if demo_rate is not None else None
    result.append(ServerCpu(cpu_seconds(pids) - total_before, alone, new))


# -- the demo -----------------------------------------------------------------------------------


@contextmanager
def demo(data_dir: Path, password: str) -> Iterator[tuple[int, str, str]]:
    """``smartcity demo`` as a child process: its pid, URL and user once it serves."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartcity.cli",
            "demo",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
            f"--password={password}",  # one word: a password may start with '-'
        ],
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

    def serving() -> bool:
        if process.poll() is not None:
            raise RuntimeError("smartcity demo exited:\n" + "".join(lines[-40:]))
        return BANNER.search("".join(lines)) is not None

    try:
        wait_until(serving, timeout=1200, what="the demo's banner")
        match = BANNER.search("".join(lines))
        assert match
        yield process.pid, match["url"], match["user"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=180)


# -- the report ---------------------------------------------------------------------------------


def report(stats: LoadStats, cpu: ServerCpu | None) -> str:
    """The figures, as printed."""
    lines = [f"\n{'request':<40}{'count':>8}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"]
    for name, row in sorted(stats.per_request.items()):
        lines.append(
            f"{name:<40}{row['count']:>8.0f}{row['errors']:>8.0f}"
            f"{row['p50_ms']:>9.0f}{row['p95_ms']:>9.0f}{row['max_ms']:>9.0f}"
        )
    lines.append(
        f"{'all callbacks':<40}{stats.callbacks:>8}{'':>8}"
        f"{stats.p50_ms:>9.0f}{stats.p95_ms:>9.0f}{stats.max_ms:>9.0f}"
    )
    rate = stats.callbacks / stats.duration_s if stats.duration_s else 0.0
    lines.append(
        f"\n{stats.users} sessions for {stats.duration_s:.0f} s: {stats.requests} requests "
        f"({stats.requests_per_s:.1f}/s), {stats.callbacks} callbacks ({rate:.1f}/s), {stats.errors} error(s)"
    )
    thousands = max(stats.callbacks, 1) / 1000
    if cpu is not None:
        lines.append(
            f"server CPU (gunicorn master and worker, /proc): {cpu.total:.1f} s, "
            f"{cpu.total / thousands:.1f} s per 1,000 callbacks, the demo's own work included"
        )
        if cpu.demo_alone is not None:
            rest = cpu.total - cpu.demo_alone
            lines.append(
                f"  less the demo's own work at the rate measured alone before ({cpu.demo_alone:.1f} s): "
                f"{rest:.1f} s, {rest / thousands:.1f} s per 1,000 callbacks"
            )
        lines.append(
            f"  gunicorn's request threads alone: {cpu.request_threads:.1f} s, "
            f"{cpu.request_threads / thousands:.1f} s per 1,000 callbacks "
            "(without the DuckDB and polars threads that run their queries)"
        )
    for message, count in stats.error_messages.items():
        lines.append(f"  ERROR {count} x {message}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark: 0 when the target is held, 1 when p95 misses it, 2 on any error."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, default=50, help="staff sessions (default: 50)")
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default: 600)")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="sessions started per second")
    parser.add_argument(
        "--think", type=float, help="seconds between steps (default: the page's refresh interval)"
    )
    parser.add_argument(
        "--baseline", type=float, default=60.0, help="seconds the demo is measured alone first (default: 60)"
    )
    parser.add_argument("--url", help="a running server to load instead of starting the demo")
    parser.add_argument("--user", help="with --url: who signs in")
    parser.add_argument("--password", help="with --url: their password")
    parser.add_argument("--communes", help="comma-separated INSEE codes (default: the registry's)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    communes = args.communes.split(",") if args.communes else list(CommuneRegistry.load().codes)
    with tempfile.TemporaryDirectory(prefix="dashboard-load-") as tmp, _server(args, Path(tmp)) as server:
        pid, url, user, password = server
        pids = process_tree(pid) if pid else []
        demo_rate = None
        if pids and args.baseline > 0:
            print(f"the demo alone for {args.baseline:.0f} s...", flush=True)
            before = cpu_seconds(pids)
            time.sleep(args.baseline)
            demo_rate = (cpu_seconds(pids) - before) / args.baseline
        print(f"load: {args.users} sessions for {args.duration:.0f} s on {url}", flush=True)
        print(f"uptime before: {uptime()}", flush=True)
        with measured_cpu(pids, demo_rate) as measured:
            stats = run_sessions(
                url,
                user,
                password,
                communes,
                users=args.users,
                duration=args.duration,
                spawn_rate=args.spawn_rate,
                think_s=args.think,
            )
        print(f"uptime after:  {uptime()}", flush=True)
    cpu = measured[0] if pids else None
    print(report(stats, cpu), flush=True)
    if args.json:
        figures = {**asdict(stats), "requests_per_s": stats.requests_per_s}
        args.json.write_text(json.dumps({**figures, "server_cpu": asdict(cpu) if cpu else None}, indent=2))
    if stats.errors or not stats.callbacks:
        print(
            f"FAILED: {stats.errors} error(s), {stats.callbacks} callback(s): the figures are not valid",
            flush=True,
        )
        return 2
    print(
        f"target (callbacks p95 < {TARGET_P95_MS:.0f} ms, no error): {'held' if stats.held else 'NOT held'}"
    )
    return 0 if stats.held else 1


@contextmanager
def _server(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[int, str, str, str]]:
    """The server to load: the one at ``--url``, or the demo started here."""
    if args.url:
        if not (args.user and args.password):
            raise SystemExit("--url needs --user and --password")
        yield 0, args.url.rstrip("/"), args.user, args.password
        return
    password = secrets.token_urlsafe(12)
    print("starting the demo (the fleet's history goes through MQTT first: minutes)...", flush=True)
    with demo(tmp / "demo", password) as (pid, url, user):
        yield pid, url, user, password


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as failure:  # the demo did not start: no figure at all
        print(f"FAILED: {failure}", file=sys.stderr, flush=True)
        sys.exit(2)
