"""One soak run: start everything, feed it, measure it, stop it; and the knee, step by step."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from bench.ingest_common import REPO, IngestRun
from bench.soak import dashboard as dashboard_load
from bench.soak.disk import FAMILY_NAMES, FamilyDisk, duckdb_disk, influx_aggregate_windows, influx_disk
from bench.soak.platform import DASHBOARD_USER, Platform, start_platform
from bench.soak.probes import (
    PROBE_PREFIX,
    ProbeResults,
    Probes,
    ProbeWatcher,
    latency_frame,
    probe_rule,
    start_mailbox,
)
from bench.soak.procstat import Sample, Sampler, uptime
from bench.soak.territory import soak_codes, write_registry
from ingest.health import probe_workers
from sensors.communes import CommuneRegistry
from storage.config import InfluxSettings
from storage.influx import InfluxStore

PUBLISHER_RATE = 1500.0
"""Messages per second one publisher process is given: more processes beyond it."""


@dataclass(frozen=True)
class SoakConfig:
    """What a soak run does."""

    store: str = "influxdb"
    devices: int = 4000
    """Fleet size (rounded up to a whole number of devices per family and commune)."""
    families: tuple[str, ...] = tuple(FAMILY_NAMES)
    """The families the fleet's devices are of, in equal numbers (the probes are not the fleet's:
    they publish air-quality readings and network faults whatever this says)."""
    minutes: float = 60.0
    """Wall-clock minutes of fleet publication."""
    speedup: float = 24.0
    """Simulated seconds per wall second: 24 replays a day in an hour."""
    period_s: float = 60.0
    users: int = 50
    """Dashboard staff sessions (0: none)."""
    process_interval_s: float | None = None
    """``processing.interval_s`` of the run; None keeps the platform's default."""
    alerts_interval_s: float | None = None
    fault_every_s: float = 60.0
    sample_every_s: float = 5.0
    drain_timeout_s: float = 60.0
    """Ingest is taken as drained when its count has not moved for this long."""
    workdir: Path | None = None
    """Where the servers keep their data; a temporary directory (removed) when None."""
    communes: int | None = None
    """Communes of Yvelines and Hauts-de-Seine the fleet spreads over (``bench.soak.territory``);
    None: the shipped registry's nine."""
    ingest_workers: int | None = None
    """``ingest.workers`` of the run; None: ``smartcity ingest``'s own rule (one per core on
    Mosquitto, or what ``SMARTCITY_INGEST__WORKERS`` says)."""

    @property
    def commune_count(self) -> int:
        """Communes the fleet spreads over."""
        return self.communes or len(CommuneRegistry.load().codes)

    @property
    def devices_per_family(self) -> int:
        """Devices of each family in each commune."""
        return max(1, math.ceil(self.devices / (self.commune_count * len(self.families))))

    @property
    def span_s(self) -> float:
        """Simulated seconds the fleet covers."""
        return self.minutes * 60 * self.speedup

    def readings_per_s(self, devices: int) -> float:
        """Wall-clock readings per second the fleet sends (faults aside)."""
        return devices / self.period_s * self.speedup


@dataclass
class SoakResult:
    """Everything a soak measured (``bench.soak.report`` turns it into tables and a plot)."""

    config: SoakConfig
    devices: int
    readings: int
    expected_rows: dict[str, int]
    stored_rows: dict[str, int]
    wall_s: float
    feed_wall_s: float
    feed_planned_s: float
    samples: list[Sample]
    latencies: pl.DataFrame
    probes: ProbeResults
    dashboard: dashboard_load.DashboardStats | None
    disk: list[FamilyDisk]
    aggregate_windows: dict[str, float]
    """InfluxDB: the aggregates policy's bytes per window (``bench.soak.disk``)."""
    ingest_metrics: dict[str, float]
    deadletters: int
    malformed_injected: int
    log_errors: dict[str, int]
    exit_codes: dict[str, int | None]
    uptime_before: str
    uptime_after: str
    faults: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    """(family, device, ISO time) of fleet readings the store lacks, the first ``MISSING_SHOWN``."""

    @property
    def lost(self) -> int:
        """Fleet readings that should be stored and are not."""
        return sum(max(self.expected_rows[f] - self.stored_rows.get(f, 0), 0) for f in self.expected_rows)

    @property
    def sim_days(self) -> float:
        """Simulated days the fleet covered."""
        return self.config.span_s / 86400


MISSING_SHOWN = 50
"""Missing readings named one by one when a soak comes up short."""

INGEST_METRICS = (
    "smartcity_ingest_readings_total",
    "smartcity_ingest_rows_written_total",
    "smartcity_ingest_errors_total",
    "smartcity_ingest_deadletter_messages_total",
    "smartcity_ingest_store_failures_total",
    "smartcity_ingest_spooled_batches_total",
    "smartcity_ingest_store_rejected_rows_total",
    "smartcity_ingest_conflicting_readings_total",
    "smartcity_ingest_spool_batches",
)

INGEST_HOLDING = (
    "smartcity_ingest_spool_batches",
    "smartcity_ingest_queue_depth",
    "smartcity_ingest_held_messages",
)
"""Gauges of readings ingest holds and has not stored yet: the drain waits while any is above 0."""


def _ingest(platform: Platform) -> IngestRun:
    """A handle on the ingest metrics (worker *i* of ``platform.ingest_workers`` serves port + i)."""
    process = platform.processes.get("ingest") or platform.processes["platform"]
    return IngestRun(
        process,
        platform.ingest_metrics_port,
        platform.workdir / "ingest.log",
        workers=platform.ingest_workers,
    )


def _start_feeds(
    config: SoakConfig, platform: Platform, workdir: Path
) -> list[tuple[Path, subprocess.Popen[bytes]]]:
    communes = soak_codes(platform.communes_file)
    devices = config.devices_per_family * len(communes) * len(config.families)
    publishers = min(len(communes), max(1, math.ceil(config.readings_per_s(devices) / PUBLISHER_RATE)))
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    # Replayed faster than the clock, the fleet covers a past span (ending now) and never
    # catches up with the clock; at real time it starts now.
    start = now - timedelta(seconds=config.span_s) if config.speedup > 1 else now
    feeds = []
    for index in range(publishers):
        spec = {
            "host": "127.0.0.1",
            "port": platform.mosquitto.port,
            "communes": communes[index::publishers],
            "families": list(config.families),
            "devices_per_family": config.devices_per_family,
            "period_s": config.period_s,
            "start": start.isoformat(),
            "span_s": config.span_s,
            "speedup": config.speedup,
            "client_id": f"soak-feed-{index}",
            "communes_file": str(platform.communes_file) if platform.communes_file else None,
        }
        path = workdir / f"feed{index}.json"
        path.write_text(json.dumps(spec))
        with (workdir / f"feed{index}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.soak.feed", str(path)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        feeds.append((path, process))
    return feeds


def ingest_subscribed(platform: Platform) -> bool:
    """Every ingest worker answers ``/healthz`` 200, which it only does once subscribed: a
    reading published before would reach no subscriber and be dropped by the broker."""
    workers = probe_workers("127.0.0.1", platform.ingest_metrics_port, platform.ingest_workers)
    return all(h.healthy for h in workers)


def _wait(condition: Any, timeout: float, what: str, platform: Platform) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if platform.failed():
            raise RuntimeError(f"{platform.failed()} stopped while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _stored_rows(platform: Platform) -> dict[str, int]:
    """Fleet rows stored per family (probe devices left out)."""
    counts: dict[str, int] = {}
    if platform.influxd is not None:
        for family in FAMILY_NAMES:
            q = f'SELECT count("received_at") FROM "raw"."{family}" WHERE device_id !~ /^{PROBE_PREFIX}/'
            answer = httpx.post(
                platform.influxd.url + "/query", data={"q": q, "db": "smartcity"}, timeout=600
            )
            answer.raise_for_status()
            series = answer.json()["results"][0].get("series", [])
            counts[family] = int(series[0]["values"][0][1]) if series else 0
        return counts
    import duckdb

    connection = duckdb.connect(platform.env["SMARTCITY_STORE__DUCKDB__PATH"], read_only=True)
    try:
        for family in FAMILY_NAMES:
            row = connection.execute(
                f"SELECT count(*) FROM m.\"{family}\" WHERE device_id NOT LIKE '{PROBE_PREFIX}%'"
            ).fetchone()
            counts[family] = int(row[0]) if row else 0
    finally:
        connection.close()
    return counts


def _stored_keys(platform: Platform, family: str, start: datetime, end: datetime) -> pl.DataFrame:
    """``device_id``, ``time`` of the fleet rows of ``family`` stored between start and end."""
    if platform.influxd is not None:
        store = InfluxStore(InfluxSettings(url=platform.influxd.url))
        try:
            rows = store.read(family, start=start, end=end, fields=["received_at"])
        finally:
            store.close()
        if rows.is_empty():
            return pl.DataFrame(schema={"device_id": pl.String, "time": pl.Datetime("ns", "UTC")})
        keys = rows.select("device_id", pl.col("time").cast(pl.Datetime("ns", "UTC")))
    else:
        import duckdb

        connection = duckdb.connect(platform.env["SMARTCITY_STORE__DUCKDB__PATH"], read_only=True)
        try:
            pairs = connection.execute(f'SELECT device_id, epoch_ns(time) FROM m."{family}"').fetchall()
        finally:
            connection.close()
        keys = pl.DataFrame(pairs, schema={"device_id": pl.String, "time": pl.Int64}, orient="row").select(
            "device_id", pl.from_epoch("time", "ns").dt.replace_time_zone("UTC")
        )
    return keys.filter(~pl.col("device_id").str.starts_with(PROBE_PREFIX))


def _missing(platform: Platform, specs: list[Path], families: list[str]) -> list[tuple[str, str, str]]:
    """(family, device, ISO time) of the fleet readings the feeds published that the store lacks."""
    paths = [path.with_suffix(".expected.parquet") for path in specs]
    expected = pl.concat([pl.read_parquet(path) for path in paths if path.exists()])
    found: list[tuple[str, str, str]] = []
    for family in families:
        wanted = expected.filter(pl.col("family") == family).select("device_id", "time")
        if wanted.is_empty():
            continue
        start, end = wanted["time"].min(), wanted["time"].max()
        assert isinstance(start, datetime) and isinstance(end, datetime)
        stored = _stored_keys(platform, family, start, end + timedelta(microseconds=1))
        lacking = wanted.join(stored, on=["device_id", "time"], how="anti").sort("time", "device_id")
        found += [(family, device, at.isoformat()) for device, at in lacking.iter_rows()]
    return found[:MISSING_SHOWN]


def _log_errors(workdir: Path) -> dict[str, int]:
    """Lines saying ERROR or Traceback in each service's log."""
    found = {}
    for log in sorted(workdir.glob("*.log")):
        text = log.read_text(errors="replace")
        found[log.stem] = sum(
            1 for line in text.splitlines() if " ERROR " in line or line.startswith("Traceback")
        )
    return found


def run_soak(config: SoakConfig, *, progress: bool = True) -> SoakResult:
    """Run one soak and return what it measured."""
    owned = config.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="soak-")) if owned else config.workdir
    assert workdir is not None
    try:
        return _run(config, workdir, progress)
    finally:
        if owned:
            shutil.rmtree(workdir, ignore_errors=True)


def _run(config: SoakConfig, workdir: Path, progress: bool) -> SoakResult:
    def say(text: str) -> None:
        if progress:
            print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    uptime_before = uptime()
    secret = secrets.token_hex(16)
    sightings = workdir / "sightings.jsonl"
    probes = Probes("127.0.0.1", 0, fault_every_s=config.fault_every_s, sightings=sightings)
    mailbox = start_mailbox(probes, secret)
    say(f"starting the platform ({config.store}) in {workdir}")
    platform = start_platform(
        workdir,
        config.store,
        mailbox_url=f"http://127.0.0.1:{mailbox.port}/",
        probe_rule=probe_rule(""),
        webhook_secret=secret,
        process_interval_s=config.process_interval_s,
        alerts_interval_s=config.alerts_interval_s,
        sightings=sightings,
        communes_file=write_registry(workdir / "communes.csv", config.communes) if config.communes else None,
        offline_rules=config.speedup == 1,
        ingest_workers=config.ingest_workers,
    )
    config = replace(config, ingest_workers=platform.ingest_workers)  # the report says how many ran
    watcher = None
    load = None
    feeds: list[tuple[Path, subprocess.Popen[bytes]]] = []
    exit_codes: dict[str, int | None] = {}
    try:
        if platform.influxd is not None:
            watcher = ProbeWatcher(InfluxStore(InfluxSettings(url=platform.influxd.url)), sightings)
            watcher.start()
        ingest = _ingest(platform)
        _wait(lambda: ingest_subscribed(platform), 180, "ingest to subscribe", platform)
        feeds = _start_feeds(config, platform, workdir)
        say(f"generating the fleet in {len(feeds)} publisher(s)")
        _wait(
            lambda: all(path.with_suffix(".ready").exists() or p.poll() is not None for path, p in feeds),
            1800,
            "the fleet to be generated",
            platform,
        )
        sampler = Sampler({**platform.components, "harness": os.getpid()}, config.sample_every_s)
        for index, (_, process) in enumerate(feeds):
            sampler.pids[f"fleet{index}" if len(feeds) > 1 else "fleet"] = process.pid
        probes.mqtt_port = platform.mosquitto.port
        probes.start_publishing()
        started = time.monotonic()
        wall = config.minutes * 60
        if config.users:
            load = dashboard_load.start_load(
                platform.dashboard_url,
                config.users,
                wall,
                workdir / "dashboard-load.json",
                user=DASHBOARD_USER,
                password=platform.dashboard_password,
                log=workdir / "dashboard-load.log",
                communes_file=platform.communes_file,
            )
            sampler.pids["load"] = load.pid
        sampler.start()
        say(f"publishing for {config.minutes:g} min at speed-up {config.speedup:g}")
        next_report = time.monotonic() + 30
        while any(p.poll() is None for _, p in feeds):
            if platform.failed():
                raise RuntimeError(f"{platform.failed()} stopped during the run")
            if time.monotonic() > started + wall * 2 + 600:
                raise TimeoutError("the fleet did not finish publishing in twice its planned time")
            if time.monotonic() >= next_report:
                say(
                    f"{ingest.metric('smartcity_ingest_readings_total'):.0f} readings ingested; "
                    f"{os.getloadavg()[0]:.2f} load"
                )
                next_report += 30
            time.sleep(1)
        results = [
            json.loads(path.with_suffix(".result.json").read_text())
            for path, _ in feeds
            if path.with_suffix(".result.json").exists()
        ]
        if len(results) < len(feeds):
            raise RuntimeError("a fleet publisher failed: see feed*.log in " + str(workdir))
        expected = {f: sum(r["expected_rows"].get(f, 0) for r in results) for f in FAMILY_NAMES}
        readings = sum(r["readings"] for r in results)
        say("fleet published; waiting for ingest to store it")
        # Probe readings stop with the fleet (so ingest's count settles); faults in flight are
        # still timed until their alert arrives.
        probes.stop_publishing()
        # Drained when every fleet reading is in the store (InfluxDB: counted there; DuckDB,
        # whose file the platform owns: ingest's count of what it accepted), or when that count
        # has not moved for drain_timeout_s.
        target = sum(expected.values())
        probe_rows = probes.results.sent_readings + probes.results.sent_faults

        def drained() -> float:
            if platform.influxd is not None:
                return float(sum(_stored_rows(platform).values()))
            return ingest.metric("smartcity_ingest_rows_written_total") - probe_rows

        # A batch in ingest's spool (a store write that timed out) is replayed after a back-off
        # that may outlast the idle timeout: holding readings is not being idle.
        last, idle = -1.0, time.monotonic()
        while time.monotonic() - idle < config.drain_timeout_s:
            done = drained()
            if done >= target:
                break
            if done != last or any(ingest.metric(name) > 0 for name in INGEST_HOLDING):
                last, idle = done, time.monotonic()
            time.sleep(2)
        settle = time.monotonic() + (config.alerts_interval_s or 60) + 30
        while probes.faults_pending() and time.monotonic() < settle:
            time.sleep(1)
        probes.stop()
        if load is not None:
            load.wait(max(wall - (time.monotonic() - started), 0) + 120)
        sampler.stop()
        metrics = {name: ingest.metric(name) for name in INGEST_METRICS}
        feed_wall = max(r["wall_s"] for r in results)
        wall_s = time.monotonic() - started
        if watcher is not None:
            watcher.stop()
        exit_codes = platform.stop_services()
        stored = _stored_rows(platform)
        short = [f for f in FAMILY_NAMES if stored.get(f, 0) < expected.get(f, 0)]
        missing = _missing(platform, [path for path, _ in feeds], short) if short else []
        say("measuring the disk")
        windows: dict[str, float] = {}
        if platform.influxd is not None:
            disk = influx_disk(platform.influxd.workdir, platform.influxd.url)
            windows = influx_aggregate_windows(platform.influxd.workdir, platform.influxd.url)
        else:
            disk = duckdb_disk(Path(platform.env["SMARTCITY_STORE__DUCKDB__PATH"]))
        # One dead-letter file per ingest worker: deadletter.jsonl, deadletter-1.jsonl, ...
        deadletter = Path(platform.env["SMARTCITY_INGEST__DEADLETTER_FILE"])
        deadletters = sum(
            len(p.read_text().splitlines()) for p in deadletter.parent.glob(deadletter.stem + "*.jsonl")
        )
        faults: dict[str, int] = {}
        for r in results:
            for kind, count in r["faults"].items():
                faults[kind] = faults.get(kind, 0) + count
        return SoakResult(
            config=config,
            devices=sum(r["devices"] for r in results),
            readings=readings,
            expected_rows=expected,
            stored_rows=stored,
            wall_s=wall_s,
            feed_wall_s=feed_wall,
            feed_planned_s=max(r["planned_s"] for r in results),
            samples=sampler.samples,
            latencies=latency_frame(probes.results, sightings),
            probes=probes.results,
            dashboard=dashboard_load.read_stats(workdir / "dashboard-load.json")
            if load is not None
            else None,
            disk=disk,
            aggregate_windows=windows,
            ingest_metrics=metrics,
            deadletters=deadletters,
            malformed_injected=faults.get("malformed", 0),
            log_errors=_log_errors(workdir),
            exit_codes=exit_codes,
            uptime_before=uptime_before,
            uptime_after=uptime(),
            faults=faults,
            missing=missing,
        )
    finally:
        probes.stop()
        for _, feed in feeds:
            if feed.poll() is None:
                feed.terminate()
        if load is not None and load.poll() is None:
            load.terminate()
        if watcher is not None:
            watcher.stop()
        if not exit_codes:
            platform.stop_services()
        platform.stop_servers()
        mailbox.stop()
