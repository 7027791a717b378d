"""Spike anomalies: a two-sided Hampel filter (medians of the readings on each side, scaled by
the median absolute residual of the device's clock hour)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from processing.anomalies.frame import (
    ANOMALY_SCHEMA,
    DEV,
    FIRST,
    HOUR_NS,
    MAD_TO_SIGMA,
    AnomalyOptions,
    FloatArray,
    IntArray,
    Prepared,
    empty_anomalies,
    new_group,
)

SINCE = "_since"
"""Readings of the same device before this one (column added by :func:`_with_positions`)."""
UNTIL = "_until"
"""Readings of the same device after this one."""
SIDE = 3
"""Readings on each side a spike is compared with."""


def with_positions(frame: pl.DataFrame) -> pl.DataFrame:
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
    two distances, signed; null for a missing reading; zero for a reading with no reading on
    one side. A spike of up to three readings leaves one side of each of its readings clean.
    """
    values = work[name].to_numpy(allow_copy=True).astype(np.float64, copy=False)
    side_before, side_after = _side_medians(values, edges)
    before, after = values - side_before, values - side_after
    with np.errstate(invalid="ignore"):
        nearer = np.where(np.abs(before) < np.abs(after), before, after)
        residual = np.where(before * after > 0, nearer, 0.0)
    # A reading with nothing on one side (a device's last so far, its first) is not judged: one
    # side cannot tell a spike from a step, and the step may be a restart of the device or of
    # the fleet, where the readings on the other side of it will show the new level.
    residual[np.isnan(before) | np.isnan(after)] = 0.0
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


def hourly_medians(prep: Prepared, work: pl.DataFrame, fields: list[str]) -> Hourly:
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


def find_spikes(prep: Prepared, opts: AnomalyOptions, hourly: Hourly) -> pl.DataFrame:
    """Spike anomalies of one chunk (see ``processing.anomalies.detect_spikes``)."""
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
        .with_columns(new_group(["field", DEV], pl.col("_row").diff() != 1))  # never across devices
        .group_by("group", maintain_order=True)
        .agg(
            pl.col("time").first(),
            pl.col("time").last().dt.epoch("ns").alias("end_ns"),
            pl.col(DEV, "field").first(),
            # The first of the worst readings, so that ties always pick the same one.
            pl.col("observed", "expected").get(pl.col("score").abs().arg_max()),
            pl.col("score").abs().max(),
        )
    )
    return prep.with_tags(spikes).with_columns(kind=pl.lit("spike"), open=pl.lit(False)).drop("group")


FLATLINE_MARGIN_MIN = 10
"""Spikes this close to a flatline of the same device and field are put down to it."""


def without_flatlines(spikes: pl.DataFrame, stuck: pl.DataFrame) -> pl.DataFrame:
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
