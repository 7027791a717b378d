"""`smartcity dashboard`: managing the users file, and serving the app as a real process."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboards.users import UserDirectory
from smartcity.cli import main
from smartcity.client import Client
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import MONTROUGE, POISSY, fill_store, serve_dashboard, write_users


@pytest.fixture
def users_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "users.toml"
    monkeypatch.setenv("SMARTCITY_DASHBOARD__USERS_FILE", str(path))
    return path


def add_user(monkeypatch: pytest.MonkeyPatch, name: str, communes: str, password: str) -> int:
    monkeypatch.setattr(sys, "stdin", _Lines(password))
    return main(["dashboard", "add-user", name, "--communes", communes, "--password-stdin"])


class _Lines:
    def __init__(self, text: str) -> None:
        self._text = text + "\n"

    def readline(self) -> str:
        return self._text


def test_add_user_and_tokens(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_user(monkeypatch, "poissy", POISSY, "a long enough passphrase") == 0
    directory = UserDirectory(users_file)
    assert directory.authenticate("poissy", "a long enough passphrase") is not None
    capsys.readouterr()
    assert main(["dashboard", "add-token", "poissy", "--label", "notebook"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sct_") and token not in users_file.read_text()
    user = directory.by_token(token)
    assert user is not None and user.communes == frozenset({POISSY})
    # Changing the password keeps the tokens.
    assert add_user(monkeypatch, "poissy", f"{POISSY},{MONTROUGE}", "another long passphrase") == 0
    assert directory.by_token(token) is not None
    assert main(["dashboard", "revoke-token", "poissy", "--label", "notebook"]) == 0
    assert directory.by_token(token) is None


@pytest.mark.parametrize(
    ("communes", "password", "message"),
    [
        ("99999", "a long enough passphrase", "unknown commune(s) 99999"),
        (POISSY, "short", "at least 10 characters"),
    ],
)
def test_add_user_refuses_bad_input(
    users_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    communes: str,
    password: str,
    message: str,
) -> None:
    assert add_user(monkeypatch, "someone", communes, password) == 2
    assert message in capsys.readouterr().err
    assert not users_file.exists()


def test_add_token_for_an_unknown_user_is_refused(
    users_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "add-token", "ghost"]) == 2
    assert "no user 'ghost'" in capsys.readouterr().err


@pytest.fixture
def served(tmp_path: Path, users_file: Path) -> Iterator[tuple[str, str]]:
    from datetime import UTC, datetime

    database = tmp_path / "store.duckdb"
    store = DuckDBStore(database)
    fill_store(store, [POISSY], datetime.now(UTC), days=1, windows=("1h",), devices_per_commune=1)
    store.close()
    accounts = write_users(users_file, [("poissy", [POISSY])])
    with serve_dashboard(users_file, {"SMARTCITY_STORE__DUCKDB__PATH": str(database)}) as base:
        yield base, accounts["poissy"].token


def test_served_by_the_command(served: tuple[str, str]) -> None:
    base, token = served
    assert httpx.get(f"{base}/", follow_redirects=False).status_code == 302
    assert httpx.get(f"{base}/api/v1/communes").status_code == 401
    with Client(base, token) as client:
        assert client.communes().get_column("insee").to_list() == [POISSY]
        assert client.aggregates("traffic", communes=[POISSY], start="-1d", every="1h").height > 0
