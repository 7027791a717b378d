"""The query API and its Python client: formats, rights, limits, clear errors."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import polars as pl
import pytest
from flask.testing import FlaskClient

from smartcity.client import BadRequest, Client, Forbidden, Unauthorized
from storage.base import TIME
from tests.dashboard_fixtures import CONFLANS, MONTROUGE, POISSY, DashboardEnv, make_env


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    built = make_env(tmp_path_factory.mktemp("api"))
    yield built
    built.store.close()


@pytest.fixture
def http(env: DashboardEnv) -> FlaskClient:
    client: FlaskClient = env.app.server.test_client()
    return client


def bearer(env: DashboardEnv, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {env.accounts[user].token}"}


def client_of(env: DashboardEnv, user: str) -> Client:
    transport = httpx.WSGITransport(app=env.app.server)
    return Client("http://dashboards.test", env.accounts[user].token, transport=transport)


def stored(env: DashboardEnv, measurement: str, insee: str, hours: float) -> pl.DataFrame:
    now = env.scenario.now
    return env.store.read(measurement, start=now - timedelta(hours=hours), end=now, where={"insee": insee})


QUERY = f"/api/v1/aggregates/air_quality?communes={POISSY}&start=-6h&every=15m&fields=pm25,no2"


@pytest.mark.parametrize(
    ("how", "media_type"),
    [
        ({"format": "arrow"}, "application/vnd.apache.arrow.stream"),
        ({"format": "csv"}, "text/csv"),
        ({"format": "json"}, "application/json"),
        ({"accept": "text/csv"}, "text/csv"),
        ({"accept": "application/vnd.apache.arrow.stream"}, "application/vnd.apache.arrow.stream"),
        ({}, "application/json"),
    ],
)
def test_each_format_carries_the_same_rows(
    env: DashboardEnv, http: FlaskClient, how: dict[str, str], media_type: str
) -> None:
    headers = bearer(env, "poissy")
    url = QUERY
    if "format" in how:
        url += f"&format={how['format']}"
    if "accept" in how:
        headers["Accept"] = how["accept"]
    response = http.get(url, headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == media_type
    if media_type == "text/csv":
        frame = pl.read_csv(io.BytesIO(response.data))
    elif media_type == "application/json":
        body = json.loads(response.data)
        assert [c["name"] for c in body["columns"]][:2] == [TIME, "insee"]
        frame = pl.DataFrame(body["rows"])
    else:
        frame = pl.read_ipc_stream(io.BytesIO(response.data))
    expected = env.store.read(
        "air_quality_15m_commune",
        start=env.scenario.now - timedelta(hours=6),
        end=env.scenario.now + timedelta(minutes=1),
        where={"insee": POISSY},
        fields=["pm25_mean"],
    )
    assert frame.height == expected.height
    assert {"pm25_mean", "pm25_p95", "no2_max", "no2_count"} <= set(frame.columns)
    assert "o3_mean" not in frame.columns
    assert (
        pytest.approx(frame.get_column("pm25_mean").to_list()) == expected.get_column("pm25_mean").to_list()
    )


def test_no_token_is_401_and_unknown_token_is_401(env: DashboardEnv, http: FlaskClient) -> None:
    missing = http.get(QUERY)
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.get_json()["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    unknown = http.get(QUERY, headers={"Authorization": "Bearer sct_made_up"})
    assert unknown.status_code == 401 and "unknown" in unknown.get_json()["error"]
    # A dashboard session is not an API credential, nor the other way round.
    assert http.get("/", headers=bearer(env, "admin")).status_code == 302


def test_forbidden_commune_is_403_everywhere(env: DashboardEnv, http: FlaskClient) -> None:
    for path in (
        f"/api/v1/aggregates/air_quality?communes={MONTROUGE}&start=-1d",
        f"/api/v1/aggregates/air_quality?communes={POISSY},{MONTROUGE}&start=-1d",
        f"/api/v1/atmo?communes={CONFLANS}&start=-7d",
        f"/api/v1/indices/traffic_congestion?communes={MONTROUGE}&start=-1d",
        f"/api/v1/anomalies?communes={MONTROUGE}&start=-7d",
        f"/api/v1/alerts?communes={MONTROUGE}&start=-7d",
        f"/api/v1/readings/air_quality?communes={MONTROUGE}&start=-1h",
    ):
        response = http.get(path, headers=bearer(env, "poissy"))
        assert response.status_code == 403, path
        assert "not among the communes you may see" in response.get_json()["error"]


def test_no_commune_means_all_of_mine(env: DashboardEnv, http: FlaskClient) -> None:
    response = http.get("/api/v1/alerts?start=-7d&format=csv", headers=bearer(env, "poissy"))
    frame = pl.read_csv(io.BytesIO(response.data), schema_overrides={"insee": pl.String})
    assert set(frame.get_column("insee")) == {POISSY}
    admin = http.get("/api/v1/alerts?start=-7d&format=csv", headers=bearer(env, "admin"))
    admin_frame = pl.read_csv(io.BytesIO(admin.data), schema_overrides={"insee": pl.String})
    assert set(admin_frame.get_column("insee")) == set(env.scenario.alerts.get_column("insee"))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/aggregates/air_quality?start=-1d&every=5m", "unknown resolution every='5m'"),
        ("/api/v1/aggregates/weather?start=-1d", "unknown family 'weather'"),
        ("/api/v1/aggregates/air_quality?start=yesterday", "cannot read time 'yesterday'"),
        ("/api/v1/aggregates/air_quality", "missing start"),
        ("/api/v1/aggregates/air_quality?start=-1d&end=-2d", "is not before end"),
        ("/api/v1/aggregates/air_quality?start=-30d&every=1m", "time range too long for every=1m"),
        ("/api/v1/aggregates/air_quality?start=-1d&fields=pm1", "unknown field(s) pm1"),
        ("/api/v1/aggregates/air_quality?start=-1d&stats=p99", "unknown statistic(s) p99"),
        ("/api/v1/aggregates/air_quality?start=-1d&level=street", "unknown level 'street'"),
        ("/api/v1/aggregates/air_quality?start=-1d&format=xml", "unknown format 'xml'"),
        ("/api/v1/readings/air_quality?start=-5d&communes=78498", "time range too long for raw readings"),
        ("/api/v1/readings/air_quality?start=-1h", "one commune at a time"),
        ("/api/v1/indices/weather_index?start=-1d", "unknown index 'weather_index'"),
    ],
)
def test_bad_parameters_are_clear_400s(env: DashboardEnv, http: FlaskClient, path: str, message: str) -> None:
    response = http.get(path, headers=bearer(env, "admin"))
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_counters_are_aggregated_as_increases(env: DashboardEnv, http: FlaskClient) -> None:
    response = http.get(
        f"/api/v1/aggregates/building?communes={POISSY}&start=-1d&every=1h&fields=energy,activePower&format=arrow",
        headers=bearer(env, "poissy"),
    )
    frame = pl.read_ipc_stream(io.BytesIO(response.data))
    assert {"energy_increase", "energy_resets", "energy_count", "activePower_mean"} <= set(frame.columns)
    assert "energy_mean" not in frame.columns
    refused = http.get(
        f"/api/v1/aggregates/building?communes={POISSY}&start=-1d&fields=energy&stats=mean",
        headers=bearer(env, "poissy"),
    )
    assert (
        refused.status_code == 400 and "counters have increase, resets, count" in refused.get_json()["error"]
    )


def test_admin_asking_for_an_unknown_commune_gets_a_400(env: DashboardEnv, http: FlaskClient) -> None:
    response = http.get("/api/v1/atmo?start=-7d&communes=99999", headers=bearer(env, "admin"))
    assert response.status_code == 400 and "unknown commune" in response.get_json()["error"]


def test_too_large_an_answer_is_a_400(tmp_path_factory: pytest.TempPathFactory) -> None:
    small = make_env(tmp_path_factory.mktemp("small"), api={"max_rows": 10})
    try:
        response = small.app.server.test_client().get(
            f"/api/v1/aggregates/traffic?communes={POISSY}&start=-1d&every=15m",
            headers=bearer(small, "admin"),
        )
        assert response.status_code == 400 and "answer too large" in response.get_json()["error"]
    finally:
        small.store.close()


def test_unknown_endpoint_is_a_json_404(env: DashboardEnv, http: FlaskClient) -> None:
    response = http.get("/api/v1/nothing", headers=bearer(env, "admin"))
    assert response.status_code == 404 and "docs/api.md" in response.get_json()["error"]


# -- the Python client --------------------------------------------------------------------------


def test_client_returns_polars_frames_with_types(env: DashboardEnv) -> None:
    with client_of(env, "poissy") as client:
        air = client.aggregates("air_quality", communes=[POISSY], start="-7d", every="1h")
        expected = stored(env, "air_quality_1h_commune", POISSY, 7 * 24)
        assert air.height == expected.height
        assert air.schema[TIME] == pl.Datetime("ns", "UTC")
        assert air.schema["pm25_count"] == pl.Int64
        communes = client.communes()
        assert communes.get_column("insee").to_list() == [POISSY]
        atmo = client.atmo(communes=[POISSY], start="-7d")
        assert atmo.get_column("index").to_list() == (
            env.scenario.atmo.filter(pl.col("insee") == POISSY).sort(TIME).get_column("index").to_list()
        )
        anomalies = client.anomalies(start="-1d", kinds=["spike"])
        assert set(anomalies.get_column("kind")) == {"spike"} and set(anomalies.get_column("insee")) == {
            POISSY
        }
        alerts = client.alerts(start="-1d", states=["firing"])
        assert alerts.height == 1 and alerts.get_column("rule").item() == "pm25-high"
        raw = client.readings("traffic", commune=POISSY, start="-30m", fields=["intensity"])
        assert raw.columns == [TIME, "device_id", "insee", "intensity"] and raw.height > 0
        congestion = client.index("traffic_congestion", communes=[POISSY], start="-1h", fields=["level"])
        assert congestion.get_column("level").dtype == pl.Int64


def test_client_raises_with_the_servers_message(env: DashboardEnv) -> None:
    with client_of(env, "poissy") as client:
        with pytest.raises(Forbidden, match=f"commune {MONTROUGE} is not among"):
            client.aggregates("air_quality", communes=[MONTROUGE], start="-1d")
        with pytest.raises(BadRequest, match="unknown resolution every='2h'"):
            client.aggregates("air_quality", start="-1d", every="2h")
    transport = httpx.WSGITransport(app=env.app.server)
    with (
        Client("http://dashboards.test", "sct_wrong", transport=transport) as stranger,
        pytest.raises(Unauthorized, match="unknown or revoked"),
    ):
        stranger.communes()


def test_minute_aggregates_past_their_retention_are_asked_coarser(
    env: DashboardEnv, http: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dashboards.access import CommuneData
    from dashboards.timerange import TimeRange, fitting_window
    from dashboards.users import User

    monkeypatch.setattr(env.store, "minute_retention", timedelta(days=35))
    old = http.get(
        f"/api/v1/aggregates/air_quality?communes={POISSY}&start=-40d&end=-39d&every=1m",
        headers=bearer(env, "admin"),
    )
    assert old.status_code == 400
    assert (
        "every=1m are kept 35 days" in old.get_json()["error"] and "use every=15m" in old.get_json()["error"]
    )
    recent = http.get(
        f"/api/v1/aggregates/air_quality?communes={POISSY}&start=-1d&every=1m", headers=bearer(env, "admin")
    )
    assert recent.status_code == 200
    # The pages: a one-day range fits minute windows, unless that day is older than they are kept.
    data = CommuneData(env.store, User("agent", frozenset([POISSY])), env.registry)
    now = env.scenario.now
    yesterday = TimeRange(now - timedelta(days=1), now)
    a_year_ago = TimeRange(now - timedelta(days=366), now - timedelta(days=365))
    assert fitting_window(a_year_ago.span, 2000) == "1m"
    assert data.kept_window("air_quality", yesterday, "1m", now=now) == "1m"
    assert data.kept_window("air_quality", a_year_ago, "1m", now=now) == "15m"
    assert data.kept_window("air_quality", a_year_ago, "1h", now=now) == "1h"
