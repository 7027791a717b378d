"""Line protocol from polars, and InfluxQL quoting: what InfluxDB will read back from what we send."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

import polars as pl
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from storage import influxql
from storage.base import epoch_ns
from storage.errors import WriteRejected
from storage.frames import prepare
from storage.influx import serialise
from storage.lineprotocol import escape_key, escape_measurement, to_lines

T0 = datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=UTC)
T0_NS = 1_777_863_721_123_456_000


def lines_of(frame: pl.DataFrame, tags: list[str], measurement: str = "m") -> list[str]:
    prepared = prepare(measurement, frame, tags)
    body = bytes(to_lines(measurement, prepared.frame, prepared.tags, prepared.fields).body())
    # split("\n"), not splitlines(): only a newline ends a line of line protocol.
    return body.decode().split("\n")[:-1]


def _split_unescaped(text: str, separators: str) -> list[str]:
    """Split as InfluxDB's scanner does: a backslash always takes the next character with it."""
    parts, current, i = [], "", 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current += text[i : i + 2]
            i += 2
        elif text[i] in separators:
            parts.append(current)
            current = ""
            i += 1
        else:
            current += text[i]
            i += 1
    parts.append(current)
    return parts


def _unescape_key(text: str) -> str:
    return re.sub(r"\\([,= ])", r"\1", text)


def test_every_field_type_and_the_timestamp() -> None:
    frame = pl.DataFrame(
        {"time": [T0], "insee": ["78498"], "f": [0.1], "i": [-42], "b": [True], "s": ["hé"], "g": [1e-7]}
    )
    assert lines_of(frame, ["insee"]) == [f'm,insee=78498 f=0.1,i=-42i,b=true,s="hé",g=1e-7 {T0_NS}']


def test_nulls_leave_fields_out_and_empty_tags_are_omitted() -> None:
    frame = pl.DataFrame(
        {
            "time": [T0, T0],
            "a": ["x", None],
            "b": ["", "y"],
            "f": [None, 2.0],
            "i": [1, None],
        }
    )
    assert lines_of(frame, ["b", "a"]) == [f"m,a=x i=1i {T0_NS}", f"m,b=y f=2.0 {T0_NS}"]


def test_tags_are_written_in_key_order() -> None:
    frame = pl.DataFrame({"time": [T0], "z": ["1"], "a": ["2"], "m": ["3"], "v": [1.0]})
    assert lines_of(frame, ["z", "a", "m"])[0].startswith("m,a=2,m=3,z=1 ")


def test_escaping_of_names_tags_and_strings() -> None:
    frame = pl.DataFrame({"time": [T0], "tag key": ["a,b=c d"], "field,=key": ['say "hi" \\ there']})
    line = lines_of(frame, ["tag key"], measurement="my m,x=y")[0]
    assert line == f'my\\ m\\,x=y,tag\\ key=a\\,b\\=c\\ d field\\,\\=key="say \\"hi\\" \\\\ there" {T0_NS}'


def test_all_null_fields_of_some_rows_only() -> None:
    frame = pl.DataFrame({"time": [T0, T0], "t": ["1", "2"], "a": [None, 1.0], "b": [2.0, None]})
    assert lines_of(frame, ["t"]) == [f"m,t=1 b=2.0 {T0_NS}", f"m,t=2 a=1.0 {T0_NS}"]


def test_large_frames_are_serialised_in_parallel_slices_in_order() -> None:
    n = 250_000
    idx = pl.int_range(0, n, eager=True)
    frame = pl.DataFrame({"time": pl.Series([T0] * n).dt.cast_time_unit("ns") + idx.cast(pl.Duration("ns"))})
    prepared = prepare("m", frame.with_columns(t=pl.lit("x"), v=idx), ["t"])
    lines = serialise("m", prepared.frame, prepared.tags, prepared.fields)
    assert len(lines) == n
    assert lines.line(n - 1).startswith(f"m,t=x v={n - 1}i ")
    assert bytes(lines.body()).count(b"\n") == n


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_read_back_exactly(value: float) -> None:
    frame = pl.DataFrame({"time": [T0], "v": [value]})
    field = lines_of(frame, [])[0].split(" ")[1]
    assert float(field.removeprefix("v=")) == value
    if math.copysign(1, value) < 0:
        assert field.startswith("v=-")


tag_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), min_size=1).filter(
    lambda s: not re.search(r"\\([,= ]|$)", s)
)


@settings(max_examples=200, deadline=None)
# "v" is the frame's field: a tag of that name would replace it, leaving a row without a field.
@given(key=tag_text.filter(lambda s: s not in ("time", "v") and not s.startswith("__")), value=tag_text)
def test_tags_parse_back_as_influxdb_parses_them(key: str, value: str) -> None:
    assume(key != "*" and not (key.startswith("^") and key.endswith("$")))  # refused: tested below
    frame = pl.DataFrame({"time": [T0], key: [value], "v": [1.0]})
    line = lines_of(frame, [key])[0]
    series_key = _split_unescaped(line, " ")[0]
    measurement, tag = _split_unescaped(series_key, ",")
    tag_key, tag_value = _split_unescaped(tag, "=")
    assert (measurement, _unescape_key(tag_key), _unescape_key(tag_value)) == ("m", key, value)


def test_tag_values_influxdb_cannot_hold_are_refused_with_a_reason() -> None:
    frame = pl.DataFrame(
        {"time": [T0] * 4, "t": ["ok\\x", "end\\", "a\\,b", "two\nlines"], "v": [1.0, 2.0, 3.0, 4.0]}
    )
    prepared = prepare("m", frame, ["t"])
    assert [r.row for r in prepared.rejected] == [1, 2, 3]
    assert "backslash" in prepared.rejected[0].reason
    assert prepared.frame["t"].to_list() == ["ok\\x"]


def test_escape_helpers() -> None:
    assert escape_measurement("a b,c=d") == "a\\ b\\,c=d"
    assert escape_key("a b,c=d") == "a\\ b\\,c\\=d"


def test_influxql_quoting_cannot_be_escaped_from() -> None:
    assert influxql.quote_string("' OR 1=1 --") == "'\\' OR 1=1 --'"
    assert influxql.quote_string("a\\'b") == "'a\\\\\\'b'"
    assert influxql.quote_string("l1\nl2") == "'l1\\nl2'"
    assert influxql.quote_ident('x"; DROP DATABASE d') == '"x\\"; DROP DATABASE d"'
    assert influxql.tag_condition("insee", ["1", "2"]) == "(\"insee\" = '1' OR \"insee\" = '2')"
    assert influxql.source("db", "raw", "air quality") == '"db"."raw"."air quality"'
    assert epoch_ns(T0) == T0_NS


def test_names_a_store_cannot_hold_refuse_the_whole_frame() -> None:
    frame = pl.DataFrame({"time": [T0], "v": [1.0]})
    for measurement in ("#comment", "", "two\nlines", "ends\\"):
        with pytest.raises(WriteRejected):
            prepare(measurement, frame, [])
    with pytest.raises(WriteRejected, match="reserved"):
        prepare("m", frame.with_columns(__row=pl.lit(1.0)), [])
    # Names polars would read as every column or as a pattern, losing or mixing values.
    for name in ("*", "^v$"):
        with pytest.raises(WriteRejected, match="wildcard or a regular expression"):
            prepare("m", frame.with_columns(pl.lit("x").alias(name)), [name])
        with pytest.raises(WriteRejected, match="wildcard or a regular expression"):
            prepare("m", frame.with_columns(pl.lit(2.0).alias(name)), [])
