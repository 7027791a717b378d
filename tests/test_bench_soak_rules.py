"""The soak's command line (``--families``) and the knee's verdict on a step, from made-up
results: no server, no clock."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from bench.soak.__main__ import parse
from bench.soak.dashboard import DashboardStats
from bench.soak.disk import FAMILY_NAMES, FamilyDisk
from bench.soak.platform import ingest_worker_count
from bench.soak.probes import ProbeResults, Probes
from bench.soak.procstat import Sample
from bench.soak.report import (
    DASHBOARD_LAG_LIMIT_S,
    DASHBOARD_REFRESH_S,
    MB,
    MIN_CALLBACK_SHARE,
    breaks,
    dashboard_invalid,
    disk_table,
    expected_callbacks,
    kept_mb,
    knee_markdown,
    markdown,
    rss_growth_mb_per_h,
    verdict,
)
from bench.soak.run import SoakConfig, SoakResult
from bench.soak.territory import TerritoryTooSmall, available, registry_text, write_registry
from sensors.communes import CommuneRegistry
from storage.config import DuckDBSettings, InfluxSettings

STEP = SoakConfig(minutes=10, speedup=1.0, users=50)
ENOUGH = int(STEP.users * STEP.minutes * 60 / DASHBOARD_REFRESH_S)
"""One callback per session per refresh over the step: what sessions that keep up make at least."""


def _result(config: SoakConfig = STEP, dashboard: DashboardStats | None = None, **changes: Any) -> SoakResult:
    """A step that held on every count: fast probes, idle components, nothing lost."""
    latencies = pl.DataFrame(
        [("stored", 1.0, 0.5), ("aggregated", 2.0, 61.0), ("alerted", 3.0, 38.0)],
        schema={"kind": pl.String, "at": pl.Float64, "seconds": pl.Float64},
        orient="row",
    )
    families = {family: 100 if family in config.families else 0 for family in FAMILY_NAMES}
    result = SoakResult(
        config=config,
        devices=config.devices,
        readings=1000,
        expected_rows=families,
        stored_rows=dict(families),
        wall_s=600.0,
        feed_wall_s=600.0,
        feed_planned_s=600.0,
        samples=[Sample(at=600.0, cpu={"ingest": 60.0, "harness": 590.0}, rss={"ingest": 1 << 20})],
        latencies=latencies,
        probes=ProbeResults(),
        dashboard=dashboard or DashboardStats(callbacks=ENOUGH, p50_ms=100, p95_ms=900, max_ms=2000),
        disk=[FamilyDisk(family, 1e6, 2e6) for family in FAMILY_NAMES],
        aggregate_windows={},
        ingest_metrics={},
        deadletters=0,
        malformed_injected=0,
        log_errors={},
        exit_codes={},
        uptime_before="load average: 0.10, 0.10, 0.10",
        uptime_after="load average: 0.20, 0.20, 0.20",
    )
    return replace(result, **changes)


# --- --families ------------------------------------------------------------------------------


def test_the_fleet_is_of_every_family_by_default() -> None:
    assert parse([]).families == tuple(FAMILY_NAMES)


def test_families_name_the_fleet_in_contract_order_without_repeats() -> None:
    args = parse(["--families", "network, air_quality,network", "--knee"])

    assert args.families == ("air_quality", "network")
    assert args.knee


@pytest.mark.parametrize(
    ("value", "said"),
    [("air_quality,parking", "unknown family 'parking'"), (",", "no family given"), ("AQ", "'AQ'")],
)
def test_an_unknown_family_is_refused_naming_the_known_ones(
    value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        parse(["--families", value])

    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert "--families" in error and said in error
    assert "known: " + ", ".join(FAMILY_NAMES) in error


def test_one_family_gets_the_whole_fleet() -> None:
    every = SoakConfig(devices=4000)
    alone = SoakConfig(devices=4000, families=("traffic",))

    assert alone.devices_per_family == every.devices_per_family * len(FAMILY_NAMES)


def test_the_report_says_which_families_ran_and_sizes_only_theirs() -> None:
    # A simulated day (an hour at speed-up 24) of 1,000 camera devices.
    result = _result(replace(STEP, devices=1000, families=("camera",), minutes=60, speedup=24))

    text = markdown(result, "python -m bench.soak --families camera")
    disk = disk_table(result)

    assert "camera only" in text
    assert "all five" not in text
    # Bytes per device-day over camera's 1,000 devices (not a fifth of them), camera's row only:
    # the other families hold at most probe readings.
    assert "| camera | 1,000 | 2,000 |" in disk
    assert not [family for family in FAMILY_NAMES if family != "camera" and f"| {family} |" in disk]
    assert "camera only" in knee_markdown([(1000, result)], "python -m bench.soak --knee")


def test_the_report_of_the_whole_fleet_says_all_five() -> None:
    assert "all five families" in markdown(_result(), "python -m bench.soak")


# --- the knee's verdict ----------------------------------------------------------------------


def test_a_step_within_every_limit_holds() -> None:
    result = _result()

    assert breaks(result) == []
    assert dashboard_invalid(result) == []
    assert verdict(result) == "held"


def test_slow_dashboard_callbacks_break_the_step() -> None:
    slow = DashboardStats(callbacks=ENOUGH, p50_ms=800, p95_ms=DASHBOARD_LAG_LIMIT_S * 1000 + 100)
    result = _result(dashboard=slow)

    assert breaks(result) == ["dashboards: callbacks p95 5.1 s > 5 s under 50 sessions"]
    assert verdict(result).startswith("broke: dashboards: callbacks p95 5.1 s")


def test_callbacks_at_the_limit_still_hold() -> None:
    at_limit = DashboardStats(callbacks=ENOUGH, p95_ms=DASHBOARD_LAG_LIMIT_S * 1000)

    assert verdict(_result(dashboard=at_limit)) == "held"


def test_too_few_callbacks_make_the_step_invalid_for_dashboards_not_held() -> None:
    floor = expected_callbacks(STEP) * MIN_CALLBACK_SHARE
    few = DashboardStats(callbacks=int(floor) - 1, p95_ms=300)
    result = _result(dashboard=few)

    assert expected_callbacks(STEP) == ENOUGH
    assert breaks(result) == []
    assert verdict(result).startswith(f"invalid for dashboards: {int(floor) - 1} callbacks, fewer than 500")
    assert verdict(_result(dashboard=replace(few, callbacks=int(floor)))) == "held"


def test_failed_requests_or_no_statistics_make_the_dashboards_invalid() -> None:
    failed = DashboardStats(callbacks=ENOUGH, p95_ms=300, failures=3)

    assert dashboard_invalid(_result(dashboard=failed)) == ["3 dashboard requests failed"]
    nothing = replace(_result(), dashboard=None)
    assert "wrote no statistics" in verdict(nothing)


def test_without_sessions_the_dashboards_are_not_judged() -> None:
    result = replace(_result(replace(STEP, users=0)), dashboard=None)

    assert verdict(result) == "held"


def test_a_broken_step_also_says_its_dashboards_were_invalid() -> None:
    result = _result(
        dashboard=DashboardStats(callbacks=3, p95_ms=200),
        stored_rows={**dict.fromkeys(FAMILY_NAMES, 100), "traffic": 90},
    )

    said = verdict(result)
    assert said.startswith("broke: 10 readings lost")
    assert "dashboards invalid: 3 callbacks" in said


def test_the_knee_table_gives_each_step_its_verdict() -> None:
    held = _result(replace(STEP, devices=5000))
    slow = _result(replace(STEP, devices=10000), dashboard=DashboardStats(callbacks=ENOUGH, p95_ms=6000))

    table = knee_markdown([(5000, held), (10000, slow)], "python -m bench.soak --knee")

    rows = [line for line in table.splitlines() if line.startswith("| 5000 ") or line.startswith("| 10000 ")]
    assert rows[0].endswith("| held |")
    assert f"| {ENOUGH} |" in rows[0]  # the callbacks the p95 rests on
    assert "broke: dashboards: callbacks p95 6.0 s > 5 s" in rows[1]


def test_the_knee_table_gives_the_fleet_each_step_ran() -> None:
    """Over 295 communes a step of 20,000 devices rounds up to whole communes: the table says
    how many devices ran, not how many were asked."""
    asked = replace(STEP, devices=20000, communes=295)
    ran = replace(_result(asked), devices=asked.devices_per_family * 295 * len(asked.families))
    assert ran.devices > 20000
    table = knee_markdown([(20000, ran)], "python -m bench.soak --knee --communes 295")
    assert f"| {ran.devices} | " in table
    assert "| 20000 |" not in table


# --- what retention keeps ------------------------------------------------------------------------
def test_a_year_on_disk_follows_each_retention_policy() -> None:
    """Minute aggregates go after 35 days and raw readings after 30 in InfluxDB, so a year keeps
    far less than 365 days of everything; DuckDB drops only the minute aggregates."""
    mb = 1024 * 1024
    day = FamilyDisk("air_quality", raw_bytes=3 * mb, aggregate_bytes=5 * mb, minute_bytes=4 * mb)
    influx, duck = InfluxSettings(), DuckDBSettings()
    assert influx.minute_retention_days and duck.minute_retention_days

    year = kept_mb(day, 1.0, "influxdb", 1)
    assert year == 3 * influx.raw_retention_days + 4 * influx.minute_retention_days + 1 * 365
    assert year < 8 * 365 / 4  # not "a year of everything"
    five = kept_mb(day, 1.0, "influxdb", 5)
    assert five - year == 1 * 4 * 365  # only the coarse aggregates keep growing
    assert kept_mb(day, 1.0, "duckdb", 1) == 3 * 365 + 4 * duck.minute_retention_days + 1 * 365
    assert kept_mb(day, 2.0, "duckdb", 1) == kept_mb(day, 1.0, "duckdb", 1) / 2


# --- --communes ------------------------------------------------------------------------------------
def test_a_soak_longer_than_processings_horizon_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The fleet replays the past up to now: readings older than the horizon (24 h) would never
    be processed, so two simulated days are refused with what to change."""
    assert parse(["--minutes", "60", "--speedup", "24"]).speedup == 24  # a day: the default run
    with pytest.raises(SystemExit):
        parse(["--minutes", "30", "--speedup", "96"])
    said = capsys.readouterr().err
    assert "replays 48 simulated hours, past processing's horizon of 24 h" in said
    assert "SMARTCITY_PROCESSING__HORIZON_S" in said
    assert parse(["--knee", "--step-minutes", "2000"]).knee  # knee steps run at real time


def test_more_communes_spread_the_fleet_and_keep_the_registrys_nine_first(tmp_path: Path) -> None:
    shipped = CommuneRegistry.load().codes
    path = write_registry(tmp_path / "communes.csv", 40)
    registry = CommuneRegistry.load(path)

    assert len(registry.codes) == 40
    assert set(shipped) <= set(registry.codes)
    assert {code[:2] for code in registry.codes} <= {"78", "92"}
    assert SoakConfig(devices=4000, communes=40).devices_per_family * 40 * len(FAMILY_NAMES) >= 4000
    assert (
        SoakConfig(devices=4000, communes=40).devices_per_family < SoakConfig(devices=4000).devices_per_family
    )
    assert parse(["--communes", "40"]).communes == 40


def test_more_communes_than_the_departements_hold_is_refused_by_name() -> None:
    with pytest.raises(SystemExit):
        parse(["--communes", str(available() + 1)])
    with pytest.raises(TerritoryTooSmall, match="78 and 92 have"):
        registry_text(available() + 1)


def test_one_alert_message_raising_two_fault_probes_times_both() -> None:
    """An evaluation that finds two faults (the first stored just after the evaluation before)
    sends them in one message: both are delivered, neither waits for a later message."""
    now = time.time()
    first, second = "soak-probe-net-f0037-1796569756", "soak-probe-net-f0038-1796569816"
    probes = Probes("127.0.0.1", 1883, _pending_faults={first: now - 63.0, second: now - 3.0})
    probes.on_message({"alerts": [{"scope": f"78498/{first}"}, {"scope": f"78498/{second}"}]})
    assert sorted(round(seconds) for _, seconds in probes.results.alerted) == [3, 63]
    assert probes.faults_pending() == 0
    assert probes.results.fleet_alerts == 0


# --- ingest workers ---------------------------------------------------------------------------


def test_the_soak_waits_for_theingest_worker_count_smartcity_ingest_starts() -> None:
    """The soak waits for and reads as many ingest workers as ``smartcity ingest`` starts with
    the platform's environment: one when ``ingest.workers`` says one (it waited for a worker per
    core, and timed out), one per core on Mosquitto otherwise, one with an MQTT 3.1.1 broker."""
    assert ingest_worker_count({"SMARTCITY_INGEST__WORKERS": "1"}) == 1
    assert ingest_worker_count({"SMARTCITY_INGEST__WORKERS": "3"}) == 3
    assert ingest_worker_count({"SMARTCITY_MQTT__PROTOCOL": "5"}) == len(os.sched_getaffinity(0))
    assert ingest_worker_count({"SMARTCITY_MQTT__PROTOCOL": "3.1.1"}) == 1


def testingest_worker_count_are_asked_of_the_command_line_and_said_in_the_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert parse(["--ingest-workers", "1"]).ingest_workers == 1
    assert parse([]).ingest_workers is None
    with pytest.raises(SystemExit):
        parse(["--ingest-workers", "0"])
    assert "--ingest-workers 0: give 1 or more" in capsys.readouterr().err
    assert "1 ingest worker(s)" in markdown(_result(replace(STEP, ingest_workers=1)), "python -m bench.soak")


# --- what grows ------------------------------------------------------------------------------


def _memory(rss_mb: Callable[[float], float], minutes: float = 60) -> list[Sample]:
    """A component's samples every 5 s, its RSS (MB) as a function of the run's second."""
    return [
        Sample(at=float(at), cpu={"process": 0.0}, rss={"process": int(rss_mb(at) * MB)})
        for at in range(0, int(minutes * 60) + 1, 5)
    ]


def test_a_one_time_step_in_memory_is_not_read_as_growth() -> None:
    """The two-day run's process stepped up once, at its first whole-day pass, and stayed flat:
    a line through the second half read that as +488 MB/h."""
    step = _memory(lambda at: 800.0 if at < 0.55 * 3600 else 1_500.0 + (at % 60) / 60)
    assert abs(rss_growth_mb_per_h(step, "process")) < 5


def test_a_leak_reads_as_its_rate() -> None:
    leak = _memory(lambda at: 300.0 + 100.0 * at / 3600)
    assert rss_growth_mb_per_h(leak, "process") == pytest.approx(100.0, rel=0.01)


def test_too_short_a_run_says_so_instead_of_a_growth() -> None:
    short = _result(samples=_memory(lambda at: 300.0 + at, minutes=8))
    assert np.isnan(rss_growth_mb_per_h(short.samples, "process"))
    assert "| n/a (run too short) |" in markdown(short, "python -m bench.soak")
