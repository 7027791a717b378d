"""Compiled kernels of the window aggregates: one pass over a field's readings per kernel.

The aggregates of a Paris day are laid out densely: a window of entity ``e`` (a device or a
commune code) is cell ``index * entities + e`` of its (window size, level) block, ``index``
counting windows from an hour boundary ``base_ns`` (minutes, quarter-hours, hours; 0 for the
day). Every reading then has a fixed cell in every block, computed on the fly, so the readings
can come in any order (the store gives time order) and nothing is sorted or gathered.

* ``minute_partials`` adds each reading to its (device, minute) count, sum, min, max and
  second-largest value; every coarser window and every commune composes its count, sum, min and
  max from those (numpy reshapes, in the caller), and a minute of at most 21 readings has its
  p95 between its two largest values.
* ``largest_values`` keeps, for every other window, its ``capacity`` largest values: with ``n``
  readings and ``k = floor(0.95 (n - 1))``, ``capacity = n - k`` keeps ranks k and above, the
  two order statistics the linear-interpolation p95 needs. Each window has a buffer larger
  than that; a value enters only above the window's threshold, and a full buffer is cut back to its
  ``capacity`` largest by a selection, which raises the threshold. Most readings cost one load
  and one compare per window; nothing is ever sorted.
* ``window_ranks`` reads the two order statistics out of every buffer.

All are ``nogil``: the caller runs two fields at once on two cores.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MINUTE_NS = 60_000_000_000
MINUTE, QUARTER, HOUR, DAY = 0, 1, 2, 3
"""Window sizes, as the kernels know them."""


@njit(cache=True, nogil=True)
def minute_partials(  # noqa: PLR0917 - numba kernels take arrays positionally
    minute: np.ndarray,
    device: np.ndarray,
    devices: int,
    values: np.ndarray,
    count: np.ndarray,
    total: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    second: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Add each non-NaN value to its (minute, device) cell ``minute * devices + device`` of the
    partials.

    ``count`` starts at 0, ``total`` at 0.0, ``low`` at +inf, ``high`` and ``second`` (the
    second-largest value, ties counted) at -inf.
    """
    for i in range(values.size):
        value = values[i]
        if np.isnan(value):  # the reading does not carry this field
            continue
        cell = minute[i] * devices + device[i]
        count[cell] += 1
        total[cell] += value
        low[cell] = min(low[cell], value)
        # Branch-free (a new maximum pushes the old one to second place): readings come in
        # no order the branch predictor could learn.
        top = high[cell]
        second[cell] = max(second[cell], min(top, value))
        high[cell] = max(top, value)


@njit(cache=True, nogil=True)
def minute_cells(  # noqa: PLR0917 - numba kernels take arrays positionally
    time_ns: np.ndarray, device: np.ndarray, base_ns: int, devices: int, minutes: np.ndarray, rows: np.ndarray
) -> None:  # pragma: no cover - compiled
    """Each reading's minute (counted from ``base_ns``) into ``minutes``, and how many readings
    each (minute, device) cell ``minute * devices + device`` has into ``rows`` (from 0)."""
    for i in range(time_ns.size):
        minute = (time_ns[i] - base_ns) // MINUTE_NS
        minutes[i] = minute
        rows[minute * devices + device[i]] += 1


@njit(cache=True, nogil=True)
def _select(buffer: np.ndarray, lo: int, hi: int, rank: int) -> None:  # pragma: no cover - compiled
    """Rearrange ``buffer[lo:hi]`` so that ``buffer[lo + rank]`` is its rank-th smallest value,
    with none larger before it and none smaller after it.

    Quickselect with a median-of-three pivot and a partition without a branch on the data
    (each value is swapped to the front and the front advances only for a smaller one): the
    values come in no order a branch predictor could learn. Short ranges are sorted.
    """
    target = lo + rank
    while hi - lo > 16:
        a, b, c = buffer[lo], buffer[(lo + hi) >> 1], buffer[hi - 1]
        pivot = max(min(a, b), min(max(a, b), c))
        front = lo
        for i in range(lo, hi):
            value = buffer[i]
            buffer[i] = buffer[front]
            buffer[front] = value
            front += value < pivot
        if front == lo:
            # The pivot is the smallest value: gather its copies in front instead.
            for i in range(lo, hi):
                value = buffer[i]
                buffer[i] = buffer[front]
                buffer[front] = value
                front += value <= pivot
            if target < front:
                return  # every value before ``front`` equals the pivot
        if target < front:
            hi = front
        else:
            lo = front
    for i in range(lo + 1, hi):  # insertion sort of what is left
        value = buffer[i]
        j = i - 1
        while j >= lo and buffer[j] > value:
            buffer[j + 1] = buffer[j]
            j -= 1
        buffer[j + 1] = value


@njit(cache=True, nogil=True)
def largest_values(  # noqa: PLR0917 - numba kernels take arrays positionally
    minute_of_row: np.ndarray,
    device_of_row: np.ndarray,
    commune_of_device: np.ndarray,
    values: np.ndarray,
    size: np.ndarray,
    on_commune: np.ndarray,
    entities: np.ndarray,
    first_cell: np.ndarray,
    capacity: np.ndarray,
    room: np.ndarray,
    start: np.ndarray,
    used: np.ndarray,
    threshold: np.ndarray,
    lowest: np.ndarray,
    buffer: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Keep at least the ``capacity`` largest values of every window in its buffer.

    Block ``b`` has windows of ``size[b]`` (``MINUTE`` .. ``DAY``) over ``entities[b]`` devices
    or communes (``on_commune[b]``); its cells start at ``first_cell[b]``. A cell's buffer is
    ``buffer[start[cell]:start[cell] + room[cell]]`` (``room`` > ``capacity``), ``used[cell]`` of it filled
    (starting at 0), ``threshold[cell]`` (starting at -inf) the smallest value it must keep.
    """
    blocks = size.size
    devices = commune_of_device.size
    for i in range(values.size):
        value = values[i]
        if np.isnan(value):
            continue
        minute = minute_of_row[i]
        dev = device_of_row[i]
        if value <= lowest[minute * devices + dev]:
            continue
        com = commune_of_device[dev]
        for b in range(blocks):
            kind = size[b]
            if kind == MINUTE:
                index = minute
            elif kind == QUARTER:
                index = minute // 15
            elif kind == HOUR:
                index = minute // 60
            else:
                index = 0
            cell = first_cell[b] + index * entities[b] + (com if on_commune[b] else dev)
            if value <= threshold[cell]:
                continue
            at = start[cell]
            filled = used[cell]
            buffer[at + filled] = value
            filled += 1
            if filled == room[cell]:
                # Full: keep the ``keep`` largest; the smallest of them is the new threshold.
                keep = capacity[cell]
                drop = filled - keep
                _select(buffer, at, at + filled, drop)
                threshold[cell] = buffer[at + drop]
                for j in range(keep):
                    buffer[at + j] = buffer[at + drop + j]
                filled = keep
            used[cell] = filled


@njit(cache=True, nogil=True)
def window_ranks(  # noqa: PLR0917 - numba kernels take arrays positionally
    capacity: np.ndarray,
    start: np.ndarray,
    used: np.ndarray,
    buffer: np.ndarray,
    kth: np.ndarray,
    following: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """For each cell holding ``capacity`` (> 0) values at least, the ``capacity``-th and the
    (``capacity`` - 1)-th largest: ranks k and k + 1 of its window (the same when capacity is 1)."""
    for cell in range(capacity.size):
        keep = capacity[cell]
        if keep == 0:
            continue
        at = start[cell]
        filled = used[cell]
        rank = filled - keep
        _select(buffer, at, at + filled, rank)
        kth[cell] = buffer[at + rank]
        if keep == 1:
            following[cell] = kth[cell]
        else:
            following[cell] = buffer[at + rank + 1 : at + filled].min()


@njit(cache=True, nogil=True)
def _window_cells(kind: int, minutes: int) -> int:  # pragma: no cover - compiled
    """How many minutes a window of ``kind`` spans (the whole day for ``DAY``)."""
    if kind == MINUTE:
        return 1
    if kind == QUARTER:
        return 15
    if kind == HOUR:
        return 60
    return minutes


@njit(cache=True, nogil=True)
def window_floors(  # noqa: PLR0917 - numba kernels take arrays positionally
    count: np.ndarray,
    second: np.ndarray,
    commune_of_device: np.ndarray,
    commune_first: np.ndarray,
    minutes: int,
    size: np.ndarray,
    on_commune: np.ndarray,
    entities: np.ndarray,
    first_cell: np.ndarray,
    capacity: np.ndarray,
    threshold: np.ndarray,
    lowest: np.ndarray,
    by_device: np.ndarray,
    scratch: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Set each window's ``threshold`` under its k-th value, and ``lowest`` per (minute, device).

    ``count`` and ``second`` are the (minute, device) partials, flat. A minute of two readings
    or more has at least two values at or above its second-largest, so a window needing its
    ``capacity`` largest values has them all at or above the ``ceil(capacity / 2)``-th largest
    of its minutes' second-largest values: everything strictly under that floor is dropped
    unseen. (The largest values of the minutes too would give a floor a little closer, for
    twice the work here and little saved in ``largest_values``: measured.) Blocks are laid out
    as in ``largest_values``. ``by_device`` (as large as ``count``) and ``scratch`` (``minutes``
    times the most devices of a commune) are working space.
    """
    devices = count.size // minutes
    communes = commune_first.size
    threshold[:] = -np.inf
    lowest[:] = np.inf
    # A device's minutes side by side, for its own windows; a minute's devices side by side
    # (the input layout) for a commune's.
    by_device[:] = -np.inf
    for minute in range(minutes):
        for dev in range(devices):
            at = minute * devices + dev
            if count[at] >= 2:
                by_device[dev * minutes + minute] = second[at]
    for b in range(size.size):
        span = _window_cells(size[b], minutes)
        for index in range(minutes // span):
            for entity in range(entities[b]):
                cell = first_cell[b] + index * entities[b] + entity
                need = (capacity[cell] + 1) // 2
                if need == 0:
                    continue
                found = 0
                if on_commune[b]:
                    lo = commune_first[entity]
                    hi = commune_first[entity + 1] if entity + 1 < communes else devices
                    for minute in range(index * span, (index + 1) * span):
                        for at in range(minute * devices + lo, minute * devices + hi):
                            if count[at] >= 2:
                                scratch[found] = second[at]
                                found += 1
                else:
                    row = entity * minutes
                    for at in range(row + index * span, row + (index + 1) * span):
                        if by_device[at] > -np.inf:
                            scratch[found] = by_device[at]
                            found += 1
                if found < need:
                    continue  # too few full minutes to say anything: keep every value
                _select(scratch, 0, found, found - need)
                threshold[cell] = np.nextafter(scratch[found - need], -np.inf)
        # Every (minute, device) of a window may drop what is under the window's threshold.
        for minute in range(minutes):
            row = first_cell[b] + minute // span * entities[b]
            for dev in range(devices):
                entity = commune_of_device[dev] if on_commune[b] else dev
                at = minute * devices + dev
                lowest[at] = min(lowest[at], threshold[row + entity])


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True, inline="always")
def _mix(device_hash: np.uint64, commune_hash: np.uint64) -> np.uint64:  # pragma: no cover
    return (device_hash * _GOLDEN) ^ commune_hash


@njit(cache=True, nogil=True)
def number_rows(  # noqa: PLR0917 - numba kernels take arrays positionally
    device_hash: np.ndarray,
    commune_hash: np.ndarray,
    offset: int,
    codes: np.ndarray,
    keys: np.ndarray,
    numbers: np.ndarray,
    first: np.ndarray,
    known: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:  # pragma: no cover - compiled
    """Number the distinct (device, commune) hash pairs of rows ``offset``.. in order of first
    appearance, into ``codes[offset:]``.

    The table (``keys``, ``numbers``: -1 for a free slot; open addressing, linear probing) and
    ``first`` (the row where each number first appears; ``known`` numbers so far) carry over
    from one slice of rows to the next; the table doubles when half full, so the arrays
    returned may be new ones.
    """
    for i in range(device_hash.size):
        key = _mix(device_hash[i], commune_hash[i])
        mask = np.uint64(keys.size - 1)
        slot = (key ^ (key >> np.uint64(29))) & mask
        while numbers[slot] >= 0 and keys[slot] != key:
            slot = (slot + np.uint64(1)) & mask
        if numbers[slot] >= 0:
            codes[offset + i] = numbers[slot]
            continue
        if known == first.size:
            first = np.concatenate((first, np.empty(first.size, dtype=np.int64)))
        first[known] = offset + i
        keys[slot] = key
        numbers[slot] = known
        codes[offset + i] = known
        known += 1
        if 2 * known > keys.size:  # keep probes short: double and reinsert
            old_keys, old_numbers = keys, numbers
            keys = np.zeros(2 * old_keys.size, dtype=np.uint64)
            numbers = np.full(2 * old_keys.size, -1, dtype=np.int64)
            mask = np.uint64(keys.size - 1)
            for j in range(old_keys.size):
                if old_numbers[j] >= 0:
                    moved = (old_keys[j] ^ (old_keys[j] >> np.uint64(29))) & mask
                    while numbers[moved] >= 0:
                        moved = (moved + np.uint64(1)) & mask
                    keys[moved] = old_keys[j]
                    numbers[moved] = old_numbers[j]
    return keys, numbers, first, known


@njit(cache=True, nogil=True)
def codes_agree(
    codes: np.ndarray,
    device_hash: np.ndarray,
    commune_hash: np.ndarray,
    first_device_hash: np.ndarray,
    first_commune_hash: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """Whether every row's (device, commune) hash pair equals that of its code's first row."""
    for i in range(codes.size):
        code = codes[i]
        if _mix(device_hash[i], commune_hash[i]) != _mix(first_device_hash[code], first_commune_hash[code]):
            return False
    return True


@njit(cache=True, nogil=True)
def interpolate_p95(
    count: np.ndarray, kth: np.ndarray, following: np.ndarray
) -> np.ndarray:  # pragma: no cover
    """The linear 95th percentile of windows of ``count`` values from their order statistics
    k = floor(0.95 (n - 1)) and k + 1, with numpy's own formula (``np.percentile``), so that the
    result rounds the same; NaN for an empty window."""
    result = np.empty(count.size)
    for i in range(count.size):
        n = count[i]
        if n == 0:
            result[i] = np.nan
            continue
        position = 0.95 * (n - 1)
        fraction = position - np.floor(position)
        low, high = kth[i], following[i]
        diff = high - low
        result[i] = high - diff * (1 - fraction) if fraction >= 0.5 else low + diff * fraction
    return result


@njit(cache=True, nogil=True)
def minute_p95(
    cells: np.ndarray, count: np.ndarray, high: np.ndarray, second: np.ndarray, result: np.ndarray
) -> None:  # pragma: no cover
    """The p95 of (device, minute) ``cells`` of at most 21 values (between the two largest),
    into ``result``."""
    for i in range(cells.size):
        cell = cells[i]
        n = count[cell]
        if n == 0:
            result[i] = np.nan
            continue
        top = high[cell]
        below = second[cell] if n > 1 else top
        position = 0.95 * (n - 1)
        fraction = position - np.floor(position)
        diff = top - below
        result[i] = top - diff * (1 - fraction) if fraction >= 0.5 else below + diff * fraction
