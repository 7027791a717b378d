"""The demo keeps its user across restarts, gives notebooks a token, and the README's analyst
snippet works as written against it; its console keeps web requests out and speaks Paris time."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dashboards.app import create_app
from dashboards.config import DashboardSettings
from dashboards.tokens import TokenStore
from dashboards.users import UserDirectory, verify_password
from sensors.communes import CommuneRegistry
from smartcity.commands.demo import ACCESS_LOG, ParisFormatter, configure_logging
from smartcity.demo import DEMO_USER, demo_token, demo_user
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import POISSY, fill_store, served_in_thread

README = Path(__file__).resolve().parent.parent / "README.md"


def test_a_restart_keeps_the_demo_password_and_tokens(tmp_path: Path) -> None:
    users = tmp_path / "users.toml"
    password = demo_user(users)
    assert password
    token = demo_token(users)
    assert demo_user(users) is None  # second start: nothing new to print
    directory = UserDirectory(users)
    kept = directory.get(DEMO_USER)
    assert kept is not None and verify_password(password, kept.password_hash)
    tokens = TokenStore(users.parent / "tokens.sqlite")
    assert tokens.use(token).user == DEMO_USER
    assert demo_user(users, "un-mot-de-passe") == "un-mot-de-passe"  # --password sets one
    changed = UserDirectory(users).get(DEMO_USER)
    assert changed is not None and verify_password("un-mot-de-passe", changed.password_hash)
    assert tokens.use(token).user == DEMO_USER  # tokens survive a new password


def test_add_token_before_any_demo_run_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run `smartcity demo` once first"):
        demo_token(tmp_path / "users.toml")


@pytest.fixture
def demo_like(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory laid out as the repository (``.venv``, ``var/demo/users.toml``) and a server."""
    os.symlink(Path(sys.executable).parent.parent, tmp_path / ".venv")
    users = tmp_path / "var" / "demo" / "users.toml"
    users.parent.mkdir(parents=True)
    demo_user(users)
    store = DuckDBStore()
    fill_store(store, [POISSY], datetime.now(UTC), days=2, windows=("1d",), devices_per_commune=0)
    app = create_app(store, DashboardSettings(users_file=users), CommuneRegistry.load())
    with served_in_thread(app.server) as base:
        yield tmp_path, base
    store.close()


def test_the_readme_analyst_snippet_works_against_the_demo(demo_like: tuple[Path, str]) -> None:
    root, url = demo_like
    text = README.read_text("utf-8")
    shell = re.search(r"```sh\n(export SMARTCITY_TOKEN=.*?)\n", text)
    python = re.search(r"```python\n(import os\n.*?)```", text, re.S)
    assert shell and python, "the README's analyst snippet moved"
    assert ".venv/bin/" in text
    # The shell line as written (run from the repository root), then the Python with the test
    # server's address in place of the demo's port: the only change.
    script = python.group(1).replace("http://127.0.0.1:8050", url) + "\nprint(daily.height)\n"
    command = f"{shell.group(1)}\n.venv/bin/python - <<'EOF'\n{script}EOF\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTCITY_")}
    done = subprocess.run(
        ["bash", "-c", command], cwd=root, capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip().splitlines()[-1]) >= 2  # two days of daily aggregates


@pytest.fixture
def clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    web = logging.getLogger("werkzeug")
    saved = (list(root.handlers), [h.formatter for h in root.handlers], list(web.handlers), web.propagate)
    httpx_level = logging.getLogger("httpx").level
    yield
    logging.getLogger("httpx").setLevel(httpx_level)
    for handler in web.handlers:
        if handler not in saved[2]:
            web.removeHandler(handler)
            handler.close()
    for handler, formatter in zip(saved[0], saved[1], strict=True):
        handler.setFormatter(formatter)
    web.propagate = saved[3]


def test_the_console_keeps_the_demos_own_events_and_times_are_in_paris(
    tmp_path: Path, clean_logging: None
) -> None:
    """Web requests go to gunicorn's access log in the data directory (test_demo.py reads it);
    the console keeps the demo's own events, not one line per webhook POST."""
    path = configure_logging(tmp_path)
    assert path == tmp_path / ACCESS_LOG
    seen: list[logging.LogRecord] = []

    class Probe(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    probe = Probe()
    logging.getLogger().addHandler(probe)
    try:
        logging.getLogger("httpx").info('HTTP Request: POST http://127.0.0.1:8099/ "HTTP/1.0 200 OK"')
        logging.getLogger("smartcity.demo").warning("the demo's own event")
    finally:
        logging.getLogger().removeHandler(probe)
    assert [r.getMessage() for r in seen] == ["the demo's own event"]
    record = logging.LogRecord("x", logging.INFO, "", 0, "m", None, None)
    record.created = datetime(2026, 7, 14, 10, 0, tzinfo=UTC).timestamp()
    assert ParisFormatter().formatTime(record) == "2026-07-14 12:00:00 CEST"


def test_the_demo_has_an_epci_user_who_sees_its_member_communes(tmp_path: Path) -> None:
    from smartcity.demo import DEMO_EPCI, DEMO_EPCI_USER, demo_epci_user

    users = tmp_path / "users.toml"
    password = demo_epci_user(users)
    assert password and demo_epci_user(users) is None  # kept across restarts, printed once
    user = UserDirectory(users).get(DEMO_EPCI_USER)
    assert user is not None and verify_password(password, user.password_hash)
    assert user.epci == {DEMO_EPCI} and not user.is_admin
    served = [c.name for c in CommuneRegistry.load() if user.may_see(c.insee)]
    assert served == ["Poissy", "Villennes-sur-Seine", "Conflans-Sainte-Honorine", "Achères", "Andrésy"]
    assert 'epci = ["200059889"]' in users.read_text("utf-8")
