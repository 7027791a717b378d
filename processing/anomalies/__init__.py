"""Anomaly detection on raw readings: out of bounds, spikes, stuck sensors, drift, offline devices.

Every function here is pure (frames in, frames out), so it runs the same in the runner and in a
notebook. One module per detector (``bounds``, ``spikes``, ``stuck``, ``drift``, ``offline``)
holds its polars and numpy reference; by default the per-device detectors run as compiled
numba kernels (``compiled``, ``kernels``) that give the same rows (``engine="reference"`` runs
the reference)::

    from processing.anomalies import detect_anomalies
    anomalies = detect_anomalies(readings, "air_quality", rejected=rejected)

The result has the schema of the ``anomalies`` measurement (docs/measurements.md); docs/anomalies.md
explains each method and why it uses robust statistics (medians and MADs) rather than means and
standard deviations, which the very outliers they look for would inflate.

Output is deterministic: the same input gives the same rows with the same start times, so the
runner can rewrite them as often as late data requires.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import polars as pl

from processing.anomalies.bounds import merge_out_of_bounds, out_of_bounds_points
from processing.anomalies.compiled import PerDevice, per_device_pass
from processing.anomalies.drift import find_drift
from processing.anomalies.frame import (
    ANOMALY_SCHEMA,
    ANOMALY_TAGS,
    DEV,
    KINDS,
    AnomalyOptionError,
    AnomalyOptions,
    Prepared,
    check_readings,
    empty_anomalies,
    finish,
    prepare_chunks,
)
from processing.anomalies.offline import find_offline
from processing.anomalies.spikes import (
    find_spikes,
    hourly_medians,
    with_positions,
    without_flatlines,
)
from processing.anomalies.stuck import FlatRuns, find_stuck, flat_runs
from processing.threads import worker_threads

__all__ = [
    "ANOMALY_SCHEMA",
    "ANOMALY_TAGS",
    "KINDS",
    "AnomalyOptionError",
    "AnomalyOptions",
    "Engine",
    "detect_anomalies",
    "detect_drift",
    "detect_offline",
    "detect_out_of_bounds",
    "detect_spikes",
    "detect_stuck",
]


# ---------------------------------------------------------------------------------------------
# Entry points


def detect_anomalies(
    frame: pl.DataFrame,
    family: str,
    *,
    rejected: pl.DataFrame | None = None,
    now: datetime | None = None,
    engine: Engine = "compiled",
    **options: Any,
) -> pl.DataFrame:
    """Every kind of anomaly in ``frame``, raw readings of one ``family`` in the store convention.

    ``rejected`` holds rows of ``rejected_readings`` (any family and reason: those that are
    ``out_of_bounds`` values of this family become anomalies). ``now`` is the time at which a
    silent device or a flatline still going on counts as open; None means the latest reading
    of ``frame``. ``engine`` picks the implementation of the per-device part (see
    :data:`Engine`; both give the same rows). ``options`` are the fields of :class:`AnomalyOptions`.

    Returns rows in the schema of the ``anomalies`` measurement, sorted by time then tags.
    """
    return _run(frame, family, KINDS, rejected=rejected, now=now, options=options, engine=engine)


def detect_out_of_bounds(
    frame: pl.DataFrame, family: str, *, rejected: pl.DataFrame | None = None, **options: Any
) -> pl.DataFrame:
    """Values outside the contract's physical bounds, in ``frame`` or refused by ingest.

    Readings of one device and field closer than ``out_of_bounds_merge_s`` form one anomaly;
    ``observed`` is the worst value, ``expected`` the bound it crossed, ``score`` how far beyond
    it as a share of the field's physical range.
    """
    return _run(frame, family, ("out_of_bounds",), rejected=rejected, options=options)


def detect_spikes(frame: pl.DataFrame, family: str, **options: Any) -> pl.DataFrame:
    """Readings far from their neighbours on both sides (a Hampel filter: medians and MADs).

    Each reading is compared with the median of the three readings before it and with the
    median of the three after it; the smaller distance, when both are in the same direction,
    is scaled by 1.4826 x the median of that distance for the device and field over the same
    clock hour. Consecutive spiking readings form one anomaly whose ``observed`` is the worst
    value, ``expected`` the nearer side's median there and ``score`` its robust z.
    """
    return _run(frame, family, ("spike",), options=options)


def detect_stuck(
    frame: pl.DataFrame, family: str, *, now: datetime | None = None, **options: Any
) -> pl.DataFrame:
    """Flatlines: a field repeating the exact same value for longer than the field allows.

    The allowed duration is learned from the fleet (see :class:`AnomalyOptions`); fields that are
    constant by nature, counters, booleans, enums, and runs at a physical bound (zero vehicles
    at night, a saturated humidity) are left out. ``score`` is the duration over the allowed
    duration; ``observed`` the repeated value; ``expected`` the device's median for that field.
    """
    return _run(frame, family, ("stuck",), now=now, options=options)


def detect_drift(frame: pl.DataFrame, family: str, **options: Any) -> pl.DataFrame:
    """Devices diverging for hours from the other devices of their family in their commune.

    Per device, field and clock hour, on hourly medians: the device's value in units of its
    own spread is fitted (least squares, then again without the hours far off) on the median of
    the commune's devices (at least ``drift_min_devices``) in theirs, which takes out its gain
    and offset; the residual is scored in units of the device's own typical residual (at least
    ``drift_scale_floor``). An hour beyond ``drift_threshold``, or two hours in a row beyond
    ``drift_run_threshold`` in the same direction, drift. ``observed`` is the device's hourly
    median at the worst hour, ``expected`` what the fit said, ``score`` the hour's score.
    """
    return _run(frame, family, ("drift",), options=options)


def detect_offline(
    frame: pl.DataFrame, family: str, *, now: datetime | None = None, **options: Any
) -> pl.DataFrame:
    """Devices silent for more than ``offline_periods`` reporting periods.

    A device's period is its own median interval between readings (or the family's
    ``reporting_period_s`` when it has too few readings). The anomaly starts at the last reading
    before the silence and ends at the first reading after it; a device still silent at ``now``
    has an open anomaly (``open`` true, ``end_ns`` null). ``observed`` is the silence in seconds,
    ``expected`` the period, ``score`` their ratio.
    """
    return _run(frame, family, ("offline",), now=now, options=options)


Engine = Literal["compiled", "reference"]
"""How the per-device part of the pass runs: ``compiled`` (numba kernels, the default) or
``reference`` (polars and numpy, chunk by chunk: slower, kept as the oracle the kernels are
tested against)."""


def _run(
    frame: pl.DataFrame,
    family: str,
    kinds: tuple[str, ...],
    *,
    rejected: pl.DataFrame | None = None,
    now: datetime | None = None,
    options: dict[str, Any],
    engine: Engine = "compiled",
) -> pl.DataFrame:
    """The detectors of ``kinds`` over ``frame``: the per-device part, then what needs the whole
    fleet (the allowed flatline durations, the commune medians of drift), computed from small
    per-device summaries."""
    opts = AnomalyOptions.from_kwargs(options)
    if engine == "compiled":
        found = per_device_pass(check_readings(frame, family, now=now), kinds, opts)
    elif engine == "reference":
        found = _reference_pass(frame, family, kinds, opts, now)
    else:
        raise ValueError(f"unknown anomaly engine {engine!r}; known: compiled, reference")
    prep = found.prep
    stuck = find_stuck(prep, opts, found.runs, found.hourly) if "stuck" in kinds else empty_anomalies()
    parts = [stuck]
    if "offline" in kinds:
        parts.append(found.offline)
    if "out_of_bounds" in kinds:
        parts.append(merge_out_of_bounds(prep, opts, [found.out_of_bounds], rejected))
    if "spike" in kinds:
        parts.append(without_flatlines(found.spikes, stuck))
    if "drift" in kinds and found.hourly is not None:
        parts.append(find_drift(prep, opts, found.hourly))
    kept = [part for part in parts if part.height]
    return finish(pl.concat(kept, how="diagonal_relaxed")) if kept else empty_anomalies()


def _reference_pass(
    frame: pl.DataFrame, family: str, kinds: tuple[str, ...], opts: AnomalyOptions, now: datetime | None
) -> PerDevice:
    """The per-device detectors in polars and numpy, chunk of devices by chunk of devices.

    Chunks bound the memory of the intermediate columns.
    """
    partials: list[ChunkResult] = []
    prep: Prepared | None = None
    # One chunk per thread at a time: numpy and polars release the GIL, so the chunks run side
    # by side, and no more are gathered than run, to keep the memory bounded.
    workers = worker_threads()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[ChunkResult]] = deque()
        for prep in prepare_chunks(frame, family, now=now):
            pending.append(pool.submit(_detect_chunk, prep, kinds, opts))
            if len(pending) >= workers:
                partials.append(pending.popleft().result())
        partials.extend(future.result() for future in pending)
    assert prep is not None  # prepare_chunks always yields
    runs = FlatRuns()
    for partial in partials:
        if partial.runs is not None:
            runs.add(partial.runs)
    hourly = [p.hourly for p in partials if p.hourly is not None]
    points = [p.out_of_bounds for p in partials if p.out_of_bounds is not None]
    spikes = [p.spikes for p in partials if p.spikes is not None and p.spikes.height]
    offline = [p.offline for p in partials if p.offline is not None and p.offline.height]
    return PerDevice(
        prep=prep,
        out_of_bounds=pl.concat(points) if points else out_of_bounds_points(prep),
        spikes=pl.concat(spikes, how="diagonal_relaxed") if spikes else empty_anomalies(),
        offline=pl.concat(offline, how="diagonal_relaxed") if offline else empty_anomalies(),
        hourly=pl.concat(hourly) if hourly else None,
        runs=runs,
    )


@dataclass(slots=True)
class ChunkResult:
    """What one chunk of devices contributes to the reference engine's pass."""

    out_of_bounds: pl.DataFrame | None = None
    spikes: pl.DataFrame | None = None
    offline: pl.DataFrame | None = None
    hourly: pl.DataFrame | None = None
    runs: FlatRuns | None = None


def _detect_chunk(prep: Prepared, kinds: tuple[str, ...], opts: AnomalyOptions) -> ChunkResult:
    """The per-device part of every detector of ``kinds`` on one chunk (reference engine)."""
    result = ChunkResult()
    if prep.frame.height == 0:
        return result
    work = with_positions(prep.frame)
    hours = (
        hourly_medians(prep, work, prep.gauge_fields()) if {"spike", "stuck", "drift"} & set(kinds) else None
    )
    if "out_of_bounds" in kinds:
        result.out_of_bounds = out_of_bounds_points(prep)
    if "spike" in kinds and hours is not None:
        result.spikes = find_spikes(prep, opts, hours)
    if "stuck" in kinds:
        result.runs = flat_runs(prep)
    if "offline" in kinds:
        result.offline = find_offline(prep, opts)
    if hours is not None:
        result.hourly = hours.table.select(DEV, "hour", *prep.gauge_fields())
    return result
