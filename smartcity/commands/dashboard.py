"""`smartcity dashboard`: serve the dashboards and the query API; manage their users file."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from datetime import UTC, datetime

from dashboards.users import ALL_COMMUNES, User, UserDirectory, hash_password
from sensors.communes import CommuneRegistry
from smartcity.commands import dashboard_tokens
from smartcity.settings import Settings

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
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    add_user = actions.add_parser("add-user", help="add a user, or change a user's password and communes")
    add_user.add_argument("name", help="the user's sign-in name")
    add_user.add_argument(
        "--communes",
        required=True,
        help="comma-separated INSEE codes the user may see, or '*' for every commune (administrator)",
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
    """Serve the dashboards until interrupted."""
    from werkzeug.serving import make_server

    from dashboards.app import create_app
    from storage import open_store

    config = settings.dashboard
    host, port = args.host or config.host, args.port or config.port
    registry = CommuneRegistry.load(settings.communes_file)
    if not UserDirectory(config.users_file).all():
        print(
            f"smartcity dashboard: no users in {config.users_file}; add one with "
            "`smartcity dashboard add-user NAME --communes '*'`",
            file=sys.stderr,
        )
        return 2
    store = open_store(settings.store)
    app = create_app(store, config, registry)
    server = make_server(host, port, app.server, threaded=True)
    log.info("dashboards on http://%s:%d/ (API under /api/v1)", host, server.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        store.close()
    return 0


def _communes(text: str, registry: CommuneRegistry) -> frozenset[str]:
    codes = frozenset(code.strip() for code in text.split(",") if code.strip())
    if ALL_COMMUNES in codes:
        return frozenset({ALL_COMMUNES})
    unknown = sorted(code for code in codes if code not in registry)
    if unknown or not codes:
        raise ValueError(
            f"unknown commune(s) {', '.join(unknown) or '(none given)'}: not in the commune registry"
        )
    return codes


def run_add_user(args: argparse.Namespace, settings: Settings) -> int:
    """Add or update a user with a hashed password."""
    directory = UserDirectory(settings.dashboard.users_file)
    try:
        communes = _communes(args.communes, CommuneRegistry.load(settings.communes_file))
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
        )
    )
    print(f"user {args.name} may see {', '.join(sorted(communes))} ({directory.path})")
    return 0


def run_list_users(args: argparse.Namespace, settings: Settings) -> int:
    """Print the users, their communes and how many active API tokens each has."""
    from dashboards.tokens import open_tokens

    tokens = open_tokens(settings.dashboard).all()
    now = datetime.now(UTC)
    for user in UserDirectory(settings.dashboard.users_file).all():
        active = sum(1 for token in tokens if token.user == user.name and token.active(now))
        print(f"{user.name}\tcommunes={','.join(sorted(user.communes))}\tactive_tokens={active}")
    return 0
