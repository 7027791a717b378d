"""The ``smartcity`` command: one sub-command per part of the platform."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from smartcity import __version__
from smartcity.logs import configure_logging
from smartcity.settings import SettingsError, load_settings

# Each module in smartcity.commands adds its sub-command with ``register(subparsers)`` and
# sets ``func(args, settings) -> int`` as the parser default.
COMMANDS = (
    "simulate",
    "storage",
    "ingest",
    "process",
    "backfill",
    "alerts",
    "dashboard",
    "broker",
    "demo",
    "opendata",
    "lorawan",
    "registry",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="smartcity",
        description="Telemetry platform for French communes: sensors, ingest, storage, "
        "processing, dashboards and alerts.",
    )
    parser.add_argument("--version", action="version", version=f"smartcity {__version__}")
    parser.add_argument("--config", metavar="FILE", help="TOML settings file (default: $SMARTCITY_CONFIG)")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"smartcity.commands.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"smartcity: {exc}", file=sys.stderr)
        return 2
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    sys.exit(main())
