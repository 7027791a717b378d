"""The batch decoder gives exactly what the reference decoder gives, message by message.

Same readings (as store frames, in message order) and the same errors for every message, on
hand-picked mixed batches and on hypothesis-generated ones, with payloads both close to the
fast path's common case (so the border between the two paths is exercised) and far from it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from sensors.batch_decoder import BatchDecoder, BatchResult
from sensors.decoder import MAX_AHEAD_NS, MIN_TIME_NS, Decoder
from sensors.families import FAMILIES, FamilySpec
from sensors.frames import readings_to_frames
from sensors.readings import Decoded, Reading
from tests.decoder_fixtures import NOW_NS, encode, iso, make_decoder, sample_fields, topic

SPECS = list(FAMILIES.values())
AIR = next(spec for spec in SPECS if spec.family.value == "air_quality")
CAMERA = next(spec for spec in SPECS if spec.family.value == "camera")
NOW_MS = NOW_NS // 1_000_000
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference_result(decoder: Decoder, messages: list[tuple[str, bytes]]) -> BatchResult:
    """What decoding each message with the reference decoder gives, as a ``BatchResult``."""
    readings: list[Reading] = []
    received: list[int] = []
    refused: list[tuple[int, Decoded]] = []
    for position, (message_topic, payload) in enumerate(messages):
        decoded = decoder.decode(message_topic, payload)
        readings += decoded.readings
        received += [position] * len(decoded.readings)
        if decoded.errors:
            refused.append((position, decoded))
    return BatchResult(frames=readings_to_frames(readings, received), refused=refused)


def assert_same_as_reference(messages: list[tuple[str, bytes]], **options: Any) -> BatchResult:
    """Decode ``messages`` both ways and check the results are identical; the batch result."""
    decoder = make_decoder(**options)
    expected = reference_result(decoder, messages)
    got = BatchDecoder(decoder).decode(
        [t for t, _ in messages], [p for _, p in messages], list(range(len(messages)))
    )
    assert sorted(got.frames) == sorted(expected.frames)
    for family, frame in expected.frames.items():
        assert_frame_equal(got.frames[family], frame)
    assert got.refused == expected.refused
    return got


def native(spec: FamilySpec, ts: object, **changes: Any) -> bytes:
    """A native reading of ``spec`` with every field valid, then ``changes`` applied."""
    fields: dict[str, Any] = {**sample_fields(spec), **changes}
    return encode({"ts": ts, **{k: v for k, v in fields.items() if v is not _DROP}})


_DROP = object()


def test_a_mixed_batch_decodes_as_the_reference_decodes_it() -> None:
    first_field = AIR.fields[0].name
    int_field = next(f for spec in SPECS for f in spec.fields if f.kind == "int")
    int_spec = next(spec for spec in SPECS if int_field in spec.fields)
    float_field = next(f for f in AIR.fields if f.kind == "float" and f.maximum is not None)
    assert float_field.maximum is not None
    messages: list[tuple[str, bytes]] = []
    # The common case of every family, in both timestamp spellings of the fleet.
    for spec in SPECS:
        messages.append((topic(spec.family.value, "ok-ms"), native(spec, NOW_MS - 5000)))
        messages.append((topic(spec.family.value, "ok-iso"), native(spec, iso(NOW_NS - 10**9))))
    messages += [
        # Fields the reference takes with a conversion, or refuses one at a time.
        (topic("air_quality"), native(AIR, NOW_MS, **{float_field.name: int(float_field.maximum)})),
        (topic("air_quality"), native(AIR, NOW_MS, **{float_field.name: float_field.maximum + 1})),
        (topic("air_quality"), native(AIR, NOW_MS, **{first_field: None})),
        (topic("air_quality"), native(AIR, NOW_MS, **{first_field: "12"})),
        (topic("air_quality"), native(AIR, NOW_MS, unknownThing=3)),
        (topic(int_spec.family.value), native(int_spec, NOW_MS, **{int_field.name: 3.0})),
        (topic(int_spec.family.value), native(int_spec, NOW_MS, **{int_field.name: True})),
        (topic(int_spec.family.value), native(int_spec, NOW_MS, **{int_field.name: 10**30})),
        (topic("air_quality"), encode({"ts": NOW_MS, **dict.fromkeys(sample_fields(AIR))})),
        (topic("air_quality"), encode({"ts": NOW_MS})),
        # Timestamps at and beyond the bounds, and the spellings the fast path leaves alone.
        (topic("air_quality", "t1"), native(AIR, MIN_TIME_NS // 1_000_000)),
        (topic("air_quality", "t2"), native(AIR, MIN_TIME_NS // 1_000_000 - 1)),
        (topic("air_quality", "t3"), native(AIR, (NOW_NS + MAX_AHEAD_NS) // 1_000_000)),
        (topic("air_quality", "t4"), native(AIR, (NOW_NS + MAX_AHEAD_NS) // 1_000_000 + 1)),
        (topic("air_quality", "t5"), native(AIR, NOW_MS / 1000)),
        (topic("air_quality", "t6"), native(AIR, NOW_MS + 0.5)),
        (topic("air_quality", "t7"), native(AIR, "2025-06-01T11:59:60Z")),
        (topic("air_quality", "t8"), native(AIR, "2025-02-30T11:00:00Z")),
        (topic("air_quality", "t9"), native(AIR, "2025-06-01T13:00:00+02:00")),
        (topic("air_quality", "ta"), native(AIR, "2025-06-01T11:00:00.123456789123Z")),
        (topic("air_quality", "tb"), native(AIR, "2025-06-01t11:00:00Z")),
        (topic("air_quality", "tc"), native(AIR, "2025-06-01T11:00:00")),
        (topic("air_quality", "td"), native(AIR, "2025-06-01T24:00:00Z")),
        (topic("air_quality", "te"), native(AIR, "1999-12-31T23:59:59.999Z")),
        (topic("air_quality", "tf"), native(AIR, "2025-06-01T11:00:00.5Z")),
        (topic("air_quality", "tg"), encode({first_field: 1})),
        # Message-level refusals.
        (topic("air_quality"), b'{"ts": 1748779200000, "pm25": '),
        (topic("air_quality"), b"\xef\xbb\xbf" + native(AIR, NOW_MS)),
        (topic("air_quality"), b'{"ts": 1748779200000, "pm25": NaN}'),
        (topic("air_quality"), b"\xff" + native(AIR, NOW_MS)),
        (topic("air_quality"), native(AIR, NOW_MS, note="x" * 300)),
        ("smartcity/v1/78498/air_quality/bad device", native(AIR, NOW_MS)),
        ("smartcity/v1/78498/air_quality/dev-1\n", native(AIR, NOW_MS)),
        (topic("air_quality", insee="00000"), native(AIR, NOW_MS)),
        (topic("weather"), native(AIR, NOW_MS)),
        (topic("camera"), native(CAMERA, NOW_MS, imageUrl="https://example.org/a.jpg")),
        # Forms only the reference decodes: batches, FIWARE, duplicates.
        (topic("air_quality"), encode([{"ts": NOW_MS, first_field: 1}, {"ts": NOW_MS + 1, first_field: 2}])),
        (
            topic("air_quality"),
            encode({"type": "AirQualityObserved", "dateObserved": iso(NOW_NS), first_field: 3}),
        ),
        (topic("air_quality", "dup"), b'{"ts": 1748779200000, "pm25": 1, "pm25": 2}'),
        (topic("air_quality", "dup"), b'{"ts": 1748779200000, "ts": 1748779100000, "pm25": 2}'),
    ]
    got = assert_same_as_reference(messages, max_payload_bytes=1024)
    # The common case really took the fast path (otherwise this test would prove nothing).
    assert got.fast >= 2 * len(SPECS)
    assert got.fast < len(messages)


def test_readings_keep_message_order_across_both_paths() -> None:
    """Readings of one device at one instant keep their arrival order whichever path took them."""
    first_field = AIR.fields[0].name
    messages = [
        (topic("air_quality"), encode({"ts": NOW_MS, first_field: 1})),
        (topic("air_quality"), encode({"ts": NOW_MS, first_field: 2, "extra": 0})),
        (topic("air_quality"), encode({"ts": NOW_MS, first_field: 3})),
        (topic("air_quality"), encode([{"ts": NOW_MS, first_field: 4}])),
    ]
    got = assert_same_as_reference(messages)
    assert got.frames["air_quality"].get_column(first_field).to_list() == [1.0, 2.0, 3.0, 4.0]


# --- generated batches ---------------------------------------------------------------------------

number_texts = st.from_regex(r"-?(0|[1-9][0-9]{0,20})(\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?", fullmatch=True)
iso_texts = st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]{1,12})?"
    r"(Z|z|[+-][0-9]{2}:?[0-9]{2})?",
    fullmatch=True,
)
plausible_ms = st.integers(min_value=MIN_TIME_NS // 1_000_000 - 5, max_value=NOW_MS + 86_400_000 + 5)


def _value_text(spec: FamilySpec, name: str) -> st.SearchStrategy[str]:
    field = spec.field(name)
    choices: list[Any] = [None, True, "on"]
    if field is not None:
        choices += list(field.choices)
        if field.minimum is not None and field.maximum is not None:
            choices += [field.minimum, field.maximum, field.minimum - 1, field.maximum + 0.5]
    dumped = st.sampled_from(choices).map(json.dumps)
    in_bounds = st.just(json.dumps(sample_fields(spec).get(name, 0)))
    return in_bounds | dumped | number_texts | st.integers(-(2**70), 2**70).map(str)


@st.composite
def near_fast_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """A native reading of a family, often clean, sometimes subtly not (as JSON text, so numbers
    are spelled every way JSON allows and keys may repeat)."""
    spec = draw(st.sampled_from(SPECS))
    names = [f.name for f in spec.fields]
    stamp = draw(
        plausible_ms.map(str)
        | plausible_ms.map(lambda ms: json.dumps(iso(ms * 1_000_000)))
        | iso_texts.map(json.dumps)
        | number_texts
    )
    keys = draw(
        st.lists(st.sampled_from([*names, "ts", "other", "type"]), max_size=len(names) + 2) | st.just(names)
    )
    pairs = ['"ts":' + stamp] + [f'"{key}":{draw(_value_text(spec, key))}' for key in keys]
    if draw(st.booleans()):
        pairs = pairs[:1] + sorted(pairs[1:])
    device = draw(st.sampled_from(["dev-1", "capteur école 3", "capteur e\u0301cole", "bad/device"]))
    insee = draw(st.sampled_from(["78498", "92012", "00000"]))
    return topic(spec.family.value, device, insee), ("{" + ",".join(pairs) + "}").encode()


any_messages = st.tuples(
    st.sampled_from([topic("air_quality"), topic("camera"), "smartcity/v1/x"]),
    st.binary(max_size=60) | st.text(max_size=60).map(str.encode),
)


@SETTINGS
@given(st.lists(near_fast_messages() | any_messages, max_size=40))
def test_generated_batches_decode_as_the_reference_decodes_them(messages: list[tuple[str, bytes]]) -> None:
    assert_same_as_reference(messages)
