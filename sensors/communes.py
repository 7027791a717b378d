"""The commune registry: which communes exist, where they are.

The registry is a CSV file that operators extend; no commune is ever hard-coded in the code.
Columns: ``insee,name,department,latitude,longitude,population`` (population may be empty:
it is only given where a verified figure is known).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

INSEE_PATTERN = re.compile(r"^(?:\d{5}|2[AB]\d{3})$")
"""An INSEE commune code: five digits, or 2A/2B followed by three digits for Corsica."""


class RegistryError(ValueError):
    """The commune registry file is malformed; the message names the line and the column."""


@dataclass(frozen=True, slots=True)
class Commune:
    """One commune of the registry."""

    insee: str
    name: str
    department: str
    latitude: float
    longitude: float
    population: int | None = None


class CommuneRegistry:
    """An immutable set of communes indexed by INSEE code."""

    def __init__(self, communes: list[Commune]) -> None:
        self._by_insee: dict[str, Commune] = {}
        for commune in communes:
            if commune.insee in self._by_insee:
                raise RegistryError(f"commune {commune.insee} is listed twice")
            self._by_insee[commune.insee] = commune

    def __contains__(self, insee: object) -> bool:
        return insee in self._by_insee

    def __iter__(self) -> Iterator[Commune]:
        return iter(self._by_insee.values())

    def __len__(self) -> int:
        return len(self._by_insee)

    def get(self, insee: str) -> Commune | None:
        """The commune with this INSEE code, or None."""
        return self._by_insee.get(insee)

    def __getitem__(self, insee: str) -> Commune:
        try:
            return self._by_insee[insee]
        except KeyError:
            raise KeyError(f"unknown commune {insee!r}: not in the registry") from None

    @property
    def codes(self) -> list[str]:
        """INSEE codes in registry order."""
        return list(self._by_insee)

    @classmethod
    def load(cls, path: str | Path | None = None) -> CommuneRegistry:
        """Load a registry CSV; without a path, the one shipped with the package."""
        if path is None:
            text = resources.files("sensors").joinpath("data/communes.csv").read_text("utf-8")
            source = "sensors/data/communes.csv"
        else:
            try:
                text = Path(path).read_text("utf-8")
            except OSError as exc:
                raise RegistryError(f"cannot read commune registry {path}: {exc}") from exc
            source = str(path)
        return cls(list(_parse(text, source)))


def _parse(text: str, source: str) -> Iterator[Commune]:
    reader = csv.DictReader(text.splitlines())
    required = {"insee", "name", "department", "latitude", "longitude"}
    missing = required - set(reader.fieldnames or [])
    if missing:
        raise RegistryError(f"{source}: missing column(s) {', '.join(sorted(missing))}")
    for line_no, row in enumerate(reader, start=2):
        where = f"{source}:{line_no}"
        insee = (row["insee"] or "").strip()
        if not INSEE_PATTERN.match(insee):
            raise RegistryError(f"{where}: insee {insee!r} is not an INSEE commune code")
        try:
            latitude = float(row["latitude"])
            longitude = float(row["longitude"])
        except (TypeError, ValueError):
            raise RegistryError(f"{where}: latitude/longitude must be numbers") from None
        if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
            raise RegistryError(f"{where}: coordinates out of range")
        population_text = (row.get("population") or "").strip()
        try:
            population = int(population_text) if population_text else None
        except ValueError:
            raise RegistryError(f"{where}: population {population_text!r} is not an integer") from None
        name = (row["name"] or "").strip()
        if not name:
            raise RegistryError(f"{where}: name is empty")
        yield Commune(
            insee=insee,
            name=name,
            department=(row["department"] or "").strip(),
            latitude=latitude,
            longitude=longitude,
            population=population,
        )
