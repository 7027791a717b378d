"""Bad input gets a precise, stable error, at the smallest granularity: good data survives."""

from __future__ import annotations

import json

import pytest

from sensors.families import CAMERA, FAMILIES, Family
from sensors.readings import FIELD_REASONS, MESSAGE_REASONS, READING_REASONS, Decoded
from tests.decoder_fixtures import INSEE, NOW_NS, encode, iso, make_decoder, sample_fields, topic

MINUTE_NS = 60 * 1_000_000_000
OBSERVED_NS = NOW_NS - 5 * MINUTE_NS
TS = iso(OBSERVED_NS)


def _reasons(decoded: Decoded) -> list[str]:
    return [error.reason for error in decoded.errors]


def _refused_whole(decoded: Decoded, reason: str) -> None:
    assert _reasons(decoded) == [reason], decoded.errors
    assert decoded.readings == []
    assert decoded.refused
    assert decoded.errors[0].level == "message"
    assert decoded.payload_is_private == (reason == "forbidden_field")


def test_truncated_json() -> None:
    payload = encode({"ts": TS, "pm25": 12.5, "pm10": 20})
    for cut in (1, len(payload) // 2, len(payload) - 1):
        decoded = make_decoder().decode(topic("air_quality"), payload[:cut])
        _refused_whole(decoded, "malformed_json")
        assert "not valid JSON" in decoded.errors[0].detail


def test_not_utf8() -> None:
    payload = json.dumps({"ts": TS, "pm25": 1})
    _refused_whole(make_decoder().decode(topic("air_quality"), payload.encode("utf-16")), "not_utf8")


def test_oversized_payload() -> None:
    decoder = make_decoder(max_payload_bytes=100)
    payload = encode([{"ts": TS, "pm25": 1.0}] * 10)
    decoded = decoder.decode(topic("air_quality"), payload)
    _refused_whole(decoded, "oversized")
    assert str(len(payload)) in decoded.errors[0].detail


def test_batch_too_large() -> None:
    decoded = make_decoder(max_batch=3).decode(topic("air_quality"), encode([{"ts": TS, "pm25": 1.0}] * 4))
    _refused_whole(decoded, "batch_too_large")


def test_unknown_family_and_commune_keep_the_topic_parts() -> None:
    decoder = make_decoder()
    payload = encode({"ts": TS, "pm25": 1.0})

    family = decoder.decode(topic("weather"), payload)
    commune = decoder.decode(topic("air_quality", insee="75056"), payload)

    _refused_whole(family, "unknown_family")
    assert "weather" in family.errors[0].detail
    assert (family.insee, family.family, family.device_id) == (INSEE, "weather", "dev-1")
    _refused_whole(commune, "unknown_commune")
    assert "75056" in commune.errors[0].detail and commune.insee == "75056"


@pytest.mark.parametrize(
    "bad_topic",
    [
        "smartcity/v1/78498/air_quality",
        "smartcity/v2/78498/air_quality/x",
        "other/v1/78498/air_quality/x",
        "",
    ],
)
def test_bad_topic(bad_topic: str) -> None:
    decoded = make_decoder().decode(bad_topic, encode({"ts": TS, "pm25": 1.0}))
    _refused_whole(decoded, "bad_topic")
    assert decoded.insee is None


@pytest.mark.parametrize(
    "key", ["image", "Face_Image", "licence-plate".replace("licence", "license"), "SNAPSHOT"]
)
def test_camera_with_a_forbidden_key_is_refused_whole(key: str) -> None:
    good = sample_fields(CAMERA)
    decoded = make_decoder().decode(
        topic("camera"), encode({"ts": TS, **good, key: "data:image/jpeg;base64,AAAA"})
    )
    _refused_whole(decoded, "forbidden_field")
    assert decoded.errors[0].field == key
    assert "AAAA" not in decoded.errors[0].detail


def test_camera_with_a_nested_face_in_a_batch_is_refused_whole() -> None:
    good = sample_fields(CAMERA)
    batch = [
        {"ts": TS, **good},
        {"ts": TS, **good, "analytics": {"detections": [{"box": [1, 2], "face": "..."}]}},
    ]
    decoded = make_decoder().decode(topic("camera"), encode(batch))
    _refused_whole(decoded, "forbidden_field")
    # The allow-list refuses the first key it does not know, however harmless its name.
    assert "[1]/analytics" in decoded.errors[0].detail
    assert decoded.errors[0].field == "analytics"


def test_camera_key_hidden_inside_an_allowed_attribute_is_refused_whole() -> None:
    entity = {
        "type": "CrowdFlowObserved",
        "dateObserved": TS,
        "peopleCount": {"type": "Number", "value": 3, "metadata": {"snapshotUrl": "https://x/1.jpg"}},
        "location": {"type": "Point", "coordinates": [2.1, 48.9]},
    }
    decoded = make_decoder().decode(topic("camera"), encode([entity]))
    _refused_whole(decoded, "forbidden_field")
    assert "[0]/peopleCount/metadata/snapshotUrl" in decoded.errors[0].detail
    assert "https" not in decoded.errors[0].detail


def test_camera_fiware_entity_with_an_image_attribute_is_refused() -> None:
    entity = {
        "id": "cam",
        "type": "CrowdFlowObserved",
        "dateObserved": TS,
        "peopleCount": {"type": "Number", "value": 3},
        "snapshot": {"type": "Text", "value": "base64..."},
    }
    _refused_whole(make_decoder().decode(topic("camera"), encode(entity)), "forbidden_field")


def test_forbidden_keys_only_apply_to_cameras() -> None:
    decoded = make_decoder().decode(topic("air_quality"), encode({"ts": TS, "pm25": 1, "image": "x"}))
    assert _reasons(decoded) == ["unknown_field"]
    assert decoded.readings[0].fields == {"pm25": 1.0}


def test_camera_errors_never_echo_text_values() -> None:
    decoded = make_decoder().decode(
        topic("camera"), encode({"ts": TS, "peopleCount": 3, "online": "Jean Dupont"})
    )
    [error] = decoded.errors
    assert error.reason == "wrong_type" and error.value is None
    assert "Dupont" not in error.detail
    assert decoded.payload_is_private  # a camera payload is never kept, even partly refused


def test_one_bad_reading_among_good_ones() -> None:
    spec = FAMILIES[Family.TRAFFIC]
    good = sample_fields(spec)
    batch = [
        {"ts": iso(OBSERVED_NS), **good},
        {"ts": "yesterday", **good},
        "not an object",
        {"pm25": 3},
        {"ts": iso(OBSERVED_NS + MINUTE_NS), **good},
    ]
    decoded = make_decoder().decode(topic("traffic"), encode(batch))

    assert [r.time_ns for r in decoded.readings] == [OBSERVED_NS, OBSERVED_NS + MINUTE_NS]
    assert all(r.fields == good for r in decoded.readings)
    assert [(e.reason, e.index) for e in decoded.errors] == [
        ("bad_timestamp", 1),
        ("not_an_object", 2),
        ("missing_timestamp", 3),
    ]
    assert not decoded.refused
    assert {e.level for e in decoded.errors} == {"reading"}


def test_field_errors_keep_the_rest_of_the_reading() -> None:
    payload = {"ts": TS, "pm25": "12", "pm10": -4, "no2": 30, "o3": True, "radon": 3, "co": 1e400}
    decoded = make_decoder().decode(
        topic("air_quality"), json.dumps(payload).replace("1e+400", "1e400").encode()
    )

    [reading] = decoded.readings
    assert reading.fields == {"no2": 30.0}
    by_field = {e.field: e for e in decoded.errors}
    assert by_field["pm25"].reason == "wrong_type" and by_field["pm25"].value == "12"
    assert by_field["pm10"].reason == "out_of_bounds" and by_field["pm10"].value == -4
    assert by_field["o3"].reason == "wrong_type"
    assert by_field["radon"].reason == "unknown_field"
    assert by_field["co"].reason == "wrong_type"  # 1e400 parses as infinity
    for error in decoded.errors:
        assert error.level == "field"
        assert error.time_ns == OBSERVED_NS
        assert error.field is not None and error.field in error.detail


def test_out_of_bounds_detail_names_value_unit_and_bounds() -> None:
    decoded = make_decoder().decode(topic("air_quality"), encode({"ts": TS, "relativeHumidity": 65}))
    [error] = [e for e in decoded.errors if e.reason == "out_of_bounds"]
    assert error.field == "relativeHumidity" and error.value == 65
    assert "65" in error.detail and "[0, 1]" in error.detail
    assert _reasons(decoded) == ["out_of_bounds", "empty_reading"]
    assert decoded.readings == []


def test_wrong_kind_per_field_kind() -> None:
    decoder = make_decoder()
    cases: dict[str, dict[str, object]] = {
        "traffic": {"intensity": 3.5, "congested": "yes", "laneId": True},
        "building": {"hvacMode": "turbo", "occupancy": "many"},
    }
    expected = {
        "intensity": "wrong_type",
        "congested": "wrong_type",
        "laneId": "wrong_type",
        "hvacMode": "invalid_choice",
        "occupancy": "wrong_type",
    }
    for family, fields in cases.items():
        decoded = decoder.decode(topic(family), encode({"ts": TS, **fields}))
        assert decoded.readings == []
        for error in decoded.errors:
            if error.field is not None:
                assert error.reason == expected[error.field], error


def test_timestamps_out_of_range() -> None:
    decoder = make_decoder()
    day_ns = 86_400 * 1_000_000_000
    cases = {
        "1999-12-31T23:59:59Z": "before 2000",
        iso(NOW_NS + day_ns + MINUTE_NS): "future",
        OBSERVED_NS // 1_000_000_000: "epoch seconds",  # seconds where milliseconds are due
        OBSERVED_NS: "micro- or nanoseconds",  # nanoseconds where milliseconds are due
        "2025-06-01T11:00:00": "no UTC offset",
        "2025-02-30T11:00:00Z": "not a valid date-time",
        True: "neither",
    }
    for ts, hint in cases.items():
        decoded = decoder.decode(topic("air_quality"), encode({"ts": ts, "pm25": 1}))
        assert _reasons(decoded) == ["bad_timestamp"], ts
        assert hint in decoded.errors[0].detail, (ts, decoded.errors[0].detail)
    absurd_intervals = {
        "2025-06-01T11:00:00Z/P99999999999999W": "future",
        "P99999999999999W/2025-06-01T11:00:00Z": None,  # a long interval ending now is fine
        "2025-06-01T11:00:00Z/PT99999999999999999999S": "future",
        "2025-06-01T11:00:00Z/PT": "not an ISO 8601 duration",
        "2025-06-01T12:00:00Z/2025-06-01T11:00:00Z": "ends before it starts",
    }
    for interval, problem in absurd_intervals.items():
        entity = {"id": "x", "type": "AirQualityObserved", "dateObserved": interval, "pm25": 1}
        decoded = decoder.decode(topic("air_quality"), encode(entity))
        if problem is None:
            assert decoded.ok, (interval, decoded.errors)
        else:
            assert _reasons(decoded) == ["bad_timestamp"], interval
            assert problem in decoded.errors[0].detail, (interval, decoded.errors[0].detail)
    # A day ahead is tolerated (device clocks drift), beyond it is not.
    assert decoder.decode(topic("air_quality"), encode({"ts": iso(NOW_NS + day_ns // 2), "pm25": 1})).ok


def test_wrong_unit_is_a_field_error() -> None:
    def attribute(value: float, code: str) -> dict[str, object]:
        return {"type": "Number", "value": value, "metadata": {"unitCode": {"type": "Text", "value": code}}}

    entity = {
        "id": "x",
        "type": "AirQualityObserved",
        "dateObserved": TS,
        "no2": attribute(21, "61"),  # ppb -> µg/m³ depends on the gas: refused
        "o3": attribute(40, "XYZ"),  # unknown code
        "temperature": attribute(20, "GQ"),  # known code, wrong dimension
        "pm10": attribute(18, "GQ"),
    }
    decoded = make_decoder().decode(topic("air_quality"), encode(entity))
    assert decoded.readings[0].fields == {"pm10": 18.0}
    by_field = {e.field: e for e in decoded.errors}
    assert {f: e.reason for f, e in by_field.items()} == {
        "no2": "wrong_unit",
        "o3": "wrong_unit",
        "temperature": "wrong_unit",
    }
    assert "molar mass" in by_field["no2"].detail
    assert "unknown unit code 'XYZ'" in by_field["o3"].detail
    assert by_field["no2"].value == 21


def test_numbers_beyond_any_float_are_refused_fields() -> None:
    huge = 10**400  # valid JSON, and Python parses it exactly: no float can hold it
    entity = {
        "type": "AirQualityObserved",
        "dateObserved": TS,
        "pm25": 4,
        "co": {"value": huge, "metadata": {"unitCode": "GQ"}},
        "temperature": {"value": huge, "metadata": {"unitCode": "FAH"}},
        "no2": {"value": huge, "metadata": {"unitCode": "GQ"}},
        "o3": huge,
    }
    decoded = make_decoder().decode(topic("air_quality"), encode(entity))
    assert decoded.readings[0].fields == {"pm25": 4.0}
    assert {e.field: e.reason for e in decoded.errors} == dict.fromkeys(
        ["co", "temperature", "no2", "o3"], "out_of_bounds"
    )


def test_fiware_entity_of_another_type() -> None:
    decoder = make_decoder()
    entity = {"id": "x", "type": "AirQualityObserved", "dateObserved": TS, "pm25": 3}
    wrong = decoder.decode(topic("traffic"), encode(entity))
    no_model = decoder.decode(topic("building"), encode(entity))
    assert _reasons(wrong) == ["wrong_entity_type"] and "TrafficFlowObserved" in wrong.errors[0].detail
    assert _reasons(no_model) == ["wrong_entity_type"] and "native form" in no_model.errors[0].detail
    untyped = decoder.decode(topic("air_quality"), encode({"dateObserved": TS, "pm25": 3}))
    assert _reasons(untyped) == ["wrong_entity_type"]
    assert "needs \"type\": 'AirQualityObserved'" in untyped.errors[0].detail


def test_top_level_scalar_is_not_a_reading() -> None:
    decoded = make_decoder().decode(topic("network"), b"42")
    assert _reasons(decoded) == ["not_an_object"]


def test_every_reason_has_one_level() -> None:
    levels = (set(MESSAGE_REASONS), set(READING_REASONS), set(FIELD_REASONS))
    assert not (levels[0] & levels[1] or levels[0] & levels[2] or levels[1] & levels[2])
