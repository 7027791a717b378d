"""`smartcity dashboard add-token | revoke-token | tokens`: the query API's tokens."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta

from dashboards.tokens import TokenRecord, TokenStore, open_tokens, parse_lifetime
from dashboards.users import UserDirectory
from sensors.communes import CommuneRegistry
from smartcity.settings import Settings


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the token actions to `smartcity dashboard`."""
    add = actions.add_parser(
        "add-token",
        help="create a read-only API token for a user and print it once",
        description="The token reads what its user may see, or only some of it (--communes), "
        "until it expires (--expires, default settings.dashboard.token_lifetime_days).",
    )
    add.add_argument("name", help="the user the token acts for")
    add.add_argument("--label", default="api", help="a name for the token, to recognise it in the listing")
    add.add_argument("--expires", metavar="DURATION", help="lifetime: 12h, 30d, 8w (default 90d)")
    add.add_argument(
        "--communes",
        help="comma-separated INSEE codes the token is narrowed to, among the user's (default: all of them)",
    )
    add.set_defaults(func=run_add_token)
    revoke = actions.add_parser("revoke-token", help="revoke an API token at once, by its id")
    revoke.add_argument("id", help="the token's id, as `smartcity dashboard tokens` lists it")
    revoke.set_defaults(func=run_revoke_token)
    listing = actions.add_parser("tokens", help="list API tokens (never their secrets)")
    listing.add_argument("--user", help="only this user's tokens")
    listing.add_argument("--all", action="store_true", help="also expired and revoked tokens")
    listing.set_defaults(func=run_tokens)


def _fail(action: str, message: str) -> int:
    print(f"smartcity dashboard {action}: {message}", file=sys.stderr)
    return 2


def run_add_token(args: argparse.Namespace, settings: Settings) -> int:
    """Create a token, keep its hash, print its secret once."""
    config = settings.dashboard
    user = UserDirectory(config.users_file).get(args.name)
    if user is None:
        return _fail("add-token", f"no user {args.name!r} in {config.users_file}")
    try:
        lifetime = (
            parse_lifetime(args.expires) if args.expires else timedelta(days=config.token_lifetime_days)
        )
    except ValueError as exc:
        return _fail("add-token", str(exc))
    communes = sorted({c.strip() for c in (args.communes or "").split(",") if c.strip()})
    registry = CommuneRegistry.load(settings.communes_file)
    if unknown := [code for code in communes if code not in registry]:
        return _fail("add-token", f"unknown commune(s) {', '.join(unknown)}: not in the commune registry")
    if beyond := [code for code in communes if not user.may_see(code)]:
        return _fail(
            "add-token",
            f"{user.name} may not see {', '.join(beyond)}: a token is narrowed within its user's communes "
            f"({', '.join(user.grants)})",
        )
    secret, record = open_tokens(config).create(user.name, args.label, lifetime, communes or None)
    print(secret)
    print(
        f"(API token {record.id} {record.label!r} of {user.name}, read-only, "
        f"communes {_communes(record)}, expires {record.expires:%Y-%m-%d %H:%M} UTC: "
        "shown once, only its hash is kept)",
        file=sys.stderr,
    )
    return 0


def run_revoke_token(args: argparse.Namespace, settings: Settings) -> int:
    """Revoke a token by id."""
    store: TokenStore = open_tokens(settings.dashboard)
    before = store.get(args.id)
    if before is None:
        return _fail("revoke-token", f"no token {args.id!r} (see `smartcity dashboard tokens --all`)")
    if before.revoked is not None:
        return _fail(
            "revoke-token", f"token {args.id} was already revoked on {before.revoked:%Y-%m-%d %H:%M}"
        )
    store.revoke(args.id)
    print(f"revoked token {before.id} {before.label!r} of {before.user}")
    return 0


def _communes(record: TokenRecord) -> str:
    return ",".join(sorted(record.communes)) if record.communes else "all of the user's"


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


def run_tokens(args: argparse.Namespace, settings: Settings) -> int:
    """Print the tokens: id, user, label, communes, created, expires, last used (times in UTC)."""
    now = datetime.now(UTC)
    records = open_tokens(settings.dashboard).all(args.user)
    print("id\tuser\tlabel\tcommunes\tcreated\texpires\tlast_used\tstate")
    for record in records:
        state = "revoked" if record.revoked else "active" if record.active(now) else "expired"
        if state != "active" and not args.all:
            continue
        print(
            "\t".join(
                (
                    record.id,
                    record.user,
                    record.label,
                    _communes(record),
                    _when(record.created),
                    _when(record.expires),
                    _when(record.last_used),
                    state,
                )
            )
        )
    return 0
