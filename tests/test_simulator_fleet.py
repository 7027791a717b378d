"""The fleet generator: shape, determinism, realistic signals, and faults that are really there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np
import polars as pl
import pytest

from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES, Family
from simulator.faults import GROUND_TRUTH_SCHEMA, FaultKind, FaultRates, FaultSpecError
from simulator.fleet import DEVICE_PREFIXES, Fleet, FleetConfig, FleetConfigError, generate_fleet
from simulator.signals import distance_km
from storage.base import TIME_DTYPE

MONDAY = datetime(2026, 3, 2, tzinfo=UTC)
assert MONDAY.weekday() == 0
LOCAL = "Europe/Paris"
DTYPES = {"float": pl.Float64, "int": pl.Int64, "bool": pl.Boolean, "enum": pl.String}

FAULTY = FaultRates(
    spike=6,
    stuck=3,
    drift=2,
    offline=1,
    reset=2,
    out_of_bounds=3,
    dropout=0.01,
    late=0.01,
    out_of_order=0.01,
    duplicate=0.01,
    malformed=0.01,
    down=3,
    tamper=3,
)
"""High rates, so that every kind shows up in a short simulation."""


@cache
def week(seed: int = 3) -> Fleet:
    """A week of every family in every commune, a reading every 15 minutes."""
    return generate_fleet(FleetConfig(period_s=900, seed=seed), MONDAY, timedelta(days=7))


@cache
def faulty_pair() -> tuple[Fleet, Fleet]:
    """Two days at 5-minute resolution with the same seed: clean, and with many faults."""
    config = FleetConfig(period_s=300, seed=11, devices_per_family=2)
    clean = generate_fleet(config, MONDAY, timedelta(days=2))
    faulty = generate_fleet(
        FleetConfig(period_s=300, seed=11, devices_per_family=2, faults=FAULTY), MONDAY, timedelta(days=2)
    )
    return clean, faulty


def local(frame: pl.DataFrame) -> pl.DataFrame:
    """Add local hour and whether it is a work day."""
    when = pl.col("time").dt.convert_time_zone(LOCAL)
    return frame.with_columns(hour=when.dt.hour(), workday=when.dt.weekday() <= 5)


def test_frames_follow_the_store_convention_with_contract_dtypes() -> None:
    fleet = week()
    registry = CommuneRegistry.load()
    assert set(fleet.frames) == {family.value for family in Family}
    for name, frame in fleet.frames.items():
        spec = FAMILIES[Family(name)]
        assert frame.columns == ["time", "insee", "device_id", *(f.name for f in spec.fields), "received_at"]
        assert frame.schema["time"] == TIME_DTYPE
        assert frame.schema["insee"] == pl.String and frame.schema["device_id"] == pl.String
        for field in spec.fields:
            assert frame.schema[field.name] == DTYPES[field.kind], (name, field.name)
        assert frame.schema["received_at"] == pl.Int64
        # Every commune, two devices each, every 15 minutes for 7 days.
        assert frame.height == len(registry) * 2 * 7 * 96
        assert set(frame["insee"].unique()) == set(registry.codes)
        assert frame.equals(frame.sort("time", "insee", "device_id"))
        assert frame.select(pl.struct("time", "device_id").is_unique().all()).item()
        assert frame.null_count().sum_horizontal().item() == 0


def test_device_ids_are_readable_and_name_their_family_and_commune() -> None:
    fleet = week()
    for name, frame in fleet.frames.items():
        prefix = DEVICE_PREFIXES[Family(name)]
        ids = frame.select("insee", "device_id").unique()
        expected = pl.format(f"{prefix}-{{}}-0", "insee")
        assert ids.select((pl.col("device_id").str.head(-1) == expected).all()).item(), name
    assert "aq-78498-01" in fleet.frames["air_quality"]["device_id"].to_list()
    assert fleet.devices.height == len(CommuneRegistry.load()) * 2 * len(Family)


def test_same_seed_gives_the_same_data_and_another_seed_other_data() -> None:
    config = FleetConfig(period_s=600, seed=5, faults=FaultRates.default())
    first = generate_fleet(config, MONDAY, timedelta(days=1))
    again = generate_fleet(config, MONDAY, timedelta(days=1))
    other = generate_fleet(
        FleetConfig(period_s=600, seed=6, faults=FaultRates.default()), MONDAY, timedelta(days=1)
    )
    for name in first.frames:
        assert first.frames[name].equals(again.frames[name])
        assert not first.frames[name].equals(other.frames[name])
    assert first.ground_truth.equals(again.ground_truth)
    assert not first.ground_truth.equals(other.ground_truth)


def test_a_family_does_not_depend_on_which_other_families_are_simulated() -> None:
    alone = generate_fleet(FleetConfig(families=["traffic"], period_s=600), MONDAY, timedelta(days=1))
    together = generate_fleet(FleetConfig(period_s=600), MONDAY, timedelta(days=1))
    assert list(alone.frames) == ["traffic"]
    assert alone.frames["traffic"].equals(together.frames["traffic"])


def test_clean_values_stay_inside_the_physical_bounds() -> None:
    for name, frame in week(seed=8).frames.items():
        for field in FAMILIES[Family(name)].fields:
            column = frame[field.name]
            if field.minimum is not None:
                assert column.min() >= field.minimum, (name, field.name)  # type: ignore[operator]
            if field.maximum is not None:
                assert column.max() <= field.maximum, (name, field.name)  # type: ignore[operator]
            if field.kind == "enum":
                assert set(column.unique()) <= set(field.choices)


def hourly_mean(frame: pl.DataFrame, field: str, hours: range, *, workday: bool = True) -> float:
    selected = local(frame).filter(pl.col("hour").is_in(list(hours)), pl.col("workday") == workday)
    return float(selected[field].cast(pl.Float64).mean())  # type: ignore[arg-type]


def test_traffic_peaks_at_rush_hours_on_work_days() -> None:
    traffic = week().frames["traffic"]
    rush = hourly_mean(traffic, "intensity", range(8, 9))
    night = hourly_mean(traffic, "intensity", range(3, 4))
    evening = hourly_mean(traffic, "intensity", range(17, 19))
    weekend_morning = hourly_mean(traffic, "intensity", range(8, 9), workday=False)
    assert rush > 4 * night
    assert evening > 4 * night
    assert weekend_morning < rush
    # Congestion slows traffic down.
    assert hourly_mean(traffic, "averageVehicleSpeed", range(8, 9)) < hourly_mean(
        traffic, "averageVehicleSpeed", range(3, 4)
    )


def test_air_quality_follows_the_day() -> None:
    air = week().frames["air_quality"]
    assert hourly_mean(air, "o3", range(14, 18)) > 1.5 * hourly_mean(air, "o3", range(4, 7))
    assert hourly_mean(air, "no2", range(7, 10)) > 1.5 * hourly_mean(air, "no2", range(2, 5))
    assert hourly_mean(air, "temperature", range(14, 17)) > hourly_mean(air, "temperature", range(4, 7))


def test_buildings_are_used_on_work_days_in_opening_hours() -> None:
    building = week().frames["building"]
    open_hours = hourly_mean(building, "occupancy", range(9, 12))
    assert open_hours > 10 * max(hourly_mean(building, "occupancy", range(1, 5)), 0.1)
    assert open_hours > 10 * max(hourly_mean(building, "occupancy", range(9, 12), workday=False), 0.1)
    assert hourly_mean(building, "co2", range(9, 12)) > hourly_mean(building, "co2", range(1, 5)) + 100
    # Early March is cold: the heating runs in opening hours on work days, not at night.
    modes = local(building).filter(pl.col("workday"), pl.col("hour").is_in([9, 10, 11]))["hvacMode"]
    assert (modes == "heating").mean() > 0.5  # type: ignore[operator]
    night = local(building).filter(pl.col("hour").is_in([1, 2, 3]))["hvacMode"]
    assert (night == "off").all()


def test_camera_counts_follow_footfall_and_network_has_an_evening_peak() -> None:
    fleet = week()
    camera, network = fleet.frames["camera"], fleet.frames["network"]
    assert hourly_mean(camera, "peopleCount", range(12, 13)) > 4 * hourly_mean(
        camera, "peopleCount", range(2, 5)
    )
    assert hourly_mean(network, "throughputIn", range(20, 22)) > 2 * hourly_mean(
        network, "throughputIn", range(3, 5)
    )
    # Optical power is stable: a few hundredths of a dB of noise.
    spread = network.group_by("device_id").agg(pl.col("opticalRxPower").std())["opticalRxPower"]
    assert spread.max() < 0.1  # type: ignore[operator]


def test_cumulative_counters_never_decrease_on_clean_data() -> None:
    fleet = week()
    for family, counters in (("building", ["energy"]), ("network", ["inErrors", "crcErrors"])):
        frame = fleet.frames[family].sort("device_id", "time")
        steps = frame.select(pl.col(counters).diff().over("device_id")).drop_nulls()
        assert steps.select(pl.all().min()).min_horizontal().item() >= 0
        assert frame.group_by("device_id").agg(pl.col(counters[0]).n_unique() > 1)[counters[0]].all()


def test_sensors_of_a_commune_move_together_and_near_communes_more_than_far_ones() -> None:
    fleet = generate_fleet(
        FleetConfig(period_s=1800, families=["air_quality"], seed=2), MONDAY, timedelta(days=60)
    )
    pm25 = fleet.frames["air_quality"].pivot(on="device_id", index="time", values="pm25")
    registry = CommuneRegistry.load()
    codes = registry.codes
    # Same commune: the shared component dominates.
    same = np.corrcoef(pm25["aq-78498-01"], pm25["aq-78498-02"])[0, 1]
    assert same > 0.7
    distances = distance_km(
        np.array([registry[c].latitude for c in codes]), np.array([registry[c].longitude for c in codes])
    )
    i = codes.index("78498")
    order = np.argsort(distances[i])
    nearest, farthest = codes[order[1]], codes[order[-1]]
    near = np.corrcoef(pm25["aq-78498-01"], pm25[f"aq-{nearest}-01"])[0, 1]
    far = np.corrcoef(pm25["aq-78498-01"], pm25[f"aq-{farthest}-01"])[0, 1]
    assert near > far


def test_ground_truth_has_the_documented_schema_and_every_kind() -> None:
    _, faulty = faulty_pair()
    truth = faulty.ground_truth
    assert truth.schema == pl.Schema(GROUND_TRUTH_SCHEMA)
    assert set(truth["kind"].unique()) == {kind.value for kind in FaultKind}
    assert (truth["end"] >= truth["start"]).all()
    assert week().ground_truth.is_empty()


def rows_of(fleet: Fleet, fault: dict[str, Any]) -> pl.DataFrame:
    """Rows of a fault's device between its start and end (inclusive)."""
    return fleet.frames[str(fault["family"])].filter(
        pl.col("device_id") == fault["device_id"], pl.col("time").is_between(fault["start"], fault["end"])
    )


def faults_of(fleet: Fleet, kind: FaultKind) -> list[dict[str, Any]]:
    rows = fleet.ground_truth.filter(pl.col("kind") == kind.value).to_dicts()
    assert rows, f"no {kind} injected"
    return rows


def test_stuck_periods_repeat_one_value() -> None:
    clean, faulty = faulty_pair()
    for fault in faults_of(faulty, FaultKind.STUCK):
        values = rows_of(faulty, fault)[str(fault["field"])]
        assert values.n_unique() == 1 and values[0] == fault["value"]
        assert len(values) == rows_of(clean, fault).height  # nothing else removed readings there
        assert rows_of(clean, fault)[str(fault["field"])].n_unique() > 1  # the clean signal moved


def test_offline_devices_send_nothing() -> None:
    clean, faulty = faulty_pair()
    period = timedelta(seconds=faulty.config.period_s)
    for fault in faults_of(faulty, FaultKind.OFFLINE):
        assert rows_of(faulty, fault).is_empty()
        steps = (fault["end"] - fault["start"]) // period + 1
        assert rows_of(clean, fault).height == steps


@pytest.mark.parametrize("kind", [FaultKind.DROPOUT, FaultKind.MALFORMED])
def test_dropped_and_malformed_readings_are_missing(kind: FaultKind) -> None:
    clean, faulty = faulty_pair()
    for fault in faults_of(faulty, kind):
        assert rows_of(faulty, fault).is_empty()
        assert rows_of(clean, fault).height == 1


def test_spikes_are_big_short_and_physically_possible() -> None:
    clean, faulty = faulty_pair()
    for fault in faults_of(faulty, FaultKind.SPIKE):
        name, family = str(fault["field"]), Family(str(fault["family"]))
        spiked = rows_of(faulty, fault)[name].cast(pl.Float64)
        normal = rows_of(clean, fault)[name].cast(pl.Float64)
        device = clean.frames[family.value].filter(pl.col("device_id") == fault["device_id"])[name]
        noise = device.cast(pl.Float64).diff().std()  # the step-to-step variability a detector sees
        assert 1 <= len(spiked) <= 3
        assert (spiked == fault["value"]).all()
        assert ((spiked - normal).abs() > 5 * noise).all()  # type: ignore[operator]
        spec = FAMILIES[family].field(name)
        assert spec is not None and all(spec.check(v) is None for v in rows_of(faulty, fault)[name])


def test_drift_ramps_away_from_the_clean_signal() -> None:
    clean, faulty = faulty_pair()
    for fault in faults_of(faulty, FaultKind.DRIFT):
        name = str(fault["field"])
        gap = (rows_of(faulty, fault)[name] - rows_of(clean, fault)[name]).to_numpy()
        assert abs(gap[0]) < 1e-9
        assert np.sign(gap[-1]) == np.sign(float(fault["value"]))
        assert abs(gap[-1]) > 0.5 * abs(float(fault["value"]))
        assert abs(gap[-1]) >= abs(gap[len(gap) // 2]) >= abs(gap[0])  # a ramp, not a jump


def test_counter_resets_drop_the_counter() -> None:
    _, faulty = faulty_pair()
    for fault in faults_of(faulty, FaultKind.RESET):
        name = str(fault["field"])
        frame = faulty.frames[str(fault["family"])].filter(pl.col("device_id") == fault["device_id"])
        before = frame.filter(pl.col("time") < fault["start"])[name]
        after = frame.filter(pl.col("time") == fault["start"])[name]
        assert after[0] == fault["value"]
        if len(before):
            assert after[0] < before[-1]


def test_out_of_bounds_fields_are_absent_from_the_frames() -> None:
    clean, faulty = faulty_pair()
    for fault in faults_of(faulty, FaultKind.OUT_OF_BOUNDS):
        name = str(fault["field"])
        row = rows_of(faulty, fault)
        assert row.height == 1 and row[name][0] is None
        spec = FAMILIES[Family(str(fault["family"]))].field(name)
        assert spec is not None and spec.check(float(fault["value"])) is not None
        assert rows_of(clean, fault)[name][0] is not None


def test_late_and_out_of_order_readings_arrive_after_their_successors() -> None:
    _, faulty = faulty_pair()
    for kind in (FaultKind.LATE, FaultKind.OUT_OF_ORDER):
        truth = faulty.ground_truth.filter(pl.col("kind") == kind.value)
        assert truth.height, f"no {kind} injected"
        for family, frame in faulty.frames.items():
            ordered = frame.sort("device_id", "time").with_columns(
                next_received=pl.col("received_at").shift(-1).over("device_id")
            )
            expected = truth.filter(pl.col("family") == family)
            hit = expected.join(ordered, left_on=["device_id", "start"], right_on=["device_id", "time"])
            assert hit.height == expected.height
            assert (hit["received_at"] == hit["end"].dt.epoch("ns")).all()
            if kind == FaultKind.OUT_OF_ORDER:
                assert (hit["received_at"] > hit["next_received"]).all()
            else:
                delay = hit["received_at"] - hit["start"].dt.epoch("ns")
                assert (delay >= 120 * 10**9).all()
    # Readings without a delivery fault arrive within a second; late ones minutes later, and
    # out-of-order ones after the next reading (5 minutes later here).
    latency = (
        faulty.frames["traffic"].select(pl.col("received_at") - pl.col("time").dt.epoch("ns")).to_series()
    )
    delayed = faulty.ground_truth.filter(
        pl.col("kind").is_in(["late", "out_of_order"]), pl.col("family") == "traffic"
    ).height
    assert (latency >= 120 * 10**9).sum() == delayed
    assert (latency < 10**9).sum() == latency.len() - delayed


@pytest.mark.parametrize(
    ("kind", "family", "status", "during", "quiet"),
    [
        (FaultKind.DOWN, "network", "linkUp", False, ["throughputIn", "throughputOut"]),
        (FaultKind.DOWN, "camera", "online", False, ["framesPerSecond", "peopleCount"]),
        (FaultKind.TAMPER, "camera", "tampered", True, ["peopleCount"]),
    ],
)
def test_devices_report_their_own_failures(
    kind: FaultKind, family: str, status: str, during: bool, quiet: list[str]
) -> None:
    clean, faulty = faulty_pair()
    faults = [f for f in faults_of(faulty, kind) if f["family"] == family]
    assert faults, f"no {kind} on {family}"
    for fault in faults:
        assert fault["field"] == status
        rows = rows_of(faulty, fault)
        assert rows.height == rows_of(clean, fault).height
        assert (rows[status] == during).all()
        for name in quiet:
            assert (rows[name] == 0).all()
    # Outside these periods the status is normal.
    periods = faulty.ground_truth.filter(pl.col("kind") == kind.value, pl.col("family") == family)
    frame = faulty.frames[family]
    inside = frame.join(periods.select("device_id", "start", "end"), on="device_id").filter(
        pl.col("time").is_between("start", "end")
    )
    assert (frame[status] == during).sum() == inside.height


def test_duplicates_are_one_row_in_the_frames() -> None:
    _, faulty = faulty_pair()
    for fault in faults_of(faulty, FaultKind.DUPLICATE):
        assert rows_of(faulty, fault).height == 1


def test_faults_come_from_their_own_random_stream() -> None:
    clean, faulty = faulty_pair()
    # Readings no fault touched are the same with or without faults.
    touched = faulty.ground_truth.select("device_id", "start", "end")
    frame = clean.frames["camera"].join(
        faulty.frames["camera"], on=["time", "device_id"], how="inner", suffix="_faulty"
    )
    device_faults = frame.join(touched, on="device_id", how="left").filter(
        pl.col("time").is_between("start", "end")
    )
    untouched = frame.join(device_faults.select("time", "device_id"), on=["time", "device_id"], how="anti")
    assert untouched.height > 0.3 * frame.height
    assert (untouched["peopleCount"] == untouched["peopleCount_faulty"]).all()


def test_fault_rates_parse_and_explain_mistakes() -> None:
    assert FaultRates.parse("none") == FaultRates()
    assert FaultRates.parse("default") == FaultRates.default()
    assert FaultRates.parse("spike=2, dropout=0.1") == FaultRates(spike=2, dropout=0.1)
    assert FaultRates.parse("default,spike=5").stuck == FaultRates.default().stuck
    assert FaultRates.parse("default,spike=5").spike == 5
    with pytest.raises(FaultSpecError, match="unknown fault kind 'spikes'"):
        FaultRates.parse("spikes=1")
    with pytest.raises(FaultSpecError, match="not a number"):
        FaultRates.parse("spike=often")
    with pytest.raises(FaultSpecError, match="probability per reading"):
        FaultRates.parse("dropout=2")
    with pytest.raises(FaultSpecError, match="expected kind=rate"):
        FaultRates.parse("spike")


def test_bad_fleet_configurations_are_refused_clearly() -> None:
    with pytest.raises(FleetConfigError, match="unknown family 'weather'"):
        generate_fleet(FleetConfig(families=["weather"]), MONDAY, timedelta(hours=1))
    with pytest.raises(FleetConfigError, match="not in the registry: 99999"):
        generate_fleet(FleetConfig(communes=["99999"]), MONDAY, timedelta(hours=1))
    with pytest.raises(FleetConfigError, match="timezone-aware"):
        generate_fleet(FleetConfig(), datetime(2026, 3, 2), timedelta(hours=1))
    with pytest.raises(FleetConfigError, match="not after start"):
        generate_fleet(FleetConfig(), MONDAY, MONDAY)
