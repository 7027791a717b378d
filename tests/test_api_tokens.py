"""API tokens through the real API: expiry, communes narrowed within the user's, last use, revocation."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from dashboards.tokens import TokenStore, open_tokens, parse_lifetime
from dashboards.users import ApiToken, User, UserDirectory, token_digest
from tests.dashboard_fixtures import CONFLANS, MONTROUGE, POISSY, DashboardEnv
from tests.test_api import env, http

__all__ = ["env", "http"]


@pytest.fixture
def tokens(env: DashboardEnv) -> TokenStore:
    return TokenStore(Path(env.settings.users_file).parent / "tokens.sqlite")


def get(http: FlaskClient, secret: str, path: str = "/api/v1/communes") -> tuple[int, dict[str, object]]:
    response = http.get(
        f"{path}{'&' if '?' in path else '?'}format=json", headers={"Authorization": f"Bearer {secret}"}
    )
    return response.status_code, json.loads(response.data)


def insee_codes(body: dict[str, object]) -> set[str]:
    rows = body["rows"]
    assert isinstance(rows, list)
    return {row["insee"] for row in rows}


def test_a_token_narrowed_to_some_communes_sees_only_those(http: FlaskClient, tokens: TokenStore) -> None:
    secret, _ = tokens.create("admin", "ops", timedelta(days=1), [POISSY, CONFLANS])
    status, body = get(http, secret)
    assert status == 200 and insee_codes(body) == {POISSY, CONFLANS}
    query = "/api/v1/aggregates/air_quality?start=-6h&every=1h&communes="
    status, body = get(http, secret, query + MONTROUGE)
    assert status == 403
    assert f"commune {MONTROUGE} is not among the communes of this API token" in str(body["error"])
    status, body = get(http, secret, query + POISSY)
    assert status == 200 and insee_codes(body) == {POISSY}
    # Without communes=, the answer holds the token's communes only.
    status, body = get(http, secret, "/api/v1/aggregates/air_quality?start=-6h&every=1h")
    assert status == 200 and insee_codes(body) == {POISSY, CONFLANS}


def test_a_narrowed_token_never_sees_more_than_its_user_today(
    env: DashboardEnv, http: FlaskClient, tokens: TokenStore
) -> None:
    directory = UserDirectory(Path(env.settings.users_file))
    secret, _ = tokens.create("poissy", "notebook", timedelta(days=1), [POISSY])
    assert get(http, secret)[0] == 200
    poissy = directory.get("poissy")
    assert poissy is not None
    directory.upsert(User("poissy", frozenset({CONFLANS}), poissy.password_hash))
    try:
        status, body = get(http, secret)
        assert status == 200 and insee_codes(body) == set()
        assert get(http, secret, f"/api/v1/atmo?start=-2d&communes={POISSY}")[0] == 403
    finally:
        directory.upsert(poissy)


def test_an_expired_token_is_refused_with_its_date(http: FlaskClient, tokens: TokenStore) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=100)
    secret, record = tokens.create("poissy", "old", timedelta(days=90), now=long_ago)
    status, body = get(http, secret)
    assert status == 401
    assert f"API token {record.id} expired on {record.expires:%Y-%m-%d}" in str(body["error"])


def test_revocation_takes_effect_at_once(http: FlaskClient, tokens: TokenStore) -> None:
    secret, record = tokens.create("poissy", "laptop", timedelta(days=30))
    assert get(http, secret)[0] == 200
    tokens.revoke(record.id)
    status, body = get(http, secret)
    assert status == 401 and "revoked" in str(body["error"])


def test_last_use_is_recorded(http: FlaskClient, tokens: TokenStore) -> None:
    secret, record = tokens.create("poissy", "fresh", timedelta(days=30))
    assert record.last_used is None
    before = datetime.now(UTC)
    assert get(http, secret)[0] == 200
    used = tokens.get(record.id)
    assert used is not None and used.last_used is not None and used.last_used >= before


def test_a_token_of_a_removed_user_is_refused(
    env: DashboardEnv, http: FlaskClient, tokens: TokenStore
) -> None:
    secret, _ = tokens.create("ghost", "left", timedelta(days=30))
    status, body = get(http, secret)
    assert status == 401 and "no longer a user" in str(body["error"])


def test_only_a_hash_of_the_secret_is_kept(tokens: TokenStore) -> None:
    secret, _ = tokens.create("poissy", "hashed", timedelta(days=30))
    with sqlite3.connect(tokens.path) as db:
        dumped = "\n".join(db.iterdump())
    assert secret not in dumped and token_digest(secret) in dumped
    assert tokens.path.stat().st_mode & 0o077 == 0


def test_tokens_left_in_an_old_users_file_are_taken_over_with_an_expiry(tmp_path: Path) -> None:
    from dashboards.config import DashboardSettings

    old, revoked = "sct_old_notebook_token", "sct_old_revoked_token"
    users_file = tmp_path / "users.toml"
    UserDirectory(users_file).save(
        [
            User(
                "poissy",
                frozenset({POISSY}),
                tokens=(ApiToken("notebook", token_digest(old)), ApiToken("gone", token_digest(revoked))),
            )
        ]
    )
    settings = DashboardSettings(users_file=users_file, token_lifetime_days=30)
    store = open_tokens(settings)
    records = {record.label: record for record in store.all()}
    assert set(records) == {"notebook", "gone"}
    assert records["notebook"].expires - records["notebook"].created == timedelta(days=30)
    assert store.use(old).user == "poissy"
    store.revoke(records["gone"].id)
    # Opening again (a restart) neither duplicates nor brings back a revoked token.
    again = open_tokens(settings).all()
    assert len(again) == 2 and next(r for r in again if r.label == "gone").revoked is not None


def _open_tokens_with_others(users_file: Path, ready: Any) -> None:
    from dashboards.config import DashboardSettings

    ready.wait()
    open_tokens(DashboardSettings(users_file=users_file))


def test_workers_starting_together_take_over_an_old_users_files_tokens_once(tmp_path: Path) -> None:
    # Every server worker opens the token store as it starts; none may fail to start because
    # another took the same token over a moment before it. Many tokens, so that the take-overs overlap.
    context = multiprocessing.get_context("fork")
    workers = 6
    for attempt in range(8):
        users_file = tmp_path / str(attempt) / "users.toml"
        tokens = tuple(ApiToken(f"notebook-{n}", token_digest(f"sct_old_{attempt}_{n}")) for n in range(300))
        UserDirectory(users_file).save([User("poissy", frozenset({POISSY}), tokens=tokens)])
        ready = context.Barrier(workers)
        processes = [
            context.Process(target=_open_tokens_with_others, args=(users_file, ready)) for _ in range(workers)
        ]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        assert [process.exitcode for process in processes] == [0] * workers, f"attempt {attempt}"
        records = TokenStore(users_file.parent / "tokens.sqlite").all()
        assert sorted(record.label for record in records) == sorted(token.name for token in tokens)


@pytest.mark.parametrize(("text", "days"), [("30d", 30), ("12h", 0.5), ("8w", 56)])
def test_lifetimes(text: str, days: float) -> None:
    assert parse_lifetime(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["", "0d", "30", "1y", "-3d", "never"])
def test_bad_lifetimes_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="12h, 30d, 8w"):
        parse_lifetime(text)


def test_no_token_lives_longer_than_a_year() -> None:
    assert parse_lifetime("366d") == timedelta(days=366)
    with pytest.raises(ValueError, match="at most 366d"):
        parse_lifetime("53w")
