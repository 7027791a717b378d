"""Tumbling-window aggregates of raw readings, per device and per commune.

For every numeric field ``f`` of a family (``FamilySpec.numeric_fields``) and every window of
``WINDOWS`` (1 min, 15 min, 1 h, 1 day aligned on Paris midnight), an aggregate row holds
``f_mean``, ``f_min``, ``f_max``, ``f_p95`` (Float64) and ``f_count`` (Int64, readings carrying
the field). ``f_p95`` is the linear-interpolation 95th percentile (numpy's and pandas' default),
computed from the raw readings of the window: percentiles cannot be composed from finer
windows, so every window size selects among the raw values (the finer windows only bound the
search from below; see ``_floor``). Mean, min, max and count do compose, from 1-minute runs.

How it is fast: tags become integer codes, the readings are put once in (device, time) order,
and then every (device, window) is a contiguous run and every commune a contiguous block, so
the statistics are numpy segment reductions, a few whole communes at a time (``CHUNK_ROWS``).

Cumulative counters (``FieldSpec.counter``: the building energy meter, network error counters)
are not averaged: the mean of a meter index means nothing. They give ``f_increase`` (Float64,
how much the counter grew in the window), ``f_resets`` (Int64, how many times it went backwards)
and ``f_count``. The increase between two consecutive readings of a device counts in the window
of the later reading; when the counter goes backwards (meter replaced, equipment rebooted) the
device is taken to have restarted from zero, so the increase is the new value itself.

Every function here is pure: polars frames in, polars frames out, in the Store frame convention
(``time`` in UTC; tags ``insee``, ``device_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from processing.windows import MINUTE_NS, WINDOWS, check_window, window_start_ns
from sensors.families import FamilySpec, family_spec
from storage.base import TIME_DTYPE

Level = Literal["device", "commune"]
LEVELS: tuple[Level, ...] = ("device", "commune")
P95 = 0.95
_TAGS: dict[Level, list[str]] = {"device": ["insee", "device_id"], "commune": ["insee"]}
_SHIFT = 1 << 32
"""Group keys pack (entity code, window start in minutes since the epoch) in one Int64: polars
groups on one integer column several times faster than on a string and a datetime."""


def measurement_name(family: str, window: str, level: Level = "device") -> str:
    """The store measurement of one family's aggregates, e.g. ``air_quality_1h_commune``."""
    check_window(window)
    return f"{family}_{window}" + ("_commune" if level == "commune" else "")


def output_tags(level: Level) -> list[str]:
    """The tag columns of an aggregate measurement at ``level``."""
    return list(_TAGS[level])


def spec_of(family: str) -> FamilySpec:
    """The spec of ``family``; ``ValueError`` when there is no such family."""
    spec = family_spec(family)
    if spec is None:
        raise ValueError(f"unknown family {family!r}")
    return spec


def fields_present(readings: pl.DataFrame | pl.LazyFrame, family: str) -> tuple[list[str], list[str]]:
    """The family's (plain numeric, counter) fields that are columns of ``readings``."""
    spec = spec_of(family)
    names = set(readings.collect_schema().names())
    plain: list[str] = []
    counters: list[str] = []
    for name in spec.numeric_fields:
        if name not in names:
            continue
        field = spec.field(name)
        (counters if field is not None and field.counter else plain).append(name)
    return plain, counters


def with_counter_increases(
    frame: pl.DataFrame, counters: Sequence[str], device: str = "_dev"
) -> pl.DataFrame:
    """Order by (device, time) and add ``_inc_{f}`` and ``_reset_{f}`` for each counter ``f``.

    ``_inc_f`` is the increase since the device's previous reading carrying ``f`` (null for its
    first one: nothing says what came before it); ``_reset_f`` flags a counter going backwards.
    """
    if not counters:
        return frame
    if not (device == "_dev" and frame["_dev"].is_sorted()):
        frame = frame.sort([device, "time"])
    dev = pl.col(device)
    columns: list[pl.Expr] = []
    for name in counters:
        value = pl.col(name).cast(pl.Float64)
        present = value.is_not_null()
        previous = value.forward_fill().shift(1)
        # The previous non-null value must come from the same device (no over(): one pass).
        owner = pl.when(present).then(dev).forward_fill().shift(1)
        delta = pl.when(owner == dev).then(value - previous)
        columns.append(
            pl.when(delta >= 0).then(delta).when(delta < 0).then(value).otherwise(None).alias(f"_inc_{name}")
        )
        columns.append((delta < 0).fill_null(False).alias(f"_reset_{name}"))
    return frame.with_columns(columns)


def _stat_exprs(plain: Sequence[str], counters: Sequence[str], *, p95: bool = True) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    for name in plain:
        value = pl.col(name).cast(pl.Float64)
        exprs += [
            value.mean().alias(f"{name}_mean"),
            value.min().alias(f"{name}_min"),
            value.max().alias(f"{name}_max"),
            pl.col(name).count().cast(pl.Int64).alias(f"{name}_count"),
        ]
        if p95:
            exprs.append(value.quantile(P95, interpolation="linear").alias(f"{name}_p95"))
    for name in counters:
        increase = pl.col(f"_inc_{name}")
        exprs += [
            # A window where no increase is known has an unknown (null) one, not 0.
            pl.when(increase.count() > 0).then(increase.sum()).alias(f"{name}_increase"),
            pl.col(f"_reset_{name}").sum().cast(pl.Int64).alias(f"{name}_resets"),
            pl.col(name).count().cast(pl.Int64).alias(f"{name}_count"),
        ]
    return exprs


CHUNK_ROWS = 2_000_000
"""Aggregates are computed on slices of about this many readings (whole devices for counters,
whole communes for the other fields): the working arrays then stay in the CPU caches far more
than whole-day arrays would, and the memory they take is a slice's, not the day's."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    frame: pl.DataFrame
    """``_t`` (ns), ``_dev`` code and the fields, in the order of the input; no strings."""
    order: np.ndarray
    """The rows in (device, time) order."""
    plain: list[str]
    counters: list[str]
    device_names: pl.DataFrame
    """``insee``, ``device_id`` and ``_com`` of each device; row i is device code i."""
    commune_names: pl.DataFrame
    """``insee`` of each commune; row i is commune code i."""


def _prepare(readings: pl.DataFrame | pl.LazyFrame, family: str) -> _Prepared:
    """Integer codes instead of tags, and the (device, time) order of the rows.

    Devices are numbered in (insee, device_id) order and communes in insee order, so that
    sorting results on codes sorts them on tags, and the tags are joined back on the (small)
    results only.
    """
    frame = readings.lazy().collect() if isinstance(readings, pl.LazyFrame) else readings
    missing = [c for c in ("time", "insee", "device_id") if c not in frame.columns]
    if missing:
        raise ValueError(f"readings lack the column(s) {', '.join(missing)}")
    plain, counters = fields_present(frame, family)
    coded = frame.select(
        pl.col("time").cast(TIME_DTYPE).cast(pl.Int64).alias("_t"),
        pl.col("insee").cast(pl.Categorical).to_physical().cast(pl.Int64).alias("_cp"),
        pl.col("device_id").cast(pl.Categorical).to_physical().cast(pl.Int64).alias("_dp"),
    )
    packed = (coded["_cp"] * _SHIFT + coded["_dp"]).alias("_packed")
    first = packed.arg_unique()
    names = (
        frame.select("insee", "device_id")
        .gather(first)
        .with_columns(packed.gather(first), coded["_dp"].gather(first))
        .sort("insee", "device_id")
        .with_columns((pl.col("insee").rank("dense") - 1).cast(pl.UInt32).alias("_com"))
    )
    code_of_name = np.arange(names.height, dtype=np.uint32)
    private = names["_dp"].n_unique() == names.height
    if frame.is_empty():
        code = code_of_name
    elif private:  # the usual case: a device id names one device, a direct lookup table
        table = np.zeros(int(names["_dp"].max()) + 1, dtype=np.uint32)  # type: ignore[arg-type]
        table[names["_dp"].to_numpy()] = code_of_name
        code = table[coded["_dp"].to_numpy()]
    else:  # the same id in two communes: two devices, found by (commune, id)
        keys = names["_packed"].to_numpy()
        sorter = np.argsort(keys)
        code = code_of_name[sorter][np.searchsorted(keys[sorter], packed.to_numpy())]
    order = _device_time_order(code, coded["_t"], names.height)
    device_names = names.select("insee", "device_id", "_com")
    return _Prepared(
        pl.DataFrame({"_t": coded["_t"], "_dev": code}).hstack(frame.select(*plain, *counters)),
        order,
        plain,
        counters,
        device_names,
        device_names.filter(pl.col("_com").is_first_distinct()).select("insee"),
    )


def _device_time_order(code: np.ndarray, time_ns: pl.Series, devices: int) -> np.ndarray:
    """The permutation putting rows in (device, time) order."""
    if devices <= 1 << 16 and time_ns.is_sorted():
        # Store.read gives time order: a stable sort on a 16-bit code (numpy's radix sort) is
        # then enough, and takes linear time.
        return np.argsort(code.astype(np.uint16), kind="stable")
    both = pl.DataFrame({"_dev": code, "_t": time_ns})
    return both.select(pl.arg_sort_by("_dev", "_t")).to_series().to_numpy()


def _device_slices(frame: pl.DataFrame, counters: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Whole devices, about ``CHUNK_ROWS`` readings at a time, in (device, time) order.

    Device-major, time-minor order makes every device-level group key non-decreasing: polars
    then groups contiguous slices.
    """
    sizes = frame.group_by("_dev").len().sort("_dev")
    chunk = (sizes["len"].cum_sum() - 1) // CHUNK_ROWS
    bounds = (
        sizes.with_columns(chunk.alias("chunk"))
        .group_by("chunk")
        .agg(pl.col("_dev").min().alias("lo"), pl.col("_dev").max().alias("hi"))
    )
    for lo, hi in bounds.sort("chunk").select("lo", "hi").iter_rows():
        part = frame.filter(pl.col("_dev").is_between(lo, hi)) if bounds.height > 1 else frame
        yield with_counter_increases(part.sort(["_dev", "_t"]), counters)


FIELD_THREADS = 2
"""Fields aggregated at once (the project's machines have two cores)."""

SMALL_GROUP = 21
"""In a window of at most this many readings, the linear 95th percentile lies between the two
largest values: position 0.95 (n - 1) is at least n - 2."""

# ---------------------------------------------------------------------------------------------
# The numpy engine of the plain (non-counter) fields.
#
# Readings are put once in (device, time) order, devices numbered in (insee, device_id) order.
# Every (device, window) is then a contiguous segment for every window size, so mean, min, max
# and count are numpy segment reductions (``reduceat``) over each field: no group-by, no hash.
# A commune's window is the union of its devices' segments: its mean/min/max/count compose from
# theirs, and only its p95 needs the raw values, gathered in commune order once per window.


@dataclass(frozen=True, slots=True)
class _Segments:
    """Contiguous runs of rows sharing one entity and window, in an ordering of the rows."""

    starts: np.ndarray
    """Index of each run's first row (in the ordering)."""
    lengths: np.ndarray
    time: np.ndarray
    """Window start of each run, Int64 ns."""
    entity: np.ndarray
    """Entity code of each run."""


@dataclass(frozen=True, slots=True)
class _Partials:
    count: np.ndarray
    total: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _runs(entity: np.ndarray, start_ns: np.ndarray) -> _Segments:
    change = np.empty(entity.size, dtype=bool)
    change[0] = True
    np.not_equal(entity[1:], entity[:-1], out=change[1:])
    change[1:] |= start_ns[1:] != start_ns[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(np.append(starts, entity.size))
    return _Segments(starts, lengths, start_ns[starts], entity[starts])


def _partials(values: np.ndarray, valid: np.ndarray, starts: np.ndarray) -> _Partials:
    """Count, sum, min and max of the non-NaN ``values`` of each run (NaN where none)."""
    count = np.add.reduceat(valid, starts, dtype=np.int64)
    total = np.add.reduceat(np.where(valid, values, 0.0), starts)
    # fmin/fmax skip NaN (the nulls); a run of nulls only gives NaN.
    low = np.fmin.reduceat(values, starts)
    high = np.fmax.reduceat(values, starts)
    return _Partials(count, total, low, high)


def _compose(parts: _Partials, starts: np.ndarray) -> _Partials:
    """Partials of unions of consecutive runs (the runs of a commune's window, in order)."""
    return _Partials(
        np.add.reduceat(parts.count, starts),
        np.add.reduceat(parts.total, starts),
        np.fmin.reduceat(parts.low, starts),
        np.fmax.reduceat(parts.high, starts),
    )


def _lerp(low: np.ndarray, high: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation (``np.percentile``), for the same rounding."""
    diff = high - low
    with np.errstate(invalid="ignore"):  # inf - inf in lanes that np.where then discards
        result: np.ndarray = np.where(fraction >= 0.5, high - diff * (1 - fraction), low + diff * fraction)
    return result


def _small_p95(values: np.ndarray, starts: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p95 and k-th value of runs of at most ``SMALL_GROUP`` values, non-empty and NaN-free.

    Position k = floor(0.95 (n - 1)) is then n - 2 (0 for a single value): the two largest
    values of each run suffice, and they come from segment reductions instead of a sort.
    """
    top = np.maximum.reduceat(values, starts)
    top_each = np.repeat(top, count)
    ties = np.add.reduceat(values == top_each, starts, dtype=np.int64)
    second = np.maximum.reduceat(np.where(values < top_each, values, -np.inf), starts)
    second = np.where((ties >= 2) | (count <= 1), top, second)
    position = P95 * (count - 1)
    return _lerp(second, top, position - np.floor(position)), second


_WIDTH_SLACK = 1.25
"""Runs whose lengths differ by at most this factor share one padded 2-D block."""


def _large_p95(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, count: np.ndarray, below: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """p95 and k-th value of runs of any length, non-empty and NaN-free: a selection, no sort.

    A run holds ``lengths`` values of ``values`` from ``starts``: its ``count`` values but the
    ``below`` smallest, known to lie under the k-th. Runs of similar length are laid out as the
    rows of one 2-D block padded with +inf, and one ``np.partition`` along the rows places every
    needed order statistic (ranks k and k + 1 of each run) where a full sort would.
    """
    result = np.empty(count.size)
    kth = np.empty(count.size)
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    begin = 0
    while begin < order.size:
        width_limit = int(ordered[begin] * _WIDTH_SLACK) + 8
        end = int(np.searchsorted(ordered, width_limit, side="right"))
        rows = order[begin:end]
        width = int(lengths[rows].max())
        columns = np.arange(width)
        index = starts[rows, None] + columns
        inside = columns < lengths[rows, None]
        block = np.where(inside, values[np.minimum(index, values.size - 1)], np.inf)
        position = P95 * (count[rows] - 1)
        lower = np.floor(position).astype(np.int64)
        upper = np.minimum(lower + 1, count[rows] - 1)
        lower -= below[rows]
        upper -= below[rows]
        block.partition(np.unique(np.concatenate((lower, upper))), axis=1)
        line = np.arange(rows.size)
        kth[rows] = block[line, lower]
        result[rows] = _lerp(kth[rows], block[line, upper], position - np.floor(position))
        begin = end
    return result, kth


def _above(count: np.ndarray) -> np.ndarray:
    """How many of a run's ``count`` values are at or above its k-th smallest, at least."""
    return count - np.floor(P95 * (count - 1)).astype(np.int64)


_FLOOR_BLOCK = 4
"""The padded block of ``_floor`` may be at most this many times the number of finer runs."""


def _floor(kth: np.ndarray, above: np.ndarray, need: np.ndarray, groups: _Groups) -> np.ndarray:
    """A value at most the k-th of each run made of base runs (``kth``, ``above`` per base run).

    A base run has at least ``above`` values at or above its k-th, so the largest k-th such
    that the base runs whose k-th is at least it have ``need`` (the run's own ``_above``)
    values above between them is a floor: the run's k-th cannot be below it.
    """
    if groups.index is None:
        # Ragged runs (one huge commune among small ones): the plain minimum is a floor too.
        ordered = kth if groups.order is None else kth[groups.order]
        return np.fmin.reduceat(ordered, groups.first)
    values = kth[groups.index]
    inside = groups.inside & ~np.isnan(values)
    values[~inside] = -np.inf
    width = values.shape[1]
    weight = np.where(inside, above[groups.index], 0)
    floor = np.full(need.size, np.nan)
    # Usually every finer run of a run guarantees as many values (regular readings): the floor
    # is then the j-th largest k-th, j = ceil(need / weight), one selection per row, no sort.
    heaviest = weight.max(axis=1)
    uniform = np.all((weight == heaviest[:, None]) | ~inside, axis=1) & (heaviest > 0)
    rows = np.flatnonzero(uniform)
    if rows.size:
        taken = -(-need[rows] // heaviest[rows])
        found = taken <= inside[rows].sum(axis=1)
        position = width - np.minimum(taken, width)
        block = values[rows]
        block.partition(np.unique(position), axis=1)
        floor[rows] = np.where(found, block[np.arange(rows.size), position], np.nan)
    rows = np.flatnonzero(~uniform)
    if rows.size:
        order = np.argsort(-values[rows], axis=1)
        ranked = np.take_along_axis(values[rows], order, axis=1)
        enough = np.cumsum(np.take_along_axis(weight[rows], order, axis=1), axis=1) >= need[rows, None]
        chosen = ranked[np.arange(rows.size), np.argmax(enough, axis=1)]
        floor[rows] = np.where(enough.any(axis=1), chosen, np.nan)
    return floor


def _starts(lengths: np.ndarray) -> np.ndarray:
    """Where each run of ``lengths`` starts when runs are laid end to end."""
    starts: np.ndarray = np.cumsum(lengths) - lengths
    return starts


def _reorder_runs(values: np.ndarray, lengths: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values``, laid out as runs of ``lengths``, with the runs put in ``order``."""
    moved = lengths[order]
    # Position i of the result is position (its run's old start - new start) + i of the input.
    index = np.repeat(_starts(lengths)[order] - _starts(moved), moved) + np.arange(int(moved.sum()))
    return values[index]


def _p95(present: np.ndarray, kept: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear p95 and k-th smallest value of each run, NaN for a run without values.

    A run has ``count`` values, of which ``present`` holds ``kept`` (runs end to end): all those
    at or above a floor known to be at most the run's k-th, k = floor(0.95 (n - 1)). The p95
    interpolates between the k-th value and the next, so the selection works on the kept values
    only, about a twentieth of the data when the floor is tight (see ``_floor``).
    """
    filled = count > 0
    result = np.full(count.size, np.nan)
    kth = np.full(count.size, np.nan)
    if not filled.any():
        return result, kth
    total, lengths = count[filled], kept[filled]
    starts = _starts(lengths)
    if total.max() <= SMALL_GROUP and np.array_equal(total, lengths):
        result[filled], kth[filled] = _small_p95(present, starts, total)
    else:
        result[filled], kth[filled] = _large_p95(present, starts, lengths, total, total - lengths)
    return result, kth


def _stat_columns(name: str, parts: _Partials, p95: np.ndarray) -> dict[str, pl.Series]:
    empty = parts.count == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = parts.total / parts.count
    return {
        f"{name}_mean": pl.Series(np.where(empty, np.nan, mean), nan_to_null=True),
        f"{name}_min": pl.Series(parts.low, nan_to_null=True),
        f"{name}_max": pl.Series(parts.high, nan_to_null=True),
        f"{name}_p95": pl.Series(p95, nan_to_null=True),
        f"{name}_count": pl.Series(parts.count, dtype=pl.Int64),
    }


@dataclass(frozen=True, slots=True)
class _Groups:
    """Base runs (the finest window's device runs) grouped by the runs of a coarser window."""

    order: np.ndarray | None
    """The base runs in group order; None when they already are."""
    first: np.ndarray
    """First base run (in ``order``) of each group."""
    index: np.ndarray | None
    """The base runs of each group as the rows of a 2-D block (None: too ragged for one)."""
    inside: np.ndarray
    """Which cells of ``index`` are base runs of the group (the others pad)."""


def _groups(order: np.ndarray | None, first: np.ndarray, runs: int) -> _Groups:
    lengths = np.diff(np.append(first, runs))
    width = int(lengths.max())
    if lengths.size * width > _FLOOR_BLOCK * runs + 1_000_000:
        return _Groups(order, first, None, np.empty((0, 0), dtype=bool))
    columns = np.arange(width)
    index = np.minimum(first[:, None] + columns, runs - 1)
    return _Groups(order, first, index if order is None else order[index], columns < lengths[:, None])


@dataclass(frozen=True, slots=True)
class _WindowLayout:
    """Where each (device, window) and (commune, window) lies in the (device, time) order."""

    device: _Segments
    segment_order: np.ndarray | None
    """The device runs in (commune, window) order; None when they already are."""
    commune_starts: np.ndarray
    """First device run (in ``segment_order``) of each commune window."""
    device_groups: _Groups
    commune_groups: _Groups
    base_device: np.ndarray
    """The device run of this window holding each base run."""
    base_commune: np.ndarray
    """The commune run of this window holding each base run."""


def _layout(
    device_code: np.ndarray, start_ns: np.ndarray, commune_of_device: np.ndarray, base: _Segments | None
) -> _WindowLayout:
    device = _runs(device_code, start_ns)
    commune = commune_of_device[device.entity]
    order: np.ndarray | None = np.lexsort((device.time, commune))
    assert order is not None
    if np.all(order[1:] > order[:-1]):
        order = None
    commune = commune if order is None else commune[order]
    time = device.time if order is None else device.time[order]
    change = np.empty(commune.size, dtype=bool)
    change[0] = True
    change[1:] = (commune[1:] != commune[:-1]) | (time[1:] != time[:-1])
    commune_starts = np.flatnonzero(change)
    base = device if base is None else base
    # Finer windows nest in coarser ones (Paris midnight is a whole UTC hour): each base run
    # lies in one device run of this window, and in one commune run.
    base_device = np.searchsorted(device.starts, base.starts, side="right") - 1
    device_run = base_device
    if order is not None:
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        device_run = position[device_run]
    commune_run = np.searchsorted(commune_starts, device_run, side="right") - 1
    commune_order: np.ndarray | None = np.argsort(commune_run, kind="stable")
    assert commune_order is not None
    if np.all(commune_order[1:] > commune_order[:-1]):
        commune_order = None
    grouped = commune_run if commune_order is None else commune_run[commune_order]
    return _WindowLayout(
        device,
        order,
        commune_starts,
        _groups(None, np.searchsorted(base.starts, device.starts), base.starts.size),
        _groups(commune_order, np.searchsorted(grouped, np.arange(commune_starts.size)), base.starts.size),
        base_device,
        commune_run,
    )


def _counts_per_run(keep: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """How many of ``keep`` are true in each run of ``lengths`` (runs may be empty)."""
    total = np.concatenate(([0], np.cumsum(keep, dtype=np.int64)))
    ends = np.cumsum(lengths)
    counts: np.ndarray = total[ends] - total[ends - lengths]
    return counts


def _field_stats(
    name: str, values: np.ndarray, layouts: dict[str, _WindowLayout], levels: Sequence[Level]
) -> dict[tuple[str, Level], dict[str, pl.Series]]:
    """Every window's and level's statistics of one field (``values`` in (device, time) order).

    The finest window (the base) is computed from the values; every other run is made of base
    runs: its mean/min/max/count compose from theirs, and their k-th values bound its p95 from
    below (``_floor``). The values under every floor of the runs holding them are dropped once;
    each p95 then selects among the few that are left.
    """
    result: dict[tuple[str, Level], dict[str, pl.Series]] = {}
    layout_list = list(layouts.items())
    base = layout_list[0][1].device
    valid = ~np.isnan(values)
    base_parts = _partials(values, valid, base.starts)
    base_p95, base_kth = _p95(values[valid], base_parts.count, base_parts.count)
    above = _above(base_parts.count)
    floors: dict[tuple[str, Level], np.ndarray] = {}
    lowest = np.full(base.starts.size, np.inf)
    for window, layout in layout_list:
        if window != layout_list[0][0]:
            groups = layout.device_groups
            need = _above(np.add.reduceat(base_parts.count, groups.first))
            floors[(window, "device")] = _floor(base_kth, above, need, groups)
            np.fmin(lowest, floors[(window, "device")][layout.base_device], out=lowest)
        if "commune" in levels:
            groups = layout.commune_groups
            count = base_parts.count if groups.order is None else base_parts.count[groups.order]
            need = _above(np.add.reduceat(count, groups.first))
            floors[(window, "commune")] = _floor(base_kth, above, need, groups)
            np.fmin(lowest, floors[(window, "commune")][layout.base_commune], out=lowest)
    # NaN floors (no value in the run) and +inf (no coarser run): nothing is known, keep all.
    lowest[~np.isfinite(lowest)] = -np.inf
    keep = values >= np.repeat(lowest, base.lengths)
    candidates = values[keep]
    per_base = _counts_per_run(keep, base.lengths)
    for index, (window, layout) in enumerate(layout_list):
        if index == 0:
            parts, p95 = base_parts, base_p95
        else:
            parts = _compose(base_parts, layout.device_groups.first)
            floor = floors[(window, "device")][layout.base_device]
            mask = candidates >= np.repeat(floor, per_base)
            kept = np.add.reduceat(_counts_per_run(mask, per_base), layout.device_groups.first)
            p95, _ = _p95(candidates[mask], kept, parts.count)
        if "device" in levels:
            result[(window, "device")] = _stat_columns(name, parts, p95)
        if "commune" in levels:
            groups, seg = layout.commune_groups, layout.segment_order
            ordered = (
                parts
                if seg is None
                else _Partials(*(a[seg] for a in (parts.count, parts.total, parts.low, parts.high)))
            )
            commune = _compose(ordered, layout.commune_starts)
            floor = floors[(window, "commune")][layout.base_commune]
            mask = candidates >= np.repeat(floor, per_base)
            present, kept = candidates[mask], _counts_per_run(mask, per_base)
            if groups.order is not None:
                present = _reorder_runs(present, kept, groups.order)
                kept = kept[groups.order]
            p95, _ = _p95(present, np.add.reduceat(kept, groups.first), commune.count)
            result[(window, "commune")] = _stat_columns(name, commune, p95)
    return result


def _plain_aggregates(
    prep: _Prepared, windows: Sequence[str], levels: Sequence[Level], bounds: tuple[int, int]
) -> dict[tuple[str, Level], list[pl.DataFrame]]:
    """Statistics of the plain fields per (window, level): ``time``, ``_dev``/``_com``, stats,
    one frame per chunk of communes.

    A commune's readings are contiguous in (device, time) order (devices are numbered in insee
    order) and every statistic of a commune's devices and windows depends on them only, so the
    work goes commune by commune, a few at a time.
    """
    commune_of_device = prep.device_names["_com"].to_numpy()
    per_device = np.bincount(prep.frame["_dev"].to_numpy(), minlength=commune_of_device.size)
    per_commune = np.bincount(commune_of_device, weights=per_device).astype(np.int64)
    chunk = (np.cumsum(per_commune) - per_commune) // CHUNK_ROWS
    ends = np.cumsum(per_commune)[np.flatnonzero(np.append(chunk[1:] != chunk[:-1], True))]
    found: dict[tuple[str, Level], list[pl.DataFrame]] = {}
    for lo, hi in zip(np.append(0, ends[:-1]), ends, strict=True):
        part = _plain_chunk(prep, pl.Series(prep.order[lo:hi]), windows, levels, bounds)
        for key, frame in part.items():
            found.setdefault(key, []).append(frame)
    return found


def _plain_chunk(
    prep: _Prepared,
    order: pl.Series,
    windows: Sequence[str],
    levels: Sequence[Level],
    bounds: tuple[int, int],
) -> dict[tuple[str, Level], pl.DataFrame]:
    """``_plain_aggregates`` of the readings at ``order``, whole communes in (device, time) order."""
    device_code = prep.frame["_dev"].gather(order).to_numpy()
    commune_of_device = prep.device_names["_com"].to_numpy()
    time_ns = prep.frame["_t"].gather(order)
    layouts: dict[str, _WindowLayout] = {}
    base: _Segments | None = None
    for window in sorted(windows, key=WINDOWS.index):  # finest first: the base of the floors
        start_ns = time_ns.to_frame().select(window_start_ns(pl.col("_t"), window, *bounds)).to_series()
        layouts[window] = _layout(device_code, start_ns.to_numpy(), commune_of_device, base)
        base = layouts[window].device if base is None else base
    del time_ns, device_code
    columns: dict[tuple[str, Level], dict[str, pl.Series]] = {}
    for window, layout in layouts.items():
        device = layout.device
        columns[(window, "device")] = {
            "time": pl.Series(device.time).cast(TIME_DTYPE),
            "_dev": pl.Series(device.entity, dtype=pl.UInt32),
        }
        seg = layout.segment_order
        first = layout.commune_starts if seg is None else seg[layout.commune_starts]
        columns[(window, "commune")] = {
            "time": pl.Series(device.time[first]).cast(TIME_DTYPE),
            "_com": pl.Series(commune_of_device[device.entity[first]], dtype=pl.UInt32),
        }

    def one_field(name: str) -> dict[tuple[str, Level], dict[str, pl.Series]]:
        values = prep.frame[name].gather(order).cast(pl.Float64).to_numpy()
        return _field_stats(name, values, layouts, levels)

    # numpy releases the GIL in its loops: two fields at a time use both cores.
    with ThreadPoolExecutor(max_workers=FIELD_THREADS) as pool:
        for found in pool.map(one_field, prep.plain):
            for key, stats in found.items():
                columns[key].update(stats)
    return {key: pl.DataFrame(series) for key, series in columns.items() if key[1] in levels}


def _counter_query(
    prepared: pl.LazyFrame, counters: Sequence[str], window: str, bounds: tuple[int, int]
) -> pl.LazyFrame:
    """Counter statistics per (device, window) of a (device, time) ordered slice."""
    minutes = window_start_ns(pl.col("_t"), window, *bounds) // MINUTE_NS
    key = (pl.col("_dev").cast(pl.Int64) * _SHIFT + minutes).cast(pl.Int64)
    return (
        prepared.with_columns(key.set_sorted().alias("_key"))
        .group_by("_key")
        .agg(_stat_exprs([], counters))
        .with_columns(
            ((pl.col("_key") % _SHIFT) * MINUTE_NS).cast(TIME_DTYPE).alias("time"),
            (pl.col("_key") // _SHIFT).cast(pl.UInt32).alias("_dev"),
        )
        .drop("_key")
    )


def _counter_aggregates(
    prep: _Prepared, windows: Sequence[str], bounds: tuple[int, int]
) -> dict[str, pl.DataFrame]:
    """Counter statistics per (device, window): ``time``, ``_dev`` and the statistics."""
    frame = prep.frame.select("_t", "_dev", *prep.counters)[pl.Series(prep.order)]
    found: dict[str, list[pl.DataFrame]] = {w: [] for w in windows}
    for part in _device_slices(frame, prep.counters):
        lazy = part.lazy()
        queries = [_counter_query(lazy, prep.counters, w, bounds) for w in windows]
        for window, result in zip(windows, pl.collect_all(queries), strict=True):
            found[window].append(result)
    return {w: pl.concat(parts) for w, parts in found.items()}


def _commune_counters(device: pl.DataFrame, devices: pl.DataFrame, counters: Sequence[str]) -> pl.DataFrame:
    """A commune's counter statistics are the sums of its devices' (an increase adds up)."""
    exprs: list[pl.Expr] = []
    for name in counters:
        increase = pl.col(f"{name}_increase")
        exprs += [
            pl.when(increase.count() > 0).then(increase.sum()).alias(f"{name}_increase"),
            pl.col(f"{name}_resets").sum(),
            pl.col(f"{name}_count").sum(),
        ]
    commune = pl.Series("_com", devices["_com"].gather(device["_dev"]))
    return device.with_columns(commune).group_by("time", "_com").agg(exprs)


def _finish(frame: pl.DataFrame, level: Level, names: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Sort on (time, code), which is (time, tags) by construction, then put the tags back."""
    entity = "_dev" if level == "device" else "_com"
    frame = frame.sort("time", entity)
    tags = names.select(output_tags(level))[frame[entity]]
    return frame.hstack(tags).select("time", *output_tags(level), *columns)


def _finish_chunks(
    chunks: list[pl.DataFrame], level: Level, names: pl.DataFrame, columns: list[str]
) -> pl.DataFrame:
    """``_finish`` of the concatenation of ``chunks``, one column at a time.

    The results of a fleet-day are large (the 1-minute device level is a third of the input's
    rows): each column is moved out of the chunks into its sorted place before the next one,
    so the rows are never held twice.
    """
    entity = "_dev" if level == "device" else "_com"
    time = pl.concat([chunk.drop_in_place("time") for chunk in chunks])
    code = pl.concat([chunk.drop_in_place(entity) for chunk in chunks])
    order = pl.DataFrame([time, code]).select(pl.arg_sort_by("time", entity)).to_series()
    out = [time.gather(order)]
    out += names.select(output_tags(level))[code.gather(order)].get_columns()
    del time, code
    for name in columns:
        out.append(pl.concat([chunk.drop_in_place(name) for chunk in chunks]).gather(order))
    return pl.DataFrame(out)


def _merge(frames: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Statistics of the same (time, entity) rows, side by side."""
    merged = frames[0]
    for other in frames[1:]:
        merged = merged.join(other, on=keys, how="left")
    return merged


def aggregate_all(
    readings: pl.DataFrame | pl.LazyFrame,
    family: str,
    windows: Iterable[str] = WINDOWS,
    levels: Iterable[Level] = LEVELS,
) -> dict[str, pl.DataFrame]:
    """Aggregate raw readings of ``family`` over every window and level, keyed by measurement.

    ``readings`` has ``time`` (UTC), ``insee``, ``device_id`` and the family's fields (missing
    fields are skipped, extra columns ignored). Each result has ``time`` (window start), the
    level's tags (``insee``, ``device_id`` / ``insee``), then each field's statistics (module
    docstring), sorted by time and tags. Windows without readings have no row.
    """
    windows = [check_window(w) for w in windows]
    levels = list(levels)
    prep = _prepare(readings, family)
    plain, counters, frame = prep.plain, prep.counters, prep.frame
    columns = _empty_output(plain, counters).drop("time", "insee", "device_id").columns
    result: dict[str, pl.DataFrame] = {}
    if frame.is_empty():
        empty = _empty_output(plain, counters)
        for window in windows:
            for level in levels:
                result[measurement_name(family, window, level)] = empty.select(
                    "time", *output_tags(level), *columns
                )
        return result
    bounds = (int(frame["_t"].min()), int(frame["_t"].max()))  # type: ignore[arg-type]
    stats = _plain_aggregates(prep, windows, levels, bounds) if plain else {}
    counted = _counter_aggregates(prep, windows, bounds) if counters else {}
    for window in windows:
        for level in levels:
            names = prep.device_names if level == "device" else prep.commune_names
            measurement = measurement_name(family, window, level)
            if not counters:
                result[measurement] = _finish_chunks(stats.pop((window, level)), level, names, columns)
                continue
            keys = ["time", "_dev" if level == "device" else "_com"]
            parts = [pl.concat(stats.pop((window, level)))] if plain else []
            if level == "device":
                parts.append(counted[window])
            else:
                parts.append(_commune_counters(counted[window], prep.device_names, counters))
            result[measurement] = _finish(_merge(parts, keys), level, names, columns)
    return result


def aggregate(
    readings: pl.DataFrame | pl.LazyFrame, family: str, window: str, level: Level = "device"
) -> pl.DataFrame:
    """Aggregate raw readings of ``family`` over tumbling ``window``s, per device or commune.

    One window and level of ``aggregate_all``, which see.
    """
    return aggregate_all(readings, family, [window], [level])[measurement_name(family, window, level)]


def _empty_output(plain: Sequence[str], counters: Sequence[str]) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"time": TIME_DTYPE, "insee": pl.String(), "device_id": pl.String()}
    for name in plain:
        for stat in ("mean", "min", "max", "p95"):
            schema[f"{name}_{stat}"] = pl.Float64()
        schema[f"{name}_count"] = pl.Int64()
    for name in counters:
        schema[f"{name}_increase"] = pl.Float64()
        schema[f"{name}_resets"] = pl.Int64()
        schema[f"{name}_count"] = pl.Int64()
    return pl.DataFrame(schema=schema)
