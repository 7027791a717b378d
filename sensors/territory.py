"""France's communes, EPCI and départements, from the State's official administrative division.

The tables under ``sensors/data/decoupage/`` are generated from the npm package
``@etalab/decoupage-administratif`` (MIT) by ``smartcity registry refresh``
(``sensors.territory_source``); ``source.json`` there names the version and its checksums. They
hold no coordinates: where a commune lies is the operator's to say, for the communes served only
(``sensors.communes``). Nothing here is typed by hand.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

COMMUNES_FILE = "communes.csv.gz"
EPCI_FILE = "epci.csv"
DEPARTEMENTS_FILE = "departements.csv"
REGIONS_FILE = "regions.csv"
SOURCE_FILE = "source.json"
COMMUNE_COLUMNS = ("insee", "name", "departement", "region", "population", "epci")
EPCI_COLUMNS = ("siren", "name", "kind")
DEPARTEMENT_COLUMNS = ("code", "name", "region")
REGION_COLUMNS = ("code", "name")


class TerritoryError(ValueError):
    """The territory tables are missing or malformed; the message names the file."""


@dataclass(frozen=True, slots=True)
class OfficialCommune:
    """A current commune (``commune-actuelle``) as the official data describes it."""

    insee: str
    name: str
    departement: str
    region: str
    population: int | None
    """Legal municipal population; None where the source gives none."""
    epci: str | None
    """SIREN of the EPCI the commune belongs to (None: none, e.g. island communes)."""


@dataclass(frozen=True, slots=True)
class Epci:
    """An EPCI à fiscalité propre (CC, CA, CU, métropole) and its member communes."""

    siren: str
    name: str
    kind: str
    members: tuple[str, ...]
    """INSEE codes of its member communes, in INSEE order."""


@dataclass(frozen=True, slots=True)
class Departement:
    """A département (or a collectivité d'outre-mer listed as one by the source)."""

    code: str
    name: str
    region: str
    communes: tuple[str, ...]


class Territory:
    """The official communes, EPCI, départements and regions, indexed by code."""

    def __init__(
        self,
        communes: list[list[str]],
        epci: list[list[str]],
        departements: list[list[str]],
        regions: dict[str, str],
        source: dict[str, object],
    ) -> None:
        """From the tables' rows, in the columns of ``COMMUNE_COLUMNS``, ``EPCI_COLUMNS``..."""
        self.source = source
        self.regions = regions
        # Rows are kept as read and made into OfficialCommune when asked: a process reads a few.
        self._communes = {row[0]: row for row in communes}
        members: dict[str, list[str]] = {}
        by_departement: dict[str, list[str]] = {}
        for insee, _name, departement, _region, _population, epci_siren in communes:
            if epci_siren:
                members.setdefault(epci_siren, []).append(insee)
            by_departement.setdefault(departement, []).append(insee)
        self._epci = {
            siren: Epci(siren, name, kind, tuple(sorted(members.get(siren, ()))))
            for siren, name, kind in epci
        }
        self._departements = {
            code: Departement(code, name, region, tuple(sorted(by_departement.get(code, ()))))
            for code, name, region in departements
        }

    def __len__(self) -> int:
        return len(self._communes)

    def commune(self, insee: str) -> OfficialCommune | None:
        """The current commune of this INSEE code, or None."""
        row = self._communes.get(insee)
        return _commune(row) if row is not None else None

    def epci(self, siren: str) -> Epci | None:
        """The EPCI of this SIREN, or None."""
        return self._epci.get(siren)

    def departement(self, code: str) -> Departement | None:
        """The département of this code (``78``, ``2A``, ``974``), or None."""
        return self._departements.get(code)

    def communes(self) -> list[OfficialCommune]:
        """Every current commune, by INSEE code."""
        return [_commune(row) for row in self._communes.values()]

    def all_epci(self) -> list[Epci]:
        """Every EPCI, by SIREN."""
        return list(self._epci.values())

    def all_departements(self) -> list[Departement]:
        """Every département, by code."""
        return list(self._departements.values())

    @property
    def version(self) -> str:
        """The version of the source package the tables were generated from."""
        return str(self.source.get("version", "unknown"))

    @classmethod
    def load(cls, directory: str | Path | None = None) -> Territory:
        """Read the tables of ``directory``; without one, those shipped in ``sensors/data``."""
        root: Traversable | Path = (
            Path(directory) if directory is not None else resources.files("sensors") / "data" / "decoupage"
        )
        communes = _rows(root, COMMUNES_FILE, COMMUNE_COLUMNS)
        epci = _rows(root, EPCI_FILE, EPCI_COLUMNS)
        departements = _rows(root, DEPARTEMENTS_FILE, DEPARTEMENT_COLUMNS)
        regions = {code: name for code, name in _rows(root, REGIONS_FILE, REGION_COLUMNS)}
        try:
            source = json.loads(root.joinpath(SOURCE_FILE).read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise TerritoryError(f"cannot read {root}/{SOURCE_FILE}: {exc}") from exc
        return cls(communes, epci, departements, regions, source)


def _commune(row: list[str]) -> OfficialCommune:
    insee, name, departement, region, population, epci = row
    return OfficialCommune(
        insee, name, departement, region, int(population) if population else None, epci or None
    )


def _rows(root: Traversable | Path, name: str, columns: tuple[str, ...]) -> list[list[str]]:
    try:
        raw = root.joinpath(name).read_bytes()
        text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise TerritoryError(f"cannot read {root}/{name}: {exc} (run `smartcity registry refresh`)") from exc
    header, *rows = list(csv.reader(io.StringIO(text))) or [[]]
    if tuple(header) != columns:
        raise TerritoryError(f"{root}/{name}: expected columns {','.join(columns)}, found {','.join(header)}")
    if bad := next((n for n, row in enumerate(rows, start=2) if len(row) != len(columns)), None):
        raise TerritoryError(f"{root}/{name}:{bad}: expected {len(columns)} columns")
    return rows


@lru_cache(maxsize=1)
def official() -> Territory:
    """The shipped territory tables, read once per process."""
    return Territory.load()
