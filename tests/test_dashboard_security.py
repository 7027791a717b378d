"""Security probes against the real server: ``smartcity dashboard`` (gunicorn) as a child process.

Two servers, one per store: InfluxDB (a real ``influxd``) with two worker processes and no
trusted proxy, and DuckDB (one worker, as one process owns the file) behind one trusted proxy.
Each probe is what a curious user or an attacker would try with curl.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboards.users import UserDirectory, hash_password
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import (
    CONFLANS,
    MONTROUGE,
    POISSY,
    Account,
    fill_store,
    filled_influxd,
    serve_dashboard,
    status_callback,
    write_users,
)

pytestmark = pytest.mark.slow

USERS = [
    ("poissy", [POISSY]),
    ("admin", ["*"]),
    ("montrouge", [MONTROUGE]),
    ("conflans", [CONFLANS]),
    ("mover", [POISSY]),
    ("guarded", [POISSY]),
]


@dataclass
class Served:
    """A running server, its users and what is special about it."""

    base: str
    accounts: dict[str, Account]
    users_file: Path
    store: str
    workers: int
    trusted_proxies: int
    env: dict[str, str]
    """The ``SMARTCITY_...`` settings it was started with (another server can share them)."""


def _fill(store: Any) -> None:
    fill_store(store, [POISSY, MONTROUGE], datetime.now(UTC), days=1, windows=("1h",), devices_per_commune=1)


@pytest.fixture(scope="module")
def influxdb_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with filled_influxd(tmp_path_factory.mktemp("influxd"), _fill) as env:
        directory = tmp_path_factory.mktemp("influx-dashboard")
        accounts = write_users(directory / "users.toml", USERS)
        with serve_dashboard(directory / "users.toml", env, workers=2) as base:
            yield Served(base, accounts, directory / "users.toml", "influxdb", 2, 0, env)


@pytest.fixture(scope="module")
def duckdb_served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("duckdb-dashboard")
    store = DuckDBStore(directory / "store.duckdb")
    _fill(store)
    store.close()
    accounts = write_users(directory / "users.toml", USERS)
    env = {
        "SMARTCITY_STORE__DUCKDB__PATH": str(directory / "store.duckdb"),
        "SMARTCITY_DASHBOARD__TRUSTED_PROXIES": "1",
    }
    with serve_dashboard(directory / "users.toml", env, workers=1) as base:
        yield Served(base, accounts, directory / "users.toml", "duckdb", 1, 1, env)


@pytest.fixture(params=["influxdb", "duckdb"])
def served(request: pytest.FixtureRequest) -> Served:
    server: Served = request.getfixturevalue(f"{request.param}_served")
    return server


def sign_in(
    base: str, account: Account, *, headers: dict[str, str] | None = None, password: str | None = None
) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(base_url=base, headers=headers or {}, timeout=30)
    form = client.get("/login").text
    match = re.search(r'name="csrf" value="([^"]+)"', form)
    assert match, form[:300]
    answer = client.post(
        "/login",
        data={"user": account.name, "password": password or account.password, "csrf": match.group(1)},
    )
    return client, answer


def alive(base: str, cookies: httpx.Cookies) -> tuple[bool, bool]:
    """Whether a page and a callback answer with these cookies (a fresh client each time)."""
    with httpx.Client(base_url=base, cookies=cookies, timeout=30) as client:
        page = client.get(f"/commune/{POISSY}")
        answer = client.post("/_dash-update-component", json=status_callback(POISSY))
    return page.status_code == 200, answer.status_code == 200


def signout_token(client: httpx.Client) -> str:
    layout = client.get("/_dash-layout").text
    match = re.search(r'\{"value":"([0-9a-f]+)","type":"hidden","name":"csrf"\}', layout)
    assert match, "the sign-out form carries no CSRF token"
    return match.group(1)


# -- the server --------------------------------------------------------------------------------


def test_server_says_no_version_and_sends_security_headers(served: Served) -> None:
    client, _ = sign_in(served.base, served.accounts["poissy"])
    for path in ("/login", "/", f"/commune/{POISSY}", "/assets/style.css", "/api/v1/communes", "/healthz"):
        answer = client.get(path)
        assert answer.status_code in (200, 401), path
        server = answer.headers.get("Server", "")
        assert "werkzeug" not in server.lower() and not re.search(r"\d", server), server
        csp = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"


# -- sessions ------------------------------------------------------------------------------------


def test_a_cookie_captured_before_sign_out_is_dead_after_it_in_every_worker(served: Served) -> None:
    client, answer = sign_in(served.base, served.accounts["poissy"])
    assert answer.status_code == 302
    captured = httpx.Cookies(client.cookies)
    # Several requests each way, so that every worker likely answers some (the kernel decides:
    # the next test shows it across processes for certain).
    assert all(alive(served.base, captured) == (True, True) for _ in range(6))
    client.get("/logout")  # a link or an image cannot sign out
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 400
    assert alive(served.base, captured) == (True, True)
    signed_out = client.post("/logout", data={"csrf": signout_token(client)})
    assert signed_out.status_code == 303 and signed_out.headers["Location"] == "/login"
    assert all(alive(served.base, captured) == (False, False) for _ in range(6))


def test_a_session_started_or_ended_in_one_server_process_holds_in_another(influxdb_served: Served) -> None:
    # The kernel decides which worker answers a request, so the test above cannot show that
    # both did. A second server on the same users directory is another process for certain.
    served = influxdb_served
    with serve_dashboard(served.users_file, served.env, workers=1) as other:
        client, answer = sign_in(served.base, served.accounts["poissy"])
        assert answer.status_code == 302
        assert alive(other, client.cookies) == (True, True)
        elsewhere, answer = sign_in(other, served.accounts["poissy"])
        assert answer.status_code == 302
        assert alive(served.base, elsewhere.cookies) == (True, True)
        assert client.post("/logout", data={"csrf": signout_token(client)}).status_code == 303
        assert alive(other, client.cookies) == (False, False)
        assert alive(other, elsewhere.cookies) == (True, True)  # only the session signed out ends


def test_changing_a_password_or_rights_ends_that_users_sessions(served: Served) -> None:
    directory = UserDirectory(served.users_file)
    mover = served.accounts["mover"]
    client, _ = sign_in(served.base, mover)
    other, _ = sign_in(served.base, served.accounts["poissy"])
    assert alive(served.base, client.cookies) == (True, True)
    user = directory.get("mover")
    assert user is not None
    directory.upsert(type(user)(user.name, frozenset({POISSY, MONTROUGE}), user.password_hash, user.tokens))
    assert alive(served.base, client.cookies) == (False, False)  # rights changed
    client, answer = sign_in(served.base, mover)
    assert answer.status_code == 302 and alive(served.base, client.cookies) == (True, True)
    user = directory.get("mover")
    assert user is not None
    directory.upsert(type(user)(user.name, user.communes, hash_password(mover.password), user.tokens))
    assert alive(served.base, client.cookies) == (False, False)  # password changed (same text)
    assert alive(served.base, other.cookies) == (True, True)  # someone else's session goes on


# -- sign-in limits -------------------------------------------------------------------------------


def _fail(base: str, account: Account, times: int, headers: dict[str, str] | None = None) -> None:
    for _ in range(times):
        _, answer = sign_in(base, account, headers=headers, password="wrong password")
        assert answer.status_code == 401


def test_failures_on_one_account_do_not_lock_out_another_from_the_same_address(
    influxdb_served: Served,
) -> None:
    base, accounts = influxdb_served.base, influxdb_served.accounts
    _fail(base, accounts["montrouge"], 5)
    _, locked = sign_in(base, accounts["montrouge"])
    assert locked.status_code == 429 and "Trop de tentatives" in locked.text
    assert 0 < int(locked.headers["Retry-After"]) <= 900
    _, other = sign_in(base, accounts["admin"])
    assert other.status_code == 302
    # Without a trusted proxy, a forged X-Forwarded-For is not another address.
    _, forged = sign_in(base, accounts["montrouge"], headers={"X-Forwarded-For": "203.0.113.9"})
    assert forged.status_code == 429


def test_behind_a_trusted_proxy_one_clients_failures_do_not_lock_out_another(duckdb_served: Served) -> None:
    base, account = duckdb_served.base, duckdb_served.accounts["conflans"]
    _fail(base, account, 5, headers={"X-Forwarded-For": "198.51.100.1"})
    _, locked = sign_in(base, account, headers={"X-Forwarded-For": "198.51.100.1"})
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    _, other_client = sign_in(base, account, headers={"X-Forwarded-For": "198.51.100.2"})
    assert other_client.status_code == 302


def test_cookies_are_secure_over_https_through_a_trusted_proxy_only(served: Served) -> None:
    https = {"X-Forwarded-Proto": "https"}
    cookie = httpx.get(f"{served.base}/login", headers=https, timeout=30).headers["Set-Cookie"]
    assert ("Secure" in cookie) == bool(served.trusted_proxies), cookie
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in httpx.get(f"{served.base}/login", timeout=30).headers["Set-Cookie"]


# -- errors ---------------------------------------------------------------------------------------

BAD_QUERIES = [
    ("/api/v1/readings/air_quality?communes=78498&start=-99999999999999d", "start"),
    ("/api/v1/readings/air_quality?communes=78498&start=-1h&end=-99999999999999d", "end"),
    ("/api/v1/atmo?communes=78498&start=-99999999999999d", "start"),
    ("/api/v1/aggregates/air_quality?start=1600-01-01&end=1610-01-01&every=1d", "start"),
    ("/api/v1/aggregates/air_quality?start=-1d&end=9999-01-01&every=1d", "end"),
    ("/api/v1/aggregates/air_quality?start=yesterday&every=1h", "start"),
    ("/api/v1/aggregates/air_quality?start=-1d&every=2h", "every"),
    ("/api/v1/aggregates/air_quality?start=-1d&level=street", "level"),
    ("/api/v1/aggregates/air_quality?start=-1d&fields=pm99", "field"),
    ("/api/v1/aggregates/air_quality?start=-1d&stats=p99", "statistic"),
    ("/api/v1/aggregates/air_quality?start=-1d&format=xml", "format"),
    ("/api/v1/aggregates/smoke?start=-1d", "family"),
    ("/api/v1/indices/nope?start=-1d", "index"),
    ("/api/v1/anomalies?communes=00000&start=-1d", "00000"),
]


@pytest.mark.parametrize(("path", "named"), BAD_QUERIES)
def test_bad_api_parameters_are_400s_that_name_them(served: Served, path: str, named: str) -> None:
    token = served.accounts["admin"].token
    answer = httpx.get(served.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert answer.status_code == 400, answer.text
    message = answer.json()["error"]
    assert named in message
    assert not re.search(r"\bSELECT\s|\bWHERE\s|GROUP BY", message)


def test_api_answers_json_to_curls_accept_any(served: Served) -> None:
    token = served.accounts["poissy"].token
    answer = httpx.get(
        f"{served.base}/api/v1/communes",
        headers={"Authorization": f"Bearer {token}", "Accept": "*/*"},
        timeout=30,
    )
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/json")
    assert [row["insee"] for row in answer.json()["rows"]] == [POISSY]


@pytest.mark.parametrize("commune", [[POISSY], {"insee": POISSY}, [[MONTROUGE]]])
def test_a_forged_callback_with_a_list_or_object_is_a_400(served: Served, commune: Any) -> None:
    client, _ = sign_in(served.base, served.accounts["poissy"])
    answer = client.post("/_dash-update-component", json=status_callback(commune))
    assert answer.status_code == 400
    assert "commune-insee.data" in answer.text and MONTROUGE not in answer.text
