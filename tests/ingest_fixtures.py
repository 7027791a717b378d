"""Helpers of the ingest tests: simulated fleets, ingestors in-process and as subprocesses, and
checks that the store holds exactly what was published."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import polars as pl
from polars.testing import assert_frame_equal

from ingest.batch import Ack
from ingest.config import IngestSettings
from ingest.service import Ingestor
from sensors.communes import CommuneRegistry
from sensors.config import MqttSettings
from sensors.frames import RECEIVED_AT, TAGS
from simulator import Fleet, FleetConfig, generate_fleet
from simulator.publisher import PublishOptions, PublishReport, build_messages, publish_messages
from storage.base import Store, WriteReport
from storage.errors import StoreUnavailable
from tests.servers import REPO, free_listening_ports, wait_until

FLEET_START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
"""Recent, so InfluxDB's raw retention (30 days) keeps it, and in the past, as real readings are."""
WIDE_START = datetime(2020, 1, 1, tzinfo=UTC)
WIDE_END = datetime(2035, 1, 1, tzinfo=UTC)


def make_fleet(*, minutes: float, period_s: float = 10.0, devices: int = 2, seed: int = 4) -> Fleet:
    """The nine communes, every family, ``devices`` devices each, no fault: exact expectations."""
    return generate_fleet(
        FleetConfig(devices_per_family=devices, period_s=period_s, seed=seed),
        FLEET_START,
        timedelta(minutes=minutes),
    )


def fleet_messages(fleet: Fleet) -> pl.DataFrame:
    """The fleet's MQTT messages (one reading each), in send order."""
    return build_messages(fleet, PublishOptions())


def publish(
    port: int, messages: pl.DataFrame, *, client_id: str = "test-publisher", max_queued: int = 2000
) -> PublishReport:
    """Publish messages with QoS 1 as fast as the broker acknowledges them."""
    options = PublishOptions(port=port, client_id=client_id, max_inflight=500, max_queued=max_queued)
    report = publish_messages(messages, options)
    assert report.acknowledged == messages.height, report.summary()
    return report


def published_readings(fleet: Fleet) -> int:
    """Readings the fleet's messages carry."""
    return fleet.rows


def assert_store_holds_fleet(store: Store, fleet: Fleet) -> None:
    """Every reading of the fleet is in the store exactly once, with its tags and values."""
    for family, expected in fleet.frames.items():
        stored = store.read(family, start=WIDE_START, end=WIDE_END)
        assert stored.height == expected.height, (
            f"{family}: {stored.height} rows stored for {expected.height} published"
        )
        duplicates = stored.select(["time", *TAGS]).is_duplicated().sum()
        assert duplicates == 0, f"{family}: {duplicates} duplicated (series, time)"
        columns = [c for c in expected.columns if c != RECEIVED_AT]
        # A store only holds the columns it was given values for; an all-null field is absent.
        columns = [c for c in columns if c in stored.columns or expected[c].null_count() < expected.height]
        assert_frame_equal(
            stored.select(columns).sort(["time", *TAGS]),
            expected.select(columns).sort(["time", *TAGS]),
            check_column_order=False,
            check_dtypes=False,
            abs_tol=1e-9,
        )
        assert RECEIVED_AT in stored.columns and stored[RECEIVED_AT].null_count() == 0


def ingest_settings(tmp: Path, **overrides: Any) -> IngestSettings:
    """Ingest settings with every file under ``tmp`` and a metrics port chosen by the OS."""
    values: dict[str, Any] = {
        "spool_dir": tmp / "spool",
        "deadletter_file": tmp / "deadletter.jsonl",
        "metrics_port": 0,
        "client_id": "test-ingest",
        "batch_interval_s": 0.2,
        "retry_interval_s": 0.2,
        "retry_max_interval_s": 1.0,
        "log_interval_s": 5.0,
    }
    values.update(overrides)
    return IngestSettings(**values)


@contextmanager
def running_ingestor(
    mqtt_port: int, settings: IngestSettings, store: Store, *, protocol: Literal["5", "3.1.1"] = "5"
) -> Iterator[Ingestor]:
    """An in-process ingestor, subscribed when the block starts, stopped cleanly at its end."""
    mqtt_settings = MqttSettings(port=mqtt_port, protocol=protocol)
    ingestor = Ingestor(mqtt_settings, settings, store, CommuneRegistry.load())
    ingestor.start()
    try:
        assert ingestor.consumer.wait_subscribed(15), "ingestor did not subscribe"
        yield ingestor
    finally:
        assert ingestor.stop(), "ingestor did not stop cleanly"


class FlakyStore:
    """A real store that can be switched down: writes raise ``StoreUnavailable`` while ``down``.

    The fault tests against a real influxd stop the server itself; this one is for the writer's
    unit tests, where the exact moment of failure matters.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = threading.Event()
        self.flowing = threading.Event()
        """Cleared, writes hang until it is set again (a wedged store connection)."""
        self.flowing.set()
        self.writes: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def write(self, measurement: str, frame: pl.DataFrame, *, tags: Sequence[str]) -> WriteReport:
        self.flowing.wait()
        if self.down.is_set():
            raise StoreUnavailable("switched down by the test")
        self.writes.append((measurement, frame.height))
        return self.store.write(measurement, frame, tags=tags)

    def close(self) -> None:
        return None


@dataclass
class RecordingAcks:
    """An acknowledger that records what the writer acknowledged."""

    acked: list[Ack] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ack(self, acks: Sequence[Ack]) -> int:
        with self.lock:
            self.acked.extend(acks)
        return len(acks)

    @property
    def mids(self) -> set[int]:
        with self.lock:
            return {ack.mid for ack in self.acked}


def metrics_text(port: int) -> str:
    """The ingestor's ``/metrics`` page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric(text: str, name: str, labels: str = "") -> float:
    """One sample's value from a Prometheus text page (0 when absent)."""
    key = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(key + " "):
            return float(line.split()[-1])
    return 0.0


def deadletter_records(path: Path) -> list[dict[str, Any]]:
    """The records of a dead-letter JSONL file."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


class IngestProcess:
    """``smartcity ingest`` run as a real process (to kill -9 it, to SIGTERM it)."""

    def __init__(self, workdir: Path, mqtt_port: int, env: dict[str, str], *, workers: int = 1) -> None:
        self.workdir = workdir
        self.workers = workers
        self.metrics_port = free_listening_ports(workers)
        """Worker ``i``'s metrics are on ``metrics_port + i``."""
        self.log_path = workdir / "ingest.log"
        self.env = {
            **os.environ,
            "SMARTCITY_MQTT__PORT": str(mqtt_port),
            "SMARTCITY_INGEST__SPOOL_DIR": str(workdir / "spool"),
            "SMARTCITY_INGEST__DEADLETTER_FILE": str(workdir / "deadletter.jsonl"),
            "SMARTCITY_INGEST__METRICS_PORT": str(self.metrics_port),
            "SMARTCITY_INGEST__CLIENT_ID": "test-ingest-process",
            "SMARTCITY_INGEST__BATCH_INTERVAL_S": "0.3",
            "SMARTCITY_INGEST__RETRY_INTERVAL_S": "0.3",
            "SMARTCITY_INGEST__RETRY_MAX_INTERVAL_S": "1.5",
            "SMARTCITY_INGEST__LOG_INTERVAL_S": "2",
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """``smartcity ingest --workers N``."""
        return [sys.executable, "-m", "smartcity.cli", "ingest", "--workers", str(self.workers)]

    def start(self) -> None:
        """Start the process and wait until it reports healthy."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self.healthy, timeout=30, interval=0.1, what=f"ingest healthy; log:\n{self.log()}")

    def healthy(self) -> bool:
        """``/healthz`` answers 200."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"ingest exited with {self.process.returncode}:\n{self.log()}")
        try:
            for port in range(self.metrics_port, self.metrics_port + self.workers):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status != 200:
                        return False
        except (OSError, http.client.HTTPException):
            # Not listening yet (a connection to a free port may even connect to itself).
            return False
        return True

    def check_health(self) -> tuple[int, str]:
        """``smartcity ingest --check-health`` with this process's settings: exit code, output."""
        done = subprocess.run(
            [*self.command(), "--check-health"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout + done.stderr

    def worker_metrics(self, index: int) -> str:
        """The ``/metrics`` page of worker ``index`` (of ``--workers N``)."""
        return metrics_text(self.metrics_port + index)

    def worker_pids(self) -> list[int]:
        """The process ids of the workers, as the supervisor started them."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        workers = []
        for pid in map(int, children):
            # A child reaped since the listing is gone; multiprocessing's spawn start method also
            # runs a resource tracker: not a worker.
            with contextlib.suppress(FileNotFoundError):
                if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text():
                    workers.append(pid)
        return workers

    def metrics(self) -> str:
        """The ``/metrics`` page."""
        return metrics_text(self.metrics_port)

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def log(self, last: int | None = 40) -> str:
        """The process's output so far: its ``last`` lines, or all of it (None)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines if last is None else lines[-last:])
        except OSError:
            return "(no log)"
