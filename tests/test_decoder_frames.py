"""readings_to_frames: decoded readings as frames in the store convention."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest

from sensors.families import FAMILIES
from sensors.frames import TAGS, family_schema, readings_to_frames
from sensors.readings import Reading
from tests.decoder_fixtures import NOW_NS, SPECS, encode, iso, make_decoder, sample_fields, topic

KIND_DTYPES = {"float": pl.Float64, "int": pl.Int64, "bool": pl.Boolean, "enum": pl.String}


def test_frame_per_family_with_store_dtypes() -> None:
    decoder = make_decoder()
    readings: list[Reading] = []
    for spec in SPECS:
        decoded = decoder.decode(
            topic(spec.family.value, "d1"), encode({"ts": iso(NOW_NS), **sample_fields(spec)})
        )
        readings.extend(decoded.readings)

    frames = readings_to_frames(readings, received_at_ns=NOW_NS + 5)

    assert set(frames) == {spec.family.value for spec in SPECS}
    for spec in SPECS:
        frame = frames[spec.family.value]
        expected_columns = ["time", *TAGS, *(f.name for f in spec.fields), "received_at"]
        assert frame.columns == expected_columns
        assert frame.schema["time"] == pl.Datetime("ns", "UTC")
        assert frame.schema["insee"] == pl.String and frame.schema["device_id"] == pl.String
        assert frame.schema["received_at"] == pl.Int64
        for field in spec.fields:
            assert frame.schema[field.name] == KIND_DTYPES[field.kind], field.name
        row = frame.row(0, named=True)
        assert row["time"] == datetime.fromtimestamp(NOW_NS // 1_000_000_000, tz=UTC)
        assert row["received_at"] == NOW_NS + 5
        assert {f.name: row[f.name] for f in spec.fields} == sample_fields(spec)


def test_absent_fields_are_null_and_arrival_times_align() -> None:
    readings = [
        Reading("78498", "air_quality", "a", NOW_NS, {"pm25": 3.0}),
        Reading("78498", "traffic", "t", NOW_NS + 1, {"intensity": 4}),
        Reading("92012", "air_quality", "b", NOW_NS + 2, {"no2": 40.0, "co2": 415}),
    ]

    frames = readings_to_frames(readings, received_at_ns=[10, 20, 30])

    air = frames["air_quality"]
    assert air["device_id"].to_list() == ["a", "b"]
    assert air["insee"].to_list() == ["78498", "92012"]
    assert air["pm25"].to_list() == [3.0, None]
    assert air["no2"].to_list() == [None, 40.0]
    assert air["co2"].dtype == pl.Float64 and air["co2"].to_list() == [None, 415.0]
    assert air["received_at"].to_list() == [10, 30]
    assert air["time"].dt.epoch("ns").to_list() == [NOW_NS, NOW_NS + 2]
    assert frames["traffic"]["received_at"].to_list() == [20]
    assert frames["traffic"]["congested"].null_count() == 1


def test_no_readings_no_frames_and_unknown_arrival_is_null() -> None:
    assert readings_to_frames([]) == {}
    frame = readings_to_frames([Reading("78498", "network", "n", NOW_NS, {"linkUp": True})])["network"]
    assert frame["received_at"].to_list() == [None]
    assert frame.schema == family_schema("network")


def test_bad_input_is_refused_clearly() -> None:
    reading = Reading("78498", "air_quality", "a", NOW_NS, {"pm25": 3.0})
    with pytest.raises(ValueError, match="2 values for 1 readings"):
        readings_to_frames([reading], received_at_ns=[1, 2])
    with pytest.raises(ValueError, match="unknown family 'weather'"):
        readings_to_frames([Reading("78498", "weather", "w", NOW_NS, {"wind": 3.0})])


def test_every_family_has_a_schema() -> None:
    for family in FAMILIES:
        assert list(family_schema(family.value))[:3] == ["time", *TAGS]
