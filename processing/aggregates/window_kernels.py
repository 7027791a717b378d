"""Compiled kernels of the window aggregates.

The aggregates of a Paris day are laid out densely: a window of entity ``e`` (a device or a
commune code) is cell ``index * entities + e`` of its (window size, level) block, ``index``
counting windows from an hour boundary (minutes, quarter-hours, hours; 0 for the day).

* ``minute_partials`` adds each reading to its (minute, device) count, sum, min, max and
  second-largest value, from which every coarser window and every commune composes its
  count, sum, min and max (numpy reshapes, in the caller), and a minute of at most 21
  readings has its p95 between its two largest values.
* ``device_layout_slots`` (once a day) and ``copy_to_slots`` (per field) lay a field's readings
  out device by device, an hour at a time, and ``lay_out_by_commune`` commune by commune
  (``cell_of``): each window is then one stretch of memory (a device's day, 24).
  ``device_minute_partials`` then reads a (minute, device)'s readings side by side, a pass of
  its own rather than inside the layout's; ``minute_partials`` serves a field holding -inf.
* ``window_order_stats`` finds, in every window, the two order statistics the linear p95
  needs: ranks k = floor(0.95 (n - 1)) and k + 1 of its n readings, that is its ``n - k``-th
  and ``n - k - 1``-th largest values. Windows are taken smallest first, each by a selection
  among its own readings (``_select``, a quickselect); the k-th values of a window's parts
  prove a floor for the window around them, and a sample of a large window guesses a closer
  one, checked: only the readings at or above the floor are copied out and selected among.
  Nothing is sorted.

All are ``nogil``: the caller runs as many tasks at once as it has threads.
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
def device_minute_partials(  # noqa: PLR0917 - numba kernels take arrays positionally
    values: np.ndarray,
    start: np.ndarray,
    devices: int,
    minutes: int,
    count: np.ndarray,
    total: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    second: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """``minute_partials`` from the readings laid out by ``copy_to_slots`` (devices, stretch
    ``HOUR_STRETCH``), every cell written: a (minute, device)'s readings are read together.

    -inf is a missing value there (the caller checks that no reading is -inf itself).
    """
    for hour in range(minutes // HOUR_STRETCH):
        for dev in range(devices):
            first = (hour * devices + dev) * HOUR_STRETCH
            for within in range(HOUR_STRETCH):
                cell = first + within
                n, added, smallest, largest, runner_up = 0, 0.0, np.inf, -np.inf, -np.inf
                for i in range(start[cell], start[cell + 1]):
                    value = values[i]
                    present = value != -np.inf
                    n += present
                    added += value if present else 0.0
                    smallest = min(smallest, value if present else np.inf)
                    runner_up = max(runner_up, min(largest, value))
                    largest = max(largest, value)
                at = (hour * HOUR_STRETCH + within) * devices + dev
                count[at], total[at], low[at], high[at], second[at] = n, added, smallest, largest, runner_up


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
    values come in no order a branch predictor could learn. Partitioning goes on down to
    four values, which are sorted: a longer insertion sort mispredicts its branches.
    """
    target = lo + rank
    while hi - lo > 4:
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


HOUR_STRETCH = 60
"""The stretch devices are laid out in (``cell_of``); communes are laid out a day at a time."""


@njit(cache=True, nogil=True, inline="always")
def cell_of(entity: int, minute: int, entities: int, stretch: int) -> int:  # pragma: no cover
    """The (entity, minute) cell of a layout in stretches of ``stretch`` minutes: stretch by
    stretch, entity by entity within one, minute by minute within an entity's. ``stretch`` is
    ``HOUR_STRETCH`` or the whole day (a division by a constant is a multiplication; by a
    variable, tens of cycles per reading)."""
    if stretch == HOUR_STRETCH:
        hour, within = divmod(minute, HOUR_STRETCH)
        return (hour * entities + entity) * HOUR_STRETCH + within
    return entity * stretch + minute


@njit(cache=True, nogil=True)
def cell_starts(rows: np.ndarray, entities: int, stretch: int, start: np.ndarray) -> None:  # pragma: no cover
    """Where each (entity, minute) cell of a ``cell_of`` layout starts, and (last) where the
    last ends, from the readings per (minute, entity), ``rows[minute * entities + entity]``."""
    minutes = rows.size // entities
    at = 0
    start[0] = 0
    for first_minute in range(0, minutes, stretch):
        for entity in range(entities):
            for minute in range(first_minute, first_minute + stretch):
                at += rows[minute * entities + entity]
                start[cell_of(entity, minute, entities, stretch) + 1] = at


@njit(cache=True, nogil=True)
def device_layout_slots(  # noqa: PLR0917 - numba kernels take arrays positionally
    minute: np.ndarray, device: np.ndarray, entities: int, stretch: int, fill: np.ndarray, slot: np.ndarray
) -> None:  # pragma: no cover - compiled
    """The place of each reading in the device layout (``cell_of``; ``fill`` starts as a copy
    of the cells' starts), into ``slot``: worked out once a day, it serves every field
    (``copy_to_slots``).

    Devices are laid out an hour at a time (``stretch`` 60): readings come in time order, so
    the places a minute's readings go to stay within a few megabytes, in the reach of the CPU's
    caches, where a whole day per device would spread them over the whole array.
    """
    for i in range(minute.size):
        cell = cell_of(device[i], minute[i], entities, stretch)
        at = fill[cell]
        slot[i] = at
        fill[cell] = at + 1


@njit(cache=True, nogil=True)
def copy_to_slots(
    values: np.ndarray, slot: np.ndarray, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """A field's readings at the places ``device_layout_slots`` worked out:
    ``out[slot[i]] = values[i]``, -inf for a missing value (the places are found once a day,
    not once per field).

    Returns how many values were -inf themselves (then not told apart from missing ones).
    """
    infinite = 0
    for i in range(values.size):
        value = values[i]
        infinite += value == -np.inf
        out[slot[i]] = -np.inf if np.isnan(value) else value
    return infinite


@njit(cache=True, nogil=True)
def lay_out_by_commune(  # noqa: PLR0917 - numba kernels take arrays positionally
    minute: np.ndarray,
    device: np.ndarray,
    entity_of_device: np.ndarray,
    values: np.ndarray,
    entities: int,
    stretch: int,
    fill: np.ndarray,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Put each value in its (entity, minute) cell (``cell_of``) of ``out``: cell ``c`` holds
    ``out[start[c]:start[c + 1]]``, and ``fill`` starts as a copy of ``start``.

    A value the reading lacks (NaN) becomes -inf: it then ranks under every value, and no
    window asks for a rank that low (capacities count only the values present). The communes'
    layout is made this way, field by field; the devices' (thousands of cells a minute) by
    ``device_layout_slots`` once a day and ``copy_to_slots`` per field.
    """
    for i in range(values.size):
        value = values[i]
        cell = cell_of(entity_of_device[device[i]], minute[i], entities, stretch)
        slot = fill[cell]
        out[slot] = -np.inf if np.isnan(value) else value
        fill[cell] = slot + 1


@njit(cache=True, nogil=True, inline="always")
def _capacity_of(n: int) -> int:  # pragma: no cover - compiled
    """How many of its largest values a window of ``n`` readings needs: ranks k = floor(0.95
    (n - 1)) and above."""
    if n == 0:
        return 0
    return n - int(np.floor(0.95 * (n - 1)))


@njit(cache=True, nogil=True)
def _ranks_among(
    buffer: np.ndarray, first: int, last: int, keep: int
) -> tuple[float, float]:  # pragma: no cover
    """The ``keep``-th and (``keep`` - 1)-th largest of ``buffer[first:last]`` (reordered)."""
    rank = last - keep
    _select(buffer, first, last, rank - first)
    kth = buffer[rank]
    following = kth
    if keep > 1:
        following = buffer[rank + 1]
        for i in range(rank + 2, last):
            following = min(following, buffer[i])
    return kth, following


@njit(cache=True, nogil=True)
def _order_stats(  # noqa: PLR0917 - numba kernels take arrays positionally
    values: np.ndarray,
    lo: int,
    hi: int,
    keep: int,
    present: int,
    proven: float,
    scratch: np.ndarray,
    sample: np.ndarray,
) -> tuple[float, float]:  # pragma: no cover - compiled
    """The ``keep``-th and (``keep`` - 1)-th largest of the ``present`` values of
    ``values[lo:hi]``: ranks k and k + 1.

    ``proven`` is a floor at least ``keep`` values are known to be at or above (-inf if
    none is known); a window of ``_SAMPLED`` values or more guesses a closer one from a sample
    of itself (``_guess_floor``). What is at or above the floor is copied out, branch-free,
    and selected among: far fewer values than the window. When the guess was too high the
    proven floor is taken; without either, the window itself is selected in place (reordering
    a window leaves every window around it the same set of values).
    """
    guess = -np.inf
    if hi - lo >= _SAMPLED:
        guess = _guess_floor(sample, _sample(values, lo, hi, sample, 0), keep / present)
    for floor in (max(guess, proven), proven):
        if floor == -np.inf:
            break
        found = _copy_at_or_above(values, lo, hi, floor, scratch, 0)
        if found >= keep:
            return _ranks_among(scratch, 0, found, keep)
    return _ranks_among(values, lo, hi, keep)


@njit(cache=True, nogil=True, inline="always")
def _sample(
    values: np.ndarray, lo: int, hi: int, sample: np.ndarray, sampled: int
) -> int:  # pragma: no cover
    """Append one value in ``_SAMPLE_STEP`` of ``values[lo:hi]`` to ``sample`` (holding
    ``sampled``); returns how many it holds then."""
    for i in range(lo, hi, _SAMPLE_STEP):
        sample[sampled] = values[i]
        sampled += 1
    return sampled


@njit(cache=True, nogil=True, inline="always")
def _copy_at_or_above(  # noqa: PLR0917 - numba kernels take arrays positionally
    values: np.ndarray, lo: int, hi: int, floor: float, scratch: np.ndarray, found: int
) -> int:  # pragma: no cover - compiled
    """Append the values of ``values[lo:hi]`` at or above ``floor`` to ``scratch`` (holding
    ``found``), branch-free: each is copied, and kept only when at or above. Returns how many
    it holds then."""
    for i in range(lo, hi):
        value = values[i]
        scratch[found] = value
        found += value >= floor
    return found


@njit(cache=True, nogil=True)
def _floor_of_parts(kth: np.ndarray, keep: np.ndarray, parts: int, need: int) -> float:  # pragma: no cover
    """The largest of the parts' k-th values such that the parts at or above it keep ``need``
    values in all: part ``p`` has ``keep[p]`` values at or above ``kth[p]``, so a window made of
    the parts has at least ``need`` values at or above that floor. -inf when none is.

    Sorts the (few) parts, largest first.
    """
    for i in range(1, parts):
        value, weight = kth[i], keep[i]
        j = i - 1
        while j >= 0 and kth[j] < value:
            kth[j + 1], keep[j + 1] = kth[j], keep[j]
            j -= 1
        kth[j + 1], keep[j + 1] = value, weight
    total = 0
    for i in range(parts):
        total += keep[i]
        if total >= need:
            floor: float = kth[i]
            return floor
    return -np.inf


@njit(cache=True, nogil=True, inline="always")
def _floor_of_minutes(  # noqa: PLR0917 - numba kernels take arrays positionally
    low: np.ndarray,
    second: np.ndarray,
    count: np.ndarray,
    entities: int,
    entity: int,
    first_minute: int,
    keep: int,
) -> float:  # pragma: no cover - compiled
    """A floor under the ``keep`` largest values of a quarter from its minutes' partials, the
    higher of two: a minute of ``keep`` readings or more has that many at or above its
    smallest value; a minute of two or more has two at or above its second-largest, so the
    ``ceil(keep / 2)``-th largest of those has ``keep`` at or above it (followed for up to
    three, branch-free: a device's quarter at 10 s needs six values). -inf when neither says."""
    floor = -np.inf
    first = runner_up = third = -np.inf
    for minute in range(first_minute, first_minute + 15):
        at = minute * entities + entity
        n = count[at]
        floor = max(floor, low[at] if n >= keep else -np.inf)
        value = second[at] if n >= 2 else -np.inf
        third = max(third, min(runner_up, value))
        runner_up = max(runner_up, min(first, value))
        first = max(first, value)
    need = (keep + 1) // 2
    if need == 1:
        floor = max(floor, first)
    elif need == 2:
        floor = max(floor, runner_up)
    elif need == 3:
        floor = max(floor, third)
    return floor


_SAMPLE_STEP = 32
"""A window's sample: one value in this many (a denser sample costs more in its own selection
than it saves in the readings above the floor)."""
_SAMPLED = 1000
"""Windows of fewer values are not sampled: the sample would say too little."""


@njit(cache=True, nogil=True)
def _guess_floor(sample: np.ndarray, size: int, share: float) -> float:  # pragma: no cover - compiled
    """A value that a little more than ``share`` of the window the ``sample`` comes from is
    likely at or above (-inf when the sample is too small to say): the caller checks it.

    The sample's share above its r-th largest value is r / size, give or take about
    sqrt(r) / size; r is taken a fifth and two and a half such deviations higher than the
    share asked for, so that the check seldom fails and the floor stays close.
    """
    expected = share * size
    rank = int(np.ceil(1.2 * expected + 2.5 * np.sqrt(expected))) + 1
    if rank >= size:
        return -np.inf
    _select(sample, 0, size, size - rank)
    guess: float = sample[size - rank]
    return guess


@njit(cache=True, nogil=True)
def window_order_stats(  # noqa: PLR0917 - numba kernels take arrays positionally
    values: np.ndarray,
    start: np.ndarray,
    count: np.ndarray,
    entities: int,
    minutes: int,
    stretch: int,
    with_minutes: bool,
    low: np.ndarray,
    second: np.ndarray,
    kth: np.ndarray,
    following: np.ndarray,
    scratch: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Ranks k and k + 1 of every window of every entity, its values laid out (``copy_to_slots``,
    ``lay_out_by_commune``).

    ``count[minute * entities + entity]`` is how many values a (minute, entity) has (present
    ones). ``kth`` and ``following`` have one row per window size (minute, quarter, hour, day:
    the minute row only filled ``with_minutes``), window ``index`` of ``entity`` at column
    ``index * entities + entity``. A window's parts, selected first, say how low its own ranks
    can be (``_floor_of_parts``): only the values above that are selected among. Without
    minutes selected first, ``low`` and ``second`` (the minutes' smallest and second-largest
    values, as ``count``; empty if unknown) prove a floor for a quarter
    (``_floor_of_minutes``). ``stretch`` is 60 or the
    day; ``scratch`` holds as many values as the largest entity-day.
    """
    hours = minutes // 60
    sample = np.empty(scratch.size // _SAMPLE_STEP + hours + 1)
    part_kth = np.empty(max(60, hours))
    part_keep = np.empty(max(60, hours), dtype=np.int64)
    quarter_kth, quarter_keep = np.empty(4), np.empty(4, dtype=np.int64)
    # Hour by hour, then entity by entity: an hour's counts and partials of every entity stay
    # in the caches (entity by entity over the day, they would not).
    hour_kth = np.empty((entities, hours))
    hour_keep = np.empty((entities, hours), dtype=np.int64)
    day_counts = np.zeros(entities, dtype=np.int64)
    for hour in range(hours):
        for entity in range(entities):
            hour_n = 0
            for quarter in range(4):
                first_minute = hour * 60 + quarter * 15
                quarter_n = 0
                parts = 0
                for minute in range(first_minute, first_minute + 15):
                    n = count[minute * entities + entity]
                    quarter_n += n
                    if with_minutes and n > 0:
                        keep = _capacity_of(n)
                        cell = cell_of(entity, minute, entities, stretch)
                        a, b = _order_stats(
                            values, start[cell], start[cell + 1], keep, n, -np.inf, scratch, sample
                        )
                        kth[0, minute * entities + entity] = a
                        following[0, minute * entities + entity] = b
                        part_kth[parts], part_keep[parts] = a, keep
                        parts += 1
                keep = _capacity_of(quarter_n)
                quarter_keep[quarter] = keep
                if keep > 0:
                    at = (first_minute // 15) * entities + entity
                    if parts:
                        floor = _floor_of_parts(part_kth, part_keep, parts, keep)
                    elif low.size:
                        floor = _floor_of_minutes(low, second, count, entities, entity, first_minute, keep)
                    else:
                        floor = -np.inf
                    cell = cell_of(entity, first_minute, entities, stretch)
                    a, b = _order_stats(
                        values, start[cell], start[cell + 15], keep, quarter_n, floor, scratch, sample
                    )
                    kth[1, at], following[1, at] = a, b
                    quarter_kth[quarter] = a
                hour_n += quarter_n
            keep = _capacity_of(hour_n)
            hour_keep[entity, hour] = keep
            if keep > 0:
                parts = 0
                for quarter in range(4):
                    if quarter_keep[quarter] > 0:
                        part_kth[parts], part_keep[parts] = quarter_kth[quarter], quarter_keep[quarter]
                        parts += 1
                floor = _floor_of_parts(part_kth, part_keep, parts, keep)
                cell = cell_of(entity, hour * 60, entities, stretch)
                a, b = _order_stats(
                    values, start[cell], start[cell + 60], keep, hour_n, floor, scratch, sample
                )
                kth[2, hour * entities + entity], following[2, hour * entities + entity] = a, b
                hour_kth[entity, hour] = a
            day_counts[entity] += hour_n
    for entity in range(entities):
        day_n = day_counts[entity]
        keep = _capacity_of(day_n)
        if keep == 0:
            continue
        parts = 0
        for hour in range(hours):
            if hour_keep[entity, hour] > 0:
                part_kth[parts], part_keep[parts] = hour_kth[entity, hour], hour_keep[entity, hour]
                parts += 1
        proven = _floor_of_parts(part_kth, part_keep, parts, keep)
        # The hours' floors say little of a day (its largest values gather in a few hours): a
        # sample of the day says more, and is checked. The day comes in stretches: what is
        # at or above the floor is copied out of each, and selected among; when that is too
        # few values, the proven floor is taken, then none.
        sampled = 0
        for first_minute in range(0, minutes, stretch):
            cell = cell_of(entity, first_minute, entities, stretch)
            sampled = _sample(values, start[cell], start[cell + stretch], sample, sampled)
        guess = _guess_floor(sample, sampled, keep / day_n)
        found = 0
        for floor in (max(guess, proven), proven, -np.inf):
            found = 0
            for first_minute in range(0, minutes, stretch):
                cell = cell_of(entity, first_minute, entities, stretch)
                found = _copy_at_or_above(values, start[cell], start[cell + stretch], floor, scratch, found)
            if found >= keep:
                break
        a, b = _ranks_among(scratch, 0, found, keep)
        kth[3, entity], following[3, entity] = a, b


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
