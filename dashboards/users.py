"""Users of the dashboards and the API, from a TOML file the operator manages.

The file holds, for each user, a salted scrypt hash of the password and what the user may see:
communes (INSEE codes, or ``"*"`` for an administrator), and every member commune of some EPCI
(SIREN) or every commune of some départements. Codes are checked against the official
administrative division (``sensors.territory``). Passwords are never stored in clear::

    [users.poissy]
    password = "scrypt$16384$8$1$<salt>$<hash>"
    communes = ["78498"]

    [users.gpseo]
    password = "scrypt$16384$8$1$<salt>$<hash>"
    communes = []
    epci = ["200059889"]          # CU Grand Paris Seine et Oise
    departements = ["92"]

``smartcity dashboard add-user`` writes it; an operator may also edit it. The server re-reads it
when it changes, so a removed user is out at once. API tokens live in their own file
(``dashboards.tokens``); a ``tokens`` list left here by older versions is taken over from there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sensors.communes import INSEE_PATTERN
from sensors.territory import official

ALL_COMMUNES = "*"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


class UsersFileError(ValueError):
    """The users file is malformed; the message names the user and the problem."""


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One API token of a user: a name for the operator, and the token's SHA-256."""

    name: str
    sha256: str


@dataclass(frozen=True, slots=True)
class User:
    """Someone who may sign in, and the communes they may see."""

    name: str
    communes: frozenset[str]
    """Communes granted one by one (or ``"*"``)."""
    password_hash: str = ""
    tokens: tuple[ApiToken, ...] = ()
    epci: frozenset[str] = frozenset()
    """EPCI (SIREN) whose member communes are all granted."""
    departements: frozenset[str] = frozenset()
    """Départements whose communes are all granted."""
    reach: frozenset[str] = field(init=False, default=frozenset())
    """Every commune granted, whichever way; ``UsersFileError`` at creation for an unknown code."""

    def __post_init__(self) -> None:
        reach = (
            granted_communes(self.communes, self.epci, self.departements)
            if self.epci or self.departements
            else self.communes
        )
        object.__setattr__(self, "reach", reach)

    @property
    def is_admin(self) -> bool:
        """Whether the user may see every commune."""
        return ALL_COMMUNES in self.communes

    @property
    def grants(self) -> tuple[str, ...]:
        """What was granted, one line each (``78498``, ``epci:200059889``, ``departement:92``)."""
        return (
            *sorted(self.communes),
            *(f"epci:{siren}" for siren in sorted(self.epci)),
            *(f"departement:{code}" for code in sorted(self.departements)),
        )

    def may_see(self, insee: str) -> bool:
        """Whether the user may see this commune's data."""
        return self.is_admin or insee in self.reach

    def visible(self, codes: Iterable[str]) -> list[str]:
        """The codes among ``codes`` the user may see, in the given order."""
        return [code for code in codes if self.may_see(code)]


def check_communes(communes: Iterable[str]) -> None:
    """``UsersFileError`` for the first code that is not ``"*"`` nor a current official commune."""
    territory = official()
    for insee in communes:
        if insee != ALL_COMMUNES and (not INSEE_PATTERN.match(insee) or territory.commune(insee) is None):
            raise UsersFileError(
                f"commune {insee!r} is not a current commune of the official registry "
                f"(decoupage-administratif {territory.version}); "
                "find codes with `smartcity registry find NAME`"
            )


def granted_communes(
    communes: Iterable[str], epci: Iterable[str] = (), departements: Iterable[str] = ()
) -> frozenset[str]:
    """The INSEE codes granted by these communes, EPCI and départements (``"*"`` is kept as is).

    ``UsersFileError`` names the first EPCI or département the official registry does not know.
    """
    territory = official()
    reach = set(communes)
    for siren in epci:
        found = territory.epci(siren)
        if found is None:
            raise UsersFileError(
                f"epci {siren!r} is not the SIREN of an EPCI of the official registry "
                f"(decoupage-administratif {territory.version}); "
                "find it with `smartcity registry find NAME`"
            )
        reach.update(found.members)
    for code in departements:
        departement = territory.departement(code)
        if departement is None:
            raise UsersFileError(
                f"departement {code!r} is not a département code of the official registry "
                f'(such as "78", "2A", "974")'
            )
        reach.update(departement.communes)
    return frozenset(reach)


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``, with its parameters, for the users file."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by ``hash_password`` (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def token_digest(token: str) -> str:
    """The SHA-256 (hex) under which a token is kept. Tokens are random, so no salt is needed."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh API token (256 random bits), shown once to the operator."""
    return "sct_" + secrets.token_urlsafe(32)


def parse_users(text: str, source: str = "users file") -> dict[str, User]:
    """Users from the TOML text of a users file; ``UsersFileError`` says what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsersFileError(f"{source} is not valid TOML: {exc}") from exc
    table = data.get("users", {})
    if not isinstance(table, dict):
        raise UsersFileError(f"{source}: [users] must be a table of users")
    users: dict[str, User] = {}
    for name, entry in table.items():
        where = f"{source}: user {name!r}"
        if not isinstance(entry, dict):
            raise UsersFileError(f"{where} must be a table")
        # A user given EPCI or départements may leave communes out.
        communes = entry.get("communes", [] if {"epci", "departements"} & set(entry) else None)
        if not isinstance(communes, list) or not all(isinstance(c, str) for c in communes):
            raise UsersFileError(f'{where}: communes must be a list of INSEE codes, or ["*"] for all')
        password = entry.get("password", "")
        if not isinstance(password, str) or (password and not password.startswith("scrypt$")):
            raise UsersFileError(
                f"{where}: password must be a scrypt hash (use `smartcity dashboard add-user`)"
            )
        groups: dict[str, frozenset[str]] = {}
        for key, what in (("epci", "SIREN codes of EPCI"), ("departements", "département codes")):
            codes = entry.get(key, [])
            if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
                raise UsersFileError(f"{where}: {key} must be a list of {what} (strings)")
            groups[key] = frozenset(codes)
        if unknown := sorted(set(entry) - {"communes", "password", "tokens", "epci", "departements"}):
            raise UsersFileError(
                f"{where}: unknown key(s) {', '.join(unknown)}; "
                "expected password, communes, epci, departements, tokens"
            )
        tokens: list[ApiToken] = []
        for raw in entry.get("tokens", []):
            if not isinstance(raw, dict) or not isinstance(raw.get("sha256"), str):
                raise UsersFileError(
                    f"{where}: each token needs a sha256 (use `smartcity dashboard add-token`)"
                )
            tokens.append(ApiToken(name=str(raw.get("name", "")), sha256=raw["sha256"]))
        try:
            check_communes(communes)
            users[name] = User(
                name=name,
                communes=frozenset(communes),
                password_hash=password,
                tokens=tuple(tokens),
                epci=groups["epci"],
                departements=groups["departements"],
            )
        except UsersFileError as exc:
            raise UsersFileError(f"{where}: {exc}") from None
    return users


def dump_users(users: Iterable[User]) -> str:
    """The TOML text of a users file (JSON string escapes are valid TOML basic strings)."""
    lines = [
        "# Users of the smartcity dashboards; managed with `smartcity dashboard add-user/add-token`.",
        "",
    ]
    for user in users:
        lines.append(f"[users.{json.dumps(user.name)}]")
        lines.append(f"password = {json.dumps(user.password_hash)}")
        lines.append(f"communes = {json.dumps(sorted(user.communes))}")
        if user.epci:
            lines.append(f"epci = {json.dumps(sorted(user.epci))}")
        if user.departements:
            lines.append(f"departements = {json.dumps(sorted(user.departements))}")
        tokens = ", ".join(
            f"{{ name = {json.dumps(t.name)}, sha256 = {json.dumps(t.sha256)} }}" for t in user.tokens
        )
        lines.append(f"tokens = [{tokens}]")
        lines.append("")
    return "\n".join(lines)


@dataclass
class UserDirectory:
    """The users file, re-read whenever it changes on disk."""

    path: Path
    _users: dict[str, User] = field(default_factory=dict)
    _stamp: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._users, self._stamp = {}, None
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        users = parse_users(self.path.read_text("utf-8"), str(self.path))
        self._users = users
        self._stamp = stamp

    def get(self, name: str) -> User | None:
        """The user of that name, or None."""
        with self._lock:
            self._refresh()
            return self._users.get(name)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password is right, else None."""
        user = self.get(name)
        if user is None or not user.password_hash:
            # Hash anyway so that an unknown name takes as long as a wrong password.
            verify_password(password, _DUMMY_HASH)
            return None
        return user if verify_password(password, user.password_hash) else None

    def all(self) -> list[User]:
        """Every user, in file order."""
        with self._lock:
            self._refresh()
            return list(self._users.values())

    def save(self, users: Iterable[User]) -> None:
        """Write the file atomically, readable by its owner only."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(dump_users(users), "utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def upsert(self, user: User) -> None:
        """Add or replace one user."""
        users = {u.name: u for u in self.all()}
        users[user.name] = user
        self.save(users.values())


_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
