"""Generate the territory tables (``sensors.territory``) from ``@etalab/decoupage-administratif``.

The package's tarball is fetched from the npm registry, checked against the ``integrity``
(SHA-512) and ``shasum`` (SHA-1) the registry publishes for that version, and, for the pinned
version, against the integrity recorded here, so a changed tarball is refused. Its JSON files
(``data/communes.json``, ``data/epci.json``, ``data/departements.json``, ``data/regions.json``)
become compact CSV tables; only current communes (``type == "commune-actuelle"``) are kept.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sensors.territory import (
    COMMUNE_COLUMNS,
    COMMUNES_FILE,
    DEPARTEMENT_COLUMNS,
    DEPARTEMENTS_FILE,
    EPCI_COLUMNS,
    EPCI_FILE,
    REGION_COLUMNS,
    REGIONS_FILE,
    SOURCE_FILE,
)

PACKAGE = "@etalab/decoupage-administratif"
REGISTRY = "https://registry.npmjs.org"
PINNED_VERSION = "6.0.0"
PINNED_INTEGRITY = (
    "sha512-XavYsFlbcM/prKr8hNHPKER94IHw/dsxNM4nxjWMYk6PLFACpEedvn/7wK8Baozm0dCYhWWcf+7bcWpA5pmCaQ=="
)
PINNED_SHASUM = "0330556cf07e21fff21111e5775a316ec18b9636"
"""What the npm registry published for the pinned version; npm versions never change content."""
LICENSE = "MIT"


class SourceError(Exception):
    """The package could not be fetched, failed its checks, or is not in the expected format."""


@dataclass(frozen=True, slots=True)
class Release:
    """One published version of the package, as the registry describes it."""

    version: str
    tarball: str
    integrity: str
    shasum: str


def release(version: str = PINNED_VERSION, *, registry: str = REGISTRY, timeout: float = 30.0) -> Release:
    """The registry's metadata for ``version`` (``dist.tarball``, ``dist.integrity``, ``dist.shasum``)."""
    url = f"{registry}/{PACKAGE}/{version}"
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
        dist = response.json()["dist"]
        return Release(version, dist["tarball"], dist["integrity"], dist["shasum"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"cannot read the npm metadata of {PACKAGE}@{version} at {url}: {exc}") from exc


def download(found: Release, *, timeout: float = 120.0) -> bytes:
    """The verified tarball of ``found``."""
    try:
        response = httpx.get(found.tarball, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise SourceError(f"cannot download {found.tarball}: {exc}") from exc
    verify(response.content, found)
    return response.content


def verify(tarball: bytes, found: Release) -> None:
    """``SourceError`` unless the tarball matches the published checksums (and the pinned one)."""
    algorithm, _, expected = found.integrity.partition("-")
    if algorithm != "sha512":
        raise SourceError(f"unsupported integrity {found.integrity!r}: expected a sha512- value")
    actual = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if actual != expected:
        raise SourceError(
            f"{PACKAGE}@{found.version}: SHA-512 sha512-{actual} is not the published {found.integrity}"
        )
    if hashlib.sha1(tarball).hexdigest() != found.shasum:
        raise SourceError(
            f"{PACKAGE}@{found.version}: SHA-1 does not match the published shasum {found.shasum}"
        )
    if found.version == PINNED_VERSION and (found.integrity, found.shasum) != (
        PINNED_INTEGRITY,
        PINNED_SHASUM,
    ):
        raise SourceError(
            f"{PACKAGE}@{found.version}: the registry now publishes {found.integrity}, "
            f"not {PINNED_INTEGRITY} as when it was pinned"
        )


def pinned(tarball_url: str = "") -> Release:
    """The pinned release with the checksums recorded here (to check a tarball got elsewhere)."""
    url = tarball_url or f"{REGISTRY}/{PACKAGE}/-/decoupage-administratif-{PINNED_VERSION}.tgz"
    return Release(PINNED_VERSION, url, PINNED_INTEGRITY, PINNED_SHASUM)


def package_files(tarball: bytes) -> dict[str, Any]:
    """The parsed JSON files of the package's ``data/`` folder, by name (``communes``...)."""
    wanted = {"communes", "epci", "departements", "regions"}
    found: dict[str, Any] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
            for member in archive.getmembers():
                name = member.name.removeprefix("package/")
                stem = name.removeprefix("data/").removesuffix(".json")
                if name == f"data/{stem}.json" and stem in wanted and member.isfile():
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found[stem] = json.load(handle)
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise SourceError(f"not a readable package tarball: {exc}") from exc
    if missing := wanted - set(found):
        raise SourceError(f"the package has no data/{', data/'.join(sorted(missing))}.json")
    return found


def tables(files: dict[str, Any]) -> dict[str, list[tuple[str, ...]]]:
    """Rows of each generated table (header first), from the package's parsed JSON files."""
    try:
        epci_of = {m["code"]: e["code"] for e in files["epci"] for m in e["membres"]}
        communes = sorted(
            (
                c["code"],
                c["nom"],
                c["departement"],
                c["region"],
                str(c["population"]) if c.get("population") is not None else "",
                epci_of.get(c["code"], ""),
            )
            for c in files["communes"]
            if c["type"] == "commune-actuelle"
        )
        epci = sorted((e["code"], e["nom"], e["type"]) for e in files["epci"])
        departements = sorted((d["code"], d["nom"], d["region"]) for d in files["departements"])
        regions = sorted((r["code"], r["nom"]) for r in files["regions"])
    except (KeyError, TypeError) as exc:
        raise SourceError(f"unexpected format of the package's JSON files: missing {exc}") from exc
    current = {row[0] for row in communes}
    if stray := sorted(set(epci_of) - current):
        raise SourceError(f"EPCI members that are not current communes: {', '.join(stray[:5])}")
    return {
        COMMUNES_FILE: [COMMUNE_COLUMNS, *communes],
        EPCI_FILE: [EPCI_COLUMNS, *epci],
        DEPARTEMENTS_FILE: [DEPARTEMENT_COLUMNS, *departements],
        REGIONS_FILE: [REGION_COLUMNS, *regions],
    }


def write_tables(tarball: bytes, found: Release, out: Path) -> dict[str, int]:
    """Generate the tables of a verified tarball into ``out``; the number of rows of each."""
    generated = tables(package_files(tarball))
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for name, rows in generated.items():
        data = _csv(rows).encode("utf-8")
        # mtime=0: the same package always gives the same bytes, so a refresh shows no diff.
        (out / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
        counts[name] = len(rows) - 1
    source = {
        "package": PACKAGE,
        "version": found.version,
        "tarball": found.tarball,
        "integrity": found.integrity,
        "shasum": found.shasum,
        "license": LICENSE,
        "rows": counts,
    }
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return counts


def _csv(rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()
