"""Compile the processing kernels ahead of time: ``python -m processing.warmup``.

numba compiles each kernel on its first call for the argument types it gets, then keeps the
machine code in its cache (``NUMBA_CACHE_DIR``, or ``__pycache__`` beside the source when that
is writable). A service would otherwise pay that compilation on its first run after a start in
a fresh container; the Docker image runs this once at build time.

The readings are made up here from the family specs, with the store's column types, so that
the production package needs nothing of the simulator.
"""

from __future__ import annotations

import time

import numpy as np
import polars as pl

from processing.aggregates import aggregate_all
from processing.anomalies import detect_anomalies
from sensors.families import FAMILIES, Family, FieldSpec
from sensors.frames import family_schema

_START_NS = 1_767_596_400_000_000_000  # 2026-01-05 07:00 Paris, a Monday morning
_PERIOD_NS = 10_000_000_000
_READINGS = 720  # two hours of one device at one reading every 10 s
_DEVICES = 2


def _values(spec: FieldSpec, phase: np.ndarray) -> pl.Series:
    """Plausible values of one field: a slow wave between its bounds, a counter that grows."""
    if spec.kind == "bool":
        return pl.Series(spec.name, np.sin(phase * 7) > 0.9)
    if spec.kind == "enum":
        choices = np.array(spec.choices or ("",))
        return pl.Series(spec.name, choices[np.arange(phase.size) % choices.size])
    low = spec.minimum if spec.minimum is not None else 0.0
    high = min(spec.maximum if spec.maximum is not None else low + 100.0, low + 1e6)
    wave = low + (high - low) * (0.3 + 0.2 * np.sin(phase))
    if spec.counter:
        wave = np.cumsum(np.abs(wave - low) * 0.01)
    if spec.kind == "int":
        return pl.Series(spec.name, np.round(wave).astype(np.int64))
    return pl.Series(spec.name, wave)


def synthetic_readings(family: str) -> pl.DataFrame:
    """Two devices of ``family`` in one commune over two hours, in the store's frame convention."""
    schema = family_schema(family)
    rows = _READINGS * _DEVICES
    device = np.repeat(np.arange(_DEVICES), _READINGS)
    step = np.tile(np.arange(_READINGS), _DEVICES)
    phase = step / 60.0 + device
    columns: list[pl.Series] = [
        pl.Series("time", _START_NS + step * _PERIOD_NS).cast(schema["time"]),
        pl.Series("insee", ["78498"] * rows),
        pl.Series("device_id", [f"warmup-{d}" for d in device]),
    ]
    spec = FAMILIES[Family(family)]
    columns += [_values(field, phase).cast(schema[field.name]) for field in spec.fields]
    columns.append(pl.Series("received_at", _START_NS + step * _PERIOD_NS).cast(pl.Int64))
    return pl.DataFrame(columns).sort("time", "insee", "device_id")


def compile_kernels() -> list[str]:
    """Run the aggregates and the anomaly pass of every family over two hours of readings.

    The frames have the store's types (what the runner reads), so the kernels are compiled for
    the argument types they get in service. Returns the families run.
    """
    families = [str(family) for family in FAMILIES]
    for family in families:
        frame = synthetic_readings(family)
        aggregate_all(frame, family, engine="compiled")
        detect_anomalies(frame, family)
    # A reading of -inf takes the aggregates' other way to the minutes' partials.
    stations = synthetic_readings("air_quality")
    aggregate_all(
        stations.with_columns(pl.lit(float("-inf")).alias("pm25")), "air_quality", engine="compiled"
    )
    return families


def main() -> None:
    """Command-line entry point."""
    began = time.perf_counter()
    families = compile_kernels()
    print(f"processing kernels ready for {', '.join(families)} in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
