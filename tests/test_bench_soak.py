"""The soak benchmark's harness, run tiny against real servers: it starts the whole platform,
feeds it, times its probes and writes its tables, with nothing lost and no error."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest

from bench.soak import platform
from bench.soak.__main__ import write
from bench.soak.report import breaks, disk_table, expected_refusals, latency
from bench.soak.run import SoakConfig, run_soak
from bench.soak.territory import soak_codes

INGEST_DELAY_S = 20
"""Longer than a tiny fleet takes to be generated: its first readings would otherwise go out
before ingest subscribes."""

LATE_START = """
import os, sys, time, urllib.request
url = "http://127.0.0.1:" + os.environ["SMARTCITY_DASHBOARD__PORT"] + "/login"
while True:
    try:
        urllib.request.urlopen(url, timeout=2)
        break
    except OSError:
        time.sleep(0.2)
time.sleep(float(sys.argv[1]))
os.execv(sys.argv[2], sys.argv[2:])
"""


def _ingest_starts_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start ``smartcity ingest`` well after the dashboards answer (which is when the platform
    is taken as started): a fleet published before ingest subscribes reaches no subscriber and
    is dropped by the broker, so the soak must wait for the subscription itself."""
    spawn = platform._spawn

    def late(workdir: Path, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        if name == "ingest":
            command = [sys.executable, "-c", LATE_START, str(INGEST_DELAY_S), *command]
        return spawn(workdir, name, command, env)

    monkeypatch.setattr(platform, "_spawn", late)


TINY = SoakConfig(
    store="influxdb",
    devices=45,
    minutes=0.5,
    speedup=24,
    users=0,
    process_interval_s=3,
    alerts_interval_s=3,
    fault_every_s=10,
    sample_every_s=1,
    drain_timeout_s=60,  # generous: the drain ends as soon as every reading is stored
)


def test_a_tiny_soak_measures_every_part_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ingest_starts_late(monkeypatch)
    result = run_soak(replace(TINY, workdir=tmp_path / "data"), progress=False)

    assert result.devices == 45
    assert result.readings > 0
    # On a shortfall, name the readings missing and what ingest says it holds.
    shortfall = f"missing (family, device, time): {result.missing}; ingest: {result.ingest_metrics}"
    assert sum(result.stored_rows.values()) == sum(result.expected_rows.values()), shortfall
    assert result.lost == 0, shortfall
    assert result.missing == []
    # The only errors are the payloads the fleet injects broken, each kept as a dead-letter.
    assert result.ingest_metrics["smartcity_ingest_errors_total"] == expected_refusals(result)
    assert result.deadletters == expected_refusals(result)
    assert not any(result.log_errors.values()), result.log_errors
    assert all(code == 0 for code in result.exit_codes.values()), result.exit_codes
    # Every probe kind was timed, on the real clock.
    for kind in ("stored", "aggregated", "alerted"):
        assert latency(result, kind), kind
        assert all(0 <= seconds < 60 for seconds in latency(result, kind)), kind
    assert {"ingest", "process", "alerts", "dashboard", "influxd", "mosquitto", "fleet"} <= set(
        result.samples[-1].cpu
    )
    assert all(disk.raw_bytes > 0 for disk in result.disk)
    assert not [reason for reason in breaks(result) if "lost" in reason]

    text = write(result, tmp_path / "results", "python -m bench.soak (test)")
    assert "| publish -> stored (s) |" in text
    assert "| ingest |" in text and "| process |" in text
    assert (tmp_path / "results" / "soak.png").stat().st_size > 10_000
    assert (tmp_path / "results" / "soak.md").read_text() == text


def test_a_soak_of_one_family_over_more_communes_still_times_every_probe(tmp_path: Path) -> None:
    """The probes are devices of their own (air-quality readings, network faults): a fleet of
    traffic counters alone still has its lags measured, and is sized as traffic alone. Spread
    over 15 communes (``--communes``), every process serves them: ingest stores every reading of
    the six communes the shipped registry does not have."""
    config = replace(TINY, families=("traffic",), communes=15, workdir=tmp_path / "data")
    result = run_soak(config, progress=False)

    assert result.devices == 45
    expected = pl.concat(pl.read_parquet(path) for path in (tmp_path / "data").glob("feed*.expected.parquet"))
    communes = {device.split("-")[1] for device in expected["device_id"]}
    assert communes == set(soak_codes(tmp_path / "data" / "communes.csv"))
    assert len(communes) == 15
    assert {family for family, rows in result.expected_rows.items() if rows} == {"traffic"}
    assert result.stored_rows == result.expected_rows, result.missing
    for kind in ("stored", "aggregated", "alerted"):
        assert latency(result, kind), kind
    disk = disk_table(result)
    assert "| traffic |" in disk
    assert "| air_quality |" not in disk and "| network |" not in disk
