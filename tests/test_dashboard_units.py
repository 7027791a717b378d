"""Building blocks of the dashboards: users file, rights, ranges, downsampling, French formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from alerts.actions import ActionError
from dashboards.access import BadQuery, CommuneData, Forbidden
from dashboards.auth import load_secret_key
from dashboards.basemap import basemap
from dashboards.config import DashboardSettings
from dashboards.downsample import m4
from dashboards.i18n import format_datetime, format_number, format_quantity, t
from dashboards.pages import overview
from dashboards.pages.alerts import parse_until
from dashboards.pages.common import parse_day
from dashboards.timerange import TimeRange, TimeRangeError, fitting_window, parse_time
from dashboards.users import (
    User,
    UserDirectory,
    UsersFileError,
    hash_password,
    parse_users,
    verify_password,
)
from dashboards.views import (
    ATMO_COLORS,
    alert_summary,
    family_chart,
    readable_text_color,
    severity_text,
    unit_label,
)
from sensors.communes import CommuneRegistry
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import CONFLANS, MONTROUGE, POISSY, aggregate_frame, write_users

NOW = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


def test_password_hash_is_salted_and_verifies_only_the_right_password() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # salted
    assert "correct horse" not in first
    assert verify_password("correct horse", first)
    assert not verify_password("correct horsE", first)
    assert not verify_password("correct horse", "not-a-hash")


def test_users_file_round_trip(tmp_path: Path) -> None:
    accounts = write_users(tmp_path / "users.toml", [("poissy", [POISSY]), ("admin", ["*"])])
    directory = UserDirectory(tmp_path / "users.toml")
    assert directory.authenticate("poissy", accounts["poissy"].password) is not None
    assert directory.authenticate("poissy", accounts["admin"].password) is None
    assert directory.authenticate("nobody", "whatever") is None
    text = (tmp_path / "users.toml").read_text()
    assert accounts["poissy"].password not in text and accounts["poissy"].token not in text
    assert (tmp_path / "users.toml").stat().st_mode & 0o077 == 0


def test_users_file_changes_are_seen_without_restart(tmp_path: Path) -> None:
    write_users(tmp_path / "users.toml", [("poissy", [POISSY])])
    directory = UserDirectory(tmp_path / "users.toml")
    assert directory.get("poissy") is not None
    write_users(tmp_path / "users.toml", [("other", [MONTROUGE])])
    assert directory.get("poissy") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[users.a]\ncommunes = '78498'\n", "communes must be a list"),
        ("[users.a]\ncommunes = ['78498']\npassword = 'plain'\n", "scrypt hash"),
        ("[users.a]\ncommunes = ['78498']\ntokens = [{ name = 'x' }]\n", "sha256"),
        ("[users\n", "not valid TOML"),
    ],
)
def test_malformed_users_file_is_explained(text: str, problem: str) -> None:
    with pytest.raises(UsersFileError, match=problem):
        parse_users(text)


def test_rights_are_enforced_in_the_data_layer() -> None:
    store = DuckDBStore()
    store.write(
        "air_quality_1h_commune",
        aggregate_frame("air_quality", "1h", [POISSY, MONTROUGE], NOW - timedelta(days=1), NOW),
        tags=["insee"],
    )
    registry = CommuneRegistry.load()
    poissy = CommuneData(store, User("p", frozenset({POISSY})), registry)
    span = TimeRange.last(timedelta(days=2), NOW)
    assert [c.insee for c in poissy.communes()] == [POISSY]
    with pytest.raises(Forbidden):
        poissy.aggregates("air_quality", [MONTROUGE], span, "1h")
    with pytest.raises(Forbidden):
        poissy.aggregates("air_quality", [POISSY, MONTROUGE], span, "1h")
    # No commune named means "all of mine", never "all".
    mine = poissy.aggregates("air_quality", None, span, "1h")
    assert set(mine.get_column("insee").unique()) == {POISSY}
    # An unknown commune is "forbidden" for a non-admin (no probing of codes) and a 400 for an admin.
    with pytest.raises(Forbidden):
        poissy.check("99999")
    admin = CommuneData(store, User("a", frozenset({"*"})), registry)
    with pytest.raises(BadQuery, match="unknown commune"):
        admin.check("99999")
    with pytest.raises(BadQuery, match="unknown resolution"):
        admin.aggregates("air_quality", [POISSY], span, "5m")
    assert set(admin.aggregates("air_quality", None, span, "1h").get_column("insee").unique()) == {
        POISSY,
        MONTROUGE,
    }
    assert CONFLANS in {c.insee for c in admin.communes()}


def test_time_parsing_relative_iso_and_errors() -> None:
    assert parse_time("-7d", NOW) == NOW - timedelta(days=7)
    assert parse_time("-90m", NOW) == NOW - timedelta(minutes=90)
    assert parse_time("2026-11-01T00:00:00Z", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_time("2026-11-01T01:00:00+01:00", NOW) == datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(TimeRangeError, match="relative time like -7d"):
        parse_time("last week", NOW)
    with pytest.raises(TimeRangeError, match="not before end"):
        TimeRange.parse("-1d", "-2d", NOW)


@pytest.mark.parametrize(
    ("span", "window"),
    [
        (timedelta(hours=3), "1m"),
        (timedelta(days=7), "15m"),
        (timedelta(days=30), "1h"),
        (timedelta(days=1000), "1d"),
    ],
)
def test_resolution_fits_the_range(span: timedelta, window: str) -> None:
    assert fitting_window(span, 2000) == window


def test_m4_keeps_extremes_and_caps_points() -> None:
    n = 50_000
    times = pl.datetime_range(NOW, NOW + timedelta(seconds=n - 1), "1s", eager=True, time_zone="UTC")
    values = np.sin(np.arange(n) / 500)
    values[12_345], values[40_000] = 99.0, -99.0
    frame = pl.DataFrame({"time": times.cast(pl.Datetime("ns", "UTC")), "v": values})
    shown = m4(frame, "v", 1000)
    assert shown.height <= 1000
    assert shown.get_column("v").max() == 99.0 and shown.get_column("v").min() == -99.0
    assert shown.get_column("time").is_sorted()
    assert shown.get_column("time").first() == frame.get_column("time").first()
    assert shown.get_column("time").last() == frame.get_column("time").last()
    small = frame.head(10)
    assert m4(small, "v", 1000).equals(small)


def test_french_and_english_formats() -> None:
    assert format_number(12.5, "fr") == "12,5"
    assert format_number(1234.5, "fr") == "1\u202f234,5"
    assert format_number(1234.5, "en") == "1,234.5"
    assert format_quantity(12.5, "µg/m³", "fr") == "12,5\u00a0µg/m³"
    assert format_quantity(0.42, "1", "fr") == "42,0\u00a0%"
    # 13:00 UTC is 14:00 in Paris in November (CET).
    assert format_datetime(NOW, "fr") == "28/11/2026 14:00"
    assert format_datetime(datetime(2026, 7, 1, 12, tzinfo=UTC), "en") == "2026-07-01 14:00"
    assert t("fr", "atmo.degrade") == "Dégradé" and t("en", "atmo.degrade") == "Degraded"


def test_atmo_badge_text_has_enough_contrast_on_every_official_colour() -> None:
    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    for colour in ATMO_COLORS:
        text = readable_text_color(colour)
        lighter, darker = sorted((luminance(colour), luminance(text)), reverse=True)
        assert (lighter + 0.05) / (darker + 0.05) >= 4.5, colour


def test_secret_key_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    settings = DashboardSettings(users_file=tmp_path / "users.toml")
    first = load_secret_key(settings)
    assert len(first) >= 32 and load_secret_key(settings) == first  # survives a restart
    assert (tmp_path / "dashboard_secret.key").stat().st_mode & 0o077 == 0
    assert (
        load_secret_key(DashboardSettings(users_file=tmp_path / "users.toml", secret_key="given")) == "given"
    )
    (tmp_path / "dashboard_secret.key").write_text("\n", "utf-8")
    with pytest.raises(ValueError, match=r"dashboard_secret\.key is empty"):
        load_secret_key(settings)  # never sign cookies with an empty secret


def contrast(first: str, second: str) -> float:
    """WCAG contrast ratio of two ``#RRGGBB`` colours."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_every_chart_line_stands_out_from_the_page() -> None:
    """Graphics need 3:1 against their background (WCAG 1.4.11): the min/max lines were 2.5:1."""
    store = DuckDBStore()
    try:
        store.write(
            "air_quality_1m_commune",
            aggregate_frame("air_quality", "1m", [POISSY], NOW - timedelta(hours=3), NOW),
            tags=["insee"],
        )
        admin = User("admin", frozenset({"*"}))
        data = CommuneData(store, admin, CommuneRegistry.load())
        figure = family_chart(
            data,
            POISSY,
            "air_quality",
            "pm25",
            TimeRange(NOW - timedelta(hours=3), NOW),
            lang="fr",
            max_points=2000,
        ).figure
    finally:
        store.close()
    colours = {trace.line.color for trace in figure.data}
    assert colours and all(contrast(c, "#FFFFFF") >= 3 for c in colours), colours


def test_alert_severities_and_summaries_are_written_in_the_ui_language() -> None:
    assert severity_text("warning", "fr") == "avertissement"
    assert severity_text("critical", "fr") == "critique"
    assert severity_text("critical", "en") == "critical"
    assert alert_summary("firing: offline = 12.62", "fr") == "active : hors ligne = 12,62"
    assert alert_summary("firing: pm25 = 62.5", "en") == "firing: PM2.5 = 62.5"
    assert (
        alert_summary("suppressed: parent device net-78498-01 is offline", "fr")
        == "mise en attente : l’appareil parent net-78498-01 est hors ligne"
    )
    assert alert_summary("something the engine never wrote", "fr") == "something the engine never wrote"
    # Units that are words are translated; symbols are kept.
    assert unit_label("vehicles", "fr") == "véhicules" and unit_label("people", "fr") == "personnes"
    assert unit_label("µg/m³", "fr") == "µg/m³"


def test_overview_map_is_a_maplibre_map_coloured_by_atmo_class_and_opens_the_commune() -> None:
    rows = pl.DataFrame(
        {
            "insee": [POISSY, MONTROUGE],
            "name": ["Poissy", "Montrouge"],
            "latitude": [48.93, 48.82],
            "longitude": [2.04, 2.32],
            "atmo_index": [3, None],
        },
        schema_overrides={"atmo_index": pl.Int64},
    )
    offline = overview.overview_map(rows, "fr", basemap("none"))
    assert {trace.type for trace in offline.data} == {"scattermap"}
    disc = offline.data[-1]
    assert list(disc.marker.color) == [ATMO_COLORS[2], "#BDBDBD"]
    assert list(disc.hovertext) == ["Poissy — Dégradé", "Montrouge — Pas de données"]
    assert offline.layout.map.style == basemap("none").style  # nothing fetched from the network
    assert disc.mode == "markers"  # no glyphs without a basemap: no text to overlap
    # Every commune inside the narrowest map: the fitted zoom shows both.
    assert 8 <= offline.layout.map.zoom <= 12
    ign = overview.overview_map(rows, "fr", basemap("plan-ign"))
    assert ign.layout.map.style.startswith("https://data.geopf.fr/")
    assert ign.data[-1].mode == "markers+text" and list(ign.data[-1].text) == ["Poissy", "Montrouge"]
    click = {"points": [{"customdata": POISSY}]}
    assert overview.commune_path(click, {POISSY}) == f"/commune/{POISSY}"
    assert overview.commune_path(click, {MONTROUGE}) is None  # not one of the user's communes
    assert overview.commune_path(None, {POISSY}) is None


def test_basemap_setting_names_a_known_style_or_a_url() -> None:
    assert DashboardSettings().basemap == "plan-ign"
    assert DashboardSettings(basemap="https://tiles.example.fr/style.json").basemap.startswith("https://")
    with pytest.raises(ValueError, match="plan-ign, openmaptiles, none"):
        DashboardSettings(basemap="google")


def test_typed_days_french_or_iso() -> None:
    assert parse_day("05/12/2026") == "2026-12-05"
    assert parse_day(" 2026-12-05 ") == "2026-12-05"
    assert parse_day("31/02/2026") is None and parse_day("demain") is None and parse_day(None) is None


def test_a_silence_ends_at_the_paris_time_typed_french_or_iso() -> None:
    paris_evening = datetime(2026, 12, 6, 17, 30, tzinfo=UTC)  # 18:30 in Paris (winter, UTC+1)
    assert parse_until("06/12/2026 18:30") == paris_evening
    assert parse_until(" 2026-12-06  18:30 ") == paris_evening
    assert parse_until("2026-12-06T18:30") == paris_evening
    for wrong in ("12/06/2026, 06:30 PM", "demain", "31/02/2026 10:00", "", None):
        with pytest.raises(ActionError):
            parse_until(wrong)
