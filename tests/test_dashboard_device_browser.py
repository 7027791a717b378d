"""What staff see in Chromium on the device page (status, details, last readings, anomalies with
their end, alerts) and on a chart (the period's axis, levels as lines, incomplete intervals)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Page, expect

from storage.base import TIME, TIME_DTYPE
from tests.browser_fixtures import sign_in
from tests.dashboard_fixtures import POISSY, DashboardEnv, alert_frame, floor_time, make_env, served_in_thread
from tests.test_dashboard_alerts_browser import look
from tests.test_dashboard_browser import browser, page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

DEVICE = f"air-{POISSY}-1"
RULES = """
[delivery."*"]
recipients = ["astreinte@example.fr"]
[delivery."*".webhook]
url = "http://127.0.0.1:9/"
secret_env = "SMARTCITY_TEST_SECRET"

[[rules]]
name = "pm25-eleve"
title = { fr = "Particules fines élevées", en = "High fine particles" }
communes = "*"
family = "air_quality"
condition = "above"
measurement = "air_quality_1m_commune"
field = "pm25_mean"
raise = 45
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardEnv, str]]:
    directory: Path = tmp_path_factory.mktemp("device-browser")
    (directory / "devices.csv").write_text(f"device_id,parent\nnet-{POISSY}-01,\n{DEVICE},net-{POISSY}-01\n")
    (directory / "alerts.toml").write_text(RULES, "utf-8")
    env = make_env(
        directory,
        refresh_s=600,
        topology_file=directory / "devices.csv",
        alert_rules_file=directory / "alerts.toml",
    )
    now = env.scenario.now
    scope = f"{POISSY}/{DEVICE}"
    env.store.write(
        "alert_events",
        alert_frame([(POISSY, "capteurs-hors-ligne", scope, "firing", now - timedelta(minutes=3), "x")]),
        tags=["insee", "rule", "scope"],
    )
    # The quarter of an hour still running: its energy so far is lower than a whole quarter's.
    running = floor_time(now, timedelta(minutes=15))  # by the app's clock, not the machine's
    env.store.write(
        "building_15m_commune",
        pl.DataFrame(
            {
                TIME: pl.Series([running]).cast(TIME_DTYPE),
                "insee": [POISSY],
                "energy_increase": [0.5],
                "energy_resets": [0],
                "energy_count": [3],
            }
        ),
        tags=["insee"],
    )
    with served_in_thread(env.app.server) as base:
        yield env, base
    env.store.close()


def test_the_device_page_shows_status_details_readings_anomalies_and_alerts(
    page: Page,  # noqa: F811
    served: tuple[DashboardEnv, str],
) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, f"/device/{POISSY}/{DEVICE}")
    details = page.locator("#device-details")
    expect(details).to_contain_text("en ligne")
    expect(details).to_contain_text("Qualité de l’air")
    expect(details).to_contain_text("Poissy")
    expect(details.get_by_role("link", name=f"net-{POISSY}-01")).to_be_visible()
    expect(details).to_contain_text("Période d’émission attendue")
    expect(details).to_contain_text("il y a")
    expect(page.locator("#device-readings")).to_contain_text("µg/m³")
    expect(page.locator("#device-anomaly-table")).to_contain_text("Fin")
    expect(page.locator("#device-alert-table")).to_contain_text("capteurs-hors-ligne")
    expect(page.locator("#device-chart")).to_contain_text("seuil ATMO « mauvais »")
    look(page, "device-fr")


def test_charts_follow_the_period_and_mark_levels_and_the_running_interval(
    page: Page,  # noqa: F811
    served: tuple[DashboardEnv, str],
) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, f"/commune/{POISSY}")
    chart = page.locator("#commune-chart")
    expect(chart).to_contain_text("alerte « Particules fines élevées » : 45,0")
    expect(chart).to_contain_text("seuil ATMO « mauvais » : 25,0")
    page.get_by_role("tab", name="Bâtiments").click()  # energy: its first field
    page.get_by_role("radio", name="7 derniers jours").click()
    expect(chart).to_contain_text("intervalle incomplet")
    page.get_by_role("radio", name="1 an").click()
    expect(page.locator("#commune-chart-label")).to_contain_text("par jour")  # title: HTML above the chart
    ticks = chart.locator(".xtick text").evaluate_all("texts => texts.map(t => t.textContent)")
    assert len(ticks) == len(set(ticks)) > 2, ticks  # a year of ticks, none repeated
    look(page, "commune-charts-fr")
