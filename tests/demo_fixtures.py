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

BANNER = re.compile(
    r"dashboards:\s+(?P<url>http://\S+?)/\s+sign in as '(?P<user>[^']+)' with password '(?P<pw>[^']+)'"
)
COMMUNE = re.compile(r"commune:\s+\S+/commune/(?P<insee>\w+)")
EPCI_BANNER = re.compile(
    r"EPCI user:\s+(?P<url>http://\S+/epci/\d+)\s+sign in as '(?P<user>[^']+)' with password '(?P<pw>[^']+)'"
)


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
