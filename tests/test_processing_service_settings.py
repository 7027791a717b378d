"""What a processing service sets for its process at start, and what the catalogue holds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

import processing.indices  # noqa: F401 - the index modules register themselves
from processing import threads
from processing.memory import tune_for_service
from sensors.catalogue import index_spec, indices, register_index


@pytest.fixture
def restored() -> Iterator[None]:
    advice = np._core.multiarray._get_madvise_hugepage()  # type: ignore[attr-defined]
    yield
    threads.use_threads(None)
    np._core.multiarray._set_madvise_hugepage(advice)  # type: ignore[attr-defined]


def test_threads_default_to_the_cores_and_follow_the_service_setting(restored: None) -> None:
    assert threads.worker_threads() == threads.available_cores() >= 1
    threads.use_threads(3)
    assert threads.worker_threads() == 3
    threads.use_threads(None)
    assert threads.worker_threads() == threads.available_cores()
    with pytest.raises(ValueError, match="at least 1"):
        threads.use_threads(0)


def test_the_service_start_turns_numpy_s_huge_page_requests_off(restored: None) -> None:
    np._core.multiarray._set_madvise_hugepage(True)  # type: ignore[attr-defined]
    tune_for_service()
    assert not np._core.multiarray._get_madvise_hugepage()  # type: ignore[attr-defined]


def test_every_index_registers_its_measurement_family_and_compute_function() -> None:
    catalogue = indices()
    assert set(catalogue) == {
        "atmo_daily",
        "eaqi_hourly",
        "traffic_congestion",
        "building_energy_daily",
        "camera_hourly",
        "network_health",
    }
    for name, spec in catalogue.items():
        assert spec.name == name
        assert callable(spec.compute)
        assert set(spec.tags) <= {"insee", "device_id"}
    with pytest.raises(ValueError, match=r"unknown index 'weather'.*atmo_daily"):
        index_spec("weather")


def test_a_second_different_index_under_a_taken_name_is_refused() -> None:
    atmo = index_spec("atmo_daily")
    register_index(atmo)  # the same spec again (a module imported twice) is a no-op
    with pytest.raises(ValueError, match="registered twice"):
        register_index(replace(atmo, tags=("insee", "device_id")))
    assert index_spec("atmo_daily") == atmo
