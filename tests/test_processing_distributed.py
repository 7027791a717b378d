"""``smartcity backfill --ray``: a week of a simulated fleet backfilled as Ray tasks on a local
cluster gives every result the single-machine backfill gives, in a real InfluxDB."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from processing.distributed import days_of, plan, stage_of
from processing.runner import Runner
from processing.windows import floor
from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet
from smartcity.cli import main
from storage.base import Store
from storage.config import InfluxSettings
from storage.influx import InfluxStore
from storage.provision import provision
from tests.servers import Influxd, free_port, wait_until
from tests.storage_fixtures import influx_settings

RAW = {"air_quality", "traffic", "building", "camera", "network", "rejected_readings"}
COMMUNES = ["78498", "92049"]


def _group_alive(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` still running (zombies excepted)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@pytest.fixture
def ray_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Ray head on loopback with this machine's cores, in a session of its own; stopped after the
    test by signalling that session, and checked gone."""
    # Loopback only, for this test's driver: no token (Ray would keep one in ~/.ray, outside the
    # test's directories, and use a token found there for the next cluster).
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        pytest.fail(f"{ray} is missing: install the test extra (pip install -e '.[test]')", pytrace=False)
    port = free_port()
    # Ray's socket paths must fit in 107 bytes: a short directory, not pytest's tmp_path.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [
        str(ray),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        f"--num-cpus={os.cpu_count() or 1}",
        "--object-store-memory=100000000",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp}",
    ]
    log = Path(temp) / "head.log"
    with log.open("wb") as out:
        head = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until(
                lambda: head.poll() is not None or "Ray runtime started" in log.read_text(errors="replace"),
                timeout=120,
                what="the Ray head to start",
            )
        except TimeoutError:
            pytest.fail(f"ray start timed out:\n{_tail(log)}", pytrace=False)
        if head.poll() is not None:
            pytest.fail(f"ray start failed:\n{_tail(log)}", pytrace=False)
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                wait_until(lambda: not _group_alive(head.pid), timeout=wait, interval=0.2, what="Ray to stop")
                break
            except TimeoutError:
                continue
        head.wait(timeout=10)
        left = _group_alive(head.pid)
        shutil.rmtree(temp, ignore_errors=True)
        assert not left, f"Ray processes left running: {left}"


def _week() -> tuple[datetime, datetime]:
    # Within the raw retention (30 days) that the provisioned database enforces on writes.
    start = floor(datetime.now(UTC) - timedelta(days=10), "1d")
    return start, floor(start + timedelta(days=7, hours=12), "1d")


def _store(server: Influxd) -> tuple[InfluxSettings, InfluxStore]:
    settings = influx_settings(server)
    provision(settings)
    return settings, InfluxStore(settings)


def _results(store: Store, start: datetime, end: datetime) -> dict[str, pl.DataFrame]:
    found = {}
    for name in store.measurements():
        if name in RAW or name.startswith("_"):
            continue
        frame = store.read(name, start=start - timedelta(days=2), end=end + timedelta(days=2))
        keys = [c for c in frame.columns if frame.schema[c] == pl.String]
        found[name] = frame.sort(["time", *keys])
    return found


@pytest.mark.slow
def test_a_week_backfilled_on_ray_equals_the_single_machine_backfill(
    influxd: Influxd, ray_cluster: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    start, end = _week()
    # One device a family and commune at the contract's minute: enough for every index's coverage.
    config = FleetConfig(communes=COMMUNES, devices_per_family=1, period_s=60.0, faults=FaultRates.default())
    frames = generate_fleet(config, start, end - start).frames
    _, single = _store(influxd)
    ray_settings, on_ray = _store(influxd)
    try:
        for store in (single, on_ray):
            for family, frame in frames.items():
                store.write(family, frame, tags=["insee", "device_id"])

        Runner(single).backfill(start, end)

        monkeypatch.setenv("SMARTCITY_STORE__BACKEND", "influxdb")
        monkeypatch.setenv("SMARTCITY_STORE__INFLUXDB__URL", ray_settings.url)
        monkeypatch.setenv("SMARTCITY_STORE__INFLUXDB__DATABASE", ray_settings.database)
        moment = "%Y-%m-%dT%H:%M:%SZ"
        args = ["backfill", "--from", start.strftime(moment), "--to", end.strftime(moment)]
        assert main([*args, "--ray", ray_cluster]) == 0
        err = capsys.readouterr().err
        # Progress as tasks finish: one line each, counted against the total.
        days = len(days_of(start, end))
        total = days * (2 * len(COMMUNES) + 1)
        assert f"[{total}/{total}]" in err
        assert "anomalies all communes" in err and f"raw {COMMUNES[0]}" in err

        want, got = _results(single, start, end), _results(on_ray, start, end)
        assert sorted(got) == sorted(want)
        assert {"air_quality_1d_commune", "eaqi_hourly", "traffic_congestion", "anomalies"} <= set(want)
        assert want["anomalies"].height > 0
        for name in want:
            # Exact, but for the last bit of polars group means (it sums a group in an order that
            # depends on the frame around it, and a task's frame holds one commune).
            assert_frame_equal(got[name], want[name], check_exact=False, rel_tol=1e-12, abs_tol=0.0)

        # One job that reads aggregates, alone: its tasks start at once and rewrite the same rows.
        assert main([*args, "--job", "traffic_congestion", "--ray", ray_cluster]) == 0
        assert f"[{days * len(COMMUNES)}/{days * len(COMMUNES)}] indices" in capsys.readouterr().err
        again = _results(on_ray, start, end)["traffic_congestion"]
        assert_frame_equal(again, got["traffic_congestion"])
    finally:
        single.close()
        on_ray.close()


def test_ray_refuses_the_embedded_store_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMARTCITY_STORE__BACKEND", "duckdb")
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(tmp_path / "store.duckdb"))
    assert main(["backfill", "--from", "2026-06-01", "--to", "2026-06-02", "--ray", "local"]) == 2
    err = capsys.readouterr().err
    assert "DuckDB" in err and "influxdb" in err
    assert not (tmp_path / "store.duckdb").exists()


def test_the_anomaly_pass_is_split_by_day_only_and_waits_for_nothing(tmp_path: Path) -> None:
    from storage.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path / "plan.duckdb")
    try:
        start = datetime(2026, 3, 28, 23, tzinfo=UTC)  # Paris midnight, the day clocks go forward
        config = FleetConfig(communes=COMMUNES, period_s=3600.0)
        frames = generate_fleet(config, start, timedelta(hours=2)).frames
        for family, frame in frames.items():
            store.write(family, frame, tags=["insee", "device_id"])
        tasks = plan(Runner(store), start, datetime(2026, 3, 30, 22, tzinfo=UTC))
    finally:
        store.close()
    anomalies = [t for t in tasks if t.stage == "anomalies"]
    assert [t.commune for t in anomalies] == [None, None]
    assert {t.commune for t in tasks if t.stage == "raw"} == set(COMMUNES)
    # The 23-hour day ends where the next one starts, at Paris midnight.
    assert [(t.start, t.end) for t in anomalies] == [
        (start, datetime(2026, 3, 29, 22, tzinfo=UTC)),
        (datetime(2026, 3, 29, 22, tzinfo=UTC), datetime(2026, 3, 30, 22, tzinfo=UTC)),
    ]
    # Indices that read aggregates come after every task that writes them.
    stages = [t.stage for t in tasks]
    assert stages.index("indices") > max(i for i, s in enumerate(stages) if s == "raw")
    assert stage_of("traffic_congestion") == "indices" and stage_of("anomalies:camera") == "anomalies"
