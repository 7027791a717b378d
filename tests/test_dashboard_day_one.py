"""Day one is not empty: with a few hours of readings the overview shows the ATMO index of the day
so far, marked provisional with its hours, the last complete day, and the current traffic flow."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Page, expect

from dashboards.access import CommuneData, utc_now
from dashboards.app import create_app
from dashboards.config import DashboardSettings
from dashboards.day_one import atmo_so_far
from dashboards.users import User
from dashboards.views import paris_day_start
from sensors.communes import CommuneRegistry
from storage.base import TIME, TIME_DTYPE
from storage.duckdb_store import DuckDBStore
from tests.browser_fixtures import sign_in
from tests.dashboard_fixtures import POISSY, floor_time, served_in_thread, write_users
from tests.test_dashboard_alerts_browser import look
from tests.test_dashboard_browser import browser, page  # noqa: F401  (fixtures)

LEVELS = {"pm25": 5.0, "pm10": 30.0, "no2": 10.0, "o3": 20.0, "so2": 5.0}
"""PM10 at 30 µg/m³ is ATMO class 2, moyen; the others are bon."""


def _fill_day_one(store: DuckDBStore, now: datetime, hours: int) -> None:
    """``hours`` hourly means of two devices today, yesterday's index, 15 minutes of traffic."""
    # Whatever the clock, the hours are of today in Paris, the running hour last.
    last = floor_time(now, timedelta(hours=1))
    start = max(paris_day_start(now).astimezone(UTC), last - timedelta(hours=hours - 1))
    times = pl.datetime_range(start, last, "1h", eager=True, time_zone="UTC")
    frame = pl.DataFrame({TIME: times.cast(TIME_DTYPE)}).join(
        pl.DataFrame({"device_id": [f"air-{POISSY}-0", f"air-{POISSY}-1"]}), how="cross"
    )
    frame = frame.with_columns(
        pl.lit(POISSY).alias("insee"),
        *[pl.lit(v).alias(f"{p}_mean") for p, v in LEVELS.items()],
    )
    store.write("air_quality_1h", frame, tags=["insee", "device_id"])
    yesterday = (paris_day_start(now) - timedelta(days=1)).astimezone(UTC)
    days = pl.DataFrame(
        {
            TIME: pl.Series([yesterday, paris_day_start(now).astimezone(UTC)]).cast(TIME_DTYPE),
            "insee": [POISSY, POISSY],
            "index": pl.Series([1, None], dtype=pl.Int64),
            "complete": [True, False],
        }
    )
    store.write("atmo_daily", days, tags=["insee"])
    minutes = pl.datetime_range(now - timedelta(minutes=14), now, "1m", eager=True, time_zone="UTC")
    traffic = pl.DataFrame({TIME: minutes.cast(TIME_DTYPE)}).with_columns(
        pl.lit(POISSY).alias("insee"),
        pl.lit(f"tra-{POISSY}-0").alias("device_id"),
        pl.lit(20).alias("intensity"),
        pl.lit(42.0).alias("averageVehicleSpeed"),
    )
    store.write("traffic", traffic, tags=["insee", "device_id"])


def test_the_day_so_far_is_classed_on_the_atmo_scale_with_its_hours() -> None:
    store = DuckDBStore()
    try:
        now = datetime(2026, 12, 5, 10, 30, tzinfo=UTC)  # 11:30 in Paris: 11 hours of the day
        _fill_day_one(store, now, hours=5)
        data = CommuneData(store, User("agent", frozenset([POISSY])), CommuneRegistry.load())
        row = atmo_so_far(data, [POISSY], paris_day_start(now), now).row(0, named=True)
        assert row["atmo_provisional_index"] == 2
        assert row["atmo_hours"] == 5
        assert row["atmo_last_index"] == 1
    finally:
        store.close()


@pytest.fixture(scope="module")
def day_one(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    directory: Path = tmp_path_factory.mktemp("day-one")
    store = DuckDBStore()
    now = utc_now()
    _fill_day_one(store, now, hours=3)
    accounts = write_users(directory / "users.toml", [("poissy", [POISSY])])
    settings = DashboardSettings.model_validate({"users_file": directory / "users.toml", "refresh_s": 600})
    app = create_app(store, settings, CommuneRegistry.load(), clock=lambda: now)
    with served_in_thread(app.server) as base:
        yield base, "poissy", accounts["poissy"].password
    store.close()


@pytest.mark.slow
def test_overview_on_day_one_shows_a_provisional_index_and_the_current_flow(
    page: Page,  # noqa: F811
    day_one: tuple[str, str, str],
) -> None:
    base, user, password = day_one
    sign_in(page, base, user, password)
    table = page.locator("#overview-table")
    expect(table).to_contain_text("Moyen")
    expect(table).to_contain_text("provisoire")
    expect(table).to_contain_text("h de mesures sur 24")
    expect(table).to_contain_text("Dernier jour complet")
    expect(table).to_contain_text(re.compile(r"Flux actuel : 1\u202f[12]\d0 véhicules/h, 42 km/h"))
    expect(table).not_to_contain_text("Pas de données")
    look(page, "overview-day-one-fr")
