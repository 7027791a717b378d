"""The conformance suite: every call of the ``Store`` protocol, run against every store.

The same calls must give the same results on DuckDB and on a real InfluxDB, so that the
platform behaves the same whichever store an operator picks.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from storage.base import TIME, TIME_DTYPE, Store, Write
from storage.errors import QueryError, WriteRejected
from tests.storage_fixtures import STORE_KINDS, open_test_store, shared_influxd

__all__ = ["shared_influxd"]

# Recent enough for InfluxDB's 30-day retention of raw readings to keep it.
# Noon two days ago: inside the raw retention, and hours away from a shard boundary (UTC
# midnight), since InfluxDB checks field types per shard.
T0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=2)
HOUR = timedelta(hours=1)
TAGS = ["insee", "device_id"]


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each store in turn: DuckDB in a temporary file, InfluxStore against a real influxd."""
    with open_test_store(request) as opened:
        yield opened


def readings(n: int, *, devices: int = 3, start: datetime = T0, step_s: int = 10) -> pl.DataFrame:
    """``n`` rows spread over ``devices`` devices of two communes, every field type."""
    idx = pl.int_range(0, n, eager=True)
    return pl.DataFrame(
        {
            TIME: pl.datetime_range(
                start, start + timedelta(seconds=step_s * (n - 1)), f"{step_s}s", time_unit="ns", eager=True
            ),
            "insee": pl.Series(["78498", "92049"])[idx % 2 if devices > 1 else idx * 0],
            "device_id": ("dev-" + (idx % devices).cast(pl.String)),
            "pm25": idx.cast(pl.Float64) / 7,
            "count": idx * 3,
            "online": idx % 2 == 0,
            "state": "s" + idx.cast(pl.String),
        }
    )


def read_all(store: Store, measurement: str, **kwargs: object) -> pl.DataFrame:
    return store.read(measurement, start=T0 - 24 * HOUR, end=T0 + 24 * HOUR, **kwargs)  # type: ignore[arg-type]


def test_round_trip_keeps_values_and_dtypes(store: Store) -> None:
    frame = readings(50)
    report = store.write("air_quality", frame, tags=TAGS)
    assert report.written == frame.height and not report.rejected
    got = read_all(store, "air_quality")
    expected_schema: dict[str, pl.DataType] = {
        TIME: TIME_DTYPE,
        "device_id": pl.String(),
        "insee": pl.String(),
        "count": pl.Int64(),
        "online": pl.Boolean(),
        "pm25": pl.Float64(),
        "state": pl.String(),
    }
    assert got.schema == pl.Schema(expected_schema)
    expected = frame.select(got.columns).sort(TIME, "device_id", "insee")
    assert_frame_equal(got, expected)


def test_fields_come_in_the_order_asked_with_a_never_stored_one_as_nulls(store: Store) -> None:
    store.write("air_quality", readings(10), tags=TAGS)
    got = read_all(store, "air_quality", fields=["state", "never_stored", "pm25"])
    assert got.columns == [TIME, "device_id", "insee", "state", "never_stored", "pm25"]
    assert got.schema["never_stored"] == pl.Float64 and got["never_stored"].null_count() == got.height
    assert got.height == 10 and got[TIME].is_sorted()
    assert got.schema[TIME] == TIME_DTYPE


def test_floats_round_trip_exactly(store: Store) -> None:
    values = [0.1, 1 / 3, 1e-300, 1.7976931348623157e308, -2.5e-7, 123456789.12345679, 0.0]
    frame = pl.DataFrame(
        {TIME: [T0 + timedelta(seconds=i) for i in range(len(values))], "insee": "78498", "x": values}
    )
    store.write("m", frame, tags=["insee"])
    assert read_all(store, "m")["x"].to_list() == values


def test_empty_results(store: Store) -> None:
    store.write("air_quality", readings(10), tags=TAGS)
    outside = store.read("air_quality", start=T0 - 2 * HOUR, end=T0 - HOUR)
    assert outside.height == 0
    assert outside.schema[TIME] == TIME_DTYPE
    nobody = read_all(store, "air_quality", where={"insee": "00000"})
    assert nobody.height == 0


def test_unknown_measurement_reads_empty(store: Store) -> None:
    got = read_all(store, "never_written", fields=["pm25"])
    assert got.height == 0
    assert got.columns == [TIME, "pm25"]
    assert store.series("never_written").height == 0
    assert "never_written" not in store.measurements()


def test_measurements_lists_what_holds_data(store: Store) -> None:
    store.write("air_quality", readings(3), tags=TAGS)
    store.write("traffic_1h", readings(3), tags=TAGS)
    assert {"air_quality", "traffic_1h"} <= set(store.measurements())


@pytest.mark.parametrize(
    "value",
    [
        'quote"d',
        "apos'trophe",
        "back\\slash",
        "with space",
        "com,ma",
        "equal=sign",
        "Jouars-Pontchartrain ÉÈ 日本 😀",
        "' OR 1=1 --",
        '"; DROP MEASUREMENT x; --',
        "a\\'b",
        "x\\ny",
    ],
)
def test_special_characters_in_tags_round_trip_and_filter(store: Store, value: str) -> None:
    frame = pl.DataFrame(
        {TIME: [T0, T0], "insee": [value, "78498"], "device_id": [value, "plain"], "pm25": [1.0, 2.0]}
    )
    assert store.write("air quality,odd=name", frame, tags=TAGS).written == 2
    got = read_all(store, "air quality,odd=name", where={"device_id": value})
    assert got.select("insee", "device_id", "pm25").rows() == [(value, value, 1.0)]
    series = store.series("air quality,odd=name", where={"insee": value})
    assert series.select("insee", "device_id").rows() == [(value, value)]


def test_special_characters_in_field_names_and_string_values(store: Store) -> None:
    text = 'say "hi" \\ to\nthe ÉÈ, world=1 '
    frame = pl.DataFrame({TIME: [T0], "insee": ["1"], "odd key,=x": [text], 'q"f': [1.5]})
    store.write("m", frame, tags=["insee"])
    got = read_all(store, "m")
    assert got["odd key,=x"].to_list() == [text]
    assert got['q"f'].to_list() == [1.5]


def test_duplicate_timestamps_last_write_wins_field_by_field(store: Store) -> None:
    first = pl.DataFrame({TIME: [T0], "insee": ["1"], "device_id": ["d"], "a": [1.0], "b": [10]})
    second = pl.DataFrame({TIME: [T0], "insee": ["1"], "device_id": ["d"], "a": [2.0], "b": [None]})
    store.write("m", first, tags=TAGS)
    store.write("m", second.with_columns(pl.col("b").cast(pl.Int64)), tags=TAGS)
    got = read_all(store, "m")
    assert got.select("a", "b").rows() == [(2.0, 10)]


def test_duplicates_inside_one_batch_merge_in_order(store: Store) -> None:
    frame = pl.DataFrame(
        {
            TIME: [T0, T0, T0],
            "insee": ["1", "1", "1"],
            "device_id": ["d", "d", "d"],
            "a": [1.0, None, 3.0],
            "b": [1, 2, None],
        }
    )
    store.write("m", frame, tags=TAGS)
    assert read_all(store, "m").select("a", "b").rows() == [(3.0, 2)]


def test_write_many_stores_each_frame_as_write_would_in_order(store: Store) -> None:
    minute = readings(6)
    commune = pl.DataFrame({TIME: [T0, T0 + HOUR], "insee": ["1", "2"], "mean": [1.5, None]})
    # The same (tags, time) written twice in one call: the later frame wins field by field, and a
    # field it brings joins the measurement created earlier in the same call.
    again = minute.head(2).select(TIME, *TAGS, pl.lit(9.0).alias("pm25"), pl.lit(7).alias("extra"))
    reports = store.write_many(
        [
            Write("one", minute, TAGS),
            Write("per_commune", commune, ["insee"]),
            Write("one", again, TAGS),
        ]
    )
    assert [r.written for r in reports] == [6, 1, 2]
    assert [[r.row for r in report.rejected] for report in reports] == [[], [1], []]
    got = read_all(store, "one")
    assert got.height == 6
    assert got["pm25"].to_list() == [9.0, 9.0, *minute["pm25"].to_list()[2:]]
    assert got["count"].to_list() == minute["count"].to_list()
    assert got["extra"].to_list() == [7, 7, None, None, None, None]
    assert read_all(store, "per_commune").select("insee", "mean").rows() == [("1", 1.5)]


def test_write_many_refusing_one_frame_as_a_whole_writes_none(store: Store) -> None:
    with pytest.raises(WriteRejected, match="no 'time' column"):
        store.write_many([Write("m", readings(3), TAGS), Write("m", readings(3).drop(TIME), TAGS)])
    assert read_all(store, "m").is_empty()
    assert store.write_many([]) == []


def test_out_of_order_writes_read_sorted(store: Store) -> None:
    frame = readings(60)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=7)
    store.write("m", shuffled[30:], tags=TAGS)
    store.write("m", shuffled[:30], tags=TAGS)
    got = read_all(store, "m")
    assert_frame_equal(got, frame.select(got.columns).sort(TIME, "device_id", "insee"))


def test_time_range_is_half_open(store: Store) -> None:
    frame = readings(10, step_s=60)
    store.write("m", frame, tags=TAGS)
    start, end = T0 + timedelta(minutes=2), T0 + timedelta(minutes=5)
    got = store.read("m", start=start, end=end)
    assert (
        got[TIME].to_list()
        == frame.filter(pl.col(TIME).is_between(start, end, closed="left"))[TIME].to_list()
    )


def test_non_utc_input_is_converted_and_results_are_utc(store: Store) -> None:
    paris = pl.DataFrame(
        {
            TIME: pl.Series([datetime(2026, 7, 1, 14, 0)]).dt.replace_time_zone("Europe/Paris"),
            "insee": ["78498"],
            "x": [1.0],
        }
    )
    store.write("m", paris, tags=["insee"])
    start = datetime(2026, 7, 1, 13, 0, tzinfo=ZoneInfo("Europe/Paris"))
    got = store.read("m", start=start, end=start + HOUR + timedelta(seconds=1))
    assert got[TIME].to_list() == [datetime(2026, 7, 1, 12, 0, tzinfo=UTC)]
    assert got.schema[TIME] == TIME_DTYPE
    plus_five = timezone(timedelta(hours=5))
    assert (
        store.read("m", start=datetime(2026, 7, 1, 17, 0, tzinfo=plus_five), end=start + 2 * HOUR).height == 1
    )


def test_tag_filter_with_one_and_several_values(store: Store) -> None:
    frame = readings(30, devices=5)
    store.write("m", frame, tags=TAGS)
    one = read_all(store, "m", where={"device_id": "dev-1"})
    assert one.height == frame.filter(pl.col("device_id") == "dev-1").height > 0
    several = read_all(store, "m", where={"device_id": ["dev-1", "dev-3"], "insee": "92049"})
    expected = frame.filter(pl.col("device_id").is_in(["dev-1", "dev-3"]) & (pl.col("insee") == "92049"))
    assert sorted(several["count"].to_list()) == sorted(expected["count"].to_list())


def test_field_selection(store: Store) -> None:
    frame = readings(10)
    store.write("m", frame, tags=TAGS)
    got = read_all(store, "m", fields=["count", "pm25"])
    assert got.columns == [TIME, "device_id", "insee", "count", "pm25"]
    assert sorted(got["count"].to_list()) == frame["count"].to_list()


def test_field_selection_skips_rows_without_those_fields(store: Store) -> None:
    frame = pl.DataFrame({TIME: [T0, T0 + HOUR], "insee": ["1", "1"], "a": [1.0, None], "b": [None, 2.0]})
    store.write("m", frame, tags=["insee"])
    assert read_all(store, "m", fields=["a"]).select(TIME, "a").rows() == [(T0, 1.0)]


def test_series_last_time(store: Store) -> None:
    frame = readings(40, devices=4)
    store.write("m", frame, tags=TAGS)
    got = store.series("m")
    expected = frame.group_by(TAGS).agg(pl.col(TIME).max().alias("last_time"))
    assert_frame_equal(got.select(*TAGS, "last_time"), expected, check_row_order=False)
    filtered = store.series("m", where={"insee": "78498"})
    assert set(filtered["insee"]) == {"78498"}


def test_rows_without_any_field_are_refused_and_reported(store: Store) -> None:
    frame = pl.DataFrame(
        {TIME: [T0, T0 + HOUR, T0], "insee": ["1", "1", "2"], "a": [1.0, None, float("nan")]}
    )
    report = store.write("m", frame, tags=["insee"])
    assert report.written == 1
    assert [r.row for r in report.rejected] == [1, 2]
    assert read_all(store, "m").height == 1


def test_large_batch(store: Store) -> None:
    frame = readings(50_000, devices=200, step_s=1)
    assert store.write("m", frame, tags=TAGS).written == frame.height
    got = read_all(store, "m")
    assert got.height == frame.height
    assert got["count"].sum() == frame["count"].sum()


def test_missing_tag_reads_as_empty_string_and_filters_as_such(store: Store) -> None:
    frame = pl.DataFrame({TIME: [T0, T0], "insee": ["1", "2"], "field": ["pm25", None], "v": [1.0, 2.0]})
    store.write("rejected_readings", frame, tags=["insee", "field"])
    got = read_all(store, "rejected_readings", where={"field": ""})
    assert got.select("insee", "field").rows() == [("2", "")]


def test_field_type_conflict_refuses_only_the_rows_carrying_it(store: Store) -> None:
    first = readings(10)
    store.write("m", first, tags=TAGS)
    later = readings(10, start=T0 + HOUR)
    idx = pl.int_range(0, 10)
    conflicting = later.with_columns(
        pl.when(idx == 2).then(pl.lit(1, dtype=pl.Int64)).alias("pm25"),  # float in the store
        pl.when(idx == 6).then(pl.lit(1.5)).alias("count"),  # integer in the store
    ).with_columns(pl.when(idx.is_in([2, 6]).not_()).then(pl.col("state")).alias("state"))
    report = store.write("m", conflicting, tags=TAGS)
    assert [r.row for r in report.rejected] == [2, 6]
    assert all("conflict" in r.reason for r in report.rejected)
    assert report.written == 8
    assert read_all(store, "m").height == 18


def test_a_field_carried_only_by_refused_rows_is_not_stored(store: Store) -> None:
    store.write("m", readings(3), tags=TAGS)
    # The one row carrying "extra" is refused for its pm25 (an integer; the store holds floats).
    later = readings(3, start=T0 + HOUR).with_columns(
        pl.when(pl.int_range(0, 3) == 1).then(pl.lit(1, dtype=pl.Int64)).alias("pm25"),
        pl.when(pl.int_range(0, 3) == 1).then(pl.lit(2.5)).alias("extra"),
    )
    report = store.write("m", later, tags=TAGS)
    assert [r.row for r in report.rejected] == [1]
    assert "extra" not in read_all(store, "m").columns


def test_health_answers_with_backend_and_version(store: Store) -> None:
    health = store.health()
    assert health.ok, health.detail
    assert health.backend in {"duckdb", "influxdb"} and health.version


def test_series_filter_with_several_values_and_an_absent_tag(store: Store) -> None:
    frame = readings(20, devices=4)
    store.write("m", frame, tags=TAGS)
    got = store.series("m", where={"device_id": ["dev-0", "dev-2", "nobody"]})
    assert sorted(got["device_id"].to_list()) == ["dev-0", "dev-2"]
    assert store.series("m", where={"no_such_tag": "x"}).height == 0
    assert store.series("m", where={"no_such_tag": ""}).height == 4


# -- arrivals: the store filters on received_at --------------------------------------------------

# A 2026 nanosecond timestamp: past float64's exact integers, so a store that compared through a
# float would get the rows a few hundred ns either side of the threshold wrong.
THRESHOLD = int(T0.timestamp()) * 1_000_000_000 + 123_456_789


def received(offsets_ns: list[int | None]) -> pl.DataFrame:
    """One reading a minute from T0, received ``offset`` ns after ``THRESHOLD`` (None: no field)."""
    n = len(offsets_ns)
    return pl.DataFrame(
        {
            TIME: [T0 + timedelta(minutes=i) for i in range(n)],
            "insee": "78498",
            "device_id": [f"dev-{i % 2}" for i in range(n)],
            "pm25": [float(i) for i in range(n)],
            "received_at": [None if o is None else THRESHOLD + o for o in offsets_ns],
        },
        schema_overrides={TIME: TIME_DTYPE, "received_at": pl.Int64},
    )


def expected_arrivals(frame: pl.DataFrame, after: int | None, start: datetime, end: datetime) -> pl.DataFrame:
    kept = frame.filter((pl.col(TIME) >= start) & (pl.col(TIME) < end) & pl.col("received_at").is_not_null())
    if after is not None:
        kept = kept.filter(pl.col("received_at") > after)
    return kept.select(TIME, "received_at").sort(TIME, "received_at")


def test_arrivals_returns_only_rows_received_after_the_threshold(store: Store) -> None:
    # Before, exactly at, and after the threshold, by one ns and by a lot; one row without it.
    offsets: list[int | None] = [-3_600 * 10**9, -1, 0, 1, None, 255, 256, 3_600 * 10**9, -256]
    frame = received(offsets)
    store.write("air_quality", frame, tags=TAGS)
    start, end = T0 - HOUR, T0 + HOUR
    got = store.arrivals("air_quality", start=start, end=end, received_after_ns=THRESHOLD)
    assert got.schema == pl.Schema({TIME: TIME_DTYPE, "received_at": pl.Int64()})
    assert_frame_equal(got, expected_arrivals(frame, THRESHOLD, start, end))
    assert got["received_at"].to_list() == [
        THRESHOLD + 1,
        THRESHOLD + 255,
        THRESHOLD + 256,
        THRESHOLD + 3_600 * 10**9,
    ]


def test_arrivals_without_threshold_returns_every_row_that_has_received_at(store: Store) -> None:
    frame = received([5, None, -5, 0])
    store.write("air_quality", frame, tags=TAGS)
    got = store.arrivals("air_quality", start=T0 - HOUR, end=T0 + HOUR)
    assert_frame_equal(got, expected_arrivals(frame, None, T0 - HOUR, T0 + HOUR))
    assert got.height == 3


def test_arrivals_time_range_is_half_open_and_sorted(store: Store) -> None:
    frame = received([10, 20, 30, 40, 50])
    # Written out of order, several rows at one time (two devices).
    store.write("air_quality", frame.reverse(), tags=TAGS)
    twin = frame.with_columns(pl.lit("dev-9").alias("device_id"), pl.col("received_at") - 15)
    store.write("air_quality", twin, tags=TAGS)
    start, end = T0 + timedelta(minutes=1), T0 + timedelta(minutes=4)
    got = store.arrivals("air_quality", start=start, end=end, received_after_ns=THRESHOLD + 10)
    assert_frame_equal(got, expected_arrivals(pl.concat([frame, twin]), THRESHOLD + 10, start, end))
    assert got[TIME].to_list() == sorted(got[TIME].to_list())
    assert T0 + timedelta(minutes=4) not in got[TIME].to_list()


def test_arrivals_of_an_empty_or_unknown_measurement_or_without_the_field(store: Store) -> None:
    empty = store.arrivals("never_written", start=T0 - HOUR, end=T0 + HOUR, received_after_ns=0)
    assert empty.height == 0
    assert empty.schema == pl.Schema({TIME: TIME_DTYPE, "received_at": pl.Int64()})
    store.write("traffic_1h", readings(5), tags=TAGS)  # a measurement with no received_at field
    assert store.arrivals("traffic_1h", start=T0 - HOUR, end=T0 + HOUR).height == 0
    store.write("air_quality", received([1, 2]), tags=TAGS)
    nothing_new = store.arrivals(
        "air_quality", start=T0 - HOUR, end=T0 + HOUR, received_after_ns=THRESHOLD + 2
    )
    assert nothing_new.height == 0 and nothing_new.schema == empty.schema
    outside = store.arrivals("air_quality", start=T0 + HOUR, end=T0 + 2 * HOUR)
    assert outside.height == 0


@pytest.mark.parametrize("name", ['air "quality"', "air,quality x", "qualité'de l\\air", "' OR 1=1 --"])
def test_arrivals_of_a_measurement_name_needing_quotes(store: Store, name: str) -> None:
    frame = received([-1, 1, 2])
    store.write(name, frame, tags=TAGS)
    got = store.arrivals(name, start=T0 - HOUR, end=T0 + HOUR, received_after_ns=THRESHOLD)
    assert_frame_equal(got, expected_arrivals(frame, THRESHOLD, T0 - HOUR, T0 + HOUR))


@pytest.mark.parametrize("bad", [1.5e18, "1795873520123456789", True, 2**63])
def test_arrivals_refuses_a_threshold_that_is_not_an_int64(store: Store, bad: object) -> None:
    store.write("air_quality", received([1]), tags=TAGS)
    with pytest.raises(QueryError, match="received_after_ns"):
        store.arrivals("air_quality", start=T0 - HOUR, end=T0 + HOUR, received_after_ns=bad)  # type: ignore[arg-type]


def test_arrivals_refuses_naive_datetimes(store: Store) -> None:
    with pytest.raises(QueryError, match="time-zone-aware"):
        store.arrivals("air_quality", start=datetime(2026, 1, 1), end=datetime(2026, 1, 2))
