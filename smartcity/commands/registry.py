"""``smartcity registry``: regenerate the official territory tables; look codes up in them."""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import sensors
from sensors.territory import Territory, TerritoryError
from sensors.territory_source import (
    PACKAGE,
    PINNED_VERSION,
    Release,
    SourceError,
    download,
    pinned,
    release,
    verify,
)
from sensors.territory_source import write_tables as generate
from smartcity.settings import Settings

SHIPPED = Path(sensors.__file__).resolve().parent / "data" / "decoupage"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``registry`` sub-command."""
    parser = subparsers.add_parser(
        "registry",
        help="the official communes, EPCI and départements: refresh them, find a code",
        description=f"The territory tables generated from the npm package {PACKAGE} (docs/registry.md).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    refresh = actions.add_parser(
        "refresh",
        help=f"download {PACKAGE} from the npm registry, verify it and regenerate the tables",
        description=(
            "Fetches the version's metadata from registry.npmjs.org, downloads its tarball, checks "
            "it against the published SHA-512 integrity and SHA-1 shasum (and, for the pinned "
            f"version {PINNED_VERSION}, against the checksums recorded in the code), then writes "
            "the tables. Commit the result: tests and the demo never need the network."
        ),
    )
    refresh.add_argument("--version", dest="package_version", default=PINNED_VERSION, help="package version")
    refresh.add_argument("--out", type=Path, default=SHIPPED, help=f"output folder (default: {SHIPPED})")
    refresh.add_argument(
        "--tarball",
        type=Path,
        help="use this tarball instead of downloading it (checked against --integrity and --shasum)",
    )
    refresh.add_argument("--integrity", help="expected sha512-... of --tarball (default: the pinned one)")
    refresh.add_argument("--shasum", help="expected SHA-1 of --tarball (default: the pinned one)")
    refresh.set_defaults(func=run_refresh)
    find = actions.add_parser("find", help="EPCI, départements and communes whose name contains TEXT")
    find.add_argument("text", help="part of a name, accents and case ignored (e.g. 'seine et oise')")
    find.set_defaults(func=run_find)


def run_refresh(args: argparse.Namespace, settings: Settings) -> int:
    """Download (or read), verify and generate; print what was written."""
    del settings
    try:
        if args.tarball is not None:
            found = pinned()
            if args.integrity or args.shasum or args.package_version != PINNED_VERSION:
                found = Release(
                    args.package_version,
                    str(args.tarball),
                    args.integrity or found.integrity,
                    args.shasum or found.shasum,
                )
            tarball = args.tarball.read_bytes()
            verify(tarball, found)
        else:
            found = release(args.package_version)
            tarball = download(found)
        counts = generate(tarball, found, args.out)
    except (SourceError, OSError) as exc:
        print(f"smartcity registry refresh: {exc}", file=sys.stderr)
        return 1
    rows = ", ".join(f"{name}: {count}" for name, count in counts.items())
    print(f"{PACKAGE}@{found.version} verified ({found.integrity}); wrote {args.out} ({rows})")
    return 0


def _folded(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(letters.replace("-", " ").replace("'", " ").split())


def run_find(args: argparse.Namespace, settings: Settings) -> int:
    """Print the codes of matching EPCI, départements and communes (the first 20 of each)."""
    del settings
    try:
        territory = Territory.load()
    except TerritoryError as exc:
        print(f"smartcity registry find: {exc}", file=sys.stderr)
        return 1
    wanted = _folded(args.text)
    epci = [e for e in territory.all_epci() if wanted in _folded(e.name)]
    departements = [d for d in territory.all_departements() if wanted in _folded(d.name)]
    communes = [c for c in territory.communes() if wanted in _folded(c.name)]
    for e in epci[:20]:
        print(f"epci\t{e.siren}\t{e.name}\t{e.kind}\t{len(e.members)} communes")
    for d in departements[:20]:
        print(f"departement\t{d.code}\t{d.name}\t{len(d.communes)} communes")
    for c in communes[:20]:
        print(f"commune\t{c.insee}\t{c.name}\t{c.departement}\tEPCI {c.epci or '-'}")
    if not (epci or departements or communes):
        print(
            f"nothing in decoupage-administratif {territory.version} is named like {args.text!r}",
            file=sys.stderr,
        )
        return 1
    return 0
