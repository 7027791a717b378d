"""API tokens: read-only, expiring, optionally narrowed to some communes, revocable.

Tokens live in a small SQLite file next to the users file (``settings.dashboard.tokens_file``),
which every server worker and the CLI share. Only the SHA-256 of a token's secret is kept: the
secret is printed once by ``smartcity dashboard add-token``. A token acts for its user, so it
never sees more than the user may see today, and never more than its own communes when it was
narrowed to some (``CommuneData.scope``, checked in ``dashboards.access``).
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import flask

from dashboards.access import CommuneData
from dashboards.auth import app_context
from dashboards.config import DashboardSettings
from dashboards.users import User, UserDirectory, new_token, token_digest

EXTENSION = "smartcity.tokens"
READ = "read"
"""The only scope there is: the API answers GET requests and nothing else."""
MAX_LIFETIME = timedelta(days=366)
"""No token lives longer than this: a forgotten token ends by itself."""
LAST_USED_RESOLUTION = timedelta(minutes=1)
"""Last-used times are written at most this often per token, so a busy notebook costs no writes."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL,
    label TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL,
    communes TEXT,
    created TEXT NOT NULL,
    expires TEXT NOT NULL,
    last_used TEXT,
    revoked TEXT
)
"""
_COLUMNS = "id, user, label, scope, communes, created, expires, last_used, revoked"


class TokenRefused(Exception):
    """A bearer token that may not be used; the message says why, never what the secret was."""


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What is known of one token (never its secret)."""

    id: str
    user: str
    label: str
    scope: str
    communes: frozenset[str] | None
    """The communes the token is narrowed to; None: every commune of its user."""
    created: datetime
    expires: datetime
    last_used: datetime | None
    revoked: datetime | None

    def active(self, now: datetime) -> bool:
        """Whether the token may be used at ``now``."""
        return self.revoked is None and now < self.expires


def parse_lifetime(text: str) -> timedelta:
    """``90d``, ``12h``, ``8w`` as a duration; ``ValueError`` with the accepted forms otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*([hdw])\s*", text)
    if match is None or int(match[1]) == 0:
        raise ValueError(f"invalid expiry {text!r}: give a number of hours, days or weeks, like 12h, 30d, 8w")
    unit = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}[match[2]]
    lifetime = int(match[1]) * unit
    if lifetime > MAX_LIFETIME:
        raise ValueError(f"expiry {text!r} is too far: at most {MAX_LIFETIME.days}d; make a new token then")
    return lifetime


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _record(row: tuple[str, ...]) -> TokenRecord:
    ident, user, label, scope, communes, created, expires, last_used, revoked = row
    return TokenRecord(
        id=ident,
        user=user,
        label=label,
        scope=scope,
        communes=frozenset(communes.split(",")) if communes else None,
        created=datetime.fromisoformat(created),
        expires=datetime.fromisoformat(expires),
        last_used=_time(last_used),
        revoked=_time(revoked),
    )


@dataclass(frozen=True)
class TokenStore:
    """The tokens file. Each call opens its own connection, so forked workers share it safely."""

    path: Path

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self.path.touch(mode=0o600)
        with closing(sqlite3.connect(self.path, timeout=10)) as connection, connection:
            connection.execute(_SCHEMA)
            yield connection

    def create(
        self,
        user: str,
        label: str,
        lifetime: timedelta,
        communes: Sequence[str] | None = None,
        now: datetime | None = None,
    ) -> tuple[str, TokenRecord]:
        """A new token of ``user``: its secret (to show once) and its record."""
        now = now or datetime.now(UTC)
        secret = new_token()
        scope = ",".join(sorted(set(communes))) if communes else None
        with self._connect() as db:
            while True:
                ident = secrets.token_hex(4)
                if db.execute("SELECT 1 FROM tokens WHERE id = ?", (ident,)).fetchone() is None:
                    break
            db.execute(
                "INSERT INTO tokens (id, user, label, sha256, scope, communes, created, expires) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ident,
                    user,
                    label,
                    token_digest(secret),
                    READ,
                    scope,
                    now.isoformat(),
                    (now + lifetime).isoformat(),
                ),
            )
        record = self.get(ident)
        assert record is not None
        return secret, record

    def get(self, ident: str) -> TokenRecord | None:
        """The token with this id, or None."""
        with self._connect() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id = ?", (ident,)).fetchone()
        return _record(row) if row else None

    def all(self, user: str | None = None) -> list[TokenRecord]:
        """Every token (of ``user`` when given), oldest first."""
        query = (
            f"SELECT {_COLUMNS} FROM tokens" + (" WHERE user = ?" if user else "") + " ORDER BY created, id"
        )
        with self._connect() as db:
            rows = db.execute(query, (user,) if user else ()).fetchall()
        return [_record(row) for row in rows]

    def revoke(self, ident: str, now: datetime | None = None) -> TokenRecord | None:
        """Revoke a token at once (the row stays, so the listing can say when); None if unknown."""
        now = now or datetime.now(UTC)
        with self._connect() as db:
            db.execute(
                "UPDATE tokens SET revoked = ? WHERE id = ? AND revoked IS NULL", (now.isoformat(), ident)
            )
        return self.get(ident)

    def use(self, secret: str, now: datetime | None = None) -> TokenRecord:
        """The record of a usable token, noting its use; ``TokenRefused`` says why not."""
        now = now or datetime.now(UTC)
        with self._connect() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM tokens WHERE sha256 = ?", (token_digest(secret),)
            ).fetchone()
            if row is None:
                raise TokenRefused("unknown or revoked API token")
            record = _record(row)
            if record.revoked is not None:
                raise TokenRefused(f"API token {record.id} was revoked on {record.revoked:%Y-%m-%d}")
            if now >= record.expires:
                raise TokenRefused(
                    f"API token {record.id} expired on {record.expires:%Y-%m-%d}: ask for a new one "
                    "(smartcity dashboard add-token)"
                )
            if record.last_used is None or now - record.last_used >= LAST_USED_RESOLUTION:
                db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now.isoformat(), record.id))
        return record

    def import_legacy(self, users: Sequence[User], lifetime: timedelta, now: datetime | None = None) -> int:
        """Take over the tokens still listed in a users file, with an expiry from now; returns how many.

        Users files once kept tokens that never expired. Their hashes move here, so notebooks keep
        working until the new expiry; a hash already here (even revoked) is never taken again.
        """
        now = now or datetime.now(UTC)
        taken = 0
        with self._connect() as db:
            for user in users:
                for token in user.tokens:
                    # One statement, not a look then an insert: every server worker takes over the
                    # same file on a first start, and the one that comes second must find it done.
                    taken += db.execute(
                        "INSERT INTO tokens (id, user, label, sha256, scope, created, expires) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
                        (
                            secrets.token_hex(4),
                            user.name,
                            token.name or "api",
                            token.sha256,
                            READ,
                            now.isoformat(),
                            (now + lifetime).isoformat(),
                        ),
                    ).rowcount
        return taken


def open_tokens(settings: DashboardSettings) -> TokenStore:
    """The token store of these settings (``tokens_file``, else ``tokens.sqlite`` beside the users file).

    Tokens still listed in the users file are taken over on the way, with a fresh expiry.
    """
    store = TokenStore(settings.tokens_file or Path(settings.users_file).parent / "tokens.sqlite")
    store.import_legacy(
        UserDirectory(Path(settings.users_file)).all(), timedelta(days=settings.token_lifetime_days)
    )
    return store


def install(server: flask.Flask, store: TokenStore) -> None:
    """Make this token store the API's authority."""
    server.extensions[EXTENSION] = store


def bearer_data(secret: str) -> CommuneData:
    """The store as a bearer token may see it; ``TokenRefused`` when the token may not be used."""
    context = app_context()
    store: TokenStore = flask.current_app.extensions[EXTENSION]
    if flask.request.method not in ("GET", "HEAD"):
        raise TokenRefused(f"API tokens are read-only: {flask.request.method} is not allowed")
    record = store.use(secret)
    user = context.users.get(record.user)
    if user is None:
        raise TokenRefused(f"API token {record.id} belongs to {record.user!r}, who is no longer a user")
    return CommuneData(context.store, user, context.registry, scope=record.communes)
