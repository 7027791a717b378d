"""One health verdict for every worker of ``smartcity ingest --workers N``.

Each worker answers ``/healthz`` on its own port (``metrics_port + index``). The service is
healthy only when every one of them answers 200: a worker that is down (crashed, waiting for
the supervisor to start it again) refuses the connection, a stopped or wedged process does not
answer in time, and a worker whose threads stopped making progress answers 503 itself
(``Ingestor.health``).
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """What one worker's ``/healthz`` said (or why it said nothing)."""

    index: int
    port: int
    healthy: bool
    detail: str

    def __str__(self) -> str:
        return f"worker {self.index} (port {self.port}): {self.detail}"


def probe_worker(host: str, port: int, index: int, *, timeout: float) -> WorkerHealth:
    """Ask one worker's ``/healthz``."""
    url = f"http://{host}:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return WorkerHealth(index, port, answer.status == 200, answer.read().decode().strip())
    except urllib.error.HTTPError as exc:
        return WorkerHealth(index, port, False, exc.read().decode(errors="replace").strip() or str(exc))
    except (OSError, http.client.HTTPException) as exc:
        return WorkerHealth(index, port, False, f"no answer (down or stalled): {exc}")


def probe_workers(host: str, first_port: int, workers: int, *, timeout: float = 3.0) -> list[WorkerHealth]:
    """Ask every worker, worker ``i`` on ``first_port + i``."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # listening on every interface: ask on the loopback
    return [probe_worker(host, first_port + index, index, timeout=timeout) for index in range(workers)]
