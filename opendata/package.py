"""An export directory as a Frictionless data package: CSV (and Parquet) files, their Table
Schemas, a ``datapackage.json``; validated with the ``frictionless`` library before it replaces
anything in the output directory, so an invalid file is never left where it would be published."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from frictionless import Package

from opendata.schemas import TableSchema

DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class Table:
    """One exported table: its file name (without extension), schema and rows."""

    path: str
    schema: TableSchema
    frame: pl.DataFrame
    parquet: bool = False


class InvalidExport(ValueError):
    """The files do not conform to their schemas; nothing was written to the output directory."""


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    """CSV as the national schemas ask: UTF-8, comma, ISO 8601 UTC date-times, empty for null."""
    frame.write_csv(path, datetime_format=DATETIME_FORMAT, date_format="%Y-%m-%d", null_value="")


def descriptor(name: str, tables: list[Table]) -> dict[str, object]:
    """The ``datapackage.json`` of the CSV files (Parquet copies are beside them, same rows)."""
    return {
        "name": name,
        "profile": "tabular-data-package",
        "resources": [
            {
                "name": table.path.replace("/", "-"),
                "path": f"{table.path}.csv",
                "profile": "tabular-data-resource",
                "format": "csv",
                "mediatype": "text/csv",
                "encoding": "utf-8",
                "schema": table.schema.relative_path,
            }
            for table in tables
        ],
    }


def validate(directory: Path) -> list[str]:
    """Every error ``frictionless`` finds in the package of ``directory``, one line each."""
    report = Package(str(directory / "datapackage.json"), basepath=str(directory)).validate()
    if report.valid:
        return []
    errors: list[str] = []
    for task in report.tasks:
        errors += [f"{task.name}: {error.message}" for error in task.errors]
    errors += [error.message for error in report.errors]
    return errors


def write_package(out: Path, name: str, tables: list[Table]) -> list[Path]:
    """Write ``tables`` into ``out`` once they validate; return the files written.

    Files are written to a staging directory inside ``out`` and moved into place only when the
    whole package is valid; on an error ``out`` keeps what it had and ``InvalidExport`` lists
    every problem.
    """
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        written: list[Path] = []
        for table in tables:
            target = staging / f"{table.path}.csv"
            target.parent.mkdir(parents=True, exist_ok=True)
            write_csv(table.frame, target)
            written.append(target)
            if table.parquet:
                table.frame.write_parquet(staging / f"{table.path}.parquet")
                written.append(staging / f"{table.path}.parquet")
            schema_file = staging / table.schema.relative_path
            if not schema_file.exists():
                schema_file.parent.mkdir(parents=True, exist_ok=True)
                schema_file.write_text(table.schema.text(), "utf-8")
                written.append(schema_file)
        (staging / "datapackage.json").write_text(
            json.dumps(descriptor(name, tables), ensure_ascii=False, indent=2) + "\n", "utf-8"
        )
        written.append(staging / "datapackage.json")
        errors = validate(staging)
        if errors:
            raise InvalidExport("the export does not conform to its schemas:\n  " + "\n  ".join(errors))
        final: list[Path] = []
        for path in written:
            target = out / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
