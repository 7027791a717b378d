"""The workers' shared state: sessions that end, and sign-in limits that lock out only the guilty."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from dashboards.auth import load_secret_key
from dashboards.config import DashboardSettings
from dashboards.signin_limits import SignInLimiter
from dashboards.state import SessionStore, SQLiteStorage, StateFile, digest
from tests.servers import wait_until


def limiter(path: Path, *, window_s: int = 60) -> SignInLimiter:
    return SignInLimiter(
        SQLiteStorage(StateFile(path)),
        per_account_and_address=3,
        per_account=6,
        per_address=8,
        window_s=window_s,
    )


def test_failures_on_one_account_do_not_lock_out_another_from_the_same_address(tmp_path: Path) -> None:
    limits = limiter(tmp_path / "state.sqlite3")
    for _ in range(3):
        assert limits.retry_after("alice", "10.0.0.1") == 0
        limits.failed("alice", "10.0.0.1")
    assert 0 < limits.retry_after("alice", "10.0.0.1") <= 60
    assert limits.retry_after("bob", "10.0.0.1") == 0  # same address, other account
    assert limits.retry_after("alice", "10.0.0.2") == 0  # same account, other address


def test_account_and_address_limits_catch_guesses_spread_out(tmp_path: Path) -> None:
    limits = limiter(tmp_path / "state.sqlite3")
    for n in range(6):
        limits.failed("alice", f"10.0.1.{n}")  # one account, guessed from many addresses
    assert limits.retry_after("alice", "10.0.9.9") > 0
    for n in range(8):
        limits.failed(f"user{n}", "10.0.2.1")  # one address spraying many accounts
    assert limits.retry_after("carol", "10.0.2.1") > 0
    assert limits.retry_after("carol", "10.0.2.2") == 0


def test_success_forgets_failures_and_windows_pass(tmp_path: Path) -> None:
    limits = limiter(tmp_path / "state.sqlite3", window_s=3)  # the hits fit in it, even on a loaded machine
    for _ in range(2):
        limits.failed("alice", "10.0.0.1")
    limits.succeeded("alice", "10.0.0.1")
    limits.failed("alice", "10.0.0.1")
    assert limits.retry_after("alice", "10.0.0.1") == 0  # 1 failure counted, not 3
    for _ in range(2):
        limits.failed("alice", "10.0.0.1")
    assert limits.retry_after("alice", "10.0.0.1") > 0
    wait_until(lambda: limits.retry_after("alice", "10.0.0.1") == 0, timeout=10, what="the window to pass")


def _fail_from_another_process(path: str) -> None:
    limiter(Path(path)).failed("alice", "10.0.0.1")


def test_counts_are_shared_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    limits = limiter(path)
    context = multiprocessing.get_context("spawn")
    for _ in range(3):
        process = context.Process(target=_fail_from_another_process, args=(str(path),))
        process.start()
        process.join(60)
        assert process.exitcode == 0
    assert limits.retry_after("alice", "10.0.0.1") > 0


def _read_secret(users_file: Path, ready: Any, secrets: Any) -> None:
    ready.wait()
    secrets.put(load_secret_key(DashboardSettings(users_file=users_file)))


def test_workers_starting_together_the_first_time_all_sign_cookies_with_one_secret(tmp_path: Path) -> None:
    # A cookie signed with another worker's secret is no session there: sign-in would work one
    # request in two. The workers are released together on a fresh directory, several times over.
    context = multiprocessing.get_context("fork")
    workers = 6
    for attempt in range(12):
        users_file = tmp_path / str(attempt) / "users.toml"
        ready, secrets = context.Barrier(workers), context.Queue()
        processes = [
            context.Process(target=_read_secret, args=(users_file, ready, secrets)) for _ in range(workers)
        ]
        for process in processes:
            process.start()
        read = [secrets.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(60)
            assert process.exitcode == 0
        kept = (users_file.parent / "dashboard_secret.key").read_text("utf-8").strip()
        assert len(kept) >= 32 and read == [kept] * workers, f"attempt {attempt}: {len(set(read))} secrets"
        assert [path.name for path in users_file.parent.iterdir()] == ["dashboard_secret.key"]


def test_sessions_end_on_sign_out_idle_age_and_for_a_user(tmp_path: Path) -> None:
    sessions = SessionStore(StateFile(tmp_path / "state.sqlite3"), idle_s=600, max_age_s=3600)
    now = 1_000_000.0
    sid = sessions.start("alice", "fp", now=now)
    record = sessions.find(sid, now=now + 10)
    assert record is not None and record.user_sha256 == digest("alice") and record.fingerprint == "fp"
    sessions.end(sid)
    assert sessions.find(sid, now=now + 11) is None

    idle = sessions.start("alice", "fp", now=now)
    assert sessions.find(idle, now=now + 599) is not None  # in use: the idle clock starts again
    assert sessions.find(idle, now=now + 599 + 599) is not None
    assert sessions.find(idle, now=now + 599 + 599 + 601) is None

    old = sessions.start("alice", "fp", now=now)
    for step in range(1, 7):  # busy all along, yet past the absolute age
        assert sessions.find(old, now=now + step * 500) is not None
    assert sessions.find(old, now=now + 3601) is None

    first, second = sessions.start("bob", "fp", now=now), sessions.start("bob", "fp", now=now)
    other = sessions.start("carol", "fp", now=now)
    assert sessions.end_user("bob") == 2
    assert sessions.find(first, now=now) is None and sessions.find(second, now=now) is None
    assert sessions.find(other, now=now) is not None
    assert (tmp_path / "state.sqlite3").stat().st_mode & 0o077 == 0
    for kept in tmp_path.glob("state.sqlite3*"):  # the database and its write-ahead log
        assert b"alice" not in kept.read_bytes()  # names are kept as digests
