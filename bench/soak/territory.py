"""The communes a soak's fleet spreads over: the registry's nine by default, or ``--communes N``
communes of Yvelines and Hauts-de-Seine, as a fleet of that size would be.

Devices per commune is what a commune page, its status table and its alert scopes pay for; a
knee step of 40,000 devices over nine communes puts 4,400 devices on one page, which no commune
has. With ``--communes`` the harness writes a registry of the registry's nine and then the
other communes of départements 78 and 92 in INSEE order (official names,
``sensors.territory``), and every process of the run, platform and harness, reads it
(``SMARTCITY_COMMUNES_FILE``). The official data has no coordinates: the nine keep theirs, the
others get a point near their département's centre (the soak draws no map).
"""

from __future__ import annotations

import csv
import io
import zlib
from pathlib import Path

from sensors.communes import CommuneRegistry
from sensors.territory import official

DEPARTEMENTS = ("78", "92")
CENTRES = {"78": (48.80, 1.90), "92": (48.85, 2.25)}
"""Rough centres of the départements (latitude, longitude)."""


class TerritoryTooSmall(ValueError):
    """More communes asked than the soak's départements hold."""


def available() -> int:
    """Communes of the soak's départements."""
    return len([c for c in official().communes() if c.departement in DEPARTEMENTS])


def registry_text(count: int) -> str:
    """A commune registry CSV of ``count`` communes: the shipped registry's first, then the rest
    of the départements in INSEE order."""
    shipped = CommuneRegistry.load()
    others = sorted(
        (c for c in official().communes() if c.departement in DEPARTEMENTS and c.insee not in shipped),
        key=lambda c: c.insee,
    )
    if count > len(shipped.codes) + len(others):
        raise TerritoryTooSmall(
            f"--communes {count}: départements {' and '.join(DEPARTEMENTS)} have "
            f"{len(shipped.codes) + len(others)} communes"
        )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["insee", "name", "latitude", "longitude"])
    for commune in list(shipped)[:count]:
        writer.writerow([commune.insee, commune.name, commune.latitude, commune.longitude])
    for other in others[: max(0, count - len(shipped.codes))]:
        latitude, longitude = CENTRES[other.departement]
        # A fixed offset per commune, within about 15 km of the centre.
        jitter = zlib.crc32(other.insee.encode())
        writer.writerow(
            [
                other.insee,
                other.name,
                f"{latitude + ((jitter & 0xFFFF) / 0xFFFF - 0.5) * 0.2:.4f}",
                f"{longitude + ((jitter >> 16) / 0xFFFF - 0.5) * 0.3:.4f}",
            ]
        )
    return out.getvalue()


def write_registry(path: Path, count: int) -> Path:
    """Write ``registry_text(count)`` to ``path`` (checked by loading it back) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(registry_text(count), "utf-8")
    CommuneRegistry.load(path)
    return path


def soak_codes(path: Path | None) -> list[str]:
    """The INSEE codes of a run: those of the registry at ``path``, or of the shipped one."""
    return sorted(CommuneRegistry.load(path).codes)
