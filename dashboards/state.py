"""State every worker of the dashboard server shares: sessions and sign-in counters, in SQLite.

The server runs several worker processes (gunicorn); a session ended or a sign-in refused in
one must hold in all. One SQLite file next to the users file does that with nothing to run:
WAL mode lets readers go on while one writer commits. Each thread of each process keeps its own
connection (SQLite connections must not cross threads, nor a fork).

Session ids and user names are kept as their SHA-256 only: a copy of the file signs nobody in,
and names nobody (a public agent's user name is an e-mail address).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from limits.storage import Storage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    sid_sha256 TEXT PRIMARY KEY,
    user_sha256 TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_sha256);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY,
    count INTEGER NOT NULL,
    expires REAL NOT NULL
);
"""
TOUCH_EVERY_S = 30.0
"""Idle time is tracked to this precision, so that a busy page does not write on every request."""


class StateFile:
    """One SQLite file, a connection per thread and process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self.connect() as conn:
            conn.executescript(_SCHEMA)
        os.chmod(path, 0o600)

    def connect(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn


def digest(text: str) -> str:
    """The SHA-256 (hex) under which a session id or a user name is kept."""
    return hashlib.sha256(text.encode()).hexdigest()


_digest = digest


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A live session: whose it is (SHA-256 of the name), and the user's rights fingerprint."""

    user_sha256: str
    fingerprint: str
    created: float
    last_seen: float


class SessionStore:
    """Server-side sessions: the cookie carries only a random id looked up here."""

    def __init__(self, state: StateFile, *, idle_s: float, max_age_s: float) -> None:
        self.state = state
        self.idle_s = idle_s
        self.max_age_s = max_age_s

    def start(self, user: str, fingerprint: str, now: float | None = None) -> str:
        """A new session for ``user``; returns its id, for the cookie only."""
        now = time.time() if now is None else now
        sid = secrets.token_urlsafe(32)
        conn = self.state.connect()
        conn.execute(
            "DELETE FROM sessions WHERE last_seen < ? OR created < ?",
            (now - self.idle_s, now - self.max_age_s),
        )
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
            (_digest(sid), _digest(user), fingerprint, now, now),
        )
        return sid

    def find(self, sid: str, now: float | None = None) -> SessionRecord | None:
        """The live session of this id, or None when unknown, ended, idle too long or too old."""
        now = time.time() if now is None else now
        conn = self.state.connect()
        key = _digest(sid)
        row = conn.execute(
            "SELECT user_sha256, fingerprint, created, last_seen FROM sessions WHERE sid_sha256 = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        record = SessionRecord(*row)
        if now - record.last_seen > self.idle_s or now - record.created > self.max_age_s:
            conn.execute("DELETE FROM sessions WHERE sid_sha256 = ?", (key,))
            return None
        if now - record.last_seen >= TOUCH_EVERY_S:
            conn.execute("UPDATE sessions SET last_seen = ? WHERE sid_sha256 = ?", (now, key))
        return record

    def end(self, sid: str) -> None:
        """End one session, in every worker."""
        self.state.connect().execute("DELETE FROM sessions WHERE sid_sha256 = ?", (_digest(sid),))

    def end_user(self, user: str) -> int:
        """End every session of ``user``; returns how many there were."""
        cursor = self.state.connect().execute("DELETE FROM sessions WHERE user_sha256 = ?", (_digest(user),))
        return cursor.rowcount

    def count(self, user: str) -> int:
        """How many sessions ``user`` has open (expired ones included until purged)."""
        row = (
            self.state.connect()
            .execute("SELECT count(*) FROM sessions WHERE user_sha256 = ?", (_digest(user),))
            .fetchone()
        )
        return int(row[0])


class SQLiteStorage(Storage):
    """A ``limits`` storage in the shared SQLite file, so that every worker counts the same hits."""

    STORAGE_SCHEME = None  # built directly over a StateFile, not from a URI

    def __init__(self, state: StateFile) -> None:
        super().__init__()
        self.state = state

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        conn = self.state.connect()
        # One statement: an expired counter starts again from ``amount``, atomically.
        row = conn.execute(
            "INSERT INTO counters (key, count, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET "
            "count = CASE WHEN expires <= ? THEN excluded.count ELSE count + excluded.count END, "
            "expires = CASE WHEN expires <= ? THEN excluded.expires ELSE expires END "
            "RETURNING count",
            (key, amount, now + expiry, now, now),
        ).fetchone()
        return int(row[0])

    def get(self, key: str) -> int:
        row = (
            self.state.connect()
            .execute("SELECT count FROM counters WHERE key = ? AND expires > ?", (key, time.time()))
            .fetchone()
        )
        return int(row[0]) if row else 0

    def get_expiry(self, key: str) -> float:
        row = self.state.connect().execute("SELECT expires FROM counters WHERE key = ?", (key,)).fetchone()
        return float(row[0]) if row and row[0] > time.time() else time.time()

    def check(self) -> bool:
        return self.state.connect().execute("SELECT 1").fetchone() is not None

    def reset(self) -> int | None:
        cursor = self.state.connect().execute("DELETE FROM counters")
        return cursor.rowcount

    def clear(self, key: str) -> None:
        self.state.connect().execute("DELETE FROM counters WHERE key = ?", (key,))
