"""Each anomaly detector on hand-built frames: what it must find, and what it must leave alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from processing.anomalies import (
    ANOMALY_SCHEMA,
    AnomalyOptionError,
    detect_anomalies,
    detect_drift,
    detect_offline,
    detect_out_of_bounds,
    detect_spikes,
    detect_stuck,
)
from processing.anomalies import frame as anomaly_frame

START = datetime(2026, 3, 2, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
INSEE = "78646"


def _times(n: int, step: timedelta = MINUTE) -> list[datetime]:
    return [START + i * step for i in range(n)]


def air_quality(
    devices: int = 3, minutes: int = 24 * 60, seed: int = 1, noise: float = 0.2
) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    """Air-quality stations of one commune: a diurnal temperature wave (a steep ramp in the
    morning) with a little noise, and NO2; time-major like a store read. Returns the frame and
    each device's temperature array, to inject faults into before building it."""
    rng = np.random.default_rng(seed)
    hours = np.arange(minutes) / 60
    series: dict[str, np.ndarray] = {}
    for d in range(devices):
        wave = 12 + 8 * np.sin((hours - 9) / 24 * 2 * np.pi)
        series[f"aq-{INSEE}-{d:02d}"] = np.round(wave + rng.normal(0, noise, minutes), 2)
    return _frame(series, rng), series


def _frame(series: dict[str, np.ndarray], rng: np.random.Generator) -> pl.DataFrame:
    frames = []
    for device, temperature in series.items():
        n = len(temperature)
        frames.append(
            pl.DataFrame(
                {
                    "time": _times(n),
                    "insee": INSEE,
                    "device_id": device,
                    "temperature": temperature,
                    "no2": np.round(30 + rng.normal(0, 1.0, n), 1),
                }
            )
        )
    return (
        pl.concat(frames)
        .with_columns(pl.col("time").cast(pl.Datetime("ns", "UTC")))
        .sort("time", "device_id")
    )


def rebuild(series: dict[str, np.ndarray], seed: int = 1) -> pl.DataFrame:
    return _frame(series, np.random.default_rng(seed + 100))


# --- schema, idempotence, bad input -------------------------------------------------------


def test_result_has_the_anomalies_measurement_schema_and_is_repeatable() -> None:
    frame, series = air_quality()
    series[f"aq-{INSEE}-00"][600] += 15
    frame = rebuild(series)
    first = detect_anomalies(frame, "air_quality")
    assert dict(first.schema) == ANOMALY_SCHEMA
    assert first.height >= 1
    # The same input in another row order gives exactly the same rows: rewriting them is harmless.
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    assert detect_anomalies(shuffled, "air_quality").equals(first)
    assert detect_anomalies(frame, "air_quality").equals(first)
    # Read device by device instead of time-major: no reordering needed, same rows.
    assert detect_anomalies(frame.sort("device_id", "time"), "air_quality").equals(first)


def test_chunks_of_devices_give_the_same_result_as_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    frame, series = air_quality(devices=5)
    series[f"aq-{INSEE}-01"][300] -= 12
    series[f"aq-{INSEE}-03"][700:820] = series[f"aq-{INSEE}-03"][700]
    frame = rebuild(series)
    whole = detect_anomalies(frame, "air_quality")
    monkeypatch.setattr(anomaly_frame, "CHUNK_ROWS", 2 * 24 * 60)  # two devices a chunk
    assert detect_anomalies(frame, "air_quality").equals(whole)
    assert set(whole["kind"]) >= {"spike", "stuck"}


def test_empty_frame_gives_an_empty_result() -> None:
    frame, _ = air_quality(devices=1, minutes=10)
    assert detect_anomalies(frame.clear(), "air_quality").height == 0


def test_bad_input_is_refused_with_a_clear_message() -> None:
    frame, _ = air_quality(devices=1, minutes=10)
    with pytest.raises(ValueError, match="unknown family 'weather'"):
        detect_anomalies(frame, "weather")
    with pytest.raises(AnomalyOptionError, match="spike_treshold"):
        detect_anomalies(frame, "air_quality", spike_treshold=3)
    with pytest.raises(AnomalyOptionError, match="offline_periods"):
        detect_anomalies(frame, "air_quality", offline_periods=-1)
    with pytest.raises(ValueError, match="device_id"):
        detect_anomalies(frame.drop("device_id"), "air_quality")
    with pytest.raises(ValueError, match="temperature must be numeric"):
        detect_anomalies(frame.with_columns(pl.col("temperature").cast(pl.String)), "air_quality")


# --- spikes --------------------------------------------------------------------------------


def test_a_clear_spike_is_found_with_its_value() -> None:
    _, series = air_quality()
    device = f"aq-{INSEE}-01"
    series[device][500] += 10  # 50 times the noise
    spikes = detect_spikes(rebuild(series), "air_quality")
    assert spikes.select("device_id", "field", "time").rows() == [
        (device, "temperature", START + 500 * MINUTE)
    ]
    row = spikes.row(0, named=True)
    assert row["observed"] == pytest.approx(series[device][500])
    assert abs(row["expected"] - series[device][499]) < 1.0
    assert row["score"] > 10
    assert row["end_ns"] == int((START + 500 * MINUTE).timestamp()) * 10**9
    assert row["open"] is False


def test_a_diurnal_ramp_and_a_step_are_not_spikes() -> None:
    _, series = air_quality()
    # The wave already has a steep morning ramp; add a step (heating switched on) too.
    series[f"aq-{INSEE}-02"][900:] += 6
    assert detect_spikes(rebuild(series), "air_quality").height == 0


def test_consecutive_spiking_readings_form_one_anomaly() -> None:
    _, series = air_quality()
    device = f"aq-{INSEE}-00"
    series[device][400:403] += np.array([9.0, 11.0, 9.0])
    spikes = detect_spikes(rebuild(series), "air_quality")
    assert spikes.height == 1
    row = spikes.row(0, named=True)
    assert row["time"] <= START + 401 * MINUTE
    assert row["end_ns"] >= int((START + 401 * MINUTE).timestamp()) * 10**9
    assert row["observed"] == pytest.approx(series[device][401])


# --- stuck ---------------------------------------------------------------------------------


def test_a_flatline_is_found_from_its_first_to_its_last_reading() -> None:
    _, series = air_quality()
    device = f"aq-{INSEE}-01"
    series[device][600:720] = series[device][600]  # two hours frozen
    stuck = detect_stuck(rebuild(series), "air_quality")
    assert stuck.select("device_id", "field", "time").rows() == [
        (device, "temperature", START + 600 * MINUTE)
    ]
    row = stuck.row(0, named=True)
    assert row["end_ns"] == int((START + 719 * MINUTE).timestamp()) * 10**9
    assert row["observed"] == pytest.approx(series[device][600])
    assert row["score"] > 1
    assert row["open"] is False


def test_a_flatline_still_going_at_the_end_is_open() -> None:
    _, series = air_quality()
    device = f"aq-{INSEE}-02"
    series[device][-90:] = series[device][-90]
    row = detect_stuck(rebuild(series), "air_quality").row(0, named=True)
    assert (row["device_id"], row["open"], row["end_ns"]) == (device, True, None)


def test_a_short_repeat_is_not_a_flatline() -> None:
    _, series = air_quality()
    series[f"aq-{INSEE}-01"][600:608] = series[f"aq-{INSEE}-01"][600]  # eight minutes
    assert detect_stuck(rebuild(series), "air_quality").height == 0


def test_legitimately_constant_fields_are_not_stuck() -> None:
    """Booleans, lane numbers, zero vehicles all night and a cumulative counter at rest."""
    rng = np.random.default_rng(5)
    n = 24 * 60
    hours = np.arange(n) / 60
    frames = []
    for d in range(3):
        expected = np.where((hours > 1) & (hours < 5), 0.0, 4 + 3 * np.sin(hours / 24 * 2 * np.pi))
        frames.append(
            pl.DataFrame(
                {
                    "time": _times(n),
                    "insee": INSEE,
                    "device_id": f"tr-{INSEE}-{d:02d}",
                    "intensity": rng.poisson(expected),
                    "averageVehicleSpeed": np.round(50 + rng.normal(0, 2, n), 1),
                    "occupancy": np.round(np.clip(rng.normal(0.02, 0.01, n), 0, 1), 3),
                    "laneId": np.full(n, d + 1),
                    "congested": np.zeros(n, dtype=bool),
                }
            )
        )
    traffic = pl.concat(frames).with_columns(pl.col("time").cast(pl.Datetime("ns", "UTC"))).sort("time")
    assert (traffic.filter(pl.col("intensity") == 0).height) > 3 * 200  # hours of zeros at night
    assert detect_stuck(traffic, "traffic").height == 0

    meters = pl.DataFrame(
        {
            "time": _times(n, timedelta(minutes=5))[: n // 5],
            "insee": INSEE,
            "device_id": "bd-1",
            "energy": np.full(n // 5, 1234.5),  # nobody there: the meter does not move
            "hvacMode": ["off"] * (n // 5),
        }
    ).with_columns(pl.col("time").cast(pl.Datetime("ns", "UTC")))
    assert detect_stuck(meters, "building").height == 0


# --- drift ---------------------------------------------------------------------------------


def test_a_device_drifting_from_its_commune_is_found() -> None:
    _, series = air_quality(devices=4)
    device = f"aq-{INSEE}-03"
    # Six hours of slow divergence, up to 2.5 times the wave's spread (the simulator's drifts).
    series[device][600:960] += np.linspace(0, 20, 360)
    drift = detect_drift(rebuild(series), "air_quality")
    assert set(drift.select("device_id", "field").rows()) == {(device, "temperature")}
    row = drift.sort("score").row(-1, named=True)
    assert START + 600 * MINUTE <= row["time"] < START + 960 * MINUTE
    assert row["observed"] > row["expected"]


def test_no_drift_without_enough_devices_to_compare_with() -> None:
    _, series = air_quality(devices=2)
    series[f"aq-{INSEE}-01"][600:960] += np.linspace(0, 12, 360)
    assert detect_drift(rebuild(series), "air_quality").height == 0


# --- offline -------------------------------------------------------------------------------


def test_offline_opens_and_closes() -> None:
    frame, _ = air_quality()
    device = f"aq-{INSEE}-00"
    silent_from, back_at = START + 300 * MINUTE, START + 400 * MINUTE
    gap = frame.filter(
        ~((pl.col("device_id") == device) & pl.col("time").is_between(silent_from, back_at, "left"))
    )
    row = detect_offline(gap, "air_quality").row(0, named=True)
    assert (row["device_id"], row["field"], row["open"]) == (device, "", False)
    assert row["time"] == silent_from - MINUTE  # its last reading before the silence
    assert row["end_ns"] == int(back_at.timestamp()) * 10**9
    assert row["observed"] == pytest.approx(101 * 60)
    assert row["expected"] == pytest.approx(60)

    # Still silent at `now`: open, no end; once it reports again the same row closes.
    before = gap.filter(pl.col("time") < silent_from + 30 * MINUTE)
    opened = detect_offline(before, "air_quality", now=silent_from + 30 * MINUTE)
    assert opened.select("device_id", "time", "open", "end_ns").rows() == [
        (device, silent_from - MINUTE, True, None)
    ]
    closed = detect_offline(gap, "air_quality")
    assert closed.select("device_id", "time").rows() == opened.select("device_id", "time").rows()


def test_a_few_lost_readings_are_not_offline() -> None:
    frame, _ = air_quality()
    lost = frame.filter(
        ~(
            (pl.col("device_id") == f"aq-{INSEE}-01")
            & pl.col("time").is_between(START + 100 * MINUTE, START + 103 * MINUTE)
        )
    )
    assert detect_offline(lost, "air_quality").height == 0


# --- out of bounds -------------------------------------------------------------------------


def test_out_of_bounds_from_rejected_readings_and_from_the_frame() -> None:
    frame, _ = air_quality(devices=2, minutes=60)
    device = f"aq-{INSEE}-01"
    frame = frame.with_columns(
        pl.when((pl.col("device_id") == device) & (pl.col("time") == START + 10 * MINUTE))
        .then(75.0)  # above the 60 °C physical maximum of the contract
        .otherwise(pl.col("temperature"))
        .alias("temperature")
    )
    rejected = pl.DataFrame(
        {
            "time": [START + 20 * MINUTE, START + 21 * MINUTE, START + 20 * MINUTE, START + 40 * MINUTE],
            "insee": INSEE,
            "family": ["air_quality", "air_quality", "traffic", "air_quality"],
            "device_id": [f"aq-{INSEE}-00", f"aq-{INSEE}-00", "tr-1", f"aq-{INSEE}-00"],
            "reason": ["out_of_bounds", "out_of_bounds", "out_of_bounds", "wrong_type"],
            "field": ["pm25", "pm25", "intensity", "no2"],
            "value": [1500.0, 1800.0, -3.0, None],
            "detail": "",
        }
    ).with_columns(pl.col("time").cast(pl.Datetime("ns", "UTC")))
    found = detect_out_of_bounds(frame, "air_quality", rejected=rejected)
    rows = found.select("device_id", "field", "time", "observed", "expected").rows()
    assert rows == [
        (device, "temperature", START + 10 * MINUTE, 75.0, 60.0),
        # Two refused readings a minute apart are one anomaly, with the worse value.
        (f"aq-{INSEE}-00", "pm25", START + 20 * MINUTE, 1800.0, 1000.0),
    ]
    assert found["end_ns"][1] == int((START + 21 * MINUTE).timestamp()) * 10**9
    assert found["score"][1] == pytest.approx(800 / 1000)
