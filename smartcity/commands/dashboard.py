"""`smartcity dashboard`: serve the dashboards and the query API; manage their users file."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from dashboards.users import ALL_COMMUNES, User, UserDirectory, granted_communes, hash_password
from sensors.communes import CommuneRegistry
from smartcity.commands import dashboard_tokens
from smartcity.settings import Settings
from storage.base import Store

log = logging.getLogger("smartcity.dashboard")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `dashboard` sub-command and its user-management actions."""
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the dashboards and the query API; manage users and API tokens",
        description="Without an action, serve the dashboards and /api/v1 on settings.dashboard.host:port. "
        "Users live in settings.dashboard.users_file (SMARTCITY_DASHBOARD__USERS_FILE).",
    )
    parser.add_argument("--host", help="address to listen on (default: settings.dashboard.host)")
    parser.add_argument("--port", type=int, help="port to listen on (default: settings.dashboard.port)")
    parser.add_argument(
        "--workers", type=int, help="gunicorn worker processes (default: settings.dashboard.workers)"
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    add_user = actions.add_parser("add-user", help="add a user, or change a user's password and communes")
    add_user.add_argument("name", help="the user's sign-in name")
    add_user.add_argument(
        "--communes",
        default="",
        help="comma-separated INSEE codes the user may see, or '*' for every commune (administrator)",
    )
    add_user.add_argument(
        "--epci",
        default="",
        help="comma-separated SIREN of EPCI whose member communes the user may see "
        "(`smartcity registry find NAME` gives them)",
    )
    add_user.add_argument(
        "--departements", default="", help="comma-separated départements whose communes the user may see"
    )
    add_user.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of a prompt",
    )
    add_user.set_defaults(func=run_add_user)
    dashboard_tokens.register(actions)
    listing = actions.add_parser("list-users", help="list users, their communes and active token counts")
    listing.set_defaults(func=run_list_users)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the dashboards with gunicorn until interrupted."""
    from dashboards.auth import load_secret_key
    from dashboards.server import serve
    from dashboards.state import StateFile
    from dashboards.tokens import open_tokens

    config = settings.dashboard
    host, port = args.host or config.host, args.port or config.port
    workers = args.workers or config.workers
    if not UserDirectory(config.users_file).all():
        print(
            f"smartcity dashboard: no users in {config.users_file}; add one with "
            "`smartcity dashboard add-user NAME --communes '*'`",
            file=sys.stderr,
        )
        return 2
    if settings.store.backend == "duckdb" and workers > 1:
        # DuckDB lets one process own a file: the workers would lock each other out.
        log.info("the DuckDB store is served by one worker process (%d asked)", workers)
        workers = 1
    StateFile(config.state_path)  # created once here rather than raced by the workers
    try:
        load_secret_key(config)  # likewise: every worker must sign cookies with the same secret
        open_tokens(config)  # takes a users file's old tokens over once, not in every worker
    except ValueError as exc:
        print(f"smartcity dashboard: {exc}", file=sys.stderr)
        return 2
    stores: list[Store] = []

    def app() -> Any:
        from dashboards.app import create_app
        from storage import open_store

        stores.append(open_store(settings.store))
        return create_app(stores[-1], config, CommuneRegistry.load(settings.communes_file)).server

    def close_store() -> None:
        for store in stores:
            store.close()

    log.info("dashboards on http://%s:%d/ (API under /api/v1), %d worker(s)", host, port, workers)
    serve(app, config, host, port, workers=workers, on_worker_exit=close_store)
    return 0


def _codes(text: str) -> frozenset[str]:
    return frozenset(code.strip() for code in text.split(",") if code.strip())


def _communes(text: str, registry: CommuneRegistry, *, grouped: bool = False) -> frozenset[str]:
    codes = _codes(text)
    if ALL_COMMUNES in codes:
        return frozenset({ALL_COMMUNES})
    unknown = sorted(code for code in codes if code not in registry)
    if unknown or not (codes or grouped):
        raise ValueError(
            f"unknown commune(s) {', '.join(unknown) or '(none given)'}: not in the commune registry"
        )
    return codes


def run_add_user(args: argparse.Namespace, settings: Settings) -> int:
    """Add or update a user with a hashed password."""
    directory = UserDirectory(settings.dashboard.users_file)
    epci, departements = _codes(args.epci), _codes(args.departements)
    try:
        communes = _communes(
            args.communes, CommuneRegistry.load(settings.communes_file), grouped=bool(epci or departements)
        )
        granted_communes((), epci, departements)
    except ValueError as exc:
        print(f"smartcity dashboard add-user: {exc}", file=sys.stderr)
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            print("smartcity dashboard add-user: the two passwords differ", file=sys.stderr)
            return 2
    if len(password) < 10:
        print("smartcity dashboard add-user: the password needs at least 10 characters", file=sys.stderr)
        return 2
    existing = directory.get(args.name)
    directory.upsert(
        User(
            name=args.name,
            communes=communes,
            password_hash=hash_password(password),
            tokens=existing.tokens if existing else (),
            epci=epci,
            departements=departements,
        )
    )
    shown = User(args.name, communes, epci=epci, departements=departements).grants
    print(f"user {args.name} may see {', '.join(shown)} ({directory.path})")
    return 0


def run_list_users(args: argparse.Namespace, settings: Settings) -> int:
    """Print the users, their communes and how many active API tokens each has."""
    from dashboards.tokens import open_tokens

    tokens = open_tokens(settings.dashboard).all()
    now = datetime.now(UTC)
    for user in UserDirectory(settings.dashboard.users_file).all():
        active = sum(1 for token in tokens if token.user == user.name and token.active(now))
        print(f"{user.name}\tcommunes={','.join(user.grants)}\tactive_tokens={active}")
    return 0
