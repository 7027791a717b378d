"""The official territory tables: generated from a real-format extract, and the committed ones."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from sensors.territory import Territory, TerritoryError, official
from sensors.territory_source import PINNED_VERSION, Release, SourceError, pinned, verify
from smartcity.cli import main

EXTRACT = Path(__file__).parent / "data" / "decoupage"
"""A small extract of @etalab/decoupage-administratif 6.0.0's data/*.json, records unchanged."""
GPSEO = "200059889"


def package_tarball(source: Path = EXTRACT, *, drop: str = "") -> bytes:
    """A tarball laid out as the npm package (``package/data/*.json``)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(source.glob("*.json")):
            if path.stem != drop:
                archive.add(path, arcname=f"package/data/{path.name}")
    return buffer.getvalue()


def checksums(tarball: bytes, version: str = "6.0.0-extract") -> Release:
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    return Release(version, "extract.tgz", integrity, hashlib.sha1(tarball).hexdigest())


def refresh(
    tmp_path: Path, tarball: bytes, found: Release, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    path = tmp_path / "package.tgz"
    path.write_bytes(tarball)
    code = main(
        [
            "registry",
            "refresh",
            "--tarball",
            str(path),
            "--version",
            found.version,
            "--integrity",
            found.integrity,
            "--shasum",
            found.shasum,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_refresh_generates_the_tables_from_the_package_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tarball = package_tarball()
    code, output = refresh(tmp_path, tarball, checksums(tarball), capsys)
    assert code == 0, output
    territory = Territory.load(tmp_path / "out")
    raw = json.loads((EXTRACT / "communes.json").read_text("utf-8"))
    current = [c for c in raw if c["type"] == "commune-actuelle"]
    # Delegated communes and municipal arrondissements are not communes one grants rights on.
    assert len(territory) == len(current) < len(raw)
    assert territory.commune("78158") is None and territory.commune("13201") is None
    poissy = territory.commune("78498")
    assert poissy is not None
    assert (poissy.name, poissy.departement, poissy.region, poissy.epci) == ("Poissy", "78", "11", GPSEO)
    assert poissy.population == next(c["population"] for c in raw if c["code"] == "78498")
    gpseo = territory.epci(GPSEO)
    assert gpseo is not None and gpseo.name == "CU Grand Paris Seine et Oise" and gpseo.kind == "CU"
    members = json.loads((EXTRACT / "epci.json").read_text("utf-8"))
    assert set(gpseo.members) == {m["code"] for e in members if e["code"] == GPSEO for m in e["membres"]}
    assert {"78498", "78005", "78015", "78172", "78672"} <= set(gpseo.members)
    # An island commune belongs to no EPCI; it is still in its département.
    brehat = territory.commune("22016")
    assert brehat is not None and brehat.epci is None
    departement = territory.departement("22")
    assert departement is not None and "22016" in departement.communes
    assert (
        territory.version == "6.0.0-extract" and territory.source["integrity"] == checksums(tarball).integrity
    )


def test_refresh_is_reproducible_byte_for_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tarball = package_tarball()
    refresh(tmp_path, tarball, checksums(tarball), capsys)
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    refresh(tmp_path, tarball, checksums(tarball), capsys)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == first


def test_a_tarball_that_is_not_the_published_one_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tarball = package_tarball()
    published = checksums(tarball)
    tampered = package_tarball(drop="regions")
    code, output = refresh(tmp_path, tampered, published, capsys)
    assert code == 1 and "is not the published" in output
    assert not (tmp_path / "out").exists()
    # A local copy of the pinned version is held to the checksums recorded in the code.
    with pytest.raises(SourceError, match="is not the published"):
        verify(tarball, pinned())
    with pytest.raises(SourceError, match=r"not .* as when it was pinned"):
        verify(tarball, checksums(tarball, PINNED_VERSION))


def test_a_package_without_a_data_file_is_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tarball = package_tarball(drop="epci")
    code, output = refresh(tmp_path, tarball, checksums(tarball), capsys)
    assert code == 1 and "has no data/epci.json" in output


def test_committed_tables_are_the_whole_pinned_release() -> None:
    territory = official()
    assert territory.version == PINNED_VERSION
    assert territory.source["integrity"] == pinned().integrity
    # The figures the issue quotes for this release.
    assert len(territory) == 34969 and len(territory.all_epci()) == 1255
    gpseo = territory.epci(GPSEO)
    assert gpseo is not None and len(gpseo.members) == 73
    yvelines = territory.departement("78")
    assert yvelines is not None and yvelines.name == "Yvelines"
    assert all(territory.commune(code).departement == "78" for code in yvelines.communes)  # type: ignore[union-attr]
    rows = territory.source["rows"]
    assert isinstance(rows, dict) and rows["communes.csv.gz"] == len(territory)


def test_missing_tables_name_the_refresh_command(tmp_path: Path) -> None:
    (tmp_path / "communes.csv.gz").write_bytes(gzip.compress(b"insee\n"))
    with pytest.raises(TerritoryError, match="expected columns"):
        Territory.load(tmp_path)
    with pytest.raises(TerritoryError, match="smartcity registry refresh"):
        Territory.load(tmp_path / "absent")


def test_find_prints_the_siren_of_an_epci(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["registry", "find", "nowhere at all"]) == 1
    # Case, accents and hyphens are ignored: the official name writes "Seine et Oise".
    assert main(["registry", "find", "grand paris seine-et-oise"]) == 0
    assert f"epci\t{GPSEO}\tCU Grand Paris Seine et Oise" in capsys.readouterr().out
    assert main(["registry", "find", "acheres"]) == 0
    assert "commune\t78005\tAchères\t78\tEPCI 200059889" in capsys.readouterr().out
