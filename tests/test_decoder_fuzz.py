"""Property tests: whatever arrives, the decoder returns a Decoded and never raises.

Beyond "no exception", the decoder must not reach its own safety net (``internal_error``), and
whatever it keeps must satisfy the contract: known fields, in bounds, plausible times.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.decoder import MAX_AHEAD_NS, MIN_TIME_NS
from sensors.families import FAMILIES
from sensors.frames import family_schema, readings_to_frames
from sensors.readings import REASONS, Decoded
from tests.decoder_fixtures import NOW_NS, make_decoder, topic

DECODER = make_decoder(max_payload_bytes=64 * 1024, max_batch=50)
FAMILY_NAMES = [family.value for family in FAMILIES]
FIELD_NAMES = sorted({field.name for spec in FAMILIES.values() for field in spec.fields})
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
valid_topics = st.builds(
    topic,
    st.sampled_from([*FAMILY_NAMES, "weather"]),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True),
    st.sampled_from(["78498", "92012", "75056"]),
)
# Plausible values are drawn often, so that many readings survive and what is kept gets checked.
plausible_ms = st.integers(min_value=MIN_TIME_NS // 1_000_000, max_value=NOW_NS // 1_000_000)
date_texts = (
    plausible_ms.map(lambda ms: datetime.fromtimestamp(ms / 1000, UTC).isoformat())
    | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
    | st.text(max_size=30)
)
huge = st.integers(min_value=0, max_value=10**25)
durations = st.from_regex(r"P(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+([.,]\d+)?S)?)?", fullmatch=True) | st.builds(
    "P{}W{}DT{}H{}M{}S".format, huge, huge, huge, huge, huge
)
intervals = st.tuples(date_texts | durations, date_texts | durations).map("/".join)
timestamps = (
    plausible_ms | date_texts | intervals | st.integers(min_value=-(2**70), max_value=2**70) | st.floats()
)
plausible_values = (
    st.floats(min_value=-60, max_value=1000)
    | st.integers(min_value=0, max_value=300)
    | st.booleans()
    | st.sampled_from(["off", "heating", "cooling"])
)
huge_numbers = st.integers(min_value=-(10**400), max_value=10**400) | st.sampled_from([10**400, -(10**400)])
unit_codes = st.sampled_from(["GQ", "GP", "P1", "CEL", "FAH", "MTS", "61", "X"])
field_values: st.SearchStrategy[Any] = (
    plausible_values
    | json_scalars
    | huge_numbers
    | st.dictionaries(
        st.sampled_from(["type", "value", "metadata"]),
        json_scalars | huge_numbers | st.fixed_dictionaries({"unitCode": unit_codes}),
    )
    | st.fixed_dictionaries(
        {"value": plausible_values | huge_numbers | json_scalars},
        optional={
            "metadata": st.fixed_dictionaries({"unitCode": unit_codes | st.builds(dict, value=unit_codes)})
        },
    )
)
entity_types = st.sampled_from(["AirQualityObserved", "TrafficFlowObserved", "CrowdFlowObserved", "x"])
native_readings = st.fixed_dictionaries(
    {"ts": timestamps},
    optional={name: field_values for name in FIELD_NAMES}
    | {"type": entity_types, "dateObserved": timestamps},
)
fiware_entities = st.fixed_dictionaries(
    {"type": entity_types},
    optional={name: field_values for name in FIELD_NAMES}
    | {
        "id": st.text(max_size=10),
        "dateObserved": timestamps
        | st.fixed_dictionaries({"type": st.just("DateTime"), "value": timestamps}),
        "dateObservedTo": timestamps,
        "location": json_values,
    },
)
readings = native_readings | fiware_entities


fiware_messages = st.sampled_from([spec for spec in FAMILIES.values() if spec.fiware_type]).flatmap(
    lambda spec: st.tuples(
        st.just(topic(spec.family.value)),
        st.lists(
            st.fixed_dictionaries(
                {"type": st.just(spec.fiware_type), "dateObserved": timestamps},
                optional={field.name: field_values for field in spec.fields},
            ),
            min_size=1,
            max_size=20,
        ),
    )
)


def _assert_sound(decoded: Any) -> None:
    assert isinstance(decoded, Decoded)
    reasons = [error.reason for error in decoded.errors]
    assert "internal_error" not in reasons, decoded.errors
    assert set(reasons) <= set(REASONS)
    for reading in decoded.readings:
        spec = FAMILIES[next(f for f in FAMILIES if f.value == reading.family)]
        assert MIN_TIME_NS <= reading.time_ns <= NOW_NS + MAX_AHEAD_NS
        assert reading.fields
        for name, value in reading.fields.items():
            field = spec.field(name)
            assert field is not None
            assert field.check(value) is None, (name, value)


@SETTINGS
@given(st.text(max_size=80), st.binary(max_size=300))
def test_arbitrary_topic_and_bytes(any_topic: str, payload: bytes) -> None:
    _assert_sound(DECODER.decode(any_topic, payload))


@SETTINGS
@given(valid_topics, st.binary(max_size=300))
def test_valid_topic_arbitrary_bytes(valid_topic: str, payload: bytes) -> None:
    _assert_sound(DECODER.decode(valid_topic, payload))


@SETTINGS
@given(valid_topics, json_values)
def test_valid_topic_arbitrary_json(valid_topic: str, document: object) -> None:
    _assert_sound(DECODER.decode(valid_topic, json.dumps(document).encode()))


@SETTINGS
@given(valid_topics, readings | st.lists(readings, max_size=60))
def test_reading_shaped_payloads(valid_topic: str, document: object) -> None:
    decoded = DECODER.decode(valid_topic, json.dumps(document).encode())
    _assert_sound(decoded)
    # Whatever the decoder keeps, the frame builder turns into store-convention frames.
    for family, frame in readings_to_frames(decoded.readings, NOW_NS).items():
        assert frame.schema == family_schema(family)
        assert frame.height == sum(1 for r in decoded.readings if r.family == family)


def test_deeply_nested_payload_is_malformed_not_a_crash() -> None:
    payload = b"[" * 100_000 + b"]" * 100_000
    decoded = make_decoder(max_payload_bytes=1_000_000).decode(topic("camera"), payload)
    assert [error.reason for error in decoded.errors] == ["malformed_json"]


def test_non_bytes_payload_and_topic_do_not_raise() -> None:
    assert DECODER.decode(None, b"{}").errors[0].reason == "bad_topic"  # type: ignore[arg-type]
    assert DECODER.decode(topic("traffic"), "text").errors[0].reason == "not_utf8"  # type: ignore[arg-type]


@SETTINGS
@given(fiware_messages)
def test_fiware_entities_of_the_topics_model(message: tuple[str, list[dict[str, Any]]]) -> None:
    valid_topic, entities = message
    _assert_sound(DECODER.decode(valid_topic, json.dumps(entities).encode()))
