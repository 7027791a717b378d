"""The commune registry: the shipped communes, and clear errors for a bad registry file."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensors.communes import CommuneRegistry, RegistryError

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
HEADER = "insee,name,department,latitude,longitude,population"


def test_shipped_registry_has_the_communes_of_the_brief() -> None:
    registry = CommuneRegistry.load()
    for insee, name in BRIEF_COMMUNES.items():
        commune = registry[insee]
        assert commune.name == name
        assert commune.department == insee[:2]
        # Every one of them lies in Île-de-France, west of Paris.
        assert 48.6 < commune.latitude < 49.1 and 1.8 < commune.longitude < 2.4, commune


def test_lookup_of_an_unknown_commune() -> None:
    registry = CommuneRegistry.load()
    assert "75056" not in registry and registry.get("75056") is None
    with pytest.raises(KeyError, match="75056"):
        registry["75056"]


def test_operators_extend_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "communes.csv"
    path.write_text(
        f"{HEADER}\n78498,Poissy,78,48.929,2.0457,\n2A004,Ajaccio,2A,41.9267,8.7369,70000\n", "utf-8"
    )
    registry = CommuneRegistry.load(path)
    assert registry.codes == ["78498", "2A004"]
    assert registry["2A004"].population == 70000 and registry["78498"].population is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("7849,Poissy,78,48.9,2.0,", "insee '7849' is not an INSEE commune code"),
        ("78498,Poissy,78,north,2.0,", "latitude/longitude must be numbers"),
        ("78498,Poissy,78,98.9,2.0,", "coordinates out of range"),
        ("78498,Poissy,78,48.9,2.0,many", "population 'many' is not an integer"),
        ("78498,,78,48.9,2.0,", "name is empty"),
    ],
)
def test_bad_row_names_the_file_and_line(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "communes.csv"
    path.write_text(f"{HEADER}\n78160,Chevreuse,78,48.7067,2.0383,\n{row}\n", "utf-8")
    with pytest.raises(RegistryError) as caught:
        CommuneRegistry.load(path)
    assert f"{path}:3" in str(caught.value)
    assert message in str(caught.value)


def test_missing_column_duplicate_and_unreadable_file(tmp_path: Path) -> None:
    no_longitude = tmp_path / "a.csv"
    no_longitude.write_text("insee,name,department,latitude\n78498,Poissy,78,48.9\n", "utf-8")
    with pytest.raises(RegistryError, match="missing column\\(s\\) longitude"):
        CommuneRegistry.load(no_longitude)

    twice = tmp_path / "b.csv"
    twice.write_text(f"{HEADER}\n78498,Poissy,78,48.9,2.0,\n78498,Poissy,78,48.9,2.0,\n", "utf-8")
    with pytest.raises(RegistryError, match="78498 is listed twice"):
        CommuneRegistry.load(twice)

    with pytest.raises(RegistryError, match="cannot read commune registry"):
        CommuneRegistry.load(tmp_path / "absent.csv")
