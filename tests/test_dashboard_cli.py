"""`smartcity dashboard`: managing the users file, and serving the app as a real process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
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


def tokens_listed(capsys: pytest.CaptureFixture[str], *flags: str) -> list[dict[str, str]]:
    capsys.readouterr()
    assert main(["dashboard", "tokens", *flags]) == 0
    header, *rows = capsys.readouterr().out.strip().split("\n")
    return [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]


def test_add_user_and_tokens(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_user(monkeypatch, "poissy", f"{POISSY},{MONTROUGE}", "a long enough passphrase") == 0
    directory = UserDirectory(users_file)
    assert directory.authenticate("poissy", "a long enough passphrase") is not None
    capsys.readouterr()
    before = datetime.now(UTC)
    assert main(["dashboard", "add-token", "poissy", "--label", "notebook"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sct_") and token not in users_file.read_text()
    assert (
        main(
            ["dashboard", "add-token", "poissy", "--label", "atmo", "--expires", "30d", "--communes", POISSY]
        )
        == 0
    )
    narrowed = capsys.readouterr().out.strip()
    listed = {row["label"]: row for row in tokens_listed(capsys)}
    assert set(listed) == {"notebook", "atmo"}
    after = datetime.now(UTC)

    def days_after(days: int) -> set[str]:  # the tokens were made between before and after
        return {f"{moment + timedelta(days=days):%Y-%m-%d}" for moment in (before, after)}

    assert listed["notebook"]["communes"] == "all of the user's"
    assert listed["notebook"]["expires"][:10] in days_after(90)
    assert listed["atmo"]["communes"] == POISSY
    assert listed["atmo"]["expires"][:10] in days_after(30)
    assert listed["atmo"]["last_used"] == "never" and listed["atmo"]["user"] == "poissy"
    printed = capsys.readouterr().out
    assert token not in printed and narrowed not in printed
    # Changing the password keeps the tokens.
    assert add_user(monkeypatch, "poissy", POISSY, "another long passphrase") == 0
    assert len(tokens_listed(capsys)) == 2
    assert main(["dashboard", "revoke-token", listed["notebook"]["id"]]) == 0
    assert [row["label"] for row in tokens_listed(capsys)] == ["atmo"]
    states = {row["label"]: row["state"] for row in tokens_listed(capsys, "--all")}
    assert states == {"notebook": "revoked", "atmo": "active"}
    capsys.readouterr()
    assert main(["dashboard", "revoke-token", listed["notebook"]["id"]]) == 2
    assert "already revoked" in capsys.readouterr().err
    assert main(["dashboard", "list-users"]) == 0
    assert "active_tokens=1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--expires", "forever"], "invalid expiry 'forever'"),
        (["--communes", MONTROUGE], f"poissy may not see {MONTROUGE}"),
        (["--communes", "99999"], "unknown commune(s) 99999"),
    ],
)
def test_add_token_refuses_bad_input(
    users_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    flags: list[str],
    message: str,
) -> None:
    assert add_user(monkeypatch, "poissy", POISSY, "a long enough passphrase") == 0
    capsys.readouterr()
    assert main(["dashboard", "add-token", "poissy", *flags]) == 2
    assert message in capsys.readouterr().err
    assert tokens_listed(capsys) == []


def test_revoking_an_unknown_token_says_so(users_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "revoke-token", "deadbeef"]) == 2
    assert "no token 'deadbeef'" in capsys.readouterr().err


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
    database = tmp_path / "store.duckdb"
    store = DuckDBStore(database)
    fill_store(store, [POISSY], datetime.now(UTC), days=1, windows=("1h",), devices_per_commune=1)
    store.close()
    accounts = write_users(users_file, [("poissy", [POISSY])])
    with serve_dashboard(users_file, {"SMARTCITY_STORE__DUCKDB__PATH": str(database)}) as base:
        yield base, accounts["poissy"].token


def test_served_by_the_command(served: tuple[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    base, token = served
    assert httpx.get(f"{base}/", follow_redirects=False).status_code == 302
    assert httpx.get(f"{base}/api/v1/communes").status_code == 401
    with Client(base, token) as client:
        assert client.communes().get_column("insee").to_list() == [POISSY]
        assert client.aggregates("traffic", communes=[POISSY], start="-1d", every="1h").height > 0
    # Revoked from the command line, the token stops working in the running server at once.
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{base}/api/v1/communes", headers=headers).status_code == 200
    (row,) = tokens_listed(capsys)
    assert row["last_used"] != "never"
    assert main(["dashboard", "revoke-token", row["id"]]) == 0
    refused = httpx.get(f"{base}/api/v1/communes", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def test_add_user_with_an_epci_or_departements(
    users_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", _Lines("a long enough passphrase"))
    assert main(["dashboard", "add-user", "gpseo", "--epci", "200059889", "--password-stdin"]) == 0
    assert "gpseo may see epci:200059889" in capsys.readouterr().out
    user = UserDirectory(users_file).get("gpseo")
    assert user is not None and user.may_see("78172") and not user.may_see(MONTROUGE)
    # A token narrowed beyond the EPCI is refused, naming what the user was granted.
    assert main(["dashboard", "add-token", "gpseo", "--label", "x", "--communes", MONTROUGE]) == 2
    assert "epci:200059889" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Lines("a long enough passphrase"))
    assert main(["dashboard", "add-user", "bad", "--epci", "200059888", "--password-stdin"]) == 2
    assert "epci '200059888' is not the SIREN of an EPCI" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", _Lines("a long enough passphrase"))
    assert main(["dashboard", "add-user", "cd92", "--departements", "92", "--password-stdin"]) == 0
    capsys.readouterr()
    assert main(["dashboard", "list-users"]) == 0
    listed = capsys.readouterr().out
    assert "gpseo\tcommunes=epci:200059889\t" in listed and "cd92\tcommunes=departement:92\t" in listed


MASTER_BEFORE_FORK = """
import os
import smartcity.cli as cli
from dashboards.users import UserDirectory
args = cli.build_parser().parse_args(["dashboard"])
settings = cli.load_settings(args.config)
UserDirectory(settings.dashboard.users_file).all()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(",".join(n for n in names if n.startswith("polars-") and n[7:].isdigit()))
"""


def test_the_master_starts_no_polars_thread_pool_before_gunicorn_forks_its_workers(
    users_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A forked worker inherits polars' pool as started but without its threads: its first
    # parallel polars call waits for ever (every API answer hung so, once).
    assert add_user(monkeypatch, "admin", "*", "correct horse battery") == 0
    found = subprocess.run(
        [sys.executable, "-c", MASTER_BEFORE_FORK], capture_output=True, text=True, check=True, timeout=120
    )
    assert found.stdout.strip() == "", f"polars threads in the master: {found.stdout.strip()}"
