"""Rolling aggregates against a direct computation, window boundaries, Paris days, counters."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from processing.aggregates import Engine, aggregate, aggregate_all
from processing.aggregates import compiled as compiled_engine
from processing.windows import floor, next_start, window_start, window_start_ns
from sensors.catalogue import WINDOWS, Level, aggregate_measurement
from storage.base import TIME_DTYPE, epoch_ns

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(params=["polars", "compiled"])
def engine(request: pytest.FixtureRequest) -> Engine:
    """Every test of behaviour runs on both engines: the polars reference and the compiled one."""
    return request.param  # type: ignore[no-any-return]


def readings(
    times: list[datetime],
    *,
    insee: list[str] | None = None,
    device_id: list[str] | None = None,
    **fields: Sequence[float | None],
) -> pl.DataFrame:
    n = len(times)
    return pl.DataFrame(
        {
            "time": pl.Series(times).cast(TIME_DTYPE),
            "insee": insee or ["78498"] * n,
            "device_id": device_id or ["aq-1"] * n,
            **{name: pl.Series(values, dtype=pl.Float64) for name, values in fields.items()},
        }
    )


def random_frame(rng: np.random.Generator, rows: int, start: datetime, span: timedelta) -> pl.DataFrame:
    offsets = rng.integers(0, int(span.total_seconds() * 1e3), rows)
    pm25 = rng.gamma(2.0, 6.0, rows)
    pm25[rng.random(rows) < 0.1] = np.nan  # some readings lack the field
    return pl.DataFrame(
        {
            "time": pl.Series([start + timedelta(milliseconds=int(o)) for o in offsets]).cast(TIME_DTYPE),
            "insee": rng.choice(["78498", "92049"], rows),
            "device_id": rng.choice(["a", "b", "c"], rows),
            "pm25": pm25,
            "no2": rng.normal(40, 10, rows),
        }
    ).with_columns(pl.col("pm25").fill_nan(None))


def direct(
    frame: pl.DataFrame, window: str, keys: list[str], field: str
) -> dict[tuple[object, ...], tuple[float, ...]]:
    """Mean, min, max, p95 (numpy, linear) and count of each group, computed row by row."""
    starts = frame.select(window_start(pl.col("time"), window))["time"].to_list()
    groups: dict[tuple[object, ...], list[float]] = {}
    for start, row in zip(starts, frame.iter_rows(named=True), strict=True):
        values = groups.setdefault((start, *(row[k] for k in keys)), [])
        if row[field] is not None:
            values.append(row[field])
    return {
        key: (float(np.mean(v)), min(v), max(v), float(np.percentile(v, 95)), len(v))
        if v
        else (None, None, None, None, 0)  # type: ignore[misc]
        for key, v in groups.items()
    }


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("level", ["device", "commune"])
def test_statistics_match_a_direct_computation(window: str, level: str, engine: Engine) -> None:
    rng = np.random.default_rng(7)
    frame = random_frame(rng, 3000, datetime(2026, 3, 28, 20, tzinfo=UTC), timedelta(hours=30))
    keys = ["insee", "device_id"] if level == "device" else ["insee"]
    result = aggregate(frame, "air_quality", window, level, engine=engine)  # type: ignore[arg-type]
    for field in ("pm25", "no2"):
        expected = direct(frame, window, keys, field)
        assert result.height == len(expected)
        for row in result.iter_rows(named=True):
            mean, low, high, p95, count = expected[(row["time"], *(row[k] for k in keys))]
            assert row[f"{field}_count"] == count
            if count:
                assert row[f"{field}_mean"] == pytest.approx(mean)
                assert row[f"{field}_min"] == low
                assert row[f"{field}_max"] == high
                assert row[f"{field}_p95"] == pytest.approx(p95)
            else:
                assert row[f"{field}_mean"] is None


def test_a_reading_on_a_window_boundary_opens_the_next_window(engine: Engine) -> None:
    base = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    frame = readings(
        [base + timedelta(minutes=14, seconds=59, microseconds=999_999), base + timedelta(minutes=15)],
        pm25=[1.0, 2.0],
    )
    result = aggregate(frame, "air_quality", "15m", engine=engine)
    assert result["time"].to_list() == [base, base + timedelta(minutes=15)]
    assert result["pm25_mean"].to_list() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("day", "hours"),
    [(datetime(2026, 3, 29), 23), (datetime(2026, 10, 25), 25), (datetime(2026, 6, 1), 24)],
)
def test_day_windows_follow_paris_midnight_across_dst(day: datetime, hours: int, engine: Engine) -> None:
    midnight = day.replace(tzinfo=PARIS)
    following = (day + timedelta(days=1)).replace(tzinfo=PARIS)
    # One reading per UTC hour from an hour before the Paris day to an hour after it.
    times = [midnight.astimezone(UTC) + timedelta(hours=h) for h in range(-1, hours + 1)]
    frame = readings(times, pm25=[1.0] * len(times))
    result = aggregate(frame, "air_quality", "1d", engine=engine)
    by_start = dict(zip(result["time"].to_list(), result["pm25_count"].to_list(), strict=True))
    assert by_start[midnight.astimezone(UTC)] == hours
    assert by_start[following.astimezone(UTC)] == 1
    assert floor(midnight.astimezone(UTC) + timedelta(hours=hours - 1), "1d") == midnight.astimezone(UTC)
    assert next_start(midnight.astimezone(UTC), "1d") == following.astimezone(UTC)


def test_fast_day_windows_equal_the_time_zone_conversion_over_two_years() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    times = pl.datetime_range(
        start, start + timedelta(days=730), "37m", eager=True, time_unit="ns", time_zone="UTC"
    ).to_frame("time")
    lo, hi = epoch_ns(start), epoch_ns(start + timedelta(days=730))
    fast = times.select(window_start_ns(pl.col("time").cast(pl.Int64), "1d", lo, hi))["time"]
    slow = times.select(window_start(pl.col("time"), "1d").cast(pl.Int64))["time"]
    assert (fast == slow).all()


def test_counters_give_increases_with_resets_not_means(engine: Engine) -> None:
    base = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    times = [base + timedelta(minutes=20 * i) for i in range(7)]
    # Meter: 100 -> 110 -> 125 | 10:00 window: 130, reset to 4, 9 | 11:00: 20
    energy = [100.0, 110.0, 125.0, 130.0, 4.0, 9.0, 20.0]
    frame = readings(times, device_id=["b-1"] * 7, energy=energy, activePower=[1.0] * 7)
    hourly = aggregate(frame, "building", "1h", engine=engine)
    assert "energy_mean" not in hourly.columns
    rows = {row["time"]: row for row in hourly.iter_rows(named=True)}
    assert rows[base]["energy_increase"] == 25.0  # first reading has no known past
    assert rows[base + timedelta(hours=1)]["energy_increase"] == 5.0 + 4.0 + 5.0  # reset: counts the new 4
    assert rows[base + timedelta(hours=1)]["energy_resets"] == 1
    assert rows[base + timedelta(hours=2)]["energy_increase"] == 11.0
    daily = aggregate(frame, "building", "1d", engine=engine)
    assert daily["energy_increase"].to_list() == [sum(rows[t]["energy_increase"] for t in rows)]


def test_counter_increases_stay_within_each_device(engine: Engine) -> None:
    base = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    times = [base, base + timedelta(minutes=1), base, base + timedelta(minutes=1)]
    frame = readings(
        times,
        insee=["78498", "78498", "92049", "92049"],
        device_id=["n-1", "n-1", "n-2", "n-2"],
        inErrors=[1000.0, 1003.0, 5.0, 6.0],
    )
    result = aggregate(frame, "network", "1h", engine=engine).sort("insee")
    assert result["inErrors_increase"].to_list() == [3.0, 1.0]
    commune = aggregate(frame, "network", "1h", "commune", engine=engine).sort("insee")
    assert commune["inErrors_increase"].to_list() == [3.0, 1.0]


def test_every_window_and_level_is_named_after_the_data_model(engine: Engine) -> None:
    frame = readings([datetime(2026, 6, 1, tzinfo=UTC)], pm25=[3.0])
    names = set(aggregate_all(frame, "air_quality", engine=engine))
    assert names == {
        aggregate_measurement("air_quality", w, lv) for w in WINDOWS for lv in ("device", "commune")
    }
    assert "air_quality_1h_commune" in names


def test_empty_input_and_bad_input(engine: Engine) -> None:
    empty = readings([], pm25=[])
    assert aggregate(empty, "air_quality", "1h", engine=engine).is_empty()
    with pytest.raises(ValueError, match="unknown family"):
        aggregate(empty, "weather", "1h", engine=engine)
    with pytest.raises(ValueError, match="unknown window"):
        aggregate(empty, "air_quality", "5m", engine=engine)
    with pytest.raises(ValueError, match="device_id"):
        aggregate(empty.drop("device_id"), "air_quality", "1h", engine=engine)


def test_counter_results_do_not_depend_on_how_devices_are_sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counters are worked out a slice of devices at a time; the slicing must not show."""
    rng = np.random.default_rng(11)
    frame = random_frame(rng, 4000, datetime(2026, 10, 24, 18, tzinfo=UTC), timedelta(hours=40))
    frame = frame.sort("time").with_columns(
        # A meter per device, growing, replaced once in a while (goes back to a small value).
        energy=pl.col("no2").abs().cum_sum().over("insee", "device_id") % 5000,
        activePower=pl.col("pm25"),
    )
    whole = aggregate_all(frame, "building", engine="compiled")
    monkeypatch.setattr(compiled_engine, "CHUNK_ROWS", 1)  # every device on its own
    for name, sliced in aggregate_all(frame, "building", engine="compiled").items():
        # Sums taken in another order may differ in the last bit, nothing more.
        assert_frame_equal(sliced, whole[name], rel_tol=1e-12)
    assert whole[aggregate_measurement("building", "1d")]["energy_resets"].sum() > 0


def test_large_window_p95_equals_numpy_with_nulls_and_ties(engine: Engine) -> None:
    """Day and hour windows: the p95, selected above floors from the minutes, is numpy's."""
    rng = np.random.default_rng(5)
    start = datetime(2026, 6, 1, tzinfo=PARIS).astimezone(UTC)
    times = [start + timedelta(seconds=10 * i) for i in range(8640)]
    values: list[float | None] = [float(v) for v in rng.integers(0, 50, len(times))]  # many ties
    for i in rng.choice(len(times), 500, replace=False):
        values[i] = None
    results = aggregate_all(readings(times, pm25=values), "air_quality", levels=["device"], engine=engine)
    day = results[aggregate_measurement("air_quality", "1d")]
    present = [v for v in values if v is not None]
    assert day["pm25_count"].to_list() == [len(present)]
    assert day["pm25_p95"].to_list() == [float(np.percentile(present, 95))]
    hours = results[aggregate_measurement("air_quality", "1h")]
    for hour, p95 in enumerate(hours["pm25_p95"].to_list()):
        in_hour = [v for v in values[hour * 360 : (hour + 1) * 360] if v is not None]
        assert p95 == float(np.percentile(in_hour, 95))


def test_a_sample_that_overrates_a_window_still_gives_numpy_s_p95(engine: Engine) -> None:
    """Large windows select above a floor guessed from a sample of every 32nd reading: readings
    that are high exactly where the sample looks (and nowhere else) make the guess too high,
    and the result must still be exact (the engine falls back to a floor it can prove)."""
    start = datetime(2026, 6, 1, tzinfo=PARIS).astimezone(UTC)
    times = [start + timedelta(seconds=10 * i) for i in range(8640)]
    rng = np.random.default_rng(8)
    # A device's hour is laid out as 360 readings in a row, sampled from its first one.
    values = [100.0 + i if i % 360 % 32 == 0 else float(rng.integers(0, 10)) for i in range(len(times))]
    results = aggregate_all(readings(times, pm25=values), "air_quality", engine=engine)
    for window in ("1d", "1h"):
        for level in ("device", "commune"):
            frame = results[aggregate_measurement("air_quality", window, level)]
            span = 8640 if window == "1d" else 360
            expected = [float(np.percentile(values[i : i + span], 95)) for i in range(0, 8640, span)]
            assert frame["pm25_p95"].to_list() == expected, (window, level)


def test_infinite_readings_count_as_readings_not_as_missing_ones(engine: Engine) -> None:
    """A missing value is laid out as -inf inside the engine: a reading that is -inf itself
    (no sensor sends one, a notebook may) must still count, and +inf rank on top."""
    start = datetime(2026, 6, 1, 8, tzinfo=UTC)
    times = [start + timedelta(seconds=10 * i) for i in range(360)]
    values: list[float | None] = [float(i % 37) for i in range(360)]
    values[3], values[4], values[200] = float("-inf"), None, float("inf")
    results = aggregate_all(readings(times, pm25=values), "air_quality", levels=["device"], engine=engine)
    present = [v for v in values if v is not None]
    hour = results[aggregate_measurement("air_quality", "1h")]
    assert hour["pm25_count"].to_list() == [len(present)]
    assert hour["pm25_min"].to_list() == [float("-inf")]
    assert hour["pm25_max"].to_list() == [float("inf")]
    assert hour["pm25_p95"].to_list() == [float(np.percentile(present, 95))]
    first_minute = results[aggregate_measurement("air_quality", "1m")].row(0, named=True)
    assert first_minute["pm25_count"] == 5
    assert first_minute["pm25_min"] == float("-inf")
    assert first_minute["pm25_max"] == 5.0


def test_dense_minutes_in_any_row_order_match_a_direct_computation(engine: Engine) -> None:
    """Readings every second (60 in a minute, beyond the two-largest shortcut), with ties and
    nulls, in shuffled order: every window and level still equals numpy, and the row order of
    the input changes nothing."""
    rng = np.random.default_rng(3)
    start = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the autumn DST change is at 01:00 UTC
    seconds = 2 * 3600
    devices = [("78498", "aq-1"), ("78498", "aq-2"), ("92049", "aq-1")]
    times = [start + timedelta(seconds=s) for s in range(seconds)] * len(devices)
    insee = [tag for tag, _ in devices for _ in range(seconds)]
    device_id = [name for _, name in devices for _ in range(seconds)]
    values: list[float | None] = [float(v) for v in rng.integers(0, 40, len(times))]
    for i in rng.choice(len(times), len(times) // 20, replace=False):
        values[i] = None
    frame = readings(times, insee=insee, device_id=device_id, pm25=values).sort("time")
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=1)
    ordered = aggregate_all(frame, "air_quality", engine=engine)
    assert all(
        aggregate_all(shuffled, "air_quality", engine=engine)[name].equals(result)
        for name, result in ordered.items()
    )
    for window in WINDOWS:
        for level, keys in (("device", ["insee", "device_id"]), ("commune", ["insee"])):
            result = ordered[aggregate_measurement("air_quality", window, level)]  # type: ignore[arg-type]
            expected = direct(frame, window, keys, "pm25")
            assert result.height == len(expected)
            for row in result.iter_rows(named=True):
                mean, low, high, p95, count = expected[(row["time"], *(row[k] for k in keys))]
                assert (row["pm25_count"], row["pm25_min"], row["pm25_max"]) == (count, low, high)
                assert row["pm25_p95"] == p95
                assert row["pm25_mean"] == pytest.approx(mean)


def test_devices_stay_apart_when_their_tag_hashes_collide(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tags are told apart by a hash first; should two devices share it, the strings decide."""
    rng = np.random.default_rng(8)
    frame = random_frame(rng, 2000, datetime(2026, 5, 4, tzinfo=UTC), timedelta(hours=6))
    whole = aggregate_all(frame, "air_quality", engine="compiled")
    real_hashes = compiled_engine._tag_hashes

    def colliding(tags: pl.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
        device, commune = real_hashes(tags, seed)
        if seed == 0:  # every device on one key
            return np.zeros_like(device), np.zeros_like(commune)
        return device, commune

    monkeypatch.setattr(compiled_engine, "_tag_hashes", colliding)
    for name, result in aggregate_all(frame, "air_quality", engine="compiled").items():
        assert result.equals(whole[name]), name
    assert whole[aggregate_measurement("air_quality", "1d")]["device_id"].n_unique() == 3


def test_thousands_of_devices_each_keep_their_own_windows(engine: Engine) -> None:
    """Enough devices to make the tag table grow several times while rows are numbered."""
    devices = 9000
    start = datetime(2026, 4, 7, 6, tzinfo=UTC)
    times = [start, start + timedelta(seconds=30)] * devices
    device_id = [f"d-{i}" for i in range(devices) for _ in range(2)]
    insee = ["78498" if i % 3 else "92049" for i in range(devices) for _ in range(2)]
    pm25 = [float(i) for i in range(devices) for _ in range(2)]
    frame = readings(times, insee=insee, device_id=device_id, pm25=pm25).sample(fraction=1.0, seed=2)
    minute = aggregate(frame, "air_quality", "1m", engine=engine)
    assert minute.height == devices
    assert (minute["pm25_count"] == 2).all()
    own = minute.with_columns(pl.col("device_id").str.slice(2).cast(pl.Float64).alias("number"))
    assert (own["pm25_mean"] == own["number"]).all()
    assert minute.select(pl.col("insee") == "92049").to_series().sum() == devices // 3


def test_a_lazy_scan_gives_the_same_aggregates_as_a_frame(tmp_path: Path, engine: Engine) -> None:
    """Analysts pass a Parquet scan; extra columns (arrival times, notes) are not read."""
    rng = np.random.default_rng(4)
    frame = random_frame(rng, 3000, datetime(2026, 2, 3, tzinfo=UTC), timedelta(hours=5)).with_columns(
        received_at=pl.lit(0, dtype=pl.Int64), note=pl.lit("maintenance")
    )
    path = tmp_path / "day.parquet"
    frame.write_parquet(path)
    eager = aggregate_all(frame, "air_quality", engine=engine)
    for name, result in aggregate_all(pl.scan_parquet(path), "air_quality", engine=engine).items():
        assert result.equals(eager[name]), name


def test_results_stay_as_they_were_after_further_aggregations(engine: Engine) -> None:
    """Working arrays are reused from one field and one call to the next: nothing a call
    returned may change when the next one runs."""
    rng = np.random.default_rng(11)
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    first = aggregate_all(random_frame(rng, 3_000, start, timedelta(hours=3)), "air_quality", engine=engine)
    # Python values, not a polars clone: a clone would share the very buffers under test.
    kept = {name: frame.to_dict(as_series=False) for name, frame in first.items()}
    minutes = aggregate_measurement("air_quality", "1m")
    again = aggregate_all(random_frame(rng, 5_000, start, timedelta(hours=5)), "air_quality", engine=engine)
    assert again[minutes].height > first[minutes].height
    for name, frame in first.items():
        assert frame.height > 0
        assert frame.to_dict(as_series=False) == kept[name], name


def test_aggregating_leaves_numpy_s_huge_page_advice_as_it_was() -> None:
    """A library call changes nothing of the process (the service tunes it at start)."""
    advice = np._core.multiarray._get_madvise_hugepage  # type: ignore[attr-defined]
    for before in (False, True):  # numpy's default last
        np._core.multiarray._set_madvise_hugepage(before)  # type: ignore[attr-defined]
        rng = np.random.default_rng(12)
        frame = random_frame(rng, 500, datetime(2026, 3, 2, tzinfo=UTC), timedelta(hours=1))
        aggregate_all(frame, "air_quality", engine="compiled")
        assert advice() == before


def building_frame(rng: np.random.Generator) -> pl.DataFrame:
    """Plain fields with gaps and a meter per device that is replaced now and then."""
    frame = random_frame(rng, 6000, datetime(2026, 3, 28, 18, tzinfo=UTC), timedelta(hours=40))
    return frame.sort("time").with_columns(
        energy=pl.col("no2").abs().cum_sum().over("insee", "device_id") % 5000,
        activePower=pl.col("pm25"),
    )


@pytest.mark.parametrize("family", ["air_quality", "building"])
def test_the_compiled_engine_gives_the_reference_s_rows(family: str) -> None:
    """Across a DST change, with gaps and meter resets: same rows, same columns, same values
    (sums taken in another order may differ in the last bit of a mean, nothing more)."""
    frame = building_frame(np.random.default_rng(21))
    reference = aggregate_all(frame, family, engine="polars")
    compiled = aggregate_all(frame, family, engine="compiled")
    assert list(compiled) == list(reference)
    for name, rows in reference.items():
        assert rows.height > 0
        assert_frame_equal(compiled[name], rows, rel_tol=1e-12)
        exact = [c for c in rows.columns if not c.endswith(("_mean", "_increase"))]
        assert compiled[name].select(exact).equals(rows.select(exact)), name


def test_the_median_is_numpy_s_and_the_compiled_engine_takes_it_from_the_reference(engine: Engine) -> None:
    rng = np.random.default_rng(9)
    frame = random_frame(rng, 3000, datetime(2026, 6, 1, 6, tzinfo=UTC), timedelta(hours=6))
    result = aggregate(frame, "air_quality", "1h", "commune", statistics=["median", "count"], engine=engine)
    assert result.columns == ["time", "insee", "pm25_median", "pm25_count", "no2_median", "no2_count"]
    expected = aggregate(
        frame, "air_quality", "1h", "commune", statistics=["median", "count"], engine="polars"
    )
    assert result.equals(expected)
    starts = frame.select(window_start(pl.col("time"), "1h"))["time"]
    for row in result.iter_rows(named=True):
        here = frame.filter((starts == row["time"]) & (pl.col("insee") == row["insee"]))
        values = here["pm25"].drop_nulls().to_numpy()
        assert row["pm25_median"] == float(np.percentile(values, 50))
        assert row["pm25_median"] == pytest.approx(float(np.median(values)))


def test_statistics_not_asked_for_are_left_out_and_unknown_ones_named() -> None:
    frame = readings([datetime(2026, 6, 1, tzinfo=UTC)], pm25=[3.0])
    assert aggregate(frame, "air_quality", "1h", statistics=["max"]).columns == [
        "time",
        "insee",
        "device_id",
        "pm25_max",
    ]
    with pytest.raises(ValueError, match=r"unknown statistic.*p99.*expected some of mean"):
        aggregate(frame, "air_quality", "1h", statistics=["p99"])
    with pytest.raises(ValueError, match="unknown engine 'numpy'"):
        aggregate(frame, "air_quality", "1h", engine="numpy")  # type: ignore[arg-type]


@pytest.mark.parametrize("threads", [1, 3])
def test_compiled_results_do_not_depend_on_the_thread_count(threads: int) -> None:
    """Fields go to as many threads as set, and a day's hours are cut in as many parts."""
    frame = building_frame(np.random.default_rng(22))
    default = aggregate_all(frame, "air_quality", engine="compiled")
    for name, rows in aggregate_all(frame, "air_quality", engine="compiled", threads=threads).items():
        assert_frame_equal(rows, default[name], rel_tol=1e-12)


def test_a_window_s_rows_do_not_depend_on_the_other_windows_asked_for(engine: Engine) -> None:
    """The runner asks for some windows, a backfill for all: the rows must be the same (polars
    may add a sum's terms in another order from one call to the next: the last bit, no more)."""
    frame = building_frame(np.random.default_rng(23))
    every = aggregate_all(frame, "building", engine=engine)
    levels: tuple[Level, ...] = ("device", "commune")
    for window in ("15m", "1d"):
        for level in levels:
            alone = aggregate(frame, "building", window, level, engine=engine)
            assert_frame_equal(alone, every[aggregate_measurement("building", window, level)], rel_tol=1e-12)
