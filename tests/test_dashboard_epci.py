"""Rights by EPCI and by département, and the EPCI page, against the real servers.

``smartcity dashboard`` (gunicorn, a child process) over a real ``influxd``: a user granted the
CU Grand Paris Seine et Oise sees its member communes (Poissy, Conflans) and nothing of
Montrouge, in pages, callbacks, the API and its CSV answers, and with narrowed tokens; a user
granted the Hauts-de-Seine sees Montrouge and nothing else. The page functions and the CSV
export are also called directly with each user's data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboards.access import BadQuery, CommuneData, Forbidden
from dashboards.pages import commune, epci
from dashboards.tokens import TokenStore
from dashboards.users import UserDirectory
from storage.base import Store
from tests.dashboard_fixtures import (
    CONFLANS,
    GPSEO,
    MONTROUGE,
    POISSY,
    Account,
    DashboardEnv,
    add_grouped_user,
    fill_store,
    filled_influxd,
    make_env,
    serve_dashboard,
    status_callback,
    write_users,
)

pytestmark = pytest.mark.slow

GRAND_PARIS = "200054781"
"""The Métropole du Grand Paris (Montrouge's EPCI)."""
GPSEO_SERVED = ["Poissy", "Villennes-sur-Seine", "Conflans-Sainte-Honorine", "Achères", "Andrésy"]


@dataclass
class Served:
    base: str
    accounts: dict[str, Account]
    users_file: Path


def _fill(store: Store) -> None:
    fill_store(
        store,
        [POISSY, MONTROUGE, CONFLANS],
        datetime.now(UTC),
        days=1,
        windows=("1h",),
        devices_per_commune=1,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with filled_influxd(tmp_path_factory.mktemp("influxd"), _fill) as env:
        users = tmp_path_factory.mktemp("epci-dashboard") / "users.toml"
        accounts = write_users(users, [("poissy", [POISSY]), ("admin", ["*"])])
        accounts["gpseo"] = add_grouped_user(users, "gpseo", epci=[GPSEO])
        accounts["hds"] = add_grouped_user(users, "hds", departements=["92"])
        with serve_dashboard(users, env, workers=1) as base:
            yield Served(base, accounts, users)


def signed_in(served: Served, name: str) -> httpx.Client:
    client = httpx.Client(base_url=served.base, timeout=30)
    form = client.get("/login").text
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    assert match, form[:300]
    account = served.accounts[name]
    answer = client.post("/login", data={"user": name, "password": account.password, "csrf": match.group(1)})
    assert answer.status_code == 302, answer.text[:300]
    return client


def api(served: Served, name: str, path: str, **headers: str) -> httpx.Response:
    bearer = {"Authorization": f"Bearer {served.accounts[name].token}", **headers}
    return httpx.get(f"{served.base}/api/v1{path}", headers=bearer, timeout=30)


def rows(answer: httpx.Response) -> list[dict[str, Any]]:
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["rows"]
    return found


def epci_callback(siren: Any) -> dict[str, Any]:
    """The EPCI page's refresh callback as the renderer sends it (forged at will by the tests)."""
    return {
        "output": "..epci-content.children...epci-updated.children..",
        "outputs": [
            {"id": "epci-content", "property": "children"},
            {"id": "epci-updated", "property": "children"},
        ],
        "inputs": [{"id": "epci-tick", "property": "n_intervals", "value": None}],
        "changedPropIds": ["epci-tick.n_intervals"],
        "state": [{"id": "epci-siren", "property": "data", "value": siren}],
    }


# -- API --------------------------------------------------------------------------------------------


def test_an_epci_user_lists_the_served_member_communes(served: Served) -> None:
    listed = rows(api(served, "gpseo", "/communes"))
    assert [row["name"] for row in listed] == GPSEO_SERVED
    assert {row["epci"] for row in listed} == {GPSEO} and all(row["population"] > 1000 for row in listed)
    departement = api(served, "hds", "/communes")
    assert [row["name"] for row in rows(departement)] == ["Montrouge", "Boulogne-Billancourt"]


def test_an_epci_user_reads_member_data_and_is_refused_the_rest(served: Served) -> None:
    mine = api(served, "gpseo", "/atmo?start=-2d")
    assert {row["insee"] for row in rows(mine)} == {POISSY, CONFLANS}
    refused = api(served, "gpseo", f"/atmo?start=-2d&communes={POISSY},{MONTROUGE}")
    assert refused.status_code == 403 and MONTROUGE in refused.text
    # The CSV answer (what a spreadsheet downloads) holds the same rows, no more.
    csv = api(served, "gpseo", "/anomalies?start=-2d", Accept="text/csv")
    assert (
        csv.status_code == 200 and POISSY in csv.text and CONFLANS in csv.text and MONTROUGE not in csv.text
    )
    theirs = api(served, "hds", "/atmo?start=-2d")
    assert {row["insee"] for row in rows(theirs)} == {MONTROUGE}
    assert api(served, "hds", f"/atmo?start=-2d&communes={POISSY}").status_code == 403


def test_a_token_of_an_epci_user_is_narrowed_within_its_members(served: Served, tmp_path: Path) -> None:
    tokens = TokenStore(served.users_file.parent / "tokens.sqlite")
    secret, _ = tokens.create("gpseo", "conflans only", timedelta(days=1), [CONFLANS])
    answer = httpx.get(
        f"{served.base}/api/v1/atmo?start=-2d", headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )
    assert {row["insee"] for row in rows(answer)} == {CONFLANS}
    beyond = httpx.get(
        f"{served.base}/api/v1/atmo?start=-2d&communes={POISSY}",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    assert beyond.status_code == 403


# -- pages and callbacks --------------------------------------------------------------------------------


def test_an_epci_user_opens_member_communes_and_is_refused_others(served: Served) -> None:
    client = signed_in(served, "gpseo")
    allowed = client.post("/_dash-update-component", json=status_callback(CONFLANS))
    assert allowed.status_code == 200 and f"air-{CONFLANS}-0" in allowed.text
    refused = client.post("/_dash-update-component", json=status_callback(MONTROUGE))
    assert f"air-{MONTROUGE}-0" not in refused.text and '"id":"forbidden"' in refused.text
    hds = signed_in(served, "hds")
    assert f"air-{MONTROUGE}-0" in hds.post("/_dash-update-component", json=status_callback(MONTROUGE)).text
    assert '"id":"forbidden"' in hds.post("/_dash-update-component", json=status_callback(POISSY)).text


def test_the_epci_callback_compares_members_and_refuses_a_forged_siren(served: Served) -> None:
    client = signed_in(served, "gpseo")
    mine = client.post("/_dash-update-component", json=epci_callback(GPSEO))
    assert mine.status_code == 200
    assert "Poissy (78498)" in mine.text and "Conflans-Sainte-Honorine (78172)" in mine.text
    assert "Montrouge" not in mine.text
    forged = client.post("/_dash-update-component", json=epci_callback(GRAND_PARIS))
    assert '"id":"forbidden"' in forged.text and "Montrouge" not in forged.text
    # The Hauts-de-Seine user sees Montrouge in the Métropole du Grand Paris, and not GPSEO.
    hds = signed_in(served, "hds")
    assert "Montrouge (92049)" in hds.post("/_dash-update-component", json=epci_callback(GRAND_PARIS)).text
    assert '"id":"forbidden"' in hds.post("/_dash-update-component", json=epci_callback(GPSEO)).text


def test_widening_an_epci_users_grants_ends_the_session(served: Served) -> None:
    client = signed_in(served, "gpseo")
    assert client.post("/_dash-update-component", json=status_callback(POISSY)).status_code == 200
    directory = UserDirectory(served.users_file)
    user = directory.get("gpseo")
    assert user is not None
    directory.upsert(
        type(user)(
            user.name,
            user.communes,
            user.password_hash,
            user.tokens,
            epci=user.epci,
            departements=frozenset({"92"}),
        )
    )
    try:
        assert client.post("/_dash-update-component", json=status_callback(POISSY)).status_code == 401
    finally:
        directory.upsert(user)


# -- the page functions and the CSV export, called directly ------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    built = make_env(tmp_path_factory.mktemp("epci-pages"))
    users = Path(built.settings.users_file)
    built.accounts["gpseo"] = add_grouped_user(users, "gpseo", epci=[GPSEO])
    built.accounts["hds"] = add_grouped_user(users, "hds", departements=["92"])
    yield built
    built.store.close()


def data_of(env: DashboardEnv, name: str) -> CommuneData:
    user = UserDirectory(Path(env.settings.users_file)).get(name)
    assert user is not None
    return CommuneData(env.store, user, env.registry)


def test_csv_export_follows_epci_and_departement_rights(env: DashboardEnv) -> None:
    now = env.scenario.now
    options: dict[str, Any] = {"range_key": "24h", "lang": "fr", "settings": env.settings, "now": now}
    gpseo, hds = data_of(env, "gpseo"), data_of(env, "hds")
    exported = commune.export_csv(gpseo, CONFLANS, "air_quality", "pm25", **options)
    assert exported is not None
    with pytest.raises(Forbidden):
        commune.export_csv(gpseo, MONTROUGE, "air_quality", "pm25", **options)
    with pytest.raises(Forbidden):
        commune.export_csv(hds, POISSY, "air_quality", "pm25", **options)
    assert commune.export_csv(hds, MONTROUGE, "air_quality", "pm25", **options) is not None


def test_epci_page_compares_the_visible_members_only(env: DashboardEnv) -> None:
    now = env.scenario.now
    body, updated = epci.epci_content(data_of(env, "gpseo"), GPSEO, "fr", env.settings, now)
    text = repr(body)
    assert "Poissy (78498)" in text and "Conflans-Sainte-Honorine (78172)" in text and "Montrouge" not in text
    assert "Actualisé" in updated
    # A user of Poissy alone sees GPSEO with Poissy only: rights are by commune, the EPCI a view.
    only_poissy = data_of(env, "poissy")
    found, communes = only_poissy.epci(GPSEO)
    assert found.name == "CU Grand Paris Seine et Oise" and [c.name for c in communes] == ["Poissy"]
    with pytest.raises(Forbidden):
        only_poissy.epci(GRAND_PARIS)
    admin = data_of(env, "admin")
    assert [e.siren for e, _ in admin.epcis()][:1] == [GPSEO]
    with pytest.raises(BadQuery):
        admin.epci("123456789")
    with pytest.raises(Forbidden):  # a non-admin learns nothing about which SIREN exist
        only_poissy.epci("123456789")


def test_within_never_widens_a_narrowed_view(env: DashboardEnv) -> None:
    narrowed = CommuneData(env.store, data_of(env, "gpseo").user, env.registry, scope=frozenset({POISSY}))
    assert [c.insee for c in narrowed.within([POISSY, CONFLANS, MONTROUGE]).communes()] == [POISSY]
    with pytest.raises(Forbidden):
        narrowed.within([CONFLANS]).check(CONFLANS)
