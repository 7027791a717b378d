"""CPU and resident memory of process trees, read from /proc, sampled on a thread; the machine's load."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def uptime() -> str:
    """The machine's load, as ``uptime`` prints it (a benchmark says it before and after)."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (gunicorn and ``ingest --workers`` run children)."""
    found = [pid]
    for member in found:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{member}/task").iterdir():
                with contextlib.suppress(OSError):
                    found += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User plus system CPU seconds of ``pid`` and (``tree``) its living descendants."""
    ticks = 0
    for member in process_tree(pid) if tree else [pid]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _TICKS


def rss_bytes(pid: int, *, tree: bool = True) -> int:
    """Resident memory of ``pid`` and (``tree``) its descendants, summed."""
    total = 0
    for member in process_tree(pid) if tree else [pid]:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * _PAGE
    return total


@dataclass
class Sample:
    """One look at every component."""

    at: float
    """Seconds since the sampler started."""
    cpu: dict[str, float]
    """Cumulative CPU seconds since the sampler started, per component."""
    rss: dict[str, int]


@dataclass
class Sampler:
    """Samples the CPU and RSS of named process trees every ``interval_s`` on a daemon thread.

    CPU of a process that exits between two samples is lost, so components are sampled while
    they run and the last sample is taken before they stop."""

    pids: dict[str, int]
    interval_s: float = 5.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _base: dict[str, float] = field(default_factory=dict)
    _started: float = 0.0
    alone: frozenset[str] = frozenset({"harness"})
    """Components measured without their descendants (the harness starts every other one)."""

    def start(self) -> None:
        """Take the first sample and keep sampling."""
        self._started = time.monotonic()
        self._base = {name: self._cpu(name, pid) for name, pid in self.pids.items()}
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._thread.start()

    def add(self, name: str, pid: int) -> None:
        """Follow one more component from now on."""
        self._base[name] = self._cpu(name, pid)
        self.pids = {**self.pids, name: pid}

    def sample(self) -> Sample:
        """Read /proc now and keep the sample."""
        now = time.monotonic() - self._started
        previous = self.samples[-1].cpu if self.samples else {}
        # A process that exited reads as 0: keep what it had used (the count only grows).
        cpu = {
            name: max(self._cpu(name, pid) - self._base.get(name, 0.0), previous.get(name, 0.0))
            for name, pid in self.pids.items()
        }
        rss = {name: rss_bytes(pid, tree=name not in self.alone) for name, pid in self.pids.items()}
        taken = Sample(now, cpu, rss)
        self.samples.append(taken)
        return taken

    def _cpu(self, name: str, pid: int) -> float:
        return cpu_seconds(pid, tree=name not in self.alone)

    def stop(self) -> None:
        """Take a last sample and stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s * 2)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()
