"""The compiled engine of the aggregates: the catalogue's default statistics, on numba kernels.

It computes ``COMPILED_STATISTICS`` and must give the rows of the polars reference
(``processing.aggregates.reference``), which defines them; the package asks the reference for
any other statistic. The linear 95th percentile is computed from the raw readings of each
window (percentiles do not compose): every window size selects among the raw values, finer
windows' ranks and a sample only bounding the search from below. Mean, min, max and count
compose from 1-minute partials, each window size from the next finer one.

How it is fast: tags become integer codes (a hash lookup, not a string cast); each field's
readings are laid out once per level, device by device an hour at a time and commune by
commune, at places worked out once per day, so that every window is one stretch of memory;
compiled kernels (``window_kernels``) then take the windows smallest first and select each
one's two ranks among the readings above a floor. Nothing is sorted or grouped, and the fields
are read where the frame holds them, chunk by chunk. A field's device windows and its commune
windows are two tasks, run on as many threads as the caller gives.

Cumulative counters (the building energy meter, network error counters) go through polars
group-bys with the catalogue's expressions, a slice of devices at a time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from processing.aggregates.reference import fields_present, output_columns, with_counter_increases
from processing.aggregates.window_kernels import (
    DAY,
    HOUR,
    HOUR_STRETCH,
    MINUTE,
    MINUTE_NS,
    QUARTER,
    cell_starts,
    codes_agree,
    copy_to_slots,
    device_layout_slots,
    device_minute_partials,
    interpolate_p95,
    lay_out_by_commune,
    minute_cells,
    minute_p95,
    minute_partials,
    number_rows,
    window_order_stats,
)
from processing.aggregates.workspace import Workspace, Workspaces
from processing.windows import (
    HOUR_NS,
    floor,
    from_ns,
    next_start,
    window_start_ns,
)
from sensors.catalogue import LEVEL_TAGS, STATISTICS, Level, aggregate_measurement
from storage.base import TIME_DTYPE, epoch_ns

_SHIFT = 1 << 32
"""Group keys pack (entity code, window start in minutes since the epoch) in one Int64: polars
groups on one integer column several times faster than on a string and a datetime."""

COMPILED_STATISTICS = frozenset({"mean", "min", "max", "p95", "count", "increase", "resets"})
"""The statistics this engine computes; the package asks the reference for any other."""


def _counter_statistics(counters: Sequence[str], stat: str) -> list[pl.Expr]:
    """The counter statistics of the catalogue, from readings (``readings``) or from finer rows
    (``composes``)."""
    exprs: list[pl.Expr] = []
    for name in counters:
        for statistic in (STATISTICS["increase"], STATISTICS["resets"], STATISTICS["count"]):
            make = statistic.readings if stat == "readings" else statistic.composes
            assert make is not None
            exprs.append(make(name).alias(f"{name}_{statistic.name}"))
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
    """The rows in (device, time) order (only computed when there are counters)."""
    plain: list[str]
    counters: list[str]
    device_names: pl.DataFrame
    """``insee``, ``device_id`` and ``_com`` of each device; row i is device code i."""
    commune_names: pl.DataFrame
    """``insee`` of each commune; row i is commune code i."""


def _prepare(frame: pl.DataFrame, family: str) -> _Prepared:
    """Integer codes instead of tags, and the (device, time) order of the rows.

    Devices are numbered in (insee, device_id) order and communes in insee order, so that
    sorting results on codes sorts them on tags, and the tags are joined back on the (small)
    results only.
    """
    plain, counters = fields_present(frame, family)
    time_ns = frame.get_column("time").cast(TIME_DTYPE).cast(pl.Int64)
    code, names = _device_codes(frame.select("insee", "device_id"))
    order = _device_time_order(code, time_ns, names.height) if counters else np.empty(0, np.int64)
    device_names = names.select("insee", "device_id", "_com")
    return _Prepared(
        pl.DataFrame({"_t": time_ns, "_dev": code}).hstack(frame.select(*plain, *counters)),
        order,
        plain,
        counters,
        device_names,
        device_names.filter(pl.col("_com").is_first_distinct()).select("insee"),
    )


_HASH_SLICE = 1 << 21


def _tag_hashes(tags: pl.DataFrame, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of each row's ``device_id`` and ``insee``."""
    device = tags.get_column("device_id").hash(seed).to_numpy()
    commune = tags.get_column("insee").hash(seed + 1).to_numpy()
    return device, commune


def _device_codes(tags: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
    """Each row's device code, and the devices' ``insee``, ``device_id`` and ``_com`` (commune
    code) in code order: (insee, device_id) order, communes numbered in insee order.

    Rows are told apart by a hash of their tags, numbered in one pass through a hash table:
    several times faster than casting millions of strings to categoricals. A second,
    independent hash must then agree on every row; if two devices ever shared the first hash,
    it would not, and the codes come from the strings themselves instead.
    """
    if tags.is_empty():
        return np.empty(0, dtype=np.uint32), _named_devices(tags, np.empty(0, dtype=np.int64))
    # Slices of rows at a time: whole-day hash columns would be memory polars' allocator keeps
    # long after.
    seen = np.empty(tags.height, dtype=np.uint32)
    keys, numbers = np.zeros(1 << 12, dtype=np.uint64), np.full(1 << 12, -1, dtype=np.int64)
    first, known = np.empty(16, dtype=np.int64), 0
    for offset in range(0, tags.height, _HASH_SLICE):
        part = tags.slice(offset, _HASH_SLICE)
        keys, numbers, first, known = number_rows(
            *_tag_hashes(part, 0), offset, seen, keys, numbers, first, known
        )
    first = first[:known].copy()
    first_hashes = _tag_hashes(tags[first], 2)
    for offset in range(0, tags.height, _HASH_SLICE):
        part = tags.slice(offset, _HASH_SLICE)
        if not codes_agree(seen[offset : offset + part.height], *_tag_hashes(part, 2), *first_hashes):
            return _device_codes_from_strings(tags)
    names = _named_devices(tags, first)
    # Up to 65,536 devices a code takes two bytes: half as much for the kernels to read.
    code_type = np.uint16 if first.size <= 1 << 16 else np.uint32
    code_of_seen = np.empty(first.size, dtype=code_type)
    code_of_seen[names["_first"].to_numpy()] = np.arange(first.size, dtype=code_type)
    return code_of_seen[seen], names


def _named_devices(tags: pl.DataFrame, first: np.ndarray) -> pl.DataFrame:
    """The devices first seen at rows ``first``, sorted by tags, with their commune code and
    the position in ``first`` they come from (``_first``)."""
    return (
        tags.gather(first)
        .with_columns(pl.Series("_first", np.arange(first.size, dtype=np.int64)))
        .sort("insee", "device_id")
        .with_columns((pl.col("insee").rank("dense") - 1).cast(pl.UInt32).alias("_com"))
    )


def _device_codes_from_strings(tags: pl.DataFrame) -> tuple[np.ndarray, pl.DataFrame]:
    """``_device_codes`` from the strings, with no hash to trust."""
    pairs = tags.select(pl.struct("insee", "device_id").rank("dense").cast(pl.Int64) - 1).to_series()
    first = pairs.arg_unique().to_numpy()
    names = _named_devices(tags, first)
    code_of_first = np.empty(first.size, dtype=np.uint32)
    code_of_first[names["_first"].to_numpy()] = np.arange(first.size, dtype=np.uint32)
    # dense ranks number the pairs in sorted order, which is the code order already
    rank_of_first = pairs.gather(first).to_numpy()
    code_of_rank = np.empty(first.size, dtype=np.uint32)
    code_of_rank[rank_of_first] = code_of_first
    return code_of_rank[pairs.to_numpy()], names


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


SMALL_GROUP = 21
"""In a window of at most this many readings, the linear 95th percentile lies between the two
largest values: position 0.95 (n - 1) is at least n - 2."""

_WIDTH_MINUTES: dict[str, int] = {"1m": 1, "15m": 15, "1h": 60, "1d": 0}
"""Each window's width in minutes (0: the whole Paris day, 23 to 25 hours)."""

# ---------------------------------------------------------------------------------------------
# The engine of the plain (non-counter) fields: see processing.aggregates.window_kernels.
#
# Work goes one Paris day at a time (every window nests in one). Within a day, a window of
# ``width`` minutes of entity ``e`` is cell ``(minute // width) * entities + e`` of a dense
# block, minute counted from the hour the day's readings start in. Blocks are time-major and
# entity-minor, so their non-empty cells come out in (time, code) order: (time, tags) order,
# as codes are numbered in tag order. No sort, no group-by, no gather of the readings.


@dataclass(frozen=True, slots=True)
class _Block:
    """The windows of one size at one level, over one day."""

    window: str
    level: Level
    width: int
    """Minutes per window; 0 for the day."""
    entities: int
    windows: int
    """Windows per entity."""

    @property
    def cells(self) -> int:
        return self.windows * self.entities


@dataclass(frozen=True, slots=True)
class _Day:
    """The readings of one Paris day, or of the part of it the input covers."""

    rows: slice | np.ndarray
    """Which input rows: a slice when the input is in time order."""
    start_ns: int
    """Paris midnight starting the day (UTC ns)."""
    base_ns: int
    """The whole hour the day's first reading falls in: minute 0 of the blocks."""
    minutes: int
    """Minutes from ``base_ns`` to the end of the hour of the last reading (a multiple of 60)."""


@dataclass(frozen=True, slots=True)
class _Layout:
    """What every field of a day shares: blocks, occupied cells, commune grouping."""

    day: _Day
    blocks: list[_Block]
    occupied: list[np.ndarray]
    """Per block, the cells holding at least one reading (flat indices, ascending)."""
    commune_of_device: np.ndarray
    commune_first: np.ndarray
    """First device code of each commune (devices are numbered commune by commune)."""
    minute: np.ndarray
    """Each reading's minute (Int16), counted from ``day.base_ns``."""
    device: np.ndarray
    """Each reading's device code: (minute, device) cell ``minute * devices + device``."""
    device_start: np.ndarray
    """Where each (device, minute) cell starts among the readings laid out hour by hour and
    device by device within an hour (``window_kernels.device_layout_slots``, stretch ``HOUR_STRETCH``), and
    where the last ends."""
    device_slot: np.ndarray
    """Where each reading goes in the device layout (``window_kernels.device_layout_slots``)."""
    commune_start: np.ndarray
    """The same, commune by commune over the whole day (stretch ``day.minutes``)."""
    widest_day: int
    """The most readings of one device or commune in the day."""


def _paris_days(times: pl.Series) -> list[_Day]:
    """The input rows cut in Paris days, in day order (``times``: Int64 ns)."""
    lo, hi = int(times.min()), int(times.max())  # type: ignore[arg-type]
    midnights = [epoch_ns(floor(from_ns(lo), "1d"))]
    while midnights[-1] <= hi:
        midnights.append(epoch_ns(next_start(from_ns(midnights[-1]), "1d")))
    edges = np.array(midnights, dtype=np.int64)
    days: list[_Day] = []
    # Time order (the store's) is cut where the days start, on the frame's own chunks: a copy
    # of the times into one array would cost more than all of this.
    if times.is_sorted():
        cuts = times.search_sorted(pl.Series(edges), side="left").to_numpy()
        for start, (a, b) in zip(midnights, itertools.pairwise(cuts), strict=False):
            if b > a:
                days.append(_day(slice(int(a), int(b)), start, int(times[int(a)]), int(times[int(b) - 1])))
        return days
    time_ns = times.to_numpy()
    day = np.searchsorted(edges, time_ns, side="right") - 1
    order = np.argsort(day.astype(np.uint16), kind="stable")
    cuts = np.searchsorted(day[order], np.arange(edges.size))
    for start, (a, b) in zip(midnights, itertools.pairwise(cuts), strict=False):
        if b > a:
            rows = order[a:b]
            days.append(_day(rows, start, int(time_ns[rows].min()), int(time_ns[rows].max())))
    return days


def _day(rows: slice | np.ndarray, start_ns: int, first_ns: int, last_ns: int) -> _Day:
    base = first_ns // HOUR_NS * HOUR_NS
    return _Day(rows, start_ns, base, ((last_ns - base) // HOUR_NS + 1) * 60)


def _layout(
    day: _Day,
    times: pl.Series,
    device: np.ndarray,
    commune_of_device: np.ndarray,
    *,
    windows: Sequence[str],
    levels: Sequence[Level],
    parts: int,
) -> _Layout:
    devices, communes = commune_of_device.size, int(commune_of_device.max()) + 1
    codes = np.ascontiguousarray(device[day.rows])
    minute = np.empty(codes.size, dtype=np.int16)  # a Paris day has at most 1,500 minutes
    per_cell = np.zeros(day.minutes * devices, dtype=np.int64)
    hour_parts = _hour_parts(day, times, parts)

    def count_minutes(part: Chunks) -> None:
        for at, time_ns in part:
            rows = slice(at, at + time_ns.size)
            minute_cells(time_ns, codes[rows], day.base_ns, devices, minute[rows], per_cell)

    _on_threads(count_minutes, hour_parts)
    minute_rows = per_cell.reshape(day.minutes, devices)
    commune_first = np.searchsorted(commune_of_device, np.arange(communes)).astype(np.int64)
    by_commune = np.add.reduceat(minute_rows, commune_first, axis=1)
    device_start = _starts(minute_rows, HOUR_STRETCH)
    blocks: list[_Block] = []
    occupied: list[np.ndarray] = []
    for window in windows:
        width = _WIDTH_MINUTES[window]
        span = width or day.minutes
        rows = minute_rows.reshape(day.minutes // span, span, devices).sum(axis=1)
        for level in levels:
            entities = devices if level == "device" else communes
            counted = rows if level == "device" else np.add.reduceat(rows, commune_first, axis=1)
            blocks.append(_Block(window, level, width, entities, day.minutes // span))
            occupied.append(np.flatnonzero(counted))
    return _Layout(
        day,
        blocks,
        occupied,
        commune_of_device.astype(np.int32),
        commune_first,
        minute,
        codes,
        device_start,
        _slots(minute, codes, device_start, devices, [_span(part) for part in hour_parts]),
        _starts(by_commune, day.minutes),
        int(max(minute_rows.sum(axis=0).max(), by_commune.sum(axis=0).max())),
    )


def _hour_parts(day: _Day, times: pl.Series, parts: int) -> list[Chunks]:
    """The day's times in up to ``parts`` parts cut on whole hours, each touching only its own
    hours' cells, so that as many threads can lay them out at once; one part when the rows are
    not in time order (nothing to cut on) or the day has fewer hours than parts."""
    pieces = _chunks(times, day.rows)
    hours = day.minutes // HOUR_STRETCH
    parts = min(parts, hours)
    if not isinstance(day.rows, slice) or parts < 2:
        return [pieces]
    rows = times.slice(day.rows.start, day.rows.stop - day.rows.start)
    edges = [day.base_ns + hours * share // parts * HOUR_NS for share in range(1, parts)]
    cuts = [int(rows.search_sorted(edge)) for edge in edges]
    found: list[Chunks] = [[] for _ in range(parts)]
    for at, time_ns in pieces:
        # A piece straddling cuts is split at each one it spans.
        bounds = [at, *(c for c in cuts if at < c < at + time_ns.size), at + time_ns.size]
        for lo, hi in itertools.pairwise(bounds):
            found[sum(c <= lo for c in cuts)].append((lo, time_ns[lo - at : hi - at]))
    return [part for part in found if part]


_Part = TypeVar("_Part")


def _on_threads(task: Callable[[_Part], None], parts: Sequence[_Part]) -> None:
    """``task`` of each part, each on a thread of its own; in this thread when there is one part
    (an input of an hour or less), where starting a thread costs more than the task."""
    if len(parts) == 1:
        task(parts[0])
        return
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        list(pool.map(task, parts))


def _span(part: Chunks) -> slice:
    """The rows a part of ``_hour_parts`` covers."""
    return slice(part[0][0], part[-1][0] + part[-1][1].size)


def _slots(
    minute: np.ndarray, device: np.ndarray, start: np.ndarray, devices: int, spans: list[slice]
) -> np.ndarray:
    """Where each reading goes in the device layout: found once for the day's fields, for the
    rows of each span (cut on a whole hour: they fill apart cells) on a thread of its own."""
    fill: np.ndarray = start.astype(_slot_type(minute.size))
    slot = np.empty(minute.size, dtype=fill.dtype)

    def place(rows: slice) -> None:
        device_layout_slots(minute[rows], device[rows], devices, HOUR_STRETCH, fill, slot[rows])

    _on_threads(place, spans)
    return slot


def _starts(rows: np.ndarray, stretch: int) -> np.ndarray:
    """Where each (entity, minute) cell starts when ``rows`` (minute by entity) readings are
    laid out as ``window_kernels.cell_of`` says, plus the end of the last."""
    starts = np.empty(rows.size + 1, dtype=np.int64)
    cell_starts(rows.reshape(-1), rows.shape[1], stretch, starts)
    return starts


def _compose(partial: np.ndarray, level: Level, layout: _Layout, how: np.ufunc) -> dict[str, np.ndarray]:
    """The (minute, device) partials composed into every window size at ``level`` (flat
    arrays by window name, cells as the blocks lay them out), each size from the next finer
    one: a quarter from its minutes, an hour from its quarters, the day from its hours, so
    that only the first reads the whole day's minutes."""
    minutes = layout.day.minutes
    # +inf and -inf readings in one window sum to NaN, as numpy's mean of them is: no warning.
    with np.errstate(invalid="ignore"):
        grid = partial.reshape(minutes, -1)  # the partials are the device minutes
        if level == "commune":
            grid = how.reduceat(grid, layout.commune_first, axis=1)
        quarters = how.reduce(grid.reshape(minutes // 15, 15, -1), axis=1)
        hours = how.reduce(quarters.reshape(minutes // 60, 4, -1), axis=1)
        day = how.reduce(hours, axis=0)
    return {"1m": grid.reshape(-1), "15m": quarters.reshape(-1), "1h": hours.reshape(-1), "1d": day}


_ORDER_ROW = {"1m": MINUTE, "15m": QUARTER, "1h": HOUR, "1d": DAY}
"""Each window size's row in the order statistics of ``window_order_stats``."""


def _slot_type(readings: int) -> type:
    """Where a reading goes in a layout: four bytes suffice for any day of fewer than two
    billion readings, half the memory of eight."""
    return np.int32 if readings < 1 << 31 else np.int64


def _window_order_stats(
    laid_out: np.ndarray,
    per_minute: np.ndarray,
    layout: _Layout,
    level: Level,
    workspace: Workspace,
    *,
    with_minutes: bool,
    low: np.ndarray | None = None,
    second: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks k and k + 1 of every window of ``level`` (rows: minute, quarter, hour, day; the
    minute row only ``with_minutes``), from the readings laid out for that level;
    ``per_minute`` counts the field's readings per (minute, entity); ``low`` and ``second``
    hold their smallest and second-largest values when known."""
    minutes = layout.day.minutes
    if level == "device":
        entities, start, stretch = layout.commune_of_device.size, layout.device_start, HOUR_STRETCH
    else:
        entities, start, stretch = layout.commune_first.size, layout.commune_start, minutes
    width = minutes * entities if with_minutes else minutes // 15 * entities
    kth = np.full((4, width), np.nan)
    following = np.full((4, width), np.nan)
    window_order_stats(
        laid_out,
        start,
        per_minute,
        entities,
        minutes,
        stretch,
        with_minutes,
        np.empty(0) if low is None else low,
        np.empty(0) if second is None else second,
        kth,
        following,
        workspace.array("scratch", layout.widest_day, np.float64),
    )
    return kth, following


@dataclass(frozen=True, slots=True)
class _CommuneParts:
    """What a field's commune windows take from its device minutes: each commune block's
    count, sum, min and max (composed, small), and the readings per (minute, commune)."""

    count: dict[int, np.ndarray]
    total: dict[int, np.ndarray]
    low: dict[int, np.ndarray]
    high: dict[int, np.ndarray]
    per_minute: np.ndarray


BlockStats = dict[int, dict[str, pl.Series]]
"""A field's statistics columns, by block index."""


def _device_stats(
    name: str, chunks: Chunks, layout: _Layout, workspace: Workspace
) -> tuple[BlockStats, _CommuneParts | None]:
    """The field's statistics of every device block, and what its commune blocks need."""
    day, devices = layout.day, layout.commune_of_device.size
    cells = day.minutes * devices
    # A device's minutes are mostly all a result's rows: the count, sum, min and max of the
    # minutes are then that result's columns themselves (no copy), so they are the field's own
    # arrays, not the workspace's.
    count = np.empty(cells, dtype=np.int64)  # Int64 as in the results: no cast
    total = np.empty(cells)
    low = np.empty(cells)
    high = np.empty(cells)
    second = workspace.array("second", cells, np.float64)
    laid_out = workspace.array("laid_out", layout.minute.size, np.float64)
    infinite = sum(
        copy_to_slots(values, layout.device_slot[at : at + values.size], laid_out) for at, values in chunks
    )
    # Laid out, a (minute, device)'s readings sit side by side: its partials come from one
    # read of them, not from one update per reading. A missing value is laid out as -inf, so a
    # field with real -inf readings (no sensor sends one; a notebook might) takes the update
    # per reading.
    partials = (count, total, low, high, second)
    if infinite:
        for partial, empty in zip(partials, (0, 0.0, np.inf, -np.inf, -np.inf), strict=True):
            partial.fill(empty)
        for at, values in chunks:
            rows = slice(at, at + values.size)
            minute_partials(layout.minute[rows], layout.device[rows], devices, values, *partials)
    else:
        device_minute_partials(laid_out, layout.device_start, devices, day.minutes, *partials)
    communes = [index for index, block in enumerate(layout.blocks) if block.level == "commune"]
    parts = None
    if communes:
        composed = [
            _compose(partial, "commune", layout, how)
            for partial, how in ((count, np.add), (total, np.add), (low, np.minimum), (high, np.maximum))
        ]
        count_, total_, low_, high_ = (
            {i: sizes[layout.blocks[i].window] for i in communes} for sizes in composed
        )
        parts = _CommuneParts(count_, total_, low_, high_, composed[0]["1m"])
    found: BlockStats = {}
    blocks = [index for index, block in enumerate(layout.blocks) if block.level == "device"]
    if not blocks:
        return found, parts
    # A device's minute of at most SMALL_GROUP readings has its p95 between its two largest
    # values, known already; every other window selects among its readings (window_kernels).
    small_minutes = int(count.max()) <= SMALL_GROUP
    kth, following = _window_order_stats(
        laid_out, count, layout, "device", workspace, with_minutes=not small_minutes, low=low, second=second
    )
    counts, totals = _compose(count, "device", layout, np.add), _compose(total, "device", layout, np.add)
    lows, highs = _compose(low, "device", layout, np.minimum), _compose(high, "device", layout, np.maximum)
    for index in blocks:
        block, here = layout.blocks[index], layout.occupied[index]
        n = _gather(counts[block.window], here)
        if block.window == "1m" and small_minutes:
            p95 = np.empty(here.size)
            minute_p95(here, count, high, second, p95)
        else:
            row = _ORDER_ROW[block.window]
            p95 = interpolate_p95(n, kth[row][here], following[row][here])
        found[index] = _block_stats(
            name,
            n,
            total=_gather(totals[block.window], here),
            low=_gather(lows[block.window], here),
            high=_gather(highs[block.window], here),
            p95=p95,
        )
    return found, parts


def _commune_stats(
    name: str, chunks: Chunks, layout: _Layout, workspace: Workspace, parts: _CommuneParts
) -> BlockStats:
    """The field's statistics of every commune block."""
    laid_out = workspace.array("laid_out", layout.minute.size, np.float64)
    fill = workspace.array("fill", layout.commune_start.size, _slot_type(layout.minute.size))
    fill[:] = layout.commune_start
    communes, minutes = layout.commune_first.size, layout.day.minutes
    for at, values in chunks:
        rows = slice(at, at + values.size)
        lay_out_by_commune(
            layout.minute[rows],
            layout.device[rows],
            layout.commune_of_device,
            values,
            communes,
            minutes,
            fill,
            laid_out,
        )
    kth, following = _window_order_stats(
        laid_out, parts.per_minute, layout, "commune", workspace, with_minutes=True
    )
    found: BlockStats = {}
    for index, count in parts.count.items():
        block, here = layout.blocks[index], layout.occupied[index]
        n = count[here]
        row = _ORDER_ROW[block.window]
        p95 = interpolate_p95(n, kth[row][here], following[row][here])
        found[index] = _block_stats(
            name,
            n,
            total=parts.total[index][here],
            low=parts.low[index][here],
            high=parts.high[index][here],
            p95=p95,
        )
    return found


def _block_stats(
    name: str, n: np.ndarray, *, total: np.ndarray, low: np.ndarray, high: np.ndarray, p95: np.ndarray
) -> dict[str, pl.Series]:
    """One block's columns of a field from its windows' count, sum, min, max and p95 (arrays of
    their own, overwritten)."""
    # A window of other fields' readings only: a row whose statistics of this field are null.
    empty = n == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        np.divide(total, n, out=total)
    return {
        f"{name}_mean": _nullable(total, empty),
        f"{name}_min": _nullable(low, empty),
        f"{name}_max": _nullable(high, empty),
        f"{name}_p95": _nullable(p95, empty),
        f"{name}_count": pl.Series(n, dtype=pl.Int64),
    }


def _gather(values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``values[cells]``: ``values`` itself when every cell is taken, as a device's minutes
    mostly are (it is then the caller's to give away: never a workspace's array)."""
    if cells.size == values.size:
        return values
    taken: np.ndarray = values[cells]
    return taken


def _nullable(values: np.ndarray, empty: np.ndarray) -> pl.Series:
    """``values`` as a Float64 series, null where ``empty`` (``values`` is overwritten)."""
    if not empty.any():
        return pl.Series(values, dtype=pl.Float64)
    values[empty] = np.nan
    return pl.Series(values, dtype=pl.Float64, nan_to_null=True)


Chunks = list[tuple[int, np.ndarray]]
"""A column's values over a day's readings, piece by piece: (first reading, values)."""


def _field_chunks(column: pl.Series, rows: slice | np.ndarray) -> Chunks:
    """The field's values on ``rows`` as Float64, NaN where null (``_chunks``)."""
    return _chunks(column.cast(pl.Float64), rows)


def _chunks(column: pl.Series, rows: slice | np.ndarray) -> Chunks:
    """The column's values on ``rows``, in the pieces the frame holds them in.

    A store's frame comes in many chunks: each is read where it is (a copy only when it has
    nulls, which become NaN), never gathered into one array of the day. Every piece is
    read-only, so that the kernels see one array type (a second would be compiled apart).
    """
    if not isinstance(rows, slice):
        pieces = [column.to_numpy()[rows]]
    else:
        pieces = [c.to_numpy() for c in column.slice(rows.start, rows.stop - rows.start).get_chunks()]
    chunks: Chunks = []
    at = 0
    for piece in pieces:
        values = np.ascontiguousarray(piece)
        values.flags.writeable = False
        chunks.append((at, values))
        at += values.size
    return chunks


def _fields_of_day(
    prep: _Prepared, layout: _Layout, workspaces: Workspaces, threads: int
) -> Iterator[BlockStats]:
    """Every plain field's statistics of one day, device blocks and commune blocks apart.

    A field's device windows take several times as long as its commune windows, which
    need only the device minutes' partials: each field's commune windows are queued once
    those are known, behind the device windows of the fields still waiting, so that the two
    threads end together rather than one idling through a last field.
    """

    def commune_task(name: str, parts: _CommuneParts) -> BlockStats:
        # The chunks are taken again, not kept from the device task: a chunk with nulls is a
        # copy, and queued commune tasks holding their fields' copies could hold every field's.
        with workspaces.lend() as workspace:
            return _commune_stats(
                name, _field_chunks(prep.frame[name], layout.day.rows), layout, workspace, parts
            )

    def device_task(name: str) -> tuple[BlockStats, Future[BlockStats] | None]:
        with workspaces.lend() as workspace:
            stats, parts = _device_stats(
                name, _field_chunks(prep.frame[name], layout.day.rows), layout, workspace
            )
        # Queued, never awaited here: a task waiting on a task could leave none to run it.
        later = pool.submit(commune_task, name, parts) if parts is not None else None
        return stats, later

    with ThreadPoolExecutor(max_workers=threads) as pool:
        device_results = [pool.submit(device_task, name) for name in prep.plain]
        communes: list[Future[BlockStats]] = []
        for result in device_results:
            stats, later = result.result()
            yield stats
            if later is not None:
                communes.append(later)
        for later in communes:
            yield later.result()


def _block_keys(layout: _Layout) -> list[dict[str, pl.Series]]:
    """Each block's ``time`` (window start) and ``_dev`` or ``_com`` columns, occupied cells only."""
    columns: list[dict[str, pl.Series]] = []
    for index, block in enumerate(layout.blocks):
        cells = layout.occupied[index]
        entity = cells % block.entities
        if block.width:
            time = layout.day.base_ns + cells // block.entities * block.width * MINUTE_NS
        else:
            time = np.full(cells.size, layout.day.start_ns, dtype=np.int64)
        code = "_dev" if block.level == "device" else "_com"
        columns.append({"time": pl.Series(time).cast(TIME_DTYPE), code: pl.Series(entity, dtype=pl.UInt32)})
    return columns


def _plain_aggregates(
    prep: _Prepared, windows: Sequence[str], levels: Sequence[Level], threads: int
) -> dict[tuple[str, Level], list[pl.DataFrame]]:
    """Statistics of the plain fields per (window, level): ``time``, ``_dev``/``_com``, stats,
    one frame per Paris day."""
    workspaces = Workspaces(threads)
    times = prep.frame["_t"]
    device = prep.frame["_dev"].to_numpy()
    commune_of_device = prep.device_names["_com"].to_numpy()
    layouts = [
        _layout(day, times, device, commune_of_device, windows=windows, levels=levels, parts=threads)
        for day in _paris_days(times)
    ]
    found: dict[tuple[str, Level], list[pl.DataFrame]] = {}
    for layout in layouts:
        columns: list[dict[str, pl.Series]] = []
        for stats in _fields_of_day(prep, layout, workspaces, threads):
            # The windows' times and codes are made once the first field is under way: the
            # main thread would otherwise hold the two field threads back while it makes them.
            columns = columns or _block_keys(layout)
            for index, block_stats in stats.items():
                columns[index].update(block_stats)
        for index, block in enumerate(layout.blocks):
            found.setdefault((block.window, block.level), []).append(pl.DataFrame(columns[index]))
    workspaces.clear()
    return found


def _counter_query(
    prepared: pl.LazyFrame, counters: Sequence[str], window: str, bounds: tuple[int, int]
) -> pl.LazyFrame:
    """Counter statistics per (device, window) of a (device, time) ordered slice."""
    minutes = window_start_ns(pl.col("_t"), window, *bounds) // MINUTE_NS
    key = (pl.col("_dev").cast(pl.Int64) * _SHIFT + minutes).cast(pl.Int64)
    return (
        prepared.with_columns(key.set_sorted().alias("_key"))
        .group_by("_key")
        .agg(_counter_statistics(counters, "readings"))
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
    """A commune's counter statistics compose from its devices' (an increase adds up)."""
    commune = pl.Series("_com", devices["_com"].gather(device["_dev"]))
    return (
        device.with_columns(commune).group_by("time", "_com").agg(_counter_statistics(counters, "composes"))
    )


def _finish(frame: pl.DataFrame, level: Level, names: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Sort on (time, code), which is (time, tags) by construction, then put the tags back."""
    entity = "_dev" if level == "device" else "_com"
    frame = frame.sort("time", entity)
    tags = names.select(LEVEL_TAGS[level])[frame[entity]]
    return frame.hstack(tags).select("time", *LEVEL_TAGS[level], *columns)


def _finish_chunks(
    chunks: list[pl.DataFrame], level: Level, names: pl.DataFrame, columns: list[str]
) -> pl.DataFrame:
    """The per-day frames, which come in (time, code) order, end to end with their tags."""
    entity = "_dev" if level == "device" else "_com"
    frame = pl.concat(chunks, rechunk=False) if len(chunks) > 1 else chunks[0]
    tags = names.select(LEVEL_TAGS[level])[frame[entity]]
    return frame.hstack(tags).select("time", *LEVEL_TAGS[level], *columns)


def _merge(frames: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
    """Statistics of the same (time, entity) rows, side by side."""
    merged = frames[0]
    for other in frames[1:]:
        merged = merged.join(other, on=keys, how="left")
    return merged


def aggregate_all(
    frame: pl.DataFrame, family: str, windows: Sequence[str], levels: Sequence[Level], *, threads: int
) -> dict[str, pl.DataFrame]:
    """``COMPILED_STATISTICS`` of every (window, level), keyed by measurement, for a frame of
    readings with at least one row (``processing.aggregates.aggregate_all``, which see)."""
    prep = _prepare(frame, family)
    plain, counters = prep.plain, prep.counters
    columns = output_columns(family, plain, counters, COMPILED_STATISTICS)
    bounds = (int(prep.frame["_t"].min()), int(prep.frame["_t"].max()))  # type: ignore[arg-type]
    stats = _plain_aggregates(prep, windows, levels, threads) if plain else {}
    counted = _counter_aggregates(prep, windows, bounds) if counters else {}
    result: dict[str, pl.DataFrame] = {}
    for window in windows:
        for level in levels:
            names = prep.device_names if level == "device" else prep.commune_names
            measurement = aggregate_measurement(family, window, level)
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
