"""The fleet the processing benchmarks run on: air-quality stations spread over the registry."""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet

COMMUNES = 9
"""The communes of the registry: the stations are spread evenly over them."""


def air_quality_stations(
    devices: int, start: datetime, end: datetime | timedelta, faults: FaultRates | None = None
) -> pl.DataFrame:
    """Readings every 10 s of about ``devices`` simulated stations over ``[start, end)``."""
    fleet = generate_fleet(
        FleetConfig(
            families=["air_quality"],
            devices_per_family=max(1, round(devices / COMMUNES)),
            period_s=10.0,
            faults=faults or FaultRates.none(),
        ),
        start,
        end,
    )
    return fleet.frames["air_quality"]
