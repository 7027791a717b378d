"""`smartcity broker`: Mosquitto credentials and ACLs for a deployment."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sensors.communes import CommuneRegistry, RegistryError
from smartcity.broker_auth import broker_users, derive_password, write_broker_auth
from smartcity.settings import Settings

SECRET_ENV = "SMARTCITY_BROKER_SECRET"
INGEST_PASSWORD_ENV = "SMARTCITY_INGEST_MQTT_PASSWORD"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `broker` sub-command."""
    parser = subparsers.add_parser(
        "broker",
        help="generate Mosquitto credentials and per-commune topic ACLs",
        description=f"Per-commune gateway credentials derived from ${SECRET_ENV}; "
        "each gateway may publish only under its own commune's topics.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    config = actions.add_parser("config", help="write the passwords and acl files for Mosquitto")
    config.add_argument("--out", type=Path, required=True, help="directory to write them into")
    config.add_argument(
        "--owner",
        type=parse_owner,
        metavar="UID:GID",
        help="hand the files to the broker's user (eclipse-mosquitto: 1883:1883); Mosquitto reads "
        "them after dropping root",
    )
    password = actions.add_parser("password", help="print the password of one gateway user")
    password.add_argument("username", help="e.g. gw-78498")
    parser.set_defaults(func=run)


def parse_owner(text: str) -> tuple[int, int]:
    """``UID:GID`` as two numbers."""
    uid, sep, gid = text.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not UID:GID in numbers, e.g. 1883:1883")
    return int(uid), int(gid)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the sub-command."""
    secret = os.environ.get(SECRET_ENV, "")
    try:
        if args.action == "password":
            print(derive_password(secret, args.username))
            return 0
        ingest_password = os.environ.get(INGEST_PASSWORD_ENV, "")
        if not ingest_password:
            print(f"smartcity broker: set {INGEST_PASSWORD_ENV}", file=sys.stderr)
            return 2
        registry = CommuneRegistry.load(settings.communes_file)
        users = broker_users(registry, secret=secret, ingest_password=ingest_password)
        passwords, acl = write_broker_auth(users, args.out, owner=args.owner)
    except (ValueError, RegistryError) as exc:
        print(f"smartcity broker: {exc} (set {SECRET_ENV})", file=sys.stderr)
        return 2
    print(f"wrote {passwords} and {acl} for {len(users)} users")
    return 0
