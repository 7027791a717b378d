"""`smartcity backfill`: not built yet."""

from __future__ import annotations

import argparse
import sys

from smartcity.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `backfill` sub-command."""
    parser = subparsers.add_parser("backfill", help="(not built yet)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the sub-command."""
    print("smartcity backfill: not built yet", file=sys.stderr)
    return 1
