"""Every family decodes in every payload form the contract accepts, with typed values."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from sensors.families import FamilySpec
from sensors.readings import Reading
from tests.decoder_fixtures import (
    FIWARE_SPECS,
    INSEE,
    NOW_NS,
    SPECS,
    encode,
    iso,
    make_decoder,
    normalized_entity,
    sample_fields,
    topic,
)

MINUTE_NS = 60 * 1_000_000_000
OBSERVED_NS = NOW_NS - 10 * MINUTE_NS


def _assert_typed(spec: FamilySpec, reading: Reading, expected: Mapping[str, object]) -> None:
    assert reading.fields == expected
    for name, value in reading.fields.items():
        field = spec.field(name)
        assert field is not None
        python_type = {"float": float, "int": int, "bool": bool, "enum": str}[field.kind]
        assert type(value) is python_type, f"{name} decoded as {type(value).__name__}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.family.value)
def test_native_single_reading(spec: FamilySpec) -> None:
    values = sample_fields(spec)
    payload = encode({"ts": iso(OBSERVED_NS), **values})

    decoded = make_decoder().decode(topic(spec.family.value, "dev-7"), payload)

    assert decoded.ok, decoded.errors
    [reading] = decoded.readings
    assert (reading.insee, reading.family, reading.device_id) == (INSEE, spec.family.value, "dev-7")
    assert reading.time_ns == OBSERVED_NS
    _assert_typed(spec, reading, values)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.family.value)
def test_native_batch_with_epoch_milliseconds(spec: FamilySpec) -> None:
    batch = [
        {"ts": (OBSERVED_NS + i * MINUTE_NS) // 1_000_000, **sample_fields(spec, share)}
        for i, share in enumerate((0.1, 0.5, 0.9))
    ]

    decoded = make_decoder().decode(topic(spec.family.value), encode(batch))

    assert decoded.ok, decoded.errors
    assert [r.time_ns for r in decoded.readings] == [OBSERVED_NS + i * MINUTE_NS for i in range(3)]
    for reading, sent in zip(decoded.readings, batch, strict=True):
        expected = {name: value for name, value in sent.items() if name != "ts"}
        _assert_typed(spec, reading, expected)


@pytest.mark.parametrize("spec", FIWARE_SPECS, ids=lambda spec: spec.family.value)
def test_fiware_key_values(spec: FamilySpec) -> None:
    values = sample_fields(spec)
    entity = {
        "id": f"urn:ngsi-ld:{spec.fiware_type}:dev-1",
        "type": spec.fiware_type,
        "dateObserved": iso(OBSERVED_NS),
        "location": {"type": "Point", "coordinates": [2.0457, 48.929]},
        **values,
    }

    decoded = make_decoder().decode(topic(spec.family.value), encode(entity))

    assert decoded.ok, decoded.errors
    [reading] = decoded.readings
    assert reading.time_ns == OBSERVED_NS
    _assert_typed(spec, reading, values)


@pytest.mark.parametrize("spec", FIWARE_SPECS, ids=lambda spec: spec.family.value)
def test_fiware_normalized_single_and_list(spec: FamilySpec) -> None:
    first, second = sample_fields(spec, 0.2), sample_fields(spec, 0.7)
    entities = [
        normalized_entity(spec, first, iso(OBSERVED_NS)),
        normalized_entity(spec, second, iso(OBSERVED_NS + MINUTE_NS)),
    ]
    decoder = make_decoder()

    single = decoder.decode(topic(spec.family.value), encode(entities[0]))
    batch = decoder.decode(topic(spec.family.value), encode(entities))

    assert single.ok and batch.ok, (single.errors, batch.errors)
    _assert_typed(spec, single.readings[0], first)
    assert [r.time_ns for r in batch.readings] == [OBSERVED_NS, OBSERVED_NS + MINUTE_NS]
    _assert_typed(spec, batch.readings[1], second)


@pytest.mark.parametrize("spec", FIWARE_SPECS, ids=lambda spec: spec.family.value)
def test_interval_date_observed_takes_the_end(spec: FamilySpec) -> None:
    start, end = OBSERVED_NS - 15 * MINUTE_NS, OBSERVED_NS
    values = sample_fields(spec)
    forms = [
        f"{iso(start)}/{iso(end)}",
        f"{iso(start)}/PT15M",
        f"PT15M/{iso(end)}",
    ]
    decoder = make_decoder()
    for interval in forms:
        entity = {"id": "x", "type": spec.fiware_type, "dateObserved": interval, **values}
        normalized = normalized_entity(spec, values, interval)
        for payload in (encode(entity), encode(normalized)):
            decoded = decoder.decode(topic(spec.family.value), payload)
            assert decoded.ok, (interval, decoded.errors)
            assert decoded.readings[0].time_ns == end, interval


def test_date_observed_to_when_no_date_observed() -> None:
    entity = {
        "id": "x",
        "type": "TrafficFlowObserved",
        "dateObservedFrom": iso(OBSERVED_NS - MINUTE_NS),
        "dateObservedTo": iso(OBSERVED_NS),
        "intensity": 12,
    }
    decoded = make_decoder().decode(topic("traffic"), encode(entity))
    assert decoded.ok, decoded.errors
    assert decoded.readings[0].time_ns == OBSERVED_NS


def test_rfc3339_offsets_and_nanoseconds() -> None:
    decoder = make_decoder()
    cases = {
        "2025-06-01T13:30:00+02:00": NOW_NS - 30 * MINUTE_NS,
        "2025-06-01T11:30:00.123456789Z": NOW_NS - 30 * MINUTE_NS + 123_456_789,
        "2025-06-01T11:30:00.5z": NOW_NS - 30 * MINUTE_NS + 500_000_000,
        "2025-06-01T09:30:00-02:00": NOW_NS - 30 * MINUTE_NS,
    }
    for ts, expected in cases.items():
        decoded = decoder.decode(topic("air_quality"), encode({"ts": ts, "pm25": 5}))
        assert decoded.ok, (ts, decoded.errors)
        assert decoded.readings[0].time_ns == expected, ts


def test_fractional_epoch_milliseconds_keep_microseconds() -> None:
    ms = OBSERVED_NS // 1_000_000
    decoded = make_decoder().decode(topic("air_quality"), encode({"ts": ms + 0.25, "pm25": 5}))
    assert decoded.readings[0].time_ns == OBSERVED_NS + 250_000


def test_unit_conversions_to_the_contract_units() -> None:
    def attribute(value: float, code: str) -> dict[str, object]:
        return {"type": "Number", "value": value, "metadata": {"unitCode": {"type": "Text", "value": code}}}

    air = {
        "id": "x",
        "type": "AirQualityObserved",
        "dateObserved": iso(OBSERVED_NS),
        "pm25": attribute(0.0123, "GP"),  # mg/m³ -> µg/m³
        "co": attribute(1500, "GQ"),  # µg/m³ -> mg/m³
        "co2": attribute(450_000, "61"),  # ppb -> ppm (a ratio: exact for any gas)
        "temperature": attribute(68, "FAH"),
        "relativeHumidity": attribute(55, "P1"),  # percent -> 0–1 fraction
    }
    traffic = {
        "id": "y",
        "type": "TrafficFlowObserved",
        "dateObserved": iso(OBSERVED_NS),
        "averageVehicleSpeed": attribute(12.5, "MTS"),  # m/s -> km/h
        "occupancy": attribute(40, "P1"),
        "intensity": attribute(17, "C62"),
    }
    decoder = make_decoder()

    air_decoded = decoder.decode(topic("air_quality"), encode(air))
    traffic_decoded = decoder.decode(topic("traffic"), encode(traffic))

    assert air_decoded.ok and traffic_decoded.ok, (air_decoded.errors, traffic_decoded.errors)
    fields = air_decoded.readings[0].fields
    assert math.isclose(fields["pm25"], 0.0123 * 1000)  # type: ignore[arg-type]
    assert math.isclose(fields["co"], 1500 / 1000)  # type: ignore[arg-type]
    assert math.isclose(fields["co2"], 450_000 / 1000)  # type: ignore[arg-type]
    assert math.isclose(fields["temperature"], (68 - 32) * 5 / 9)  # type: ignore[arg-type]
    assert math.isclose(fields["relativeHumidity"], 55 / 100)  # type: ignore[arg-type]
    traffic_fields = traffic_decoded.readings[0].fields
    assert math.isclose(traffic_fields["averageVehicleSpeed"], 12.5 * 3.6)  # type: ignore[arg-type]
    assert math.isclose(traffic_fields["occupancy"], 40 / 100)  # type: ignore[arg-type]
    assert traffic_fields["intensity"] == 17 and type(traffic_fields["intensity"]) is int


def test_legacy_upper_case_air_quality_names() -> None:
    entity = {
        "id": "x",
        "type": "AirQualityObserved",
        "dateObserved": iso(OBSERVED_NS),
        "NO2": 40,
        "PM2.5": 9,
    }
    decoded = make_decoder().decode(topic("air_quality"), encode(entity))
    assert decoded.ok, decoded.errors
    assert decoded.readings[0].fields == {"no2": 40.0, "pm25": 9.0}


def test_null_field_means_not_measured() -> None:
    decoded = make_decoder().decode(
        topic("air_quality"), encode({"ts": iso(OBSERVED_NS), "pm25": 3, "o3": None})
    )
    assert decoded.ok
    assert decoded.readings[0].fields == {"pm25": 3.0}


def test_integral_float_for_an_int_field_becomes_an_int() -> None:
    decoded = make_decoder().decode(topic("camera"), encode({"ts": iso(OBSERVED_NS), "peopleCount": 12.0}))
    assert decoded.readings[0].fields == {"peopleCount": 12}
    assert type(decoded.readings[0].fields["peopleCount"]) is int


def test_ngsi_ld_style_unit_code_and_date_time() -> None:
    entity = {
        "id": "urn:ngsi-ld:AirQualityObserved:aq-1",
        "type": "AirQualityObserved",
        "dateObserved": {"type": "Property", "value": {"@type": "DateTime", "@value": iso(OBSERVED_NS)}},
        "co": {"type": "Property", "value": 1500, "unitCode": "GQ"},
        "pm25": {"type": "Property", "value": 8.5},
    }
    decoded = make_decoder().decode(topic("air_quality"), encode(entity))
    assert decoded.ok, decoded.errors
    assert decoded.readings[0].time_ns == OBSERVED_NS
    assert decoded.readings[0].fields == {"co": 1500 / 1000, "pm25": 8.5}
