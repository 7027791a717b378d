"""Same calls, same results: random writes given to DuckDB and to a real InfluxDB read back alike.

Hypothesis draws frames with awkward tag values, every field type, nulls, NaNs, duplicate
(tags, time) keys within and across writes, and type conflicts between writes; both stores get
the same writes, and their reports, reads and series must match.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from storage.base import TIME
from storage.duckdb_store import DuckDBStore
from tests.servers import Influxd
from tests.storage_fixtures import open_influx, shared_influxd

__all__ = ["shared_influxd"]

# Noon, two days ago: inside the raw retention, and far from a shard-group boundary (midnight),
# since InfluxDB checks field types per shard.
T0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
TAG_VALUES = ["78498", "a b", "x,y=z", "q\"uo'te", "back\\slash", "été 日本", "", "end\\", "a\\,b", "l1\nl2"]
FIELD_TYPES = {
    "f": st.one_of(st.none(), st.floats(allow_infinity=True, allow_nan=True, width=64)),
    "i": st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
    "b": st.one_of(st.none(), st.booleans()),
    "s": st.one_of(st.none(), st.text(st.characters(exclude_categories=["Cs"]), max_size=8)),
}
DTYPES: dict[str, pl.DataType] = {"f": pl.Float64(), "i": pl.Int64(), "b": pl.Boolean(), "s": pl.String()}


@st.composite
def batches(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(min_value=1, max_value=12))
    kinds = draw(st.lists(st.sampled_from(list(FIELD_TYPES)), min_size=1, max_size=3))
    columns: dict[str, pl.Series] = {
        TIME: pl.Series(
            [T0 + timedelta(seconds=draw(st.integers(0, 5))) for _ in range(n)]
        ).dt.cast_time_unit("ns"),
        "insee": pl.Series([draw(st.sampled_from(TAG_VALUES)) for _ in range(n)], dtype=pl.String),
        "device_id": pl.Series([draw(st.sampled_from(TAG_VALUES[:3])) for _ in range(n)], dtype=pl.String),
    }
    for position, kind in enumerate(kinds):
        # Names collide across batches on purpose ("v0" an integer here, a float there).
        columns[f"v{position}"] = pl.Series([draw(FIELD_TYPES[kind]) for _ in range(n)], dtype=DTYPES[kind])
    return pl.DataFrame(columns)


def _known_tags(frame: pl.DataFrame) -> pl.DataFrame:
    """Without tag columns that are empty on every row.

    InfluxDB 1.x indexes a point's series before it checks the field types, so a point refused
    for a type conflict can leave its tag key behind: a tag column of "" on every row. DuckDB
    stores nothing of a refused row. That is the one known difference (docs/storage.md).
    """
    return frame.drop(
        [t for t in ("insee", "device_id") if t in frame.columns and not (frame[t] != "").any()]
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(writes=st.lists(batches(), min_size=1, max_size=3))
def test_duckdb_and_influxdb_agree(shared_influxd: Influxd, writes: list[pl.DataFrame]) -> None:
    duck = DuckDBStore()
    influx = open_influx(shared_influxd)
    try:
        for frame in writes:
            duck_report = duck.write("air_quality", frame, tags=["insee", "device_id"])
            influx_report = influx.write("air_quality", frame, tags=["insee", "device_id"])
            assert [r.row for r in duck_report.rejected] == [r.row for r in influx_report.rejected]
            assert duck_report.written == influx_report.written
        start, end = T0 - timedelta(hours=1), T0 + timedelta(hours=1)
        from_duck = duck.read("air_quality", start=start, end=end)
        assert_frame_equal(
            _known_tags(from_duck), _known_tags(influx.read("air_quality", start=start, end=end))
        )
        assert_frame_equal(_known_tags(duck.series("air_quality")), _known_tags(influx.series("air_quality")))
        tags = [c for c in from_duck.columns if c in ("insee", "device_id")]
        if from_duck.height and tags:
            where = {tags[0]: from_duck[tags[0]][0]}
            fields = [from_duck.columns[-1]]
            assert_frame_equal(
                _known_tags(duck.read("air_quality", start=start, end=end, where=where, fields=fields)),
                _known_tags(influx.read("air_quality", start=start, end=end, where=where, fields=fields)),
            )
    finally:
        duck.close()
        influx.close()
