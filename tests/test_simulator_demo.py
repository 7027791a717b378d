"""The interim ``smartcity demo``: no server to install, live counts, Ctrl-C exits 0."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from sensors.families import Family
from tests.servers import wait_until

COUNTS = re.compile(r"readings (.*?);")


def test_demo_shows_every_family_arriving_and_stops_cleanly_on_ctrl_c(repo_root: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "smartcity.cli", "demo", "--port", "0", "--report-every", "1s"],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()

    def every_family_counted() -> bool:
        for line in list(lines):
            match = COUNTS.search(line)
            if match:
                counts = dict(item.split("=") for item in match.group(1).split())
                if all(int(counts.get(family.value, 0)) > 0 for family in Family):
                    return True
        return False

    try:
        wait_until(every_family_counted, timeout=90, what="a count line with every family")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(10)
    output = "".join(lines)
    assert "embedded MQTT broker" in output
    assert "final:" in output
    assert "Traceback" not in output
