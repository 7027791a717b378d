"""The Table Schema files every export is written to and validated against."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import polars as pl

COMPTAGE_VERSION = "0.2.4"
"""Version of the national schema "comptage des mobilités" shipped in opendata/schemas/."""
SMARTCITY_VERSION = "1.0"
"""Version of the project's own schemas; see docs/opendata.md for what changes it."""

_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "number": pl.Float64(),
    "integer": pl.Int64(),
    "boolean": pl.Boolean(),
    "datetime": pl.Datetime("ns", "UTC"),
    "date": pl.Date(),
}


@dataclass(frozen=True, slots=True)
class TableSchema:
    """One Table Schema file of the package: where it lives and what it says."""

    directory: str
    filename: str

    @property
    def relative_path(self) -> str:
        """Path of the schema inside the package and inside an export directory."""
        return f"schemas/{self.directory}/{self.filename}"

    def text(self) -> str:
        """The schema file, byte for byte as shipped."""
        return resources.files("opendata").joinpath(self.relative_path).read_text("utf-8")

    def descriptor(self) -> dict[str, Any]:
        """The schema as a JSON object."""
        loaded: dict[str, Any] = json.loads(self.text())
        return loaded

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with exactly the schema's columns, in its order and types (absent ones null)."""
        fields = self.descriptor()["fields"]
        # with_columns, not select: a literal then takes the frame's height, even zero rows.
        return frame.with_columns(
            (pl.col(f["name"]) if f["name"] in frame.columns else pl.lit(None))
            .cast(_TYPES[f["type"]])
            .alias(f["name"])
            for f in fields
        ).select(f["name"] for f in fields)


SITE = TableSchema(f"comptage-mobilites-{COMPTAGE_VERSION}", "site.json")
CHANNEL = TableSchema(f"comptage-mobilites-{COMPTAGE_VERSION}", "channel.json")
MEASURE = TableSchema(f"comptage-mobilites-{COMPTAGE_VERSION}", "measure.json")
AIR_QUALITY_HOURLY = TableSchema(f"smartcity-{SMARTCITY_VERSION}", "air-quality-hourly.json")
ATMO_DAILY = TableSchema(f"smartcity-{SMARTCITY_VERSION}", "atmo-daily.json")
CAMERA_PEOPLE_HOURLY = TableSchema(f"smartcity-{SMARTCITY_VERSION}", "camera-people-hourly.json")
