"""The fleet simulator's public API, in one import.

Generate data directly (tests, benchmarks, notebooks)::

    from datetime import UTC, datetime, timedelta
    from simulator import FaultRates, FleetConfig, generate_fleet

    fleet = generate_fleet(
        FleetConfig(devices_per_family=44, period_s=10, seed=1, faults=FaultRates.default()),
        datetime(2026, 3, 2, tzinfo=UTC),
        timedelta(days=1),
    )
    fleet.frames["air_quality"]   # polars frame in the Store convention
    fleet.ground_truth            # one row per injected fault

or publish it over MQTT with ``simulator.publisher.publish_fleet`` (``smartcity simulate``).
See docs/simulator.md for the signal model, the fault model and the ground-truth format.
"""

from __future__ import annotations

from simulator.faults import GROUND_TRUTH_SCHEMA, FaultKind, FaultRates, FaultSpecError
from simulator.fleet import DEVICE_PREFIXES, Fleet, FleetConfig, FleetConfigError, device_ids, generate_fleet

__all__ = [
    "DEVICE_PREFIXES",
    "GROUND_TRUTH_SCHEMA",
    "FaultKind",
    "FaultRates",
    "FaultSpecError",
    "Fleet",
    "FleetConfig",
    "FleetConfigError",
    "device_ids",
    "generate_fleet",
]
