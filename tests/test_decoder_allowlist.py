"""Issue 13's decoder defects: the camera allow-list, Smart Data Models attributes per family,
device ids in French and topics matched whole."""

from __future__ import annotations

import unicodedata

import pytest

from sensors.families import AIR_QUALITY, CAMERA, TRAFFIC
from sensors.topics import Topic, parse_topic
from tests.decoder_fixtures import NOW_NS, encode, iso, make_decoder, sample_fields, topic

TS = iso(NOW_NS - 300 * 1_000_000_000)
LEAKS = {
    "imageSnapshot": "https://cam.example.fr/snap/0042.jpg",
    "image_url": "https://cam.example.fr/i/0042.jpg",
    "imageUrl": "https://cam.example.fr/i/0043.jpg",
    "photoUrl": "https://cam.example.fr/p/0044.jpg",
    "videoUrl": "https://cam.example.fr/v/0045.mp4",
    "thumbnailUrl": "https://cam.example.fr/t/0046.jpg",
    "licensePlateNumber": "AB-123-CD",
    "plateNumber": "EF-456-GH",
}


@pytest.mark.parametrize("key", sorted(LEAKS))
@pytest.mark.parametrize("form", ["native", "keyValues", "normalized", "nested"])
def test_a_camera_key_outside_the_allow_list_refuses_the_whole_message(key: str, form: str) -> None:
    leak = LEAKS[key]
    if form == "native":
        payload: object = {"ts": TS, "peopleCount": 12, key: leak}
    elif form == "keyValues":
        payload = {"type": "CrowdFlowObserved", "dateObserved": TS, "peopleCount": 12, key: leak}
    elif form == "normalized":
        payload = {
            "type": "CrowdFlowObserved",
            "dateObserved": TS,
            "peopleCount": {"type": "Number", "value": 12},
            key: {"type": "Text", "value": leak},
        }
    else:
        payload = [{"ts": TS, "peopleCount": 3}, {"ts": TS, "peopleCount": 12, "location": {key: leak}}]
    decoded = make_decoder().decode(topic("camera"), encode(payload))
    assert [e.reason for e in decoded.errors] == ["forbidden_field"]
    assert decoded.readings == []  # peopleCount 12 is not stored either
    assert decoded.errors[0].field == key
    assert decoded.payload_is_private
    for error in decoded.errors:
        assert leak not in error.detail and error.value is None


def test_every_camera_error_withholds_text_from_the_payload() -> None:
    secret = "AB-123-CD"
    payloads = [
        {"ts": secret, "peopleCount": 1},  # bad timestamp
        {"type": secret, "dateObserved": TS, "peopleCount": 1},  # wrong entity type
        [secret],  # not an object
        {"ts": TS, "peopleCount": secret},  # wrong type
        {
            "type": "CrowdFlowObserved",
            "dateObserved": TS,
            "occupancy": {"type": "Number", "value": 0.5, "metadata": {"unitCode": secret}},
        },  # wrong unit
    ]
    for payload in payloads:
        decoded = make_decoder().decode(topic("camera"), encode(payload))
        assert decoded.errors and decoded.payload_is_private, payload
        for error in decoded.errors:
            assert secret not in error.detail and error.value != secret, error


def test_the_harmless_camera_metadata_is_allowed_and_dropped() -> None:
    entity = {
        "id": "urn:ngsi-ld:CrowdFlowObserved:cam-1",
        "type": "CrowdFlowObserved",
        "dateObserved": {"type": "DateTime", "value": TS},
        "name": {"type": "Text", "value": "Parvis de la mairie"},
        "location": {"type": "geo:json", "value": {"type": "Point", "coordinates": [2.05, 48.93]}},
        "address": {"type": "PostalAddress", "value": {"addressLocality": "Poissy", "postalCode": "78300"}},
        "refRoadSegment": {"type": "Relationship", "value": "urn:ngsi-ld:RoadSegment:1"},
        "direction": {"type": "Text", "value": "inbound"},
        "peopleCount": {"type": "Number", "value": 12},
    }
    decoded = make_decoder().decode(topic("camera"), encode(entity))
    assert decoded.ok, decoded.errors
    assert decoded.readings[0].fields == {"peopleCount": 12}


def test_crowd_flow_directional_counts_are_stored() -> None:
    entity = {
        "id": "urn:ngsi-ld:CrowdFlowObserved:cam-1",
        "type": "CrowdFlowObserved",
        "dateObserved": f"{iso(NOW_NS - 600 * 1_000_000_000)}/{TS}",
        "peopleCount": 30,
        "peopleCountTowards": 18,
        "peopleCountAway": 12,
        "direction": "inbound",
        "congested": False,
        "occupancy": 0.25,
        "averageCrowdSpeed": 4.2,
        "averageHeadwayTime": 20.0,
    }
    decoded = make_decoder().decode(topic("camera"), encode(entity))
    assert decoded.ok, decoded.errors
    assert decoded.readings[0].fields == {
        "peopleCount": 30,
        "peopleCountTowards": 18,
        "peopleCountAway": 12,
        "congested": False,
        "occupancy": 0.25,
        "averageCrowdSpeed": 4.2,
        "averageHeadwayTime": 20.0,
    }


SHARED = {
    "id": "urn:ngsi-ld:X:1",
    "address": {"streetAddress": "1 place de la Mairie", "addressLocality": "Poissy"},
    "areaServed": "Centre-ville",
    "location": {"type": "Point", "coordinates": [2.05, 48.93]},
    "source": "https://opendata.example.fr",
    "dataProvider": "Commune de Poissy",
    "name": "Station mairie",
    "description": "Capteur sur le parvis",
}


def test_air_quality_model_attributes_are_stored_ignored_or_refused_as_documented() -> None:
    entity = {
        **SHARED,
        "type": "AirQualityObserved",
        "dateObserved": TS,
        "pm25": 8.5,
        "reliability": 0.9,
        "airQualityLevel": "moderate",
        "airQualityIndex": 42,
        "nox": 31.0,
    }
    decoded = make_decoder().decode(topic("air_quality"), encode(entity))
    assert decoded.readings[0].fields == {"pm25": 8.5}
    assert [(e.reason, e.field) for e in decoded.errors] == [("unknown_field", "nox")]
    assert {"reliability", "airQualityLevel"} <= AIR_QUALITY.ignored_attributes


def test_traffic_model_attributes_are_stored_ignored_or_refused_as_documented() -> None:
    entity = {
        **SHARED,
        "type": "TrafficFlowObserved",
        "dateObserved": TS,
        "intensity": 14,
        "congested": True,
        "laneDirection": "forward",
        "reversedLane": False,
        "refRoadSegment": "urn:ngsi-ld:RoadSegment:1",
        "vehicleType": "car",
    }
    decoded = make_decoder().decode(topic("traffic"), encode(entity))
    assert decoded.readings[0].fields == {"intensity": 14, "congested": True}
    assert [(e.reason, e.field) for e in decoded.errors] == [("unknown_field", "vehicleType")]
    assert "laneDirection" in TRAFFIC.ignored_attributes


def test_descriptive_attributes_stay_unknown_in_the_native_form() -> None:
    decoded = make_decoder().decode(topic("air_quality"), encode({"ts": TS, "pm25": 1.0, "name": "x"}))
    assert [(e.reason, e.field) for e in decoded.errors] == [("unknown_field", "name")]


@pytest.mark.parametrize(
    "device_id", ["capteur école 3", "Gymnase-Léo-Lagrange.1", "aq_78498:02", "ÉCOLE", "x" * 128]
)
def test_french_device_ids_are_accepted(device_id: str) -> None:
    decoded = make_decoder().decode(topic("camera", device_id), encode({"ts": TS, **sample_fields(CAMERA)}))
    assert decoded.ok, decoded.errors
    assert decoded.readings[0].device_id == device_id


@pytest.mark.parametrize(
    "device_id",
    [
        "aq-1\n",
        "aq-1 ",
        " aq-1",
        "capteur  école",
        "a\tb",
        "-aq",
        "a,b",
        'a"b',
        "a\\b",
        "x" * 129,
        unicodedata.normalize("NFD", "capteur école 3"),
        "",
    ],
)
def test_bad_device_ids_are_refused_with_the_topic(device_id: str) -> None:
    decoded = make_decoder().decode(topic("air_quality", device_id), encode({"ts": TS, "pm25": 1.0}))
    assert [e.reason for e in decoded.errors] == ["bad_topic"]
    assert decoded.readings == []


def test_parse_topic_matches_the_whole_topic() -> None:
    assert parse_topic("smartcity/v1/78498/air_quality/aq-1") == Topic("78498", "air_quality", "aq-1")
    assert isinstance(parse_topic("smartcity/v1/78498/air_quality/aq-1\n"), str)
    nfd = parse_topic(unicodedata.normalize("NFD", "smartcity/v1/78498/air_quality/école"))
    assert isinstance(nfd, str) and "NFC" in nfd


def test_a_bad_camera_topic_keeps_the_payload_private() -> None:
    decoded = make_decoder().decode("smartcity/v1/78498/camera/bad\n", encode({"ts": TS, "imageUrl": "x"}))
    assert [e.reason for e in decoded.errors] == ["bad_topic"]
    assert decoded.payload_is_private
