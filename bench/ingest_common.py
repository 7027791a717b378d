"""What the ingest benchmarks share: real servers, persistent sessions, ingestor processes."""

from __future__ import annotations

import contextlib
import http.client
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.soak import procstat
from simulator import FleetConfig, generate_fleet
from simulator.publisher import PublishOptions, build_messages, publish_messages
from storage.config import InfluxSettings
from storage.provision import provision
from tests.servers import Influxd, Mosquitto, free_listening_ports

REPO = Path(__file__).resolve().parent.parent
TOPIC = "smartcity/v1/+/+/+"
FAMILIES = 5


@contextlib.contextmanager
def servers(workdir: Path) -> Iterator[tuple[Mosquitto, Influxd]]:
    """A real Mosquitto (with docker/mosquitto.conf sizing) and a real influxd, killed at the end."""
    mosquitto = Mosquitto(workdir / "mosquitto")
    influxd = Influxd(workdir / "influxd")
    mosquitto.start()
    influxd.start()
    try:
        yield mosquitto, influxd
    finally:
        mosquitto.kill()
        influxd.kill()


def realistic_messages(readings: int, *, seed: int = 11) -> pl.DataFrame:
    """About ``readings`` one-reading messages of the simulated fleet (nine communes, five
    families, 10 s period), ending an hour ago so InfluxDB's raw retention keeps them."""
    devices = 10
    per_step = 9 * FAMILIES * devices
    steps = max(1, -(-readings // per_step))
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    start = end - timedelta(seconds=10 * steps)
    fleet = generate_fleet(FleetConfig(devices_per_family=devices, period_s=10, seed=seed), start, end)
    messages = build_messages(fleet, PublishOptions())
    return messages.head(readings)


def register_session(
    port: int, client_id: str, topic: str = TOPIC, *, expiry_s: int = 24 * 3600, protocol: str = "5"
) -> None:
    """Create a persistent session subscribed with QoS 1, then leave: the broker queues for it.

    With ``protocol`` 3.1.1 the session is kept by "clean session" off (Mosquitto expires it
    after ``persistent_client_expiration``)."""
    subscribed = threading.Event()
    if protocol == "3.1.1":
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False
        )
        client.on_subscribe = lambda *args: subscribed.set()
        client.connect("127.0.0.1", port)
    else:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = expiry_s
        client.on_subscribe = lambda *args: subscribed.set()
        client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    client.subscribe(topic, qos=1)
    if not subscribed.wait(10):
        raise RuntimeError(f"subscription of {client_id} not acknowledged")
    client.disconnect()
    client.loop_stop()


def publish_all(port: int, messages: pl.DataFrame) -> float:
    """Publish with QoS 1 as fast as the broker acknowledges; returns the seconds it took."""
    started = time.perf_counter()
    report = publish_messages(
        messages, PublishOptions(port=port, client_id="bench-publisher", max_inflight=1000, max_queued=5000)
    )
    if report.acknowledged != messages.height:
        raise RuntimeError(report.summary())
    return time.perf_counter() - started


def provision_database(influxd: Influxd, name: str) -> InfluxSettings:
    """A fresh, provisioned database on the benchmark's influxd."""
    settings = InfluxSettings(url=influxd.url, database=name)
    provision(settings)
    return settings


def count_stored(influxd: Influxd, database: str) -> int:
    """Readings stored in a database, over the five families (InfluxQL count of ``received_at``)."""
    import httpx

    total = 0
    with httpx.Client(base_url=influxd.url, timeout=60) as client:
        for family in ("air_quality", "traffic", "building", "camera", "network"):
            response = client.post(
                "/query",
                data={"q": f'SELECT count("received_at") FROM "raw"."{family}"', "db": database},
            )
            response.raise_for_status()
            for result in response.json().get("results", []):
                for series in result.get("series", []):
                    total += int(series["values"][0][1])
    return total


@dataclass
class IngestRun:
    """A ``smartcity ingest`` process of a benchmark (with its workers, if any)."""

    process: subprocess.Popen[bytes]
    metrics_port: int
    log_path: Path
    profiler: subprocess.Popen[bytes] | None = None
    workers: int = 1
    """Worker ``i`` serves its metrics on ``metrics_port + i``."""

    def metric(self, name: str) -> float:
        """The sum of a metric's samples (every label set, every worker); unreachable counts 0."""
        total = 0.0
        for port in range(self.metrics_port, self.metrics_port + self.workers):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                    text = answer.read().decode()
            except (OSError, http.client.HTTPException):
                # Not listening yet; a connection to a free port of the ephemeral range may even
                # connect to itself and read its own request back.
                continue
            for line in text.splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the largest process of the tree."""
        largest = 0
        for pid in procstat.process_tree(self.process.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        largest = max(largest, int(line.split()[1]) * 1024)
        return largest

    def cpu_seconds(self) -> float:
        """User plus system CPU time used so far by the process and its workers."""
        return procstat.cpu_seconds(self.process.pid)

    def stop(self) -> int:
        """SIGTERM and wait."""
        self.process.terminate()
        code = self.process.wait(120)
        if self.profiler is not None:
            self.profiler.wait(60)
        return code


def start_ingest(
    workdir: Path,
    mqtt_port: int,
    influx: InfluxSettings,
    client_id: str,
    *,
    shared_group: str | None = None,
    extra_env: dict[str, str] | None = None,
    profile_to: Path | None = None,
    workers: int = 1,
) -> IngestRun:
    """Start ``python -m smartcity.cli ingest --workers N`` against the benchmark's servers."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_listening_ports(workers)
    env = {
        **os.environ,
        "SMARTCITY_MQTT__PORT": str(mqtt_port),
        "SMARTCITY_STORE__BACKEND": "influxdb",
        "SMARTCITY_STORE__INFLUXDB__URL": influx.url,
        "SMARTCITY_STORE__INFLUXDB__DATABASE": influx.database,
        "SMARTCITY_INGEST__CLIENT_ID": client_id,
        "SMARTCITY_INGEST__METRICS_PORT": str(port),
        "SMARTCITY_INGEST__SPOOL_DIR": str(workdir / "spool"),
        "SMARTCITY_INGEST__DEADLETTER_FILE": str(workdir / "deadletter.jsonl"),
        "SMARTCITY_INGEST__LOG_INTERVAL_S": "10",
        **(extra_env or {}),
    }
    if shared_group:
        env["SMARTCITY_INGEST__SHARED_GROUP"] = shared_group
    command = [sys.executable, "-m", "smartcity.cli", "ingest", "--workers", str(workers)]
    log_path = workdir / "ingest.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    profiler = None
    if profile_to is not None:
        # Attached rather than wrapping, so SIGTERM reaches the ingestor and the profile is
        # written when it exits. --idle: time waiting on the broker or the store shows too.
        py_spy = str(Path(sys.executable).parent / "py-spy")
        profiler = subprocess.Popen(
            [
                py_spy,
                "record",
                "--idle",
                "--threads",
                "-r",
                "250",
                "-f",
                "raw",
                "-o",
                str(profile_to),
                "--pid",
                str(process.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return IngestRun(process, port, log_path, profiler, workers)


def wait_for(condition: object, *, timeout: float, interval: float = 0.05, what: str = "") -> float:
    """Poll a callable until true; returns when (``time.perf_counter()``); raises at the deadline."""
    assert callable(condition)
    deadline = time.perf_counter() + timeout
    while True:
        now = time.perf_counter()
        if condition():
            return now
        if now > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
