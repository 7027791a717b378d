"""Page callbacks called directly with a user, and through the Dash endpoint with a session."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import flask
import plotly.io as pio
import polars as pl
import pytest
from dash import html
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from dashboards.access import CommuneData, Forbidden
from dashboards.auth import app_context, start_session
from dashboards.i18n import PARIS
from dashboards.pages import commune, device, overview
from dashboards.pages.common import CUSTOM, range_key, span_of
from dashboards.views import ATMO_COLORS, atmo_text, family_chart, paris_day_start, traffic_text
from storage.base import TIME
from tests.dashboard_fixtures import (
    CONFLANS,
    MONTROUGE,
    POISSY,
    DashboardEnv,
    dash_callback,
    make_env,
    status_callback,
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    built = make_env(tmp_path_factory.mktemp("dash"), max_failed_signins=3)
    yield built
    built.store.close()


def data_of(env: DashboardEnv, name: str) -> CommuneData:
    user = env.app.server.extensions["smartcity"].users.get(name)
    assert user is not None
    return CommuneData(env.store, user, env.registry)


def texts(component: Any) -> str:
    """Every string inside a Dash component tree."""
    return json.dumps(
        component.to_plotly_json() if hasattr(component, "to_plotly_json") else component,
        cls=_Encoder,
        ensure_ascii=False,
    )


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        return o.to_plotly_json() if hasattr(o, "to_plotly_json") else str(o)


def test_overview_lists_only_the_users_communes_with_todays_atmo(env: DashboardEnv) -> None:
    now = env.scenario.now
    body, updated = overview.overview_content(data_of(env, "poissy"), "fr", env.settings, now)
    shown = texts(body)
    assert "Poissy" in shown and "Montrouge" not in shown and "Conflans" not in shown
    today = env.scenario.atmo.filter(
        (pl.col("insee") == POISSY) & (pl.col(TIME) == paris_day_start(now).astimezone(UTC))
    )
    index = today.get_column("index").item()
    assert atmo_text(index, "fr") in shown  # the class is written, not only coloured
    assert ATMO_COLORS[index - 1] in shown
    assert "Actualisé" in updated
    traffic = env.store.read(
        "traffic_congestion",
        start=now - timedelta(hours=2),
        end=now,
        where={"insee": POISSY, "device_id": "_commune"},
    )
    assert traffic_text(traffic.get_column("level").last(), "fr") in shown  # type: ignore[arg-type]
    admin_body, _ = overview.overview_content(data_of(env, "admin"), "en", env.settings, now)
    assert "Montrouge" in texts(admin_body) and "Conflans-Sainte-Honorine" in texts(admin_body)


def test_family_chart_shows_the_stored_aggregates_at_the_fitting_resolution(env: DashboardEnv) -> None:
    now = env.scenario.now
    figure, _ = commune.family_panel(
        data_of(env, "poissy"),
        POISSY,
        "air_quality",
        "pm25",
        range_key="3h",
        lang="fr",
        settings=env.settings,
        now=now,
    )
    mean = next(trace for trace in figure.data if trace.name == "moyenne")
    stored = env.store.read(
        "air_quality_1m_commune",
        start=span_of("3h", now).start,
        end=now,
        where={"insee": POISSY},
        fields=["pm25_mean"],
    )
    assert len(mean.y) == stored.height
    assert pytest.approx(list(mean.y)) == stored.get_column("pm25_mean").to_list()
    assert "par minute" in figure.layout.title.text
    assert figure.layout.separators.startswith(",")  # decimal comma
    week, _ = commune.family_panel(
        data_of(env, "poissy"),
        POISSY,
        "traffic",
        "intensity",
        range_key="7d",
        lang="en",
        settings=env.settings,
        now=now,
    )
    assert "per 15 minutes" in week.layout.title.text
    assert all(len(trace.x) <= env.settings.max_points for trace in week.data)


def test_counter_fields_are_drawn_as_increases(env: DashboardEnv) -> None:
    now = env.scenario.now
    figure, _ = commune.family_panel(
        data_of(env, "poissy"),
        POISSY,
        "building",
        "energy",
        range_key="24h",
        lang="fr",
        settings=env.settings,
        now=now,
    )
    assert "augmentation" in figure.layout.title.text
    (trace,) = figure.data
    stored = env.store.read(
        "building_1m_commune",
        start=span_of("24h", now).start,
        end=now,
        where={"insee": POISSY},
        fields=["energy_increase"],
    )
    assert pytest.approx(list(trace.y)) == stored.get_column("energy_increase").to_list()


def test_callbacks_refuse_a_forbidden_commune(env: DashboardEnv) -> None:
    poissy, now = data_of(env, "poissy"), env.scenario.now
    with pytest.raises(Forbidden):
        commune.family_panel(
            poissy,
            MONTROUGE,
            "air_quality",
            "pm25",
            range_key="24h",
            lang="fr",
            settings=env.settings,
            now=now,
        )
    with pytest.raises(Forbidden):
        commune.atmo_panel(poissy, MONTROUGE, "7d", "fr", now)
    with pytest.raises(Forbidden):
        commune.status_panel(poissy, MONTROUGE, "24h", lang="fr", settings=env.settings, now=now)
    with pytest.raises(Forbidden):
        commune.export_csv(
            poissy,
            CONFLANS,
            "air_quality",
            "pm25",
            range_key="24h",
            lang="fr",
            settings=env.settings,
            now=now,
        )
    key = {"insee": MONTROUGE, "device_id": f"air-{MONTROUGE}-0", "family": "air_quality"}
    with pytest.raises(Forbidden):
        device.device_panel(poissy, key, "pm25", range_key="24h", lang="fr", settings=env.settings, now=now)


def test_status_panel_lists_devices_anomalies_and_alerts(env: DashboardEnv) -> None:
    now = env.scenario.now
    tables = commune.status_panel(
        data_of(env, "poissy"), POISSY, "24h", lang="en", settings=env.settings, now=now
    )
    shown = texts(tables)
    devices = env.store.series("air_quality", where={"insee": POISSY}).get_column("device_id").to_list()
    assert all(d in shown for d in devices)
    assert "online" in shown
    expected_kinds = env.scenario.anomalies.filter(pl.col("insee") == POISSY).get_column("kind").to_list()
    assert all(kind in shown for kind in expected_kinds)
    assert "pm25-high" in shown and "firing" in shown and "reseau-coupe" in shown and "resolved" in shown
    assert MONTROUGE not in shown


def test_chosen_dates_are_whole_paris_days(env: DashboardEnv) -> None:
    key = range_key(CUSTOM, "2026-11-20", "2026-11-18T00:00:00")
    assert key == "custom:2026-11-20:2026-11-18"
    span = span_of(key, env.scenario.now)
    # Midnight Paris is 23:00 UTC the day before in November.
    assert span.start == datetime(2026, 11, 17, 23, tzinfo=UTC)
    assert span.end == datetime(2026, 11, 20, 23, tzinfo=UTC)
    assert range_key(CUSTOM, None, "2026-11-18") == "24h"  # half-picked: keep a sensible range
    assert span_of("custom:garbage", env.scenario.now).span == timedelta(hours=24)
    now = env.scenario.now
    today = now.astimezone(PARIS).date()
    key = range_key(CUSTOM, (today - timedelta(days=2)).isoformat(), today.isoformat())
    figure, _ = commune.family_panel(
        data_of(env, "poissy"),
        POISSY,
        "air_quality",
        "pm25",
        range_key=key,
        lang="en",
        settings=env.settings,
        now=now,
    )
    assert "per minute" in figure.layout.title.text or "per 15 minutes" in figure.layout.title.text
    assert len(next(trace for trace in figure.data if trace.name == "mean").y) > 0


def test_csv_export_is_what_the_chart_shows(env: DashboardEnv) -> None:
    now = env.scenario.now
    poissy = data_of(env, "poissy")
    download = commune.export_csv(
        poissy, POISSY, "air_quality", "no2", range_key="24h", lang="en", settings=env.settings, now=now
    )
    assert download["content"].startswith("\ufeff")
    frame = pl.read_csv(download["content"].encode("utf-8"))
    figure, _ = commune.family_panel(
        poissy, POISSY, "air_quality", "no2", range_key="24h", lang="en", settings=env.settings, now=now
    )
    mean = next(trace for trace in figure.data if trace.name == "mean")
    assert frame.height == len(mean.y)
    assert frame.columns[:2] == ["date and time (Paris time)", "insee"] and "no2_mean" in frame.columns
    assert set(frame.get_column("insee").cast(pl.String)) == {POISSY}
    assert download["filename"].endswith(".csv")


def test_csv_export_opens_in_french_excel(env: DashboardEnv) -> None:
    """French Excel: ';' between fields, a decimal comma, UTF-8 with a BOM, Paris time, no 6.4399999."""
    now = env.scenario.now
    poissy = data_of(env, "poissy")
    download = commune.export_csv(
        poissy, POISSY, "air_quality", "no2", range_key="24h", lang="fr", settings=env.settings, now=now
    )
    content = download["content"]
    assert content.startswith("\ufeff") and "charset=utf-8" in download["type"]
    header, first, *_ = content.lstrip("\ufeff").splitlines()
    columns = header.split(";")
    assert columns[:2] == ["date et heure (heure de Paris)", "insee"]
    cells = dict(zip(columns, first.split(";"), strict=True))
    # Rounded to the unit's precision (µg/m³: one decimal), with a decimal comma.
    assert re.fullmatch(r"-?\d+(,\d)?", cells["no2_mean"]), cells["no2_mean"]
    frame = pl.read_csv(content.encode("utf-8"), separator=";", decimal_comma=True)
    drawn = family_chart(
        poissy,
        POISSY,
        "air_quality",
        "no2",
        span_of("24h", now),
        lang="fr",
        max_points=env.settings.max_points,
    ).frame
    first_time = drawn.get_column(TIME).item(0).astimezone(PARIS)
    assert frame.get_column(columns[0]).item(0) == first_time.strftime("%d/%m/%Y %H:%M:%S")
    assert frame.get_column("no2_mean").to_list() == drawn.get_column("no2_mean").round(1).to_list()


def test_device_page_marks_anomalies_on_raw_readings(env: DashboardEnv) -> None:
    now = env.scenario.now
    anomaly = env.scenario.anomalies.filter(pl.col("insee") == POISSY).row(0, named=True)
    key = {"insee": POISSY, "device_id": anomaly["device_id"], "family": "air_quality"}
    figure, table = device.device_panel(
        data_of(env, "poissy"), key, "pm25", range_key="3h", lang="fr", settings=env.settings, now=now
    )
    names = [trace.name for trace in figure.data]
    assert "Anomalies" in names
    marks = next(trace for trace in figure.data if trace.name == "Anomalies")
    assert anomaly["observed"] in list(marks.y)
    assert "brutes" in figure.layout.title.text  # raw readings for a short range
    assert "pic" in texts(table) or "capteur bloqué" in texts(table)


def test_chart_payload_stays_small_for_every_range(env: DashboardEnv) -> None:
    now = env.scenario.now
    for key in ("3h", "24h", "7d", "30d", "1y", "5y"):
        figure, _ = commune.family_panel(
            data_of(env, "admin"),
            POISSY,
            "network",
            "throughputIn",
            range_key=key,
            lang="fr",
            settings=env.settings,
            now=now,
        )
        assert len(pio.to_json(figure)) < 500 * 1024, key


# -- through the server: sign-in, sessions, the Dash endpoint ---------------------------------


def csrf_of(page: bytes) -> str:
    match = re.search(rb'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1).decode()


def sign_in(client: FlaskClient, user: str, password: str) -> TestResponse:
    token = csrf_of(client.get("/login").data)
    return client.post("/login", data={"user": user, "password": password, "csrf": token, "next": "/"})


def test_pages_need_a_session(env: DashboardEnv) -> None:
    client = env.app.server.test_client()
    response = client.get("/commune/78498")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert client.post("/_dash-update-component", json=status_callback(POISSY)).status_code == 401


def test_dash_endpoint_refuses_a_forbidden_commune_even_when_asked_directly(env: DashboardEnv) -> None:
    client = env.app.server.test_client()
    account = env.accounts["poissy"]
    assert sign_in(client, account.name, account.password).status_code == 302
    allowed = client.post("/_dash-update-component", json=status_callback(POISSY))
    assert allowed.status_code == 200 and f"air-{POISSY}-0" in allowed.get_data(as_text=True)
    refused = client.post("/_dash-update-component", json=status_callback(MONTROUGE)).get_data(as_text=True)
    assert f"air-{MONTROUGE}-0" not in refused
    assert '"id":"forbidden"' in refused


def test_sign_in_needs_the_forms_csrf_token(env: DashboardEnv) -> None:
    client = env.app.server.test_client()
    account = env.accounts["admin"]
    client.get("/login")
    response = client.post(
        "/login", data={"user": account.name, "password": account.password, "csrf": "forged"}
    )
    assert response.status_code == 400
    assert client.get("/").status_code == 302  # still not signed in


def test_failed_sign_ins_are_rate_limited(env: DashboardEnv) -> None:
    client = env.app.server.test_client()
    # An address of its own, so that the lock-out does not spill over other tests.
    client.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    account = env.accounts["poissy"]
    for _ in range(env.settings.max_failed_signins):
        assert sign_in(client, "admin", "wrong password").status_code == 401
    # Even the right password is refused while the user is locked out.
    locked = sign_in(client, "admin", env.accounts["admin"].password)
    assert locked.status_code == 429 and "Trop de tentatives" in locked.get_data(as_text=True)
    assert 0 < int(locked.headers["Retry-After"]) <= env.settings.signin_window_s
    # Another user from the same address is not locked out by someone else's mistakes.
    assert sign_in(client, account.name, account.password).status_code == 302


def test_session_expires(env: DashboardEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    client = env.app.server.test_client()
    account = env.accounts["poissy"]
    assert sign_in(client, account.name, account.password).status_code == 302
    assert client.get("/").status_code == 200
    # The session cookie's signature carries its time; past the lifetime the server refuses it,
    # whatever the browser does with the cookie's own expiry.
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + env.settings.session_max_age_s + 5)
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_language_switch_and_layouts(env: DashboardEnv) -> None:
    client = env.app.server.test_client()
    account = env.accounts["poissy"]
    sign_in(client, account.name, account.password)
    with env.app.server.test_request_context("/"):
        user = app_context().users.get(account.name)
        assert user is not None
        start_session(user)
        flask.session["lang"] = "en"
        page = commune.layout(insee=POISSY)
        assert "Sensor family" in texts(page)
        refused = commune.layout(insee=MONTROUGE)
        assert isinstance(refused, html.Div) and "Access denied" in texts(refused)
        flask.session["lang"] = "fr"
        assert "Famille de capteurs" in texts(commune.layout(insee=POISSY))
    assert client.get("/lang/en?next=/commune/78498").headers["Location"] == "/commune/78498"
    assert client.get("/lang/en?next=https://evil.example/").headers["Location"] == "/"


def test_health_check_needs_no_sign_in_and_reveals_no_commune(env: DashboardEnv) -> None:
    response = env.app.server.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == "ok\n"


def test_the_pages_and_the_api_read_the_time_from_the_apps_clock_not_the_machines(tmp_path: Path) -> None:
    # A store filled for noon two days ago: the overview's "today" is that day, whatever the
    # machine's clock says (a suite running past Paris midnight must not see an empty day).
    moment = paris_day_start(datetime.now(UTC)) - timedelta(days=2) + timedelta(hours=12)
    past = make_env(tmp_path, now=moment.astimezone(UTC))
    try:
        client = past.app.server.test_client()
        account = past.accounts["poissy"]
        assert sign_in(client, account.name, account.password).status_code == 302
        body = dash_callback(
            [("overview-content", "children"), ("overview-updated", "children")],
            [("overview-tick", "n_intervals", None)],
            "overview-tick.n_intervals",
        )
        shown = client.post("/_dash-update-component", json=body).get_data(as_text=True)
        that_day = past.scenario.atmo.filter(
            (pl.col("insee") == POISSY) & (pl.col(TIME) == paris_day_start(moment).astimezone(UTC))
        )
        assert atmo_text(that_day.get_column("index").item(), "fr") in shown
        # That day's own index and traffic, not "no data yet, here is the last complete day".
        assert "Dernier jour complet" not in shown and atmo_text(None, "fr") not in shown
        # The API's relative times count from the same clock: the six hours before that noon.
        answer = client.get(
            f"/api/v1/aggregates/air_quality?communes={POISSY}&start=-6h&every=1h&fields=pm25&format=csv",
            headers={"Authorization": f"Bearer {account.token}"},
        )
        assert answer.status_code == 200, answer.get_data(as_text=True)
        times = pl.read_csv(answer.data, try_parse_dates=True).get_column(TIME)
        latest = times.max()
        assert times.len() >= 5 and isinstance(latest, datetime) and latest <= moment
    finally:
        past.store.close()
