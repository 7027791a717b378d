"""The overview map's background: French public vector styles that need no key, or none at all.

- ``plan-ign``: the IGN Géoplateforme's "Plan IGN" vector style (Etalab open licence 2.0,
  credited "© IGN – Plan IGN").
- ``openmaptiles``: Etalab's OpenMapTiles service (OpenStreetMap data, credited
  "© OpenStreetMap contributors" as the service asks, and "© OpenMapTiles").
- ``none``: a plain background, for sites without internet; the communes are still drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Basemap:
    """A MapLibre style (a URL, or the style itself), whom to credit, and the font of its labels.

    ``label_font`` is None when the style serves no glyphs: MapLibre then cannot write text,
    so commune names are left to the tooltip, the text alternative and the table.
    """

    style: str | dict[str, Any]
    attribution: str
    label_font: str | None


PLAIN_STYLE: dict[str, Any] = {
    "version": 8,
    "sources": {},
    "layers": [{"id": "background", "type": "background", "paint": {"background-color": "#F3F4F6"}}],
}
"""A style with no tiles and no glyphs: nothing is fetched from the network."""

BASEMAPS = {
    "plan-ign": Basemap(
        "https://data.geopf.fr/annexes/ressources/vectorTiles/styles/PLAN.IGN/standard.json",
        "© IGN – Plan IGN (Géoplateforme)",
        "Source Sans Pro Regular",
    ),
    "openmaptiles": Basemap(
        "https://openmaptiles.geo.data.gouv.fr/styles/osm-bright/style.json",
        "© OpenStreetMap contributors, © OpenMapTiles (Etalab)",
        "Noto Sans Regular",
    ),
    "none": Basemap(PLAIN_STYLE, "", None),
}


def basemap(name: str, attribution: str = "") -> Basemap:
    """The basemap a setting names; any other value is taken as the URL of a MapLibre style."""
    if name in BASEMAPS:
        return BASEMAPS[name]
    if not name.startswith(("https://", "http://", "/")):
        known = ", ".join(BASEMAPS)
        raise ValueError(f"basemap {name!r}: expected one of {known}, or the URL of a MapLibre style")
    return Basemap(name, attribution, None)
