"""The soak benchmark's harness, run tiny against real servers: it starts the whole platform,
feeds it, times its probes and writes its tables, with nothing lost and no error."""

from __future__ import annotations

from pathlib import Path

from bench.soak.__main__ import write
from bench.soak.report import breaks, expected_refusals, latency
from bench.soak.run import SoakConfig, run_soak


def test_a_tiny_soak_measures_every_part_and_loses_nothing(tmp_path: Path) -> None:
    config = SoakConfig(
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
        workdir=tmp_path / "data",
    )
    result = run_soak(config, progress=False)

    assert result.devices == 45
    assert result.readings > 0
    assert sum(result.stored_rows.values()) == sum(result.expected_rows.values())
    assert result.lost == 0
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
