"""Anomaly detection on raw readings: out of bounds, spikes, stuck sensors, drift, offline devices.

Every function here is pure (frames in, frames out) and vectorised with polars expressions, so
it runs the same in the runner and in a notebook::

    from processing.anomalies import detect_anomalies
    anomalies = detect_anomalies(readings, "air_quality", rejected=rejected)

The result has the schema of the ``anomalies`` measurement (docs/measurements.md); docs/anomalies.md
explains each method and why it uses robust statistics (medians and MADs) rather than means and
standard deviations, which the very outliers they look for would inflate.

Output is deterministic: the same input gives the same rows with the same start times, so the
runner can rewrite them as often as late data requires.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from processing.anomaly_frame import (
    ANOMALY_SCHEMA,
    ANOMALY_TAGS,
    DEV,
    FIRST,
    KINDS,
    WHOLE_DEVICE,
    AnomalyOptionError,
    AnomalyOptions,
    Prepared,
    empty_anomalies,
    finish,
    prepare_chunks,
)
from sensors.families import Family

__all__ = [
    "ANOMALY_SCHEMA",
    "ANOMALY_TAGS",
    "KINDS",
    "AnomalyOptionError",
    "AnomalyOptions",
    "detect_anomalies",
    "detect_drift",
    "detect_offline",
    "detect_out_of_bounds",
    "detect_spikes",
    "detect_stuck",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAD_TO_SIGMA = 1.4826
"""Turns a median absolute deviation into a standard deviation for Gaussian noise."""
HOUR_NS = 3_600_000_000_000
SECOND_NS = 1_000_000_000

AMBIENT_FIELDS: dict[str, tuple[str, ...]] = {
    Family.AIR_QUALITY.value: (
        "pm25",
        "pm10",
        "no2",
        "o3",
        "so2",
        "co",
        "co2",
        "temperature",
        "relativeHumidity",
    ),
}
"""Fields that devices of one commune should agree on (they measure the same air): the default
fields of the drift detector."""


# ---------------------------------------------------------------------------------------------
# Entry points


def detect_anomalies(
    frame: pl.DataFrame,
    family: str,
    *,
    rejected: pl.DataFrame | None = None,
    now: datetime | None = None,
    **options: Any,
) -> pl.DataFrame:
    """Every kind of anomaly in ``frame``, raw readings of one ``family`` in the store convention.

    ``rejected`` holds rows of ``rejected_readings`` (any family and reason: those that are
    ``out_of_bounds`` values of this family become anomalies). ``now`` is the time at which a
    silent device or a flatline still going on counts as open; None means the latest reading
    of ``frame``. ``options`` are the fields of :class:`AnomalyOptions`.

    Returns rows in the schema of the ``anomalies`` measurement, sorted by time then tags.
    """
    return _run(frame, family, KINDS, rejected=rejected, now=now, options=options)


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

    Per clock hour, each device's median is compared with the median of the commune's devices
    (at least ``drift_min_devices``), after taking out the device's own offset and gain against
    the commune (learned with medians over the frame); what remains is scaled by the fleet's
    robust spread of it. ``drift_min_hours`` consecutive hours beyond ``drift_threshold`` make a
    drift. ``observed`` and ``expected`` are the device's and the commune's hourly medians at
    the worst hour; ``score`` its robust z.
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


def _run(
    frame: pl.DataFrame,
    family: str,
    kinds: tuple[str, ...],
    *,
    rejected: pl.DataFrame | None = None,
    now: datetime | None = None,
    options: dict[str, Any],
) -> pl.DataFrame:
    """The detectors of ``kinds`` over ``frame``, chunk of devices by chunk of devices.

    Chunks bound the memory of the intermediate columns; what needs the whole fleet (the
    allowed flatline durations, the commune medians of drift) is computed from small per-chunk
    summaries once every chunk is done.
    """
    opts = AnomalyOptions.from_kwargs(options)
    partials: list[ChunkResult] = []
    prep: Prepared | None = None
    # Two chunks at a time: numpy and polars release the GIL, so on two cores the second chunk
    # runs while the first is still busy (and the next one is being gathered). No more than
    # two, to keep the memory bounded.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        pending: deque[Future[ChunkResult]] = deque()
        for prep in prepare_chunks(frame, family, now=now):
            pending.append(pool.submit(_detect_chunk, prep, kinds, opts))
            if len(pending) >= WORKERS:
                partials.append(pending.popleft().result())
        partials.extend(future.result() for future in pending)
    out_of_bounds = [p.out_of_bounds for p in partials if p.out_of_bounds is not None]
    spikes = [p.spikes for p in partials if p.spikes is not None]
    offline = [p.offline for p in partials if p.offline is not None]
    hourly = [p.hourly for p in partials if p.hourly is not None]
    runs = FlatRuns()
    for partial in partials:
        if partial.runs is not None:
            runs.add(partial.runs)
    if prep is None:  # pragma: no cover - prepare_chunks always yields
        return empty_anomalies()
    all_hours = pl.concat(hourly) if hourly else None
    stuck = _stuck(prep, opts, runs, all_hours) if "stuck" in kinds else empty_anomalies()
    parts = [stuck, *offline]
    if "out_of_bounds" in kinds:
        parts.append(_merge_out_of_bounds(prep, opts, out_of_bounds, rejected))
    if spikes:
        parts.append(_without_flatlines(pl.concat(spikes, how="diagonal_relaxed"), stuck))
    if "drift" in kinds and all_hours is not None:
        parts.append(_drift(prep, opts, all_hours))
    found = [part for part in parts if part.height]
    return finish(pl.concat(found, how="diagonal_relaxed")) if found else empty_anomalies()


WORKERS = 2
"""Chunks processed at once (the machine the figures are measured on has two cores)."""


@dataclass(slots=True)
class ChunkResult:
    """What one chunk of devices contributes; the fleet-wide steps combine these."""

    out_of_bounds: pl.DataFrame | None = None
    spikes: pl.DataFrame | None = None
    offline: pl.DataFrame | None = None
    hourly: pl.DataFrame | None = None
    runs: FlatRuns | None = None


def _detect_chunk(prep: Prepared, kinds: tuple[str, ...], opts: AnomalyOptions) -> ChunkResult:
    """The per-device part of every detector of ``kinds`` on one chunk."""
    result = ChunkResult()
    if prep.frame.height == 0:
        return result
    work = _with_positions(prep.frame)
    hours = _hourly(prep, work, _spike_fields(prep)) if {"spike", "stuck", "drift"} & set(kinds) else None
    if "out_of_bounds" in kinds:
        result.out_of_bounds = _out_of_bounds_points(prep)
    if "spike" in kinds and hours is not None:
        result.spikes = _spikes(prep, opts, hours)
    if "stuck" in kinds:
        result.runs = _flat_runs(prep)
    if "offline" in kinds:
        result.offline = _offline(prep, opts)
    if hours is not None:
        result.hourly = hours.table
    return result


# ---------------------------------------------------------------------------------------------
# Out of bounds


def _out_of_bounds_points(prep: Prepared) -> pl.DataFrame:
    """Readings of ``prep`` outside their field's bounds: ``time, insee, device_id, field, value``."""
    points: list[pl.DataFrame] = [_empty_points()]
    for row in _bounds_table(prep).iter_rows(named=True):
        name, low, high = row["field"], row["low"], row["high"]
        if name not in prep.numeric_fields:
            continue
        value = pl.col(name)
        outside = prep.frame.filter((value < low) | (value > high))
        if outside.height:
            points.append(
                prep.with_tags(outside.select("time", DEV, value.alias("value"))).select(
                    "time", "insee", "device_id", pl.lit(name).alias("field"), "value"
                )
            )
    return pl.concat(points)


def _empty_points() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "time": ANOMALY_SCHEMA["time"],
            "insee": pl.String,
            "device_id": pl.String,
            "field": pl.String,
            "value": pl.Float64,
        }
    )


def _merge_out_of_bounds(
    prep: Prepared, opts: AnomalyOptions, found: list[pl.DataFrame], rejected: pl.DataFrame | None
) -> pl.DataFrame:
    """Out-of-bounds readings (found in the frames or refused by ingest) merged into anomalies."""
    points = list(found)
    if rejected is not None and rejected.height:
        points.append(_rejected_points(prep, rejected))
    points = [p for p in points if p.height]
    if not points:
        return empty_anomalies()
    bounds = _bounds_table(prep)
    merge_ns = int(opts.out_of_bounds_merge_s * SECOND_NS)
    excess = pl.max_horizontal(pl.col("low") - pl.col("value"), pl.col("value") - pl.col("high"))
    merged = (
        pl.concat(points)
        .join(bounds, on="field")
        .with_columns(
            excess.alias("excess"),
            pl.when(pl.col("value") < pl.col("low")).then("low").otherwise("high").alias("bound"),
        )
        .sort("insee", "device_id", "field", "time")
        .with_columns(
            _new_group(
                ["insee", "device_id", "field"], pl.col("time").diff().dt.total_nanoseconds() > merge_ns
            )
        )
        .group_by("group", maintain_order=True)
        .agg(
            pl.col("time").first(),
            pl.col("time").last().dt.epoch("ns").alias("end_ns"),
            pl.col("insee", "device_id", "field").first(),
            pl.col("value").sort_by("excess").last().alias("observed"),
            pl.col("bound").sort_by("excess").last().alias("expected"),
            (pl.col("excess") / (pl.col("high") - pl.col("low"))).max().alias("score"),
        )
    )
    return merged.with_columns(
        family=pl.lit(prep.family), kind=pl.lit("out_of_bounds"), open=pl.lit(False)
    ).drop("group")


def _bounds_table(prep: Prepared) -> pl.DataFrame:
    """One row per bounded numeric field of the family: ``field``, ``low``, ``high``."""
    rows = [
        (
            f.name,
            f.minimum if f.minimum is not None else -math.inf,
            f.maximum if f.maximum is not None else math.inf,
        )
        for f in prep.spec.fields
        if f.kind in ("float", "int") and (f.minimum is not None or f.maximum is not None)
    ]
    return pl.DataFrame(
        rows, schema={"field": pl.String, "low": pl.Float64, "high": pl.Float64}, orient="row"
    )


def _rejected_points(prep: Prepared, rejected: pl.DataFrame) -> pl.DataFrame:
    """The ``out_of_bounds`` rows of ``rejected_readings`` that belong to this family."""
    needed = ("time", "insee", "family", "device_id", "reason", "field", "value")
    missing = [name for name in needed if name not in rejected.columns]
    if missing:
        raise ValueError(f"rejected readings lack the column(s) {', '.join(missing)}")
    time = pl.col("time")
    if isinstance(rejected.schema["time"], pl.Datetime) and rejected.schema["time"].time_zone is None:
        time = time.dt.replace_time_zone("UTC")
    return rejected.filter(
        (pl.col("family") == prep.family)
        & (pl.col("reason") == "out_of_bounds")
        & pl.col("value").is_not_null()
        & pl.col("field").is_in(list(prep.numeric_fields) + [f.name for f in prep.spec.fields])
    ).select(
        time.cast(ANOMALY_SCHEMA["time"]).alias("time"),
        pl.col("insee").cast(pl.String),
        pl.col("device_id").cast(pl.String),
        pl.col("field").cast(pl.String),
        pl.col("value").cast(pl.Float64),
    )


def _new_group(keys: list[str], breaks: pl.Expr) -> pl.Expr:
    """A group number that changes when a key changes or ``breaks`` is true (rows in key order)."""
    for key in keys:
        breaks = breaks | (pl.col(key) != pl.col(key).shift(1))
    return breaks.fill_null(True).cum_sum().alias("group")


# ---------------------------------------------------------------------------------------------
# Spikes


def _spike_fields(prep: Prepared) -> list[str]:
    return [name for name in prep.numeric_fields if not prep.field_spec(name).counter]


SINCE = "_since"
"""Readings of the same device before this one (column added by :func:`_with_positions`)."""
UNTIL = "_until"
"""Readings of the same device after this one."""
SIDE = 3
"""Readings on each side a spike is compared with."""


def _with_positions(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each row's place within its device, so that shifts stay within it."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    start = pl.when(pl.col(FIRST)).then(row).forward_fill()
    last = pl.col(FIRST).shift(-1, fill_value=True)
    end = pl.when(last).then(row).backward_fill()
    return frame.with_columns((row - start).alias(SINCE), (end - row).alias(UNTIL))


@dataclass(frozen=True, slots=True)
class Edges:
    """Rows of a prepared chunk near the start or the end of their device, where fewer than
    ``SIDE`` readings of the same device lie on one side."""

    start_rows: IntArray
    since: IntArray
    """For each of ``start_rows``, how many readings of the device come before it (0 to 2)."""
    end_rows: IntArray
    until: IntArray

    @classmethod
    def of(cls, work: pl.DataFrame) -> Edges:
        """The edges of a frame from :func:`_with_positions`."""
        since, until = work[SINCE].to_numpy(), work[UNTIL].to_numpy()
        start_rows, end_rows = np.flatnonzero(since < SIDE), np.flatnonzero(until < SIDE)
        return cls(start_rows, since[start_rows], end_rows, until[end_rows])


def _side_medians(values: FloatArray, edges: Edges) -> tuple[FloatArray, FloatArray]:
    """Median of the ``SIDE`` (three) readings just before, and just after, each reading.

    Computed on array views with minima and maxima (numpy, no per-row Python): ten times
    faster than a rolling median. Near a device's edge fewer readings are available: one gives
    itself, two their mean, none NaN. ``fmin``/``fmax`` skip a missing reading (NaN) instead of
    spreading it.
    """
    n = len(values)
    before, after = np.full(n, np.nan), np.full(n, np.nan)
    if n > SIDE:
        # Readings i-1, i-2, i-3 for rows 3.., and i+1, i+2, i+3 for rows ..n-4: same three views.
        a, b, c = values[2 : n - 1], values[1 : n - 2], values[0 : n - 3]
        before[SIDE:] = np.fmax(np.fmin(a, b), np.fmin(np.fmax(a, b), c))
        a, b, c = values[1 : n - 2], values[2 : n - 1], values[3:n]
        after[: n - SIDE] = np.fmax(np.fmin(a, b), np.fmin(np.fmax(a, b), c))
    for rows, count, step, out in (
        (edges.start_rows, edges.since, -1, before),
        (edges.end_rows, edges.until, 1, after),
    ):
        one = values[np.clip(rows + step, 0, n - 1)]
        two = values[np.clip(rows + 2 * step, 0, n - 1)]
        out[rows] = np.where(count == 1, one, np.where(count == 2, (one + two) / 2, np.nan))
    return before, after


def _spike_residuals(work: pl.DataFrame, name: str, edges: Edges) -> pl.Series:
    """How far each reading stands out from both its sides (a Hampel filter split in two halves).

    A spike is away from the median of the ``SIDE`` readings before it *and* from the median of
    those after it, in the same direction; a step (heating switched on, a rush hour starting) is
    close to one of the two, so it gets a residual of zero. The residual is the smaller of the
    two distances, signed; null for a missing reading. A spike of up to three readings leaves
    one side of each of its readings clean.
    """
    values = work[name].to_numpy(allow_copy=True).astype(np.float64, copy=False)
    side_before, side_after = _side_medians(values, edges)
    before, after = values - side_before, values - side_after
    with np.errstate(invalid="ignore"):
        nearer = np.where(np.abs(before) < np.abs(after), before, after)
        residual = np.where(before * after > 0, nearer, 0.0)
    # A reading with nothing on one side (a device's first or last) is judged on the other.
    lonely = np.flatnonzero(np.isnan(before) | np.isnan(after))
    residual[lonely] = np.where(np.isnan(before[lonely]), after[lonely], before[lonely])
    residual[np.isnan(values)] = np.nan
    return pl.Series(name, residual, nan_to_null=True)


def _hour_key(frame: pl.DataFrame) -> pl.Expr:
    """A group key per (device, clock hour), increasing along a prepared frame."""
    hour = pl.col("time").dt.epoch("ns") // HOUR_NS
    hours = frame.select(
        (pl.col("time").dt.epoch("ns") // HOUR_NS).min().alias("lo"),
        (pl.col("time").dt.epoch("ns") // HOUR_NS).max().alias("hi"),
    ).row(0)
    first, last = int(hours[0]), int(hours[1])
    key: pl.Expr = pl.col(DEV).cast(pl.Int64) * (last - first + 1) + (hour - first)
    return key.alias("_hour_key")


@dataclass(slots=True)
class Hourly:
    """Per (device, clock hour) medians of one chunk, and the spike residuals of its readings."""

    table: pl.DataFrame
    """``_dev``, ``hour`` (hours since the epoch), the median of each field, and ``_r_{field}``:
    the median of the field's non-zero absolute spike residual."""
    residuals: dict[str, pl.Series]
    position: pl.Series
    """For each reading, its row in ``table``."""


def _hourly(prep: Prepared, work: pl.DataFrame, fields: list[str]) -> Hourly:
    """Medians per (device, clock hour) of each field and of its absolute spike residual."""
    edges = Edges.of(work)
    residuals = {name: _spike_residuals(work, name, edges) for name in fields}
    key = prep.frame.select(_hour_key(prep.frame).set_sorted()).to_series()
    # Exact zeros are left out of the scale: a flatline would otherwise shrink the scale of its
    # hour to nothing and turn the ordinary noise around it into spikes. Float32 is plenty for
    # a scale and halves the memory.
    keyed = prep.frame.select(
        DEV, (pl.col("time").dt.epoch("ns") // HOUR_NS).alias("hour"), *fields
    ).with_columns(
        key,
        *(
            pl.when(r.abs() > 0).then(r.abs()).cast(pl.Float32).alias(f"_r_{name}")
            for name, r in ((n, pl.lit(residuals[n])) for n in fields)
        ),
    )
    table = keyed.group_by("_hour_key", maintain_order=True).agg(
        pl.col(DEV).first(),
        pl.col("hour").first(),
        *(pl.col(f).median() for f in fields),
        *(pl.col(f"_r_{f}").median().cast(pl.Float64) for f in fields),
    )
    return Hourly(table=table.drop("_hour_key"), residuals=residuals, position=key.rle_id())


def _spikes(prep: Prepared, opts: AnomalyOptions, hourly: Hourly) -> pl.DataFrame:
    found: list[pl.DataFrame] = []
    base = prep.frame.select("time", DEV).with_row_index("_row")
    for name, residual in hourly.residuals.items():
        # A device's quietest hours may not be much quieter than its usual: the floor keeps a
        # near-constant hour from turning every small wiggle into a spike.
        unit = 1.0 if prep.field_spec(name).kind == "int" else 1e-12  # a count moves by whole units
        mad = pl.col(f"_r_{name}")
        floor = pl.max_horizontal(
            opts.spike_scale_floor * mad.median().over(DEV), pl.lit(unit / MAD_TO_SIGMA)
        )
        scale = (
            hourly.table.select((MAD_TO_SIGMA * pl.max_horizontal(mad, floor)).fill_null(unit).alias("scale"))
            .to_series()
            .gather(hourly.position)
        )
        score = residual / scale
        flagged = score.abs() > opts.spike_threshold
        if not flagged.any():
            continue
        value = prep.frame[name].filter(flagged)
        found.append(
            base.filter(flagged).with_columns(
                value.alias("observed"),
                (value - residual.filter(flagged)).alias("expected"),
                score.filter(flagged).alias("score"),
                pl.lit(name).alias("field"),
            )
        )
    if not found:
        return empty_anomalies()
    spikes = (
        pl.concat(found)
        .sort("field", "_row")
        .with_columns(_new_group(["field"], pl.col("_row").diff() != 1))
        .group_by("group", maintain_order=True)
        .agg(
            pl.col("time").first(),
            pl.col("time").last().dt.epoch("ns").alias("end_ns"),
            pl.col(DEV, "field").first(),
            pl.col("observed", "expected").sort_by(pl.col("score").abs()).last(),
            pl.col("score").abs().max(),
        )
    )
    return prep.with_tags(spikes).with_columns(kind=pl.lit("spike"), open=pl.lit(False)).drop("group")


FLATLINE_MARGIN_MIN = 10
"""Spikes this close to a flatline of the same device and field are put down to it."""


def _without_flatlines(spikes: pl.DataFrame, stuck: pl.DataFrame) -> pl.DataFrame:
    """``spikes`` less those within a flatline of the same device and field, or just around it.

    A flatline empties the spread of its hour, so the ordinary noise right next to it may look
    like spikes; the stuck anomaly already reports what happened.
    """
    if spikes.height == 0 or stuck.height == 0:
        return spikes
    margin = pl.duration(minutes=FLATLINE_MARGIN_MIN)
    spans = stuck.select(
        "device_id",
        "field",
        (pl.col("time") - margin).alias("_from"),
        (pl.col("end_ns").fill_null(pl.lit(2**62)).cast(ANOMALY_SCHEMA["time"]) + margin).alias("_to"),
    )
    explained = (
        spikes.with_row_index("_spike")
        .join(spans, on=["device_id", "field"])
        .filter((pl.col("time") >= pl.col("_from")) & (pl.col("time") < pl.col("_to")))
        .select("_spike")
    )
    return spikes.with_row_index("_spike").join(explained, on="_spike", how="anti").drop("_spike")


# ---------------------------------------------------------------------------------------------
# Stuck


def _stuck_fields(prep: Prepared) -> list[str]:
    return [name for name in prep.numeric_fields if not prep.field_spec(name).counter]


@dataclass(slots=True)
class FlatRuns:
    """Runs of identical readings collected chunk by chunk, with how often each field repeats."""

    runs: dict[str, list[pl.DataFrame]] = field(default_factory=dict)
    comparable: dict[str, int] = field(default_factory=dict)
    """Field -> consecutive pairs of readings both present."""
    repeated: dict[str, int] = field(default_factory=dict)
    """Field -> such pairs with equal values."""

    def add(self, other: FlatRuns) -> None:
        """Take in another chunk's runs."""
        for name, frames in other.runs.items():
            self.runs.setdefault(name, []).extend(frames)
        for name, count in other.comparable.items():
            self.comparable[name] = self.comparable.get(name, 0) + count
        for name, count in other.repeated.items():
            self.repeated[name] = self.repeated.get(name, 0) + count


def _flat_runs(prep: Prepared) -> FlatRuns:
    """Every run of two or more identical consecutive readings of a device's field."""
    out = FlatRuns()
    frame = prep.frame
    last_of_device = pl.col(FIRST).shift(-1, fill_value=True)
    for name in _stuck_fields(prep):
        x = pl.col(name)
        comparable = x.is_not_null() & x.shift(1).is_not_null() & ~pl.col(FIRST)
        same = comparable & (x == x.shift(1))
        flags = frame.select(comparable.alias("c"), same.alias("s"))
        out.comparable[name] = int(flags["c"].sum())
        out.repeated[name] = int(flags["s"].sum())
        if out.repeated[name] == 0:
            continue
        runs = (
            frame.select(
                DEV, "time", x, pl.col("time").shift(1).alias("_start"), last_of_device.alias("_last")
            )
            .with_row_index("_row")
            .filter(flags["s"])
            .with_columns(_new_group([], pl.col("_row").diff() != 1))
            .group_by("group", maintain_order=True)
            .agg(
                pl.col(DEV).first(),
                pl.col("_start").first().alias("time"),
                pl.col("time").last().alias("_end"),
                pl.col(name).first().alias("observed"),
                (pl.len() + 1).alias("readings"),
                pl.col("_last").last().alias("open"),
            )
            .with_columns((pl.col("_end") - pl.col("time")).dt.total_nanoseconds().alias("duration_ns"))
            .drop("group")
        )
        out.runs[name] = [runs]
    return out


def _stuck(prep: Prepared, opts: AnomalyOptions, flat: FlatRuns, hourly: pl.DataFrame | None) -> pl.DataFrame:
    found: list[pl.DataFrame] = []
    for name, frames in flat.runs.items():
        comparable, repeated = flat.comparable[name], flat.repeated[name]
        if comparable == 0 or 1 - repeated / comparable < opts.stuck_min_change_rate:
            continue  # constant by nature (a lane number): repeating is its normal behaviour
        spec = prep.field_spec(name)
        runs = pl.concat(frames)
        # At a physical bound the value is clipped, not frozen: zero vehicles at night.
        at_bound = pl.lit(False)
        if spec.minimum is not None:
            at_bound = at_bound | (pl.col("observed") <= spec.minimum)
        if spec.maximum is not None:
            at_bound = at_bound | (pl.col("observed") >= spec.maximum)
        runs = runs.filter(~at_bound)
        if runs.height == 0:
            continue
        allowed_ns = _allowed_flatline_ns(runs["duration_ns"], comparable - repeated, opts)
        stuck = runs.filter(
            (pl.col("duration_ns") > allowed_ns) & (pl.col("readings") >= opts.stuck_min_readings)
        )
        if stuck.height:
            found.append(
                stuck.select(
                    "time",
                    DEV,
                    pl.lit(name).alias("field"),
                    pl.when(pl.col("open"))
                    .then(None)
                    .otherwise(pl.col("_end").dt.epoch("ns"))
                    .alias("end_ns"),
                    "observed",
                    (pl.col("duration_ns") / allowed_ns).alias("score"),
                    "open",
                )
            )
    if not found:
        return empty_anomalies()
    stuck_rows = pl.concat(found)
    fields = sorted(set(stuck_rows["field"]))
    if hourly is not None and all(f in hourly.columns for f in fields):
        # The median of hourly medians: cheap, and as robust as the median of the readings.
        medians = (
            hourly.group_by(DEV)
            .agg(pl.col(fields).median())
            .unpivot(index=DEV, variable_name="field", value_name="expected")
        )
        stuck_rows = stuck_rows.join(medians, on=[DEV, "field"], how="left")
    return prep.with_tags(stuck_rows).with_columns(kind=pl.lit("stuck"))


def _allowed_flatline_ns(durations: pl.Series, changes: int, opts: AnomalyOptions) -> float:
    """How long a field may legitimately repeat a value, learned from the whole fleet.

    Most readings start a new run (the value changed); ``durations`` are the runs of two or more
    equal readings. The longest legitimate repeat is the (1 - tail) quantile over every run, which
    only falls among the repeats when they are more than ``tail`` of all runs.
    """
    total_runs = changes + durations.len()
    share = opts.stuck_tail * total_runs / max(durations.len(), 1)
    longest = 0.0
    if share < 1:
        value = durations.quantile(1 - share, interpolation="higher")
        longest = float(value) if isinstance(value, int | float) else 0.0
    return max(opts.stuck_min_duration_s * SECOND_NS, opts.stuck_factor * longest)


# ---------------------------------------------------------------------------------------------
# Drift


def _drift_fields(prep: Prepared, opts: AnomalyOptions) -> list[str]:
    wanted = opts.drift_fields if opts.drift_fields is not None else AMBIENT_FIELDS.get(prep.family, ())
    return [name for name in wanted if name in prep.numeric_fields]


def _drift(prep: Prepared, opts: AnomalyOptions, hourly: pl.DataFrame) -> pl.DataFrame:
    fields = _drift_fields(prep, opts)
    if not fields or hourly.height == 0:
        return empty_anomalies()
    hours = (
        prep.with_tags(hourly.select(DEV, "hour", *fields))
        .unpivot(index=[DEV, "insee", "hour"], on=fields, variable_name="field", value_name="observed")
        .drop_nulls("observed")
    )
    commune = hours.group_by("insee", "field", "hour").agg(
        pl.col("observed").median().alias("expected"), pl.len().alias("devices")
    )
    compared = (
        hours.join(commune, on=["insee", "field", "hour"])
        .filter(pl.col("devices") >= opts.drift_min_devices)
        .with_columns((pl.col("observed") - pl.col("expected")).alias("gap"))
    )
    if compared.height == 0:
        return empty_anomalies()
    # Devices of one commune differ by nature: an offset (siting, calibration) and a gain (a
    # station by a busy road sees more of every rush hour). Both are learned per device, robustly
    # (medians), and taken out: what remains, the gap, is what a drift adds.
    by_device = [DEV, "field"]
    own = pl.col("observed") - pl.col("observed").median().over(by_device)
    shared = pl.col("expected") - pl.col("expected").median().over(by_device)
    compared = compared.with_columns(own.alias("_own"), shared.alias("_shared"))
    moving = pl.col("_shared").abs() > pl.col("_shared").abs().median().over(by_device)
    gain = (
        pl.when(moving & (pl.col("_shared") != 0))
        .then(pl.col("_own") / pl.col("_shared"))
        .median()
        .over(by_device)
        .fill_null(1.0)
    )
    compared = compared.with_columns((pl.col("_own") - gain * pl.col("_shared")).alias("gap"))
    # The fleet's robust spread of that gap, per field: a drift is a gap far beyond it.
    spread = compared.group_by("field").agg(
        (MAD_TO_SIGMA * pl.col("gap").abs().median()).alias("spread"),
        (1e-6 * pl.col("expected").abs().median() + 1e-12).alias("floor"),
    )
    last_hour = hours.group_by(DEV).agg(pl.col("hour").max().alias("last_hour"))
    drifting = (
        compared.join(spread, on="field")
        .with_columns((pl.col("gap") / pl.max_horizontal("spread", "floor")).alias("score"))
        .filter(pl.col("score").abs() > opts.drift_threshold)
        .sort(DEV, "field", "hour")
        .with_columns(
            _new_group(
                [DEV, "field"],
                (pl.col("hour").diff() != 1) | (pl.col("score").sign() != pl.col("score").sign().shift(1)),
            )
        )
        .group_by("group", maintain_order=True)
        .agg(
            pl.col(DEV, "insee", "field").first(),
            pl.col("hour").first().alias("first_hour"),
            pl.col("hour").last().alias("end_hour"),
            pl.len().alias("hours"),
            pl.col("observed", "expected").sort_by(pl.col("score").abs()).last(),
            pl.col("score").abs().max(),
        )
        .filter(pl.col("hours") >= opts.drift_min_hours)
        .join(last_hour, on=DEV)
    )
    if drifting.height == 0:
        return empty_anomalies()
    still = pl.col("end_hour") >= pl.col("last_hour")
    rows = drifting.select(
        (pl.col("first_hour") * HOUR_NS).cast(ANOMALY_SCHEMA["time"]).alias("time"),
        DEV,
        "field",
        pl.when(still).then(None).otherwise((pl.col("end_hour") + 1) * HOUR_NS).alias("end_ns"),
        "observed",
        "expected",
        "score",
        still.alias("open"),
    )
    return prep.with_tags(rows).with_columns(kind=pl.lit("drift"))


# ---------------------------------------------------------------------------------------------
# Offline


def _offline(prep: Prepared, opts: AnomalyOptions) -> pl.DataFrame:
    frame = prep.frame
    if frame.height == 0:
        return empty_anomalies()
    default_ns = int(prep.spec.reporting_period_s * SECOND_NS)
    gap = pl.when(~pl.col(FIRST)).then(pl.col("time").diff().dt.total_nanoseconds())
    gaps = frame.select(DEV, "time", gap.alias("gap"))
    periods = gaps.group_by(DEV, maintain_order=True).agg(
        pl.col("gap").median().alias("median"),
        pl.len().alias("readings"),
        pl.col("time").last().alias("last"),
    )
    periods = periods.with_columns(
        pl.when((pl.col("readings") >= opts.offline_min_readings) & (pl.col("median") > 0))
        .then(pl.col("median"))
        .otherwise(default_ns)
        .cast(pl.Float64)
        .alias("period")
    )
    shortest = periods["period"].min()
    assert isinstance(shortest, float)
    closed = (
        gaps.filter(pl.col("gap") > opts.offline_periods * shortest)
        .join(periods.select(DEV, "period"), on=DEV)
        .filter(pl.col("gap") > opts.offline_periods * pl.col("period"))
        .select(
            (pl.col("time") - pl.duration(nanoseconds=pl.col("gap"))).alias("time"),
            DEV,
            pl.col("time").dt.epoch("ns").alias("end_ns"),
            (pl.col("gap") / SECOND_NS).alias("observed"),
            (pl.col("period") / SECOND_NS).alias("expected"),
            (pl.col("gap") / pl.col("period")).alias("score"),
            pl.lit(False).alias("open"),
        )
    )
    now_ns = prep.now_ns
    silence = pl.lit(now_ns) - pl.col("last").dt.epoch("ns")
    still = periods.filter(silence > opts.offline_periods * pl.col("period")).select(
        pl.col("last").alias("time"),
        DEV,
        pl.lit(None, dtype=pl.Int64).alias("end_ns"),
        (silence / SECOND_NS).alias("observed"),
        (pl.col("period") / SECOND_NS).alias("expected"),
        (silence / pl.col("period")).alias("score"),
        pl.lit(True).alias("open"),
    )
    rows = pl.concat([closed, still])
    return prep.with_tags(rows).with_columns(kind=pl.lit("offline"), field=pl.lit(WHOLE_DEVICE))
