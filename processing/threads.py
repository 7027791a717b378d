"""How many threads processing runs at once: a setting of the service, by default the cores.

Library calls read ``worker_threads()`` and never change it; ``smartcity process`` and
``smartcity backfill`` set it from ``processing.threads`` at start (``use_threads``).
"""

from __future__ import annotations

import os

_chosen: int | None = None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the system tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def worker_threads() -> int:
    """Threads for one processing call: the service's setting, else ``available_cores()``."""
    return _chosen or available_cores()


def use_threads(count: int | None) -> None:
    """Set the processing threads of this process (service start); None: the cores."""
    global _chosen  # noqa: PLW0603 - one setting of the process, set once at service start
    if count is not None and count < 1:
        raise ValueError(f"processing threads must be at least 1, got {count}")
    _chosen = count
