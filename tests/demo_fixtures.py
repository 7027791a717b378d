"""``smartcity demo`` as a child process, read as a newcomer reads it: its banner on the console.

Shared by the demo's end-to-end test and ``bench.demo_ready``, which times the same journey.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page, expect

BANNER = re.compile(
    r"dashboards:\s+(?P<url>http://\S+?)/\s+sign in as '(?P<user>[^']+)' with password '(?P<pw>[^']+)'"
)
COMMUNE = re.compile(r"commune:\s+\S+/commune/(?P<insee>\w+)")
EPCI_BANNER = re.compile(
    r"EPCI user:\s+(?P<url>http://\S+/epci/\d+)\s+sign in as '(?P<user>[^']+)' with password '(?P<pw>[^']+)'"
)

COMMUNE_PAGE_SHOWS = (
    # Live data: the chart draws traces of the aggregates, the device table lists online devices.
    ("chart", "#commune-chart .legendtext", None),
    ("devices online", "#commune-devices", "en ligne"),
    # The staged incident: the switch is offline, found by processing and alerted on; alerts are
    # named by their rule's title in the page's language, not by the rule's slug.
    ("anomaly", "#commune-anomalies", "hors ligne"),
    ("alert", "#commune-alerts", "Équipement réseau injoignable"),
)
"""What the demo's commune page shows a newcomer, in the order it comes: (name, selector, text
it contains, or None: visible)."""


def wait_shown(page: Page, selector: str, text: str | None, timeout_ms: float) -> None:
    """Wait until ``page`` shows one step of ``COMMUNE_PAGE_SHOWS``."""
    located = page.locator(selector)
    if text is None:
        expect(located.first).to_be_visible(timeout=timeout_ms)
    else:
        expect(located).to_contain_text(text, timeout=timeout_ms)


@dataclass
class Running:
    """A running demo and every line it has printed so far."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        """Everything printed so far (stdout and stderr)."""
        return "".join(self.lines)

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=90)


def start_demo(repo_root: Path, data_dir: Path) -> Running:
    """``smartcity demo --data-dir data_dir`` on a port of its choosing, its output collected."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "smartcity.cli", "demo", "--data-dir", str(data_dir), "--port", "0"],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    running = Running(process)
    assert process.stdout is not None
    stdout = process.stdout
    threading.Thread(target=lambda: running.lines.extend(iter(stdout.readline, "")), daemon=True).start()
    return running
