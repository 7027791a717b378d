"""The commune registry: the served communes over the official data, clear errors for a bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensors.communes import CommuneRegistry, RegistryError
from sensors.territory import official

BRIEF_COMMUNES = {
    "78498": "Poissy",
    "78160": "Chevreuse",
    "78321": "Jouars-Pontchartrain",
    "78672": "Villennes-sur-Seine",
    "78172": "Conflans-Sainte-Honorine",
    "78005": "Achères",
    "78015": "Andrésy",
    "92049": "Montrouge",
    "92012": "Boulogne-Billancourt",
}
GPSEO = "200059889"
HEADER = "insee,name,latitude,longitude"


def test_shipped_registry_has_the_communes_of_the_brief() -> None:
    registry = CommuneRegistry.load()
    assert registry.codes == list(BRIEF_COMMUNES)
    for insee, name in BRIEF_COMMUNES.items():
        commune = registry[insee]
        assert commune.name == name
        assert commune.department == insee[:2] and commune.region == "11"
        # Every one of them lies in Île-de-France, west of Paris.
        assert 48.6 < commune.latitude < 49.1 and 1.8 < commune.longitude < 2.4, commune
        # Populations come from the official data, never from the operator's file.
        assert commune.population == official().commune(insee).population  # type: ignore[union-attr]
        assert commune.population is not None and commune.population > 1000


def test_five_of_the_nine_belong_to_grand_paris_seine_et_oise() -> None:
    registry = CommuneRegistry.load()
    members = {c.name for c in registry if c.epci == GPSEO}
    assert members == {"Poissy", "Achères", "Andrésy", "Conflans-Sainte-Honorine", "Villennes-sur-Seine"}


def test_lookup_of_an_unknown_commune() -> None:
    registry = CommuneRegistry.load()
    assert "75056" not in registry and registry.get("75056") is None
    with pytest.raises(KeyError, match="75056"):
        registry["75056"]


def test_operators_add_served_communes_with_their_coordinates(tmp_path: Path) -> None:
    path = tmp_path / "communes.csv"
    path.write_text(
        f"# served communes\n{HEADER},department,population\n78498,Poissy,48.929,2.0457,,\n"
        "2A004,,41.9267,8.7369,2A,\n",
        "utf-8",
    )
    registry = CommuneRegistry.load(path)
    assert registry.codes == ["78498", "2A004"]
    ajaccio = registry["2A004"]
    assert (ajaccio.name, ajaccio.department, ajaccio.region) == ("Ajaccio", "2A", "94")
    assert ajaccio.population == official().commune("2A004").population  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("7849,Poissy,48.9,2.0", "insee '7849' is not an INSEE commune code"),
        ("78999,Poissy,48.9,2.0", "78999 is not a current commune of the official administrative division"),
        ("78498,Poissy,north,2.0", "latitude/longitude must be numbers"),
        ("78498,Poissy,98.9,2.0", "coordinates out of range"),
        ("78498,Poisy,48.9,2.0", "name 'Poisy' is not the official 'Poissy' of commune 78498"),
    ],
)
def test_bad_row_names_the_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "communes.csv"
    path.write_text(
        f"# a comment line keeps the line numbers right\n{HEADER}\n78160,,48.7067,2.0383\n{row}\n", "utf-8"
    )
    with pytest.raises(RegistryError) as caught:
        CommuneRegistry.load(path)
    assert f"{path}:4" in str(caught.value)
    assert message in str(caught.value)


def test_an_invented_population_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "communes.csv"
    path.write_text("insee,latitude,longitude,population\n2A004,41.9267,8.7369,70000\n", "utf-8")
    with pytest.raises(RegistryError, match="population '70000' is not the official"):
        CommuneRegistry.load(path)


def test_missing_column_duplicate_and_unreadable_file(tmp_path: Path) -> None:
    no_longitude = tmp_path / "a.csv"
    no_longitude.write_text("insee,name,latitude\n78498,Poissy,48.9\n", "utf-8")
    with pytest.raises(RegistryError, match="missing column\\(s\\) longitude"):
        CommuneRegistry.load(no_longitude)

    twice = tmp_path / "b.csv"
    twice.write_text(f"{HEADER}\n78498,Poissy,48.9,2.0\n78498,Poissy,48.9,2.0\n", "utf-8")
    with pytest.raises(RegistryError, match="78498 is listed twice"):
        CommuneRegistry.load(twice)

    with pytest.raises(RegistryError, match="cannot read commune registry"):
        CommuneRegistry.load(tmp_path / "absent.csv")
