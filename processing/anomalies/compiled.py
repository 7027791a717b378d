"""The per-device part of the anomaly pass, with compiled kernels (``processing.anomalies.kernels``).

Produces, for the whole input at once, what the polars/numpy reference does chunk by chunk
(``processing.anomalies._detect_chunk``): out-of-bounds readings, spike anomalies, offline
anomalies, hourly medians, flatline runs. The fleet-wide steps (the allowed flatline duration,
drift against the commune) then run on these small summaries, the same for both.

How it is fast: the readings are never reordered as a frame. One counting sort on a device code
says where each row goes when grouped by device; then, one field at a time, the column is
scattered into that layout (read once, in order) and one kernel call per share of the devices
walks each device's readings once, a share per thread (``processing.threads``). Memory beyond
the input: the layout (an int32 position and an int64 time per row) and one float64 column,
reused for every field.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from processing.anomalies import kernels
from processing.anomalies.bounds import empty_points
from processing.anomalies.frame import (
    ANOMALY_SCHEMA,
    DEV,
    MAD_TO_SIGMA,
    SECOND_NS,
    WHOLE_DEVICE,
    AnomalyOptions,
    CheckedReadings,
    Prepared,
    empty_anomalies,
)
from processing.anomalies.stuck import FlatRuns
from processing.threads import worker_threads

PIECE_ROWS = 1 << 20
"""Rows of a column scattered by one call: small enough to share the work between threads."""
SPLIT_ROWS = 200_000
"""Below this many readings the devices are not split between threads (not worth it)."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Positions = npt.NDArray[np.int32] | npt.NDArray[np.int64]


@dataclass(slots=True)
class PerDevice:
    """What the per-device detectors found over the whole input (frames as the reference's)."""

    prep: Prepared
    """The family, its devices and fields; its ``frame`` is empty (the kernels read the input)."""
    out_of_bounds: pl.DataFrame
    spikes: pl.DataFrame
    offline: pl.DataFrame
    hourly: pl.DataFrame | None
    runs: FlatRuns


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each row of the input goes when its rows are grouped by device, in time order."""

    offsets: IntArray
    """Device ``d``'s readings are ``offsets[d]:offsets[d + 1]`` of the grouped layout."""
    first_rows: IntArray
    """Each device's earliest row in the input."""
    times: IntArray
    """Times of the grouped layout, ns since the epoch."""
    positions: Positions
    """For each input row, its place in the grouped layout."""

    @property
    def devices(self) -> int:
        """Number of devices."""
        return len(self.offsets) - 1

    def device_ranges(self) -> list[tuple[int, int]]:
        """Device ranges of about the same number of readings, one per thread."""
        rows, threads = int(self.offsets[-1]), worker_threads()
        if rows < SPLIT_ROWS or self.devices < threads:
            return [(0, self.devices)]
        cuts = [0]
        for share in range(1, threads):
            cut = int(np.searchsorted(self.offsets, rows * share // threads))
            cuts.append(min(max(cut, cuts[-1]), self.devices))
        cuts.append(self.devices)
        return [(lo, hi) for lo, hi in itertools.pairwise(cuts) if hi > lo]


def per_device_pass(checked: CheckedReadings, kinds: tuple[str, ...], opts: AnomalyOptions) -> PerDevice:
    """The per-device detectors of ``kinds`` over ``checked`` readings, on compiled kernels."""
    with ThreadPoolExecutor(max_workers=worker_threads()) as pool:
        layout = _layout(checked.frame, pool)
        devices = (
            checked.frame.select(pl.col("insee").cast(pl.String), pl.col("device_id").cast(pl.String))
            .gather(layout.first_rows)
            .with_columns(pl.int_range(pl.len(), dtype=pl.UInt32).alias(DEV))
        )
        prep = Prepared(
            spec=checked.spec,
            frame=pl.DataFrame(),
            devices=devices,
            numeric_fields=checked.numeric_fields,
            now_ns=checked.now_ns,
        )
        result = PerDevice(
            prep=prep,
            out_of_bounds=empty_points(),
            spikes=empty_anomalies(),
            offline=empty_anomalies(),
            hourly=None,
            runs=FlatRuns(),
        )
        if checked.frame.height == 0:
            return result
        if "offline" in kinds:
            result.offline = _offline(prep, layout, opts, pool)
        if {"out_of_bounds", "spike", "stuck", "drift"} & set(kinds):
            _fields(prep, checked.frame, layout, opts, pool, result)
    return result


def _layout(frame: pl.DataFrame, pool: ThreadPoolExecutor) -> Layout:
    """Where each row of ``frame`` goes when grouped by device, and the times in that order."""
    # Positions fit in 32 bits for any frame that fits in memory: half the memory traffic.
    positions: Positions = (
        np.empty(frame.height, np.int32) if frame.height < 2**31 else np.empty(frame.height, np.int64)
    )
    times = np.empty(frame.height, np.int64)
    codes = _device_codes(frame["device_id"])
    offsets, first_rows = kernels.device_positions(codes, positions)
    del codes
    _wait(
        pool.submit(_scatter_time_piece, piece, positions, start, times)
        for start, piece in _pieces(_times_ns(frame))
    )
    kernels.sort_within_devices(times, positions, offsets, first_rows)
    return Layout(offsets=offsets, first_rows=first_rows, times=times, positions=positions)


def _fields(  # noqa: PLR0917 - private, called once
    prep: Prepared,
    frame: pl.DataFrame,
    layout: Layout,
    opts: AnomalyOptions,
    pool: ThreadPoolExecutor,
    result: PerDevice,
) -> None:
    """Run the field kernel on every numeric field, one field at a time, into ``result``."""
    gauges = set(prep.gauge_fields())
    grouped = np.empty(frame.height, np.float64)
    points: list[pl.DataFrame] = [result.out_of_bounds]
    spikes: list[pl.DataFrame] = []
    hourly: dict[str, pl.Series] = {}
    hour_keys: tuple[IntArray, IntArray] | None = None
    for name in prep.numeric_fields:
        spec = prep.field_spec(name)
        _wait(
            pool.submit(_scatter_piece, piece, layout.positions, start, grouped)
            for start, piece in _pieces(frame[name])
        )
        low = spec.minimum if spec.minimum is not None else -np.inf
        high = spec.maximum if spec.maximum is not None else np.inf
        unit = 1.0 if spec.kind == "int" else 1e-12  # a count moves by whole units
        calls = [
            pool.submit(
                _field_call,
                grouped,
                layout,
                lo,
                hi,
                low,
                high,
                name in gauges,
                unit,
                opts,
            )
            for lo, hi in layout.device_ranges()
        ]
        parts = [call.result() for call in calls]
        out = FieldResult(*(_concat([part[i] for part in parts]) for i in range(19)))
        comparable = sum(int(part[19]) for part in parts)
        repeated = sum(int(part[20]) for part in parts)
        if len(out.oob_dev):
            points.append(_points(prep, name, out))
        if name not in gauges:
            continue
        # An hour without any reading of the field has no median: null, as polars gives it.
        hourly[name] = pl.Series(name, out.hour_median, nan_to_null=True)
        hour_keys = (out.hour_dev, out.hour_key)
        if len(out.spike_dev):
            spikes.append(_spikes(name, out))
        result.runs.comparable[name] = comparable
        result.runs.repeated[name] = repeated
        if repeated:
            result.runs.runs[name] = [_runs(out)]
    result.out_of_bounds = pl.concat(points)
    if spikes:
        result.spikes = prep.with_tags(pl.concat(spikes)).with_columns(
            kind=pl.lit("spike"), open=pl.lit(False)
        )
    if hour_keys is not None:
        result.hourly = pl.DataFrame({DEV: hour_keys[0].astype(np.uint32), "hour": hour_keys[1], **hourly})


def _field_call(  # noqa: PLR0917 - mirrors the kernel's arguments
    grouped: FloatArray,
    layout: Layout,
    lo: int,
    hi: int,
    low: float,
    high: float,
    gauge: bool,
    unit: float,
    opts: AnomalyOptions,
) -> tuple[Any, ...]:
    """One call of the field kernel on devices ``lo:hi`` (runs on a pool thread, without the GIL)."""
    found: tuple[Any, ...] = kernels.field_pass(
        grouped,
        layout.times,
        layout.offsets,
        lo,
        hi,
        float(low),
        float(high),
        gauge,
        unit,
        float(opts.spike_threshold),
        float(opts.spike_scale_floor),
        MAD_TO_SIGMA,
    )
    return found


@dataclass(frozen=True, slots=True)
class FieldResult:
    """The arrays :func:`kernels.field_pass` returns, named."""

    oob_dev: IntArray
    oob_time: IntArray
    oob_value: FloatArray
    hour_dev: IntArray
    hour_key: IntArray
    hour_median: FloatArray
    hour_mad: FloatArray
    spike_dev: IntArray
    spike_start: IntArray
    spike_end: IntArray
    spike_observed: FloatArray
    spike_expected: FloatArray
    spike_score: FloatArray
    run_dev: IntArray
    run_start: IntArray
    run_end: IntArray
    run_value: FloatArray
    run_readings: IntArray
    run_open: npt.NDArray[np.bool_]


def _concat(arrays: list[Any]) -> Any:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _times(ns: IntArray) -> pl.Series:
    return pl.Series(ns, dtype=pl.Int64).cast(ANOMALY_SCHEMA["time"])


def _devs(devs: IntArray) -> pl.Series:
    return pl.Series(DEV, devs.astype(np.uint32))


def _points(prep: Prepared, name: str, out: FieldResult) -> pl.DataFrame:
    """Out-of-bounds readings of one field: ``time, insee, device_id, field, value``."""
    rows = pl.DataFrame({"time": _times(out.oob_time), DEV: _devs(out.oob_dev), "value": out.oob_value})
    return prep.with_tags(rows).select("time", "insee", "device_id", pl.lit(name).alias("field"), "value")


def _spikes(name: str, out: FieldResult) -> pl.DataFrame:
    """Spike anomalies of one field, tagged by device index."""
    return pl.DataFrame(
        {
            "time": _times(out.spike_start),
            "end_ns": out.spike_end,
            DEV: _devs(out.spike_dev),
            "field": pl.Series([name] * len(out.spike_dev), dtype=pl.String),
            "observed": out.spike_observed,
            "expected": out.spike_expected,
            "score": out.spike_score,
        }
    )


def _runs(out: FieldResult) -> pl.DataFrame:
    """Flatline runs of one field, as ``processing.anomalies.stuck.flat_runs`` gives them."""
    return pl.DataFrame(
        {
            DEV: _devs(out.run_dev),
            "time": _times(out.run_start),
            "_end": _times(out.run_end),
            "observed": out.run_value,
            "readings": pl.Series(out.run_readings).cast(pl.UInt32),
            "open": out.run_open,
            "duration_ns": out.run_end - out.run_start,
        }
    )


def _offline(prep: Prepared, layout: Layout, opts: AnomalyOptions, pool: ThreadPoolExecutor) -> pl.DataFrame:
    """Offline anomalies (see ``processing.anomalies.detect_offline``)."""
    default_ns = int(prep.spec.reporting_period_s * SECOND_NS)
    calls = [
        pool.submit(
            kernels.offline_pass,
            layout.times,
            layout.offsets,
            lo,
            hi,
            float(opts.offline_min_readings),
            default_ns,
            float(opts.offline_periods),
        )
        for lo, hi in layout.device_ranges()
    ]
    parts = [call.result() for call in calls]
    gap_dev, gap_start, gap_end, gap_period, period, last = (
        _concat([part[i] for part in parts]) for i in range(6)
    )
    gap_ns = (gap_end - gap_start).astype(np.float64)
    closed = pl.DataFrame(
        {
            "time": _times(gap_start),
            DEV: _devs(gap_dev),
            "end_ns": pl.Series(gap_end, dtype=pl.Int64),
            "observed": gap_ns / SECOND_NS,
            "expected": gap_period / SECOND_NS,
            "score": gap_ns / gap_period,
            "open": np.zeros(len(gap_dev), np.bool_),
        }
    )
    assert prep.now_ns is not None  # there are readings
    silence = (prep.now_ns - last).astype(np.float64)
    still = np.flatnonzero(silence > opts.offline_periods * period)
    opened = pl.DataFrame(
        {
            "time": _times(last[still]),
            DEV: _devs(still),
            "end_ns": pl.Series([None] * len(still), dtype=pl.Int64),
            "observed": silence[still] / SECOND_NS,
            "expected": period[still] / SECOND_NS,
            "score": silence[still] / period[still],
            "open": np.ones(len(still), np.bool_),
        }
    )
    rows = pl.concat([closed, opened])
    return prep.with_tags(rows).with_columns(kind=pl.lit("offline"), field=pl.lit(WHOLE_DEVICE))


def _pieces(column: pl.Series) -> Iterator[tuple[int, pl.Series]]:
    """``(first row, piece)`` slices of a column, chunk by chunk (no copy: a Parquet or store
    read has many chunks), none longer than ``PIECE_ROWS``."""
    start = 0
    for chunk in column.get_chunks():
        for lo in range(0, chunk.len(), PIECE_ROWS):
            yield start + lo, chunk.slice(lo, PIECE_ROWS)
        start += chunk.len()


def _scatter_piece(piece: pl.Series, positions: Positions, start: int, out: FloatArray) -> None:
    """One piece of a column into the grouped layout, as float64 with NaN for a missing value.

    Runs on a pool thread. A float64 piece is read from its Arrow buffers as it is, nulls
    included (converting it to numpy would copy every chunk that has a null).
    """
    array = piece.cast(pl.Float64).to_arrow()
    validity, data = array.buffers()
    values = np.frombuffer(data, np.float64, count=len(array), offset=8 * array.offset)
    bits = np.frombuffer(validity, np.uint8) if validity is not None and array.null_count else _NO_BITS
    kernels.scatter(values, bits, array.offset, positions, start, out)


_NO_BITS = np.zeros(0, np.uint8)
# Read-only like the Arrow buffers: numba compiles one version of a kernel per argument type
# (read-only or not, int or float), so every call passes the same types and nothing is compiled
# again later, in the middle of a run, when a chunk with a null or an int option turns up.
_NO_BITS.flags.writeable = False


def _device_codes(device_id: pl.Series) -> npt.NDArray[np.uint32]:
    """A small integer code per row, the same for the same device: the physical value of the
    column cast to a categorical, in one cast (codes of two casts need not agree)."""
    codes: npt.NDArray[np.uint32] = device_id.cast(pl.Categorical).to_physical().cast(pl.UInt32).to_numpy()
    # One argument type for the kernel whether numpy copied the column (many chunks) or not.
    codes.flags.writeable = False
    return codes


def _times_ns(frame: pl.DataFrame) -> pl.Series:
    """The ``time`` column as ns since the epoch, chunks kept (no copy when already in ns)."""
    time = frame["time"]
    dtype = time.dtype
    assert isinstance(dtype, pl.Datetime)  # check_readings made sure
    if dtype.time_unit != "ns":
        time = time.cast(pl.Datetime("ns", dtype.time_zone))
    # Physical values are UTC for an aware time and taken as UTC for a naive one: the epoch.
    return time.to_physical()


def _scatter_time_piece(piece: pl.Series, positions: Positions, start: int, out: IntArray) -> None:
    """One piece of the time column (ns, never null) into the grouped layout, from its Arrow buffer."""
    array = piece.to_arrow()
    values = np.frombuffer(array.buffers()[1], np.int64, count=len(array), offset=8 * array.offset)
    kernels.scatter_times(values, positions, start, out)


def _wait(futures: Iterator[Any]) -> None:
    """Wait for every submitted call, raising the first error."""
    for future in list(futures):
        future.result()
