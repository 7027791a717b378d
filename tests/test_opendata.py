"""``smartcity opendata export``: files in their schemas (checked with frictionless), counts that
match the store, camera counts never finer than the hour, excluded data never published."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import frictionless
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import opendata
from opendata.schemas import AIR_QUALITY_HOURLY, ATMO_DAILY, CAMERA_PEOPLE_HOURLY, CHANNEL, MEASURE, SITE
from processing.aggregates import aggregate
from processing.indices.camera import camera_hourly
from sensors.families import family_spec
from smartcity.cli import main
from storage.base import TIME, Store
from storage.duckdb_store import DuckDBStore
from tests.dashboard_fixtures import aggregate_frame, atmo_frame
from tests.servers import Influxd
from tests.storage_fixtures import open_influx, shared_influxd

__all__ = ["shared_influxd"]

COMMUNES = ("78498", "92012", "78160")
START = datetime(2026, 3, 2, tzinfo=UTC)
END = START + timedelta(days=2)
DEVICES = 2


def minute_readings(prefix: str, communes: tuple[str, ...], start: datetime, end: datetime) -> pl.DataFrame:
    """Keys and times of raw readings every minute of ``DEVICES`` devices per commune."""
    times = pl.datetime_range(start, end - timedelta(minutes=1), "1m", eager=True, time_zone="UTC")
    keys = pl.DataFrame(
        {
            "insee": [c for c in communes for _ in range(DEVICES)],
            "device_id": [f"{prefix}-{c}-{n}" for c in communes for n in range(DEVICES)],
        }
    )
    return keys.join(times.cast(pl.Datetime("ns", "UTC")).alias(TIME).to_frame(), how="cross")


def traffic_readings(communes: tuple[str, ...], start: datetime, end: datetime) -> pl.DataFrame:
    """Raw traffic readings every minute: vehicles counted since the previous reading."""
    frame = minute_readings("tra", communes, start, end)
    rng = np.random.default_rng(4)
    return frame.with_columns(
        pl.Series("intensity", rng.integers(0, 40, frame.height), dtype=pl.Int64),
        pl.Series("averageVehicleSpeed", rng.uniform(10, 60, frame.height)),
        pl.Series("occupancy", rng.uniform(0, 0.5, frame.height)),
    )


def camera_readings(communes: tuple[str, ...], start: datetime, end: datetime) -> pl.DataFrame:
    """Raw camera readings every minute with integer people counts."""
    frame = minute_readings("cam", communes, start, end)
    rng = np.random.default_rng(5)
    return frame.with_columns(
        pl.Series("peopleCount", rng.integers(0, 30, frame.height), dtype=pl.Int64),
        pl.lit(0, dtype=pl.Int64).alias("elevatedTemperatureCount"),
        pl.lit(True).alias("online"),
        pl.lit(False).alias("tampered"),
        pl.lit(25.0).alias("framesPerSecond"),
        pl.lit(30.0).alias("deviceTemperature"),
    )


def fill(store: Store) -> dict[str, pl.DataFrame]:
    """The measurements the export reads, as processing writes them; returns what was written."""
    traffic = traffic_readings(COMMUNES, START, END)
    written = {
        "traffic_1h": aggregate(traffic, "traffic", "1h"),
        # Sensors without CO: the store then has no co_* column at all.
        "air_quality_1h": aggregate_frame(
            "air_quality", "1h", COMMUNES, START, END, devices_per_commune=DEVICES
        ).select(pl.exclude("^co_.*$")),
        "camera": camera_readings(COMMUNES, START, END),
    }
    written["camera_hourly"] = camera_hourly(written["camera"])
    written["traffic"] = traffic
    written["atmo_daily"] = atmo_frame(COMMUNES, [START + timedelta(hours=23), START + timedelta(hours=47)])
    for name, frame in written.items():
        tags = ["insee"] if name == "atmo_daily" else ["insee", "device_id"]
        store.write(name, frame, tags=tags)
    return written


def write_sites(path: Path, unplaced: str = "") -> Path:
    """A sites file placing every traffic counter but ``unplaced``."""
    lines = ["insee,device_id,site_id,site_name,latitude,longitude"]
    for index, code in enumerate(COMMUNES):
        for n in range(DEVICES):
            device = f"tra-{code}-{n}"
            if device != unplaced:
                lines.append(
                    f"{code},{device},S-{code},Carrefour {code},{48.8 + index / 100},{2.0 + n / 1000}"
                )
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def run_export(tmp_path: Path, store_path: Path, out: Path, **opendata: object) -> int:
    """Run the command as an operator would, with a settings file."""
    config = tmp_path / "smartcity.toml"
    lines = ["[store]", 'backend = "duckdb"', "[store.duckdb]", f'path = "{store_path}"', "[opendata]"]
    for key, value in opendata.items():
        rendered = f'"{value}"' if isinstance(value, str | Path) else repr(value).replace("'", '"')
        lines.append(f"{key} = {rendered}")
    config.write_text("\n".join(lines) + "\n", "utf-8")
    return main(
        [
            "--config",
            str(config),
            "opendata",
            "export",
            "--from",
            START.isoformat(),
            "--to",
            END.isoformat(),
            "--out",
            str(out),
        ]
    )


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[tuple[Path, dict[str, pl.DataFrame]]]:
    path = tmp_path / "store.duckdb"
    store = DuckDBStore(path)
    try:
        written = fill(store)
    finally:
        store.close()
    yield path, written


SCHEMA_OF = {
    "comptage-mobilites/site.csv": SITE,
    "comptage-mobilites/channel.csv": CHANNEL,
    "comptage-mobilites/measure.csv": MEASURE,
    "air-quality-hourly.csv": AIR_QUALITY_HOURLY,
    "atmo-daily.csv": ATMO_DAILY,
    "camera-people-hourly.csv": CAMERA_PEOPLE_HOURLY,
}


def assert_valid(out: Path) -> None:
    """Every CSV of ``out`` is in the package and valid against the schema shipped in the repo,
    checked by frictionless itself (not through the export's own code)."""
    csvs = sorted(str(p.relative_to(out)) for p in out.rglob("*.csv"))
    assert csvs and set(csvs) <= set(SCHEMA_OF), csvs
    for name in csvs:
        schema = frictionless.Schema.from_descriptor(SCHEMA_OF[name].descriptor())
        report = frictionless.Resource(path=name, basepath=str(out), schema=schema).validate()
        assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])
    package = json.loads((out / "datapackage.json").read_text("utf-8"))
    assert sorted(r["path"] for r in package["resources"]) == csvs
    assert frictionless.Package(str(out / "datapackage.json")).validate().valid


def read_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema_length=None, try_parse_dates=True)


def test_export_validates_and_matches_the_store(
    tmp_path: Path, filled: tuple[Path, dict[str, pl.DataFrame]]
) -> None:
    store_path, written = filled
    out = tmp_path / "out"
    sites = write_sites(tmp_path / "sites.csv", unplaced="tra-78160-1")
    assert run_export(tmp_path, store_path, out, sites_file=sites, publisher="Commune de Poissy") == 0

    assert_valid(out)
    # Traffic: one measure per placed counter and hour, the vehicles its readings counted.
    measures = read_csv(out / "comptage-mobilites/measure.csv")
    vehicles = (
        written["traffic"]
        .filter(pl.col("device_id") != "tra-78160-1")
        .group_by(
            (pl.col("insee") + "/" + pl.col("device_id")).alias("channel_id"),
            pl.col(TIME).dt.truncate("1h").alias("start_datetime"),
        )
        .agg(pl.col("intensity").sum().alias("count"))
        .sort("channel_id", "start_datetime")
    )
    assert measures.height == vehicles.height == 5 * 48
    assert measures.select("channel_id", "start_datetime", "count").equals(vehicles)
    assert "78160/tra-78160-1" not in measures["channel_id"].to_list()
    assert set(measures["channel_id"]) == set(read_csv(out / "comptage-mobilites/channel.csv")["channel_id"])
    channels = read_csv(out / "comptage-mobilites/channel.csv")
    site_rows = read_csv(out / "comptage-mobilites/site.csv")
    assert set(channels["site_id"]) == set(site_rows["site_id"]) == {f"S-{c}" for c in COMMUNES}
    assert set(channels["data_provider_name"]) == {"Commune de Poissy"}
    assert ((measures["end_datetime"] - measures["start_datetime"]) == timedelta(hours=1)).all()

    # CSV and Parquet hold the same rows; Parquet columns have the schema's types.
    for name in ("air-quality-hourly", "atmo-daily", "camera-people-hourly"):
        parquet = pl.read_parquet(out / f"{name}.parquet")
        assert parquet.schema == SCHEMA_OF[f"{name}.csv"].conform(parquet.clear()).schema
        csv = pl.read_csv(out / f"{name}.csv", schema=parquet.schema)
        assert_frame_equal(csv, parquet, check_exact=False, rel_tol=1e-12)

    # Air quality: every device-hour; a field never measured is empty with a count of 0.
    air = pl.read_parquet(out / "air-quality-hourly.parquet")
    assert air.height == written["air_quality_1h"].height
    assert air["co_mean"].is_null().all() and (air["co_count"] == 0).all()
    assert (
        air["pm25_count"].to_list()
        == written["air_quality_1h"].sort("insee", "device_id", TIME)["pm25_count"].to_list()
    )

    # ATMO: one row per commune and Paris day, the day as a date.
    atmo = pl.read_parquet(out / "atmo-daily.parquet")
    assert atmo.height == len(COMMUNES) * 2
    assert sorted(set(atmo["date"].cast(pl.String))) == ["2026-03-03", "2026-03-04"]

    # Camera: hourly rows only, summing every minute's count; the commune level is not exported.
    camera = pl.read_parquet(out / "camera-people-hourly.parquet")
    assert (camera["start_datetime"].dt.minute() == 0).all()
    assert ((camera["end_datetime"] - camera["start_datetime"]) == timedelta(hours=1)).all()
    assert camera.height == len(COMMUNES) * DEVICES * 48
    assert camera["people"].sum() == written["camera"]["peopleCount"].sum()
    assert "_commune" not in camera["device_id"].to_list()


def test_excluded_communes_and_devices_never_appear(
    tmp_path: Path, filled: tuple[Path, dict[str, pl.DataFrame]]
) -> None:
    store_path, _ = filled
    out = tmp_path / "out"
    sites = write_sites(tmp_path / "sites.csv")
    code = run_export(
        tmp_path,
        store_path,
        out,
        sites_file=sites,
        exclude_communes=["92012"],
        exclude_devices=["78498/air-78498-1", "cam-78160-0"],
    )
    assert code == 0
    assert_valid(out)
    texts = {p: p.read_text("utf-8") for p in out.rglob("*.csv")}
    for path, text in texts.items():
        for secret in ("92012", "air-78498-1", "cam-78160-0"):
            assert secret not in text, (path, secret)
    for path in out.rglob("*.parquet"):
        frame = pl.read_parquet(path)
        assert "92012" not in frame["insee"].to_list()
        if "device_id" in frame.columns:
            assert not set(frame["device_id"]) & {"air-78498-1", "cam-78160-0"}
    # Poissy's ATMO index is computed over its excluded station: withheld; Chevreuse's is not.
    atmo = read_csv(out / "atmo-daily.csv")
    assert set(atmo["insee"].cast(pl.String).str.zfill(5)) == {"78160"}
    # What remains is still published: the other devices of the same communes.
    camera = read_csv(out / "camera-people-hourly.csv")
    assert "cam-78160-1" in camera["device_id"].to_list()


def test_an_invalid_table_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "store.duckdb"
    store = DuckDBStore(path)
    try:
        store.write(
            "atmo_daily",
            pl.DataFrame(
                {TIME: [START], "insee": ["78498"], "index": [9], "complete": [True]},
                schema_overrides={TIME: pl.Datetime("ns", "UTC")},
            ),
            tags=["insee"],
        )
    finally:
        store.close()
    out = tmp_path / "out"
    out.mkdir()
    (out / "previous.txt").write_text("kept", "utf-8")
    assert run_export(tmp_path, path, out) == 1
    error = capsys.readouterr().err
    assert "does not conform" in error and "atmo-daily" in error, error
    assert sorted(p.name for p in out.iterdir()) == ["previous.txt"]


def test_a_wrong_sites_file_is_refused_with_its_line(
    tmp_path: Path, filled: tuple[Path, dict[str, pl.DataFrame]], capsys: pytest.CaptureFixture[str]
) -> None:
    sites = tmp_path / "sites.csv"
    sites.write_text(
        "insee,device_id,site_id,site_name,latitude,longitude\n78498,tra-78498-0,S,Poissy,north,2\n"
    )
    assert run_export(tmp_path, filled[0], tmp_path / "out", sites_file=sites) == 1
    assert "line(s) 2" in capsys.readouterr().err


def test_export_from_influxdb(tmp_path: Path, shared_influxd: Influxd) -> None:
    from opendata.config import OpenDataSettings
    from opendata.export import export

    store = open_influx(shared_influxd)
    try:
        written = fill(store)
        report = export(
            store,
            START,
            END,
            tmp_path / "out",
            OpenDataSettings(sites_file=write_sites(tmp_path / "sites.csv"), exclude_communes=["78160"]),
        )
    finally:
        store.close()
    assert_valid(tmp_path / "out")
    assert report.rows["camera-people-hourly"] == 2 * DEVICES * 48
    assert (
        report.rows["comptage-mobilites/measure"]
        == written["traffic_1h"].filter(pl.col("insee") != "78160").height
    )


def test_the_national_schemas_are_the_published_files_unchanged() -> None:
    shipped = Path(opendata.__file__).parent / "schemas/comptage-mobilites-0.2.4"
    source = (shipped / "SOURCE.md").read_text("utf-8")
    for schema in (SITE, CHANNEL, MEASURE):
        digest = hashlib.sha256(schema.text().encode("utf-8")).hexdigest()
        assert f"`{schema.filename}` | `{schema.filename.split('.')[0]}/schema.json` | `{digest}`" in source
        assert schema.descriptor()["version"] == "0.2.4"


def test_the_air_quality_schema_covers_every_field_of_the_contract() -> None:
    spec = family_spec("air_quality")
    assert spec is not None
    names = {field["name"] for field in AIR_QUALITY_HOURLY.descriptor()["fields"]}
    for name in spec.numeric_fields:
        assert {f"{name}_{stat}" for stat in ("mean", "min", "max", "p95", "count")} <= names


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("exclude_communes", ["Poissy"], "not INSEE commune codes: 'Poissy'"),
        ("exclude_devices", ["Poissy/cam-1"], "is neither a device id nor insee/device_id"),
    ],
)
def test_wrong_exclusions_stop_the_command(
    tmp_path: Path, key: str, value: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_export(tmp_path, tmp_path / "store.duckdb", tmp_path / "out", **{key: value}) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_period_without_data_gives_valid_empty_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (
        run_export(tmp_path, tmp_path / "store.duckdb", out, sites_file=write_sites(tmp_path / "s.csv")) == 0
    )
    assert_valid(out)
    header = (out / "comptage-mobilites/measure.csv").read_text("utf-8")
    assert header == "channel_id,counter_id,start_datetime,end_datetime,count\n"
    assert pl.read_parquet(out / "camera-people-hourly.parquet").is_empty()


def test_lorawan_devices_flagged_private_are_excluded_from_exports(tmp_path: Path) -> None:
    from smartcity.commands.opendata import publishable
    from smartcity.settings import Settings
    from tests.lorawan_fixtures import DEVICE_MAP

    text = DEVICE_MAP.read_text("utf-8").replace(
        'device_id = "aq-poissy-gare"\n', 'device_id = "aq-poissy-gare"\nprivate = true\n', 1
    )
    assert "private = true" in text
    device_map = tmp_path / "devices.toml"
    device_map.write_text(text, "utf-8")
    for codec in (DEVICE_MAP.parent / "codecs").iterdir():
        (tmp_path / "codecs").mkdir(exist_ok=True)
        (tmp_path / "codecs" / codec.name).write_text(codec.read_text("utf-8"), "utf-8")
    settings = Settings.model_validate(
        {
            "ingest": {"lorawan": {"device_map": device_map}},
            "opendata": {"exclude_devices": ["92049/tra-92049-0"]},
        }
    )
    assert publishable(settings).exclude_devices == ["92049/tra-92049-0", "78498/aq-poissy-gare"]
    # Without a LoRaWAN input, the settings are used as they are.
    plain = Settings.model_validate({"opendata": {"exclude_devices": ["x"]}})
    assert publishable(plain).exclude_devices == ["x"]
