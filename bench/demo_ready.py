"""How soon ``smartcity demo`` shows a newcomer everything, timed as the demo test walks it.

Each run starts ``smartcity demo`` on a fresh data directory and times, from the command's start:
the banner on the console; then, in Debian's Chromium (signed in with the banner's password,
through the form), the commune page's chart drawing aggregates, its device table listing devices
"en ligne", the staged incident as an anomaly ("hors ligne") and as an alert (its rule's French
title). Each wait polls the page, so a time is when it was first seen after the one before it.
The demo's CPU (its whole process tree, the browser not counted) is read when all is shown.
The demo is then stopped and started again on the same directory: the time to its banner then.

There is no plain baseline to beat: no other tool walks this journey. The machine's load is
printed before and after; measure on a quiet machine.

    .venv/bin/python -m bench.demo_ready [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser

from bench.soak.procstat import cpu_seconds, uptime
from tests.browser_fixtures import chromium, sign_in
from tests.demo_fixtures import BANNER, COMMUNE, COMMUNE_PAGE_SHOWS, start_demo, wait_shown
from tests.servers import wait_until

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 900.0
"""How long any one step may take before the run is called broken."""
STEPS = COMMUNE_PAGE_SHOWS
"""What the commune page shows, in the order it is waited for: (name, selector, text)."""
RUNNING = re.compile("smartcity demo is running")
"""The banner of a restart, which does not print the password again."""


@dataclass(frozen=True)
class DemoRun:
    """One cold start and one restart of the demo; seconds from the command's start."""

    banner_s: float
    shown_s: dict[str, float]
    cpu_s: float
    """The demo's CPU seconds when the page showed all of ``STEPS``."""
    restart_banner_s: float


def one_run(browser: Browser, data_dir: Path) -> DemoRun:
    """Start the demo on an empty ``data_dir``, walk the commune page, stop, start it again."""
    started = time.monotonic()
    running = start_demo(REPO, data_dir)
    try:
        wait_until(lambda: _printed(running.output, running.process), timeout=TIMEOUT_S, what="the banner")
        banner_s = time.monotonic() - started
        banner, commune = BANNER.search(running.output), COMMUNE.search(running.output)
        assert banner and commune, running.output
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="fr-FR")
        sign_in(page, banner["url"], banner["user"], banner["pw"], target=f"/commune/{commune['insee']}")
        shown_s = {}
        for name, selector, text in STEPS:
            wait_shown(page, selector, text, TIMEOUT_S * 1000)
            shown_s[name] = time.monotonic() - started
        cpu_s = cpu_seconds(running.process.pid)
        page.close()
        assert running.stop() == 0, running.output
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
    restarted = time.monotonic()
    again = start_demo(REPO, data_dir)
    try:
        wait_until(
            lambda: _printed(again.output, again.process, RUNNING),
            timeout=TIMEOUT_S,
            what="the second banner",
        )
        restart_banner_s = time.monotonic() - restarted
        assert again.stop() == 0, again.output
    finally:
        if again.process.poll() is None:
            again.process.kill()
            again.process.wait()
    return DemoRun(banner_s, shown_s, cpu_s, restart_banner_s)


def _printed(output: str, process: subprocess.Popen[str], banner: re.Pattern[str] = BANNER) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"smartcity demo exited with code {process.returncode}:\n{output[-3000:]}")
    return banner.search(output) is not None


def report(runs: list[DemoRun]) -> str:
    """A Markdown table, a row per run and the median."""
    names = [name for name, _, _ in STEPS]
    header = ["run", "banner", *names, "demo CPU until all shown", "restart: banner"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, values: list[float]) -> str:
        return f"| {label} | " + " | ".join(f"{value:.1f} s" for value in values) + " |"

    table = [
        [run.banner_s, *(run.shown_s[name] for name in names), run.cpu_s, run.restart_banner_s]
        for run in runs
    ]
    lines += [row(str(index + 1), values) for index, values in enumerate(table)]
    if len(runs) > 1:
        lines.append(row("median", [statistics.median(column) for column in zip(*table, strict=True)]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Time ``--runs`` cold starts of the demo and print them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3, help="cold starts to time (default 3)")
    args = parser.parse_args(argv)
    print(f"before: {uptime()}", flush=True)
    runs = []
    with chromium() as browser, tempfile.TemporaryDirectory(prefix="demo-ready-") as tmp:
        for index in range(args.runs):
            runs.append(one_run(browser, Path(tmp) / f"run-{index}"))
            print(f"run {index + 1}: all shown at {max(runs[-1].shown_s.values()):.1f} s", flush=True)
    print(report(runs))
    print(f"after: {uptime()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
