"""Indices against hand-worked cases from the official thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from processing.indices import (
    atmo_daily,
    building_energy_daily,
    camera_hourly,
    eaqi_hourly,
    network_health,
    traffic_congestion,
    traffic_profile,
)
from processing.indices.network import RX_SENSITIVITY_DBM
from storage.base import TIME_DTYPE

PARIS = ZoneInfo("Europe/Paris")
DAY = datetime(2026, 6, 2, tzinfo=PARIS)  # a Tuesday, 24 hours long

# Annex of the arrêté du 10 juillet 2020, transcribed independently of processing.indices:
# the integer ranges of each class, in µg/m³.
ARRETE = {
    "pm25": [(0, 10), (11, 20), (21, 25), (26, 50), (51, 75)],
    "pm10": [(0, 20), (21, 40), (41, 50), (51, 100), (101, 150)],
    "no2": [(0, 40), (41, 90), (91, 120), (121, 230), (231, 340)],
    "o3": [(0, 50), (51, 100), (101, 130), (131, 240), (241, 380)],
    "so2": [(0, 100), (101, 200), (201, 350), (351, 500), (501, 750)],
}
ATMO_LABELS = ["bon", "moyen", "dégradé", "mauvais", "très mauvais", "extrêmement mauvais"]
ATMO_COLORS = ["#50F0E6", "#50CCAA", "#F0E641", "#FF5050", "#960032", "#872181"]
CLEAN = {"pm25": 1.0, "pm10": 1.0, "no2": 1.0, "o3": 1.0, "so2": 1.0}


def air_day(values: dict[str, float], *, minutes_per_hour: int = 60, hours: int = 24) -> pl.DataFrame:
    """One station reporting constant values every minute, for ``hours`` hours of DAY."""
    start = DAY.astimezone(UTC)
    times = [start + timedelta(hours=h, minutes=m) for h in range(hours) for m in range(minutes_per_hour)]
    return pl.DataFrame(
        {
            "time": pl.Series(times).cast(TIME_DTYPE),
            "insee": "78498",
            "device_id": "aq-78498-01",
            **{name: [value] * len(times) for name, value in values.items()},
        }
    )


@pytest.mark.parametrize("pollutant", list(ARRETE))
def test_each_atmo_class_boundary(pollutant: str) -> None:
    for position, (low, high) in enumerate(ARRETE[pollutant], start=1):
        for value, expected in ((low, position), (high, position), (high + 1, position + 1)):
            day = atmo_daily(air_day({**CLEAN, pollutant: float(value)}))
            row = day.row(0, named=True)
            assert row[f"sub_{pollutant}"] == expected, (pollutant, value)
            assert row["index"] == expected
            assert row["label"] == ATMO_LABELS[expected - 1]
            assert row["color"] == ATMO_COLORS[expected - 1]
            assert row["pollutant"] == (pollutant if expected > 1 else "pm25")


def test_atmo_reads_decimals_as_the_arrete_integers() -> None:
    assert atmo_daily(air_day({**CLEAN, "pm25": 10.49}))["sub_pm25"].item() == 1
    assert atmo_daily(air_day({**CLEAN, "pm25": 10.5}))["sub_pm25"].item() == 2


def test_atmo_uses_daily_mean_for_particles_and_hourly_maximum_for_gases() -> None:
    frame = air_day(CLEAN)
    hour = pl.col("time").dt.hour()
    # One hour at 300 µg/m³: a PM2.5 daily mean of (23 + 300) / 24 = 13.5 -> "14" -> moyen,
    # while an NO2 hourly maximum of 300 is très mauvais (231-340).
    frame = frame.with_columns(
        pl.when(hour == 12).then(300.0).otherwise(pl.col("pm25")).alias("pm25"),
        pl.when(hour == 12).then(300.0).otherwise(pl.col("no2")).alias("no2"),
    )
    row = atmo_daily(frame).row(0, named=True)
    assert row["pm25"] == pytest.approx((23 + 300) / 24)
    assert row["sub_pm25"] == 2
    assert row["sub_no2"] == 5
    assert (row["index"], row["pollutant"], row["label"]) == (5, "no2", "très mauvais")


def test_a_day_needs_eighteen_valid_hours() -> None:
    complete = atmo_daily(air_day({**CLEAN, "pm10": 60.0}, hours=18)).row(0, named=True)
    assert complete["complete"] and complete["index"] == 4
    short = atmo_daily(air_day({**CLEAN, "pm10": 60.0}, hours=17)).row(0, named=True)
    assert short["complete"] is False
    assert short["index"] is None and short["label"] is None and short["color"] is None
    assert short["sub_pm10"] is None


def test_an_hour_needs_three_quarters_of_its_minutes() -> None:
    assert atmo_daily(air_day(CLEAN, minutes_per_hour=45))["complete"].item() is True
    assert atmo_daily(air_day(CLEAN, minutes_per_hour=44))["complete"].item() is False


def test_a_missing_pollutant_makes_the_day_incomplete_not_guessed() -> None:
    values = {k: v for k, v in CLEAN.items() if k != "so2"}
    row = atmo_daily(air_day(values)).row(0, named=True)
    assert row["complete"] is False and row["index"] is None
    assert row["sub_pm25"] == 1  # what could be computed is still shown


def test_the_commune_takes_its_worst_station() -> None:
    clean = air_day(CLEAN)
    polluted = air_day({**CLEAN, "o3": 200.0}).with_columns(pl.lit("aq-78498-02").alias("device_id"))
    row = atmo_daily(pl.concat([clean, polluted])).row(0, named=True)
    assert (row["sub_o3"], row["index"]) == (4, 4)


# EEA European Air Quality Index bands (2024 revision), µg/m³, upper bounds of classes 1-5.
EEA = {
    "pm25": [5, 15, 50, 90, 140],
    "pm10": [15, 45, 120, 195, 270],
    "no2": [10, 25, 60, 100, 150],
    "o3": [60, 100, 120, 160, 180],
    "so2": [20, 40, 125, 190, 275],
}


@pytest.mark.parametrize("pollutant", list(EEA))
def test_each_eaqi_band_boundary(pollutant: str) -> None:
    for position, bound in enumerate(EEA[pollutant], start=1):
        for value, expected in ((bound, position), (bound + 0.01, position + 1)):
            hours = eaqi_hourly(air_day({**CLEAN, pollutant: float(value)}))
            last = hours.row(-1, named=True)  # the 24-hour PM means are complete by then
            assert last[f"sub_{pollutant}"] == expected, (pollutant, value)
            assert last["index"] == expected


def test_eaqi_particles_need_eighteen_hours_of_running_mean() -> None:
    hours = eaqi_hourly(air_day({**CLEAN, "pm25": 100.0}))
    assert hours["sub_pm25"].null_count() == 17
    assert hours["sub_pm25"][17] == 5
    assert hours["sub_no2"].null_count() == 0


def _traffic_hour(time: datetime, speed: float, occupancy: float, device: str = "tr-1") -> dict[str, object]:
    return {
        "time": time,
        "insee": "78498",
        "device_id": device,
        "averageVehicleSpeed_mean": speed,
        "occupancy_mean": occupancy,
        "intensity_mean": 10.0,
        "intensity_count": 60,
    }


def test_traffic_level_is_relative_to_the_sensors_own_hour_and_weekday() -> None:
    monday_8 = datetime(2026, 6, 1, 8, tzinfo=PARIS).astimezone(UTC)
    history = pl.DataFrame([_traffic_hour(monday_8 - timedelta(weeks=w), 50.0, 0.1) for w in range(1, 5)])
    history = history.with_columns(pl.col("time").cast(TIME_DTYPE))
    cases = [
        (45.0, 0.1, 0, "fluide"),
        (25.0, 0.1, 2, "ralenti"),
        (25.0, 0.4, 3, "saturé"),
        (5.0, 0.6, 4, "bloqué"),
    ]
    for speed, occupancy, level, label in cases:
        hourly = pl.DataFrame([_traffic_hour(monday_8, speed, occupancy)]).with_columns(
            pl.col("time").cast(TIME_DTYPE)
        )
        result = traffic_congestion(hourly, traffic_profile(history))
        sensor = result.filter(pl.col("device_id") == "tr-1").row(0, named=True)
        assert sensor["speed_ratio"] == pytest.approx(speed / 50.0)
        assert (sensor["level"], sensor["label"]) == (level, label)
        commune = result.filter(pl.col("device_id") == "_commune").row(0, named=True)
        assert commune["level"] == level


def test_traffic_without_history_has_no_level() -> None:
    hourly = pl.DataFrame([_traffic_hour(datetime(2026, 6, 1, 6, tzinfo=UTC), 30.0, 0.1)])
    hourly = hourly.with_columns(pl.col("time").cast(TIME_DTYPE))
    result = traffic_congestion(hourly, traffic_profile(hourly.clear()))
    assert result.filter(pl.col("device_id") == "tr-1")["level"].to_list() == [None]


def test_building_energy_deviation_from_its_weekday_baseline() -> None:
    tuesdays = [DAY - timedelta(weeks=w) for w in range(4, 0, -1)]
    history = pl.DataFrame(
        {
            "time": [d.astimezone(UTC) for d in tuesdays] + [(DAY - timedelta(days=1)).astimezone(UTC)],
            "insee": "78498",
            "device_id": "b-1",
            "energy_increase": [100.0, 120.0, 110.0, 400.0, 5.0],  # a Monday at 5 kWh does not count
        }
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    today = pl.DataFrame(
        {"time": [DAY.astimezone(UTC)], "insee": "78498", "device_id": "b-1", "energy_increase": [143.0]}
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    row = building_energy_daily(today, history).row(0, named=True)
    assert row["energy_kwh"] == 143.0
    assert row["baseline_kwh"] == pytest.approx(115.0)  # median of 100, 120, 110, 400
    assert row["deviation"] == pytest.approx(143.0 / 115.0 - 1)


def test_camera_hour_counts_and_health() -> None:
    start = datetime(2026, 6, 2, 9, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "time": [start + timedelta(minutes=m) for m in range(4)],
            "insee": "78498",
            "device_id": "cam-1",
            "peopleCount": [3, 4, 0, 5],
            "elevatedTemperatureCount": [0, 1, 0, 0],
            "online": [True, True, False, True],
            "tampered": [False, False, True, False],
            "framesPerSecond": [25.0, 25.0, 0.0, 25.0],
            "deviceTemperature": [30.0, 31.0, 35.0, 32.0],
        }
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    row = camera_hourly(frame).filter(pl.col("device_id") == "cam-1").row(0, named=True)
    assert (row["people"], row["elevated_temperature"]) == (12, 1)
    assert row["online_ratio"] == 0.75 and row["tampered"] is True
    assert row["device_temperature_max"] == 35.0 and row["readings"] == 4


def test_network_availability_margin_and_errors_with_a_reset() -> None:
    start = datetime(2026, 6, 2, 9, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "time": [start + timedelta(minutes=15 * i) for i in range(4)],
            "insee": "78498",
            "device_id": "olt-1",
            "linkUp": [True, False, True, True],
            "opticalRxPower": [-20.0, -24.5, -21.0, -20.0],
            "inErrors": [100, 160, 10, 30],  # rebooted between the 2nd and 3rd readings
            "crcErrors": [0, 0, 0, 36],
        }
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    row = network_health(frame).filter(pl.col("device_id") == "olt-1").row(0, named=True)
    assert row["availability"] == 0.75
    assert row["rx_margin_db"] == pytest.approx(-24.5 - RX_SENSITIVITY_DBM)
    assert row["errors"] == 60 + 10 + 20 + 36
    assert row["error_rate"] == pytest.approx(126 / 3600)
