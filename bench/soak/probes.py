"""Timed probes: readings and faults published on the real clock, and watched until they show.

The fleet replays a past day at a speed-up, so its readings cannot say how long the platform
takes on the real clock. Probe devices (``soak-probe-...``) publish readings stamped with the
wall-clock time they are sent; the watcher polls the store and records when each one is stored
and when its minute aggregate exists; a fault probe (a new fibre link reading far too low)
is timed until the signed webhook delivers its alert.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion

from alerts.receiver import SignedWebhookReceiver
from simulator.fleet import FleetConfig, generate_fleet
from simulator.publisher import build_messages
from storage.base import Store

PROBE_PREFIX = "soak-probe-"
PROBE_COMMUNE = "78498"
READING_DEVICES = 6
"""Air-quality probe devices; each publishes once a minute, one every 10 s in turn."""
FAULT_RULE = "soak-probe-fibre"
FAULT_VALUE = -35.0
"""Received optical power of a fault probe: far below the rule's -27 dBm raise level."""


def probe_device(family: str, number: int) -> str:
    """The id of a probe device, e.g. ``soak-probe-aq-01``."""
    short = {"air_quality": "aq", "network": "net"}[family]
    return f"{PROBE_PREFIX}{short}-{number:02d}"


def _template(family: str) -> dict[str, Any]:
    """A valid payload of ``family`` (its fields, without ``ts``) from the simulator."""
    start = datetime(2026, 3, 2, 12, tzinfo=UTC)
    fleet = generate_fleet(
        FleetConfig(communes=[PROBE_COMMUNE], families=[family], devices_per_family=1),
        start,
        start + timedelta(minutes=1),
    )
    payload: dict[str, Any] = json.loads(build_messages(fleet)["payload"][0])
    payload.pop("ts")
    return payload


def probe_rule(mailbox_url: str) -> str:
    """The alert rule the fault probes trigger (TOML), delivered to ``mailbox_url``."""
    return f"""
[[rules]]
name = "{FAULT_RULE}"
title = {{ fr = "Sonde du banc d'endurance", en = "Soak benchmark probe" }}
communes = ["{PROBE_COMMUNE}"]
family = "network"
condition = "below"
measurement = "network"
field = "opticalRxPower"
raise = -27
clear = -25
severity = "warning"
recipients = ["soak@smartcity.example"]
""" + (f"# mailbox: {mailbox_url}\n" if mailbox_url else "")


@dataclass
class ProbeResults:
    """Latencies in seconds, each with the wall time (epoch s) it was taken."""

    alerted: list[tuple[float, float]] = field(default_factory=list)
    sent_readings: int = 0
    sent_faults: int = 0
    fleet_alerts: int = 0
    """Alert messages received that were not about a probe (the fleet's own)."""


@dataclass
class Probes:
    """Publishes probe readings and faults; watches the store and the mailbox for them."""

    mqtt_host: str
    mqtt_port: int
    fault_every_s: float = 60.0
    reading_every_s: float = 10.0
    results: ProbeResults = field(default_factory=ProbeResults)
    _pending_faults: dict[str, float] = field(default_factory=dict)
    sightings: Path | None = None
    """The watcher's sightings file (``ProbeWatcher``), for ``readings_pending``."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    # --- publishing ----------------------------------------------------------------------

    def start_publishing(self) -> None:
        """Connect and publish on a thread until ``stop``."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-probes", protocol=mqtt.MQTTv5)
        client.connect(self.mqtt_host, self.mqtt_port)
        client.loop_start()
        self._client: mqtt.Client | None = client
        self._templates = {family: _template(family) for family in ("air_quality", "network")}
        self._spawn(self._publish_loop, "soak-probe-publisher")

    def _publish(self, family: str, device: str, values: dict[str, Any]) -> int:
        ts_ms = int(time.time() * 1000)
        payload = json.dumps({"ts": ts_ms, **values})
        topic = f"smartcity/v1/{PROBE_COMMUNE}/{family}/{device}"
        if self._client is not None:
            self._client.publish(topic, payload, qos=1)
        return ts_ms

    def _publish_loop(self) -> None:
        turn = faults = 0
        next_fault = time.monotonic() + min(self.fault_every_s, 15.0)
        while not self._stop.wait(self.reading_every_s):
            device = probe_device("air_quality", turn % READING_DEVICES + 1)
            self._publish("air_quality", device, self._templates["air_quality"])
            self.results.sent_readings += 1
            turn += 1
            if time.monotonic() >= next_fault:
                faults += 1
                # A new device each time: an alert starts once per device (cool-down).
                device = f"{PROBE_PREFIX}net-f{faults:04d}-{int(time.time())}"
                values = {**self._templates["network"], "opticalRxPower": FAULT_VALUE}
                sent = self._publish("network", device, values)
                with self._lock:
                    self._pending_faults[device] = sent / 1000
                self.results.sent_faults += 1
                next_fault += self.fault_every_s

    # --- watching ------------------------------------------------------------------------

    def on_message(self, message: dict[str, Any]) -> None:
        """The mailbox callback: time the alerts of fault probes, count the others."""
        now = time.time()
        text = json.dumps(message)
        with self._lock:
            # One message may raise several probes: an evaluation that finds two faults (the
            # first stored just after the evaluation before) sends them together.
            named = [device for device in self._pending_faults if device in text]
            for device in named:
                self.results.alerted.append((now, now - self._pending_faults.pop(device)))
            if named:
                return
        if PROBE_PREFIX not in text:
            self.results.fleet_alerts += 1

    def readings_pending(self) -> int:
        """Probe readings sent that the watcher has not seen stored yet (from its sightings file)."""
        return self.results.sent_readings - len(read_sightings(self.sightings)[0]) if self.sightings else 0

    def faults_pending(self) -> int:
        """Fault probes whose alert has not been delivered yet."""
        with self._lock:
            return len(self._pending_faults)

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop_publishing(self) -> None:
        """Publish nothing more (the mailbox still times the faults in flight)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        client, self._client = getattr(self, "_client", None), None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def stop(self) -> None:
        """Stop publishing (idempotent)."""
        self.stop_publishing()


@dataclass
class ProbeWatcher:
    """Polls a store for the probe readings and their minute aggregates; appends each first
    sighting to a JSON-lines file (``kind``, ``device``, ``time_ns``, ``seen``), so it can run in
    the process that owns the store (DuckDB) as well as beside it (InfluxDB)."""

    store: Store
    out: Path
    interval_s: float = 0.25
    _seen: set[tuple[str, str, int]] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Watch on a daemon thread."""
        self._thread = threading.Thread(target=self._loop, name="soak-probe-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _loop(self) -> None:
        since = datetime.now(UTC) - timedelta(seconds=30)
        while not self._stop.wait(self.interval_s):
            try:
                self.watch_once(since)
            except Exception as exc:  # a slow or restarting store is what a soak measures
                print(f"probe watcher: {exc}", flush=True)

    def watch_once(self, since: datetime) -> None:
        """One poll: append what became visible since the last one."""
        devices = [probe_device("air_quality", n + 1) for n in range(READING_DEVICES)]
        end = datetime.now(UTC) + timedelta(minutes=2)
        found = []
        for kind, measurement, column in (
            ("stored", "air_quality", "pm25"),
            ("aggregated", "air_quality_1m", "pm25_count"),
        ):
            rows = self.store.read(
                measurement, start=since, end=end, where={"device_id": devices}, fields=[column]
            )
            now = time.time()
            if rows.is_empty():  # an unknown measurement reads as a frame without tag columns
                continue
            for device, at in zip(
                rows["device_id"].to_list(), rows["time"].dt.epoch("ns").to_list(), strict=True
            ):
                key = (kind, device, at)
                if key not in self._seen:
                    self._seen.add(key)
                    found.append({"kind": kind, "device": device, "time_ns": at, "seen": now})
        if found:
            with self.out.open("a") as sink:
                sink.writelines(json.dumps(row) + "\n" for row in found)


def read_sightings(path: Path) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], float]]:
    """(device, reading ns) -> first seen stored, and (device, window ns) -> first seen aggregated."""
    stored: dict[tuple[str, int], float] = {}
    aggregated: dict[tuple[str, int], float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            target = stored if row["kind"] == "stored" else aggregated
            target.setdefault((row["device"], row["time_ns"]), row["seen"])
    return stored, aggregated


def probe_latencies(path: Path) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(seen, seconds) of every probe reading stored, and of every one visible in a minute
    aggregate. A reading's ``ts`` is the wall time it was sent, so the latency is seen - ts."""
    stored, aggregated = read_sightings(path)
    to_store = [(seen, seen - at / 1e9) for (_, at), seen in stored.items()]
    to_aggregate = []
    for (device, at), _ in stored.items():
        window = aggregated.get((device, at - at % 60_000_000_000))
        if window is not None:
            # A window written before this reading arrived is rewritten later: never negative.
            to_aggregate.append((window, max(window - at / 1e9, 0.0)))
    return sorted(to_store), sorted(to_aggregate)


def start_mailbox(probes: Probes, secret: str) -> SignedWebhookReceiver:
    """The signed webhook receiver every commune's alerts go to."""
    mailbox = SignedWebhookReceiver([secret], probes.on_message, port=0)
    mailbox.start()
    return mailbox


def latency_frame(results: ProbeResults, sightings: Path) -> pl.DataFrame:
    """Every probe latency: ``kind`` (stored, aggregated, alerted), ``at`` (epoch s), ``seconds``."""
    stored, aggregated = probe_latencies(sightings)
    rows = [
        (kind, at, seconds)
        for kind, values in (("stored", stored), ("aggregated", aggregated), ("alerted", results.alerted))
        for at, seconds in values
    ]
    return pl.DataFrame(
        rows, schema={"kind": pl.String, "at": pl.Float64, "seconds": pl.Float64}, orient="row"
    )
