"""The compiled anomaly pass gives the rows of the polars/numpy reference, whatever the input.

Random fleets with every awkward case the kernels handle on their own: missing readings, exact
ties (rounded values), devices with one, two or three readings, repeated timestamps, gaps,
values out of bounds, rows in any order, int fields and counters, columns in many chunks, and
the column pieces and device ranges split between the two threads.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from bench.anomaly_eval import evaluation_fleet, rejected_from_truth
from processing.anomalies import compiled as anomaly_compiled
from processing.anomalies import detect_anomalies, kernels
from sensors.families import FAMILIES, Family
from simulator.faults import FaultRates

START = datetime(2026, 3, 2, 22, tzinfo=UTC)  # a midnight inside the data
COMMUNES = ("78498", "92049")
EXACT = ("time", "insee", "family", "device_id", "field", "kind", "end_ns", "open")
FLOATS = ("observed", "expected", "score")


def assert_same_rows(compiled: pl.DataFrame, reference: pl.DataFrame) -> None:
    """Same rows: tags, times and flags exactly; values to the last few bits (polars itself
    rounds a division differently depending on where a value sits in its array)."""
    assert compiled.schema == reference.schema
    assert compiled.select(EXACT).rows() == reference.select(EXACT).rows()
    for name in FLOATS:
        np.testing.assert_allclose(
            compiled[name].to_numpy(), reference[name].to_numpy(), rtol=1e-12, err_msg=name
        )


def random_readings(seed: int, family: str = "air_quality") -> pl.DataFrame:
    """A small random fleet of ``family`` in the store convention, with faults and oddities."""
    rng = np.random.default_rng(seed)
    spec = FAMILIES[Family(family)]
    numeric = [f for f in spec.fields if f.kind in ("float", "int")]
    frames = []
    for device in range(int(rng.integers(1, 8))):
        n = int(rng.choice([1, 2, 3, 4, 7, int(rng.integers(40, 900))]))
        period = float(rng.choice([10.0, 60.0, 300.0]))
        steps = np.full(n, period)
        steps[rng.random(n) < 0.01] *= rng.integers(6, 60)  # silences
        steps[rng.random(n) < 0.01] = 0  # a repeated timestamp
        times = [START + timedelta(seconds=float(s)) for s in np.cumsum(steps) - steps[0]]
        columns: dict[str, object] = {
            "time": times,
            "insee": COMMUNES[device % 2],
            "device_id": f"dev-{seed}-{device:02d}",
        }
        for spec_field in numeric:
            low = spec_field.minimum if spec_field.minimum is not None else -100.0
            high = spec_field.maximum if spec_field.maximum is not None else 100.0
            span = min(high - low, 1e6)
            level = low + span * rng.uniform(0.2, 0.6)
            values = level + span * 0.01 * np.cumsum(rng.normal(0, 1, n)) / np.sqrt(n)
            values = np.round(values, int(rng.integers(0, 3)))  # ties
            spikes = rng.random(n) < 0.01
            values[spikes] += span * rng.choice([-0.2, 0.2], int(spikes.sum()))
            if n > 60 and rng.random() < 0.5:  # a flatline
                start = int(rng.integers(0, n - 50))
                values[start : start + int(rng.integers(5, 50))] = values[start]
            outside = rng.random(n) < 0.003
            values[outside] = high + span
            if spec_field.kind == "int":
                values = np.round(values)
            series = pl.Series(spec_field.name, values).set(pl.Series(rng.random(n) < 0.03), None)
            columns[spec_field.name] = (
                series.cast(pl.Int64, strict=False) if spec_field.kind == "int" else series
            )
        frames.append(pl.DataFrame(columns))
    frame = pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.col("time").cast(pl.Datetime("ns", "UTC"))
    )
    order = rng.choice(["time", "device", "shuffled"])
    if order == "time":
        return frame.sort("time", "insee", "device_id", maintain_order=True)
    if order == "device":
        return frame
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


def both(frame: pl.DataFrame, family: str, **options: object) -> tuple[pl.DataFrame, pl.DataFrame]:
    compiled = detect_anomalies(frame, family, **options)  # type: ignore[arg-type]
    reference = detect_anomalies(frame, family, engine="reference", **options)  # type: ignore[arg-type]
    return compiled, reference


@pytest.mark.parametrize("seed", range(12))
def test_random_air_quality_fleets_give_the_reference_rows(seed: int) -> None:
    frame = random_readings(seed)
    # A low threshold and short flatlines: more of every kind to compare.
    compiled, reference = both(frame, "air_quality", spike_threshold=4.0, stuck_min_duration_s=60.0)
    assert_same_rows(compiled, reference)
    compiled, reference = both(frame, "air_quality")
    assert_same_rows(compiled, reference)


@pytest.mark.parametrize("family", ["traffic", "building", "camera", "network"])
def test_int_fields_and_counters_give_the_reference_rows(family: str) -> None:
    for seed in range(3):
        frame = random_readings(100 + seed, family)
        compiled, reference = both(frame, family, spike_threshold=4.0, drift_fields=None)
        assert_same_rows(compiled, reference)


def test_a_randomised_fleet_finds_every_kind_the_same_way() -> None:
    """Enough devices and faults that every kind is found, so the comparison means something."""
    frame = pl.concat([random_readings(seed) for seed in range(20, 26)])
    compiled, reference = both(frame, "air_quality", spike_threshold=4.0, stuck_min_duration_s=60.0)
    assert set(compiled["kind"]) >= {"spike", "stuck", "offline", "out_of_bounds"}
    assert_same_rows(compiled, reference)


def test_the_simulated_fleet_gives_the_reference_rows() -> None:
    fleet = evaluation_fleet(days=1.0, faults=FaultRates.default(), seed=5)
    rejected = rejected_from_truth(fleet.ground_truth)
    for family, frame in fleet.frames.items():
        compiled, reference = both(frame, family, rejected=rejected, now=fleet.end)
        assert compiled.height > 0
        assert_same_rows(compiled, reference)


def test_pieces_and_device_ranges_split_between_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny pieces (Arrow slices whose nulls start mid-byte) and a split of the devices in two,
    on a column of many chunks: the same rows as one piece and one range."""
    frame = pl.concat([random_readings(seed) for seed in range(30, 34)])
    chunked = pl.concat([frame.slice(lo, 97) for lo in range(0, frame.height, 97)], rechunk=False)
    assert chunked["pm25"].n_chunks() > 1
    whole = detect_anomalies(frame, "air_quality", spike_threshold=4.0)
    monkeypatch.setattr(anomaly_compiled, "PIECE_ROWS", 13)
    monkeypatch.setattr(anomaly_compiled, "SPLIT_ROWS", 0)
    split = detect_anomalies(chunked, "air_quality", spike_threshold=4.0)
    assert split.equals(whole)


def test_nan_counts_as_a_missing_reading() -> None:
    frame = random_readings(40)
    as_nan = frame.with_columns(pl.col("pm25", "no2").fill_null(float("nan")))
    assert as_nan["pm25"].is_nan().any()
    assert detect_anomalies(as_nan, "air_quality").equals(detect_anomalies(frame, "air_quality"))


def test_single_readings_and_an_empty_frame() -> None:
    one = pl.DataFrame(
        {"time": [START, START], "insee": "78498", "device_id": ["a", "b"], "pm25": [10.0, 2000.0]}
    ).with_columns(pl.col("time").cast(pl.Datetime("ns", "UTC")))
    compiled, reference = both(one, "air_quality", now=START + timedelta(hours=1))
    assert_same_rows(compiled, reference)
    # b's value is beyond the contract; both devices have been silent for an hour.
    assert sorted(compiled["kind"]) == ["offline", "offline", "out_of_bounds"]
    assert detect_anomalies(one.clear(), "air_quality").height == 0


def test_an_unknown_engine_is_refused() -> None:
    frame = random_readings(1)
    with pytest.raises(ValueError, match="unknown anomaly engine 'fast'"):
        detect_anomalies(frame, "air_quality", engine="fast")  # type: ignore[arg-type]


def test_the_kernel_median_is_polars_median() -> None:
    """Odd and even counts, ties, a constant run, sorted input, float32: the same value as
    polars' median of the same numbers (which the reference engine uses)."""
    rng = np.random.default_rng(9)
    for trial in range(400):
        n = int(rng.integers(1, 300))
        values = [
            rng.normal(0, 1, n),
            np.round(rng.normal(0, 1, n), 1),
            np.full(n, 3.0),
            np.sort(np.round(rng.normal(0, 1, n), 1)),
        ][trial % 4]
        if trial % 5 == 0:
            values = values.astype(np.float32)
        expected = pl.DataFrame({"v": values}).select(pl.col("v").median()).item()
        got = kernels._median(values.copy(), n)
        if values.dtype == np.float32:
            got = float(np.float32(got))  # polars rounds a float32 median to float32
        assert got == expected, (trial, n)
    assert np.isnan(kernels._median(np.zeros(3), 0))


def test_nothing_is_compiled_again_for_nulls_or_int_options() -> None:
    """numba compiles a kernel once per argument types: a chunk with nulls, an option given as
    an int or a column in one chunk rather than many must not trigger a compilation (seconds) in
    the middle of a run."""
    with_nulls = pl.concat([random_readings(seed) for seed in range(50, 54)]).rechunk()
    without = pl.concat([random_readings(seed) for seed in range(50, 54)], rechunk=False).with_columns(
        pl.col(pl.Float64).fill_null(0.0)
    )
    assert without["device_id"].n_chunks() > 1
    detect_anomalies(without, "air_quality")
    compiled = {name: len(getattr(kernels, name).signatures) for name in KERNELS}
    detect_anomalies(
        with_nulls, "air_quality", spike_threshold=12, offline_min_readings=10, offline_periods=5
    )
    assert {name: len(getattr(kernels, name).signatures) for name in KERNELS} == compiled


KERNELS = (
    "device_positions",
    "sort_within_devices",
    "scatter_times",
    "scatter",
    "field_pass",
    "offline_pass",
)
