"""Compiled kernels of the anomaly pass (numba): each device's readings walked once per field.

The readings arrive in the store's order (time, then tags), every device interleaved with every
other. :func:`device_positions` computes, once, where each row goes when the rows are grouped by
device (a counting sort on a small integer device code; :func:`sort_within_devices` puts any
device whose rows came out of time order back in order); :func:`scatter` then moves one field
at a time into that layout, reading the column sequentially. :func:`field_pass` walks a range
of devices of one field and returns everything the per-device detectors need (spike runs,
hourly medians and scales, flatline runs, out-of-bounds readings); :func:`offline_pass` does
the same for the reporting gaps.

Every kernel is ``nogil``: the caller runs several at once on disjoint ranges of devices.
``cache=True`` keeps the compiled code on disk, so the compile cost (about 15 to 20 seconds) is
paid once per machine (and again after the kernels change), not per process.

Missing readings are NaN. The arithmetic mirrors the polars/numpy reference implementation
(``processing.anomalies.spikes`` and friends) operation for operation, so that both give the same
rows: medians are ``lower + (upper - lower) * 0.5`` like polars' median, the hourly scale is a
median of float32 values rounded like polars' float32 median. (Values may still differ in the
last bit: polars itself rounds a division differently depending on where a value sits in its
array.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

HOUR_NS = 3_600_000_000_000
SIDE = 3
"""Readings on each side a spike is compared with (the medians of three)."""

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Array = npt.NDArray[Any]
"""Any numeric array (numba compiles a version per element type it is called with)."""


@njit(cache=True, nogil=True)
def device_positions(codes: Array, positions: Array) -> tuple[Ints, Ints]:  # pragma: no cover
    """Where each row goes when the rows are grouped by device, keeping their order within one.

    ``codes`` is any non-negative integer device code per row (not necessarily dense); devices
    are numbered in the order they first appear. Fills ``positions`` (allocated by the caller:
    numpy asks the kernel for huge pages, which makes filling it several times cheaper).

    Returns ``offsets`` (device ``d``'s rows are ``offsets[d]:offsets[d + 1]`` of the grouped
    layout) and ``first_rows`` (each device's first row in the input).
    """
    n = codes.shape[0]
    top = 0
    for i in range(n):
        top = max(top, codes[i])
    dense = np.full(top + 1, -1, np.int64)
    counts = np.zeros(top + 1, np.int64)
    first_rows = np.empty(top + 1, np.int64)
    devices = 0
    for i in range(n):
        c = codes[i]
        d = dense[c]
        if d < 0:
            d = devices
            dense[c] = d
            first_rows[d] = i
            devices += 1
        counts[d] += 1
    offsets = np.zeros(devices + 1, np.int64)
    for d in range(devices):
        offsets[d + 1] = offsets[d] + counts[d]
    # A counting sort, stable: each device's rows get consecutive places in input order.
    fill = offsets[:devices].copy()
    for i in range(n):
        d = dense[codes[i]]
        positions[i] = fill[d]
        fill[d] += 1
    return offsets, first_rows[:devices].copy()


@njit(cache=True, nogil=True)
def sort_within_devices(  # pragma: no cover - compiled
    grouped_times: Ints, positions: Array, offsets: Ints, first_rows: Ints
) -> None:
    """Put each device's readings in time order, where they are not already (a store read is).

    The sort is stable (equal times keep the input order); ``positions`` and ``first_rows``
    (then each device's earliest row) are updated to match.
    """
    n = grouped_times.shape[0]
    devices = offsets.shape[0] - 1
    order = np.empty(0, np.int64)
    for d in range(devices):
        lo, hi = offsets[d], offsets[d + 1]
        backwards = False
        for j in range(lo + 1, hi):  # no early exit: a loop without a branch, vectorised
            backwards |= grouped_times[j] < grouped_times[j - 1]
        if not backwards:
            continue
        if order.shape[0] == 0:
            order = np.empty(n, np.int64)
            for i in range(n):
                order[positions[i]] = i
        idx = np.argsort(grouped_times[lo:hi], kind="mergesort")
        order[lo:hi] = order[lo:hi][idx]
        grouped_times[lo:hi] = grouped_times[lo:hi][idx]
        first_rows[d] = order[lo]
    if order.shape[0] > 0:
        for j in range(n):
            positions[order[j]] = j


@njit(cache=True, nogil=True)
def scatter_times(values: Ints, positions: Array, start: int, out: Ints) -> None:  # pragma: no cover
    """``out[positions[start + i]] = values[i]``: one piece of the time column into the layout."""
    for i in range(values.shape[0]):
        out[positions[start + i]] = values[i]


@njit(cache=True, nogil=True)
def scatter(  # noqa: PLR0917 - numba kernels take arrays positionally
    values: Floats,
    validity: npt.NDArray[np.uint8],
    bit_offset: int,
    positions: Array,
    start: int,
    out: Floats,
) -> None:  # pragma: no cover - compiled
    """``out[positions[start + i]] = values[i]``: one piece of a column into the grouped layout.

    ``values`` and ``validity`` are the Arrow buffers of the piece (a reading is missing, and
    becomes NaN, where bit ``bit_offset + i`` of ``validity`` is 0; an empty ``validity`` means
    none is). The column is read in order and written to one stream per device, which stays in
    cache: far cheaper than gathering each device's rows from all over the column.
    """
    if validity.shape[0] == 0:
        for i in range(values.shape[0]):
            out[positions[start + i]] = values[i]
        return
    for i in range(values.shape[0]):
        bit = bit_offset + i
        present = (validity[bit >> 3] >> (bit & 7)) & 1
        out[positions[start + i]] = values[i] if present else np.nan


@njit(cache=True, nogil=True)
def _swap(a: Array, i: int, j: int) -> None:  # pragma: no cover - compiled
    tmp = a[i]
    a[i] = a[j]
    a[j] = tmp


@njit(cache=True, nogil=True)
def _select(a: Array, n: int, k: int) -> None:  # pragma: no cover - compiled
    """Reorder ``a[:n]`` in place so that ``a[k]`` is its k-th smallest and ``a[:k]`` no larger.

    A quickselect whose partition loops have no branch on the data (Lomuto with the swap done
    unconditionally): the comparisons of noisy readings are unpredictable, and a mispredicted
    branch per element costs more than the swap. Values equal to the pivot are gathered in a
    second pass when the pivot was the smallest value, so that rounded readings with many ties
    still shrink the range.
    """
    left, right = 0, n - 1
    while right - left > 12:
        mid = (left + right) >> 1
        # The median of three becomes the pivot, at a[right].
        if a[mid] < a[left]:
            _swap(a, mid, left)
        if a[right] < a[left]:
            _swap(a, right, left)
        if a[mid] < a[right]:
            _swap(a, mid, right)
        pivot = a[right]
        store = left
        for i in range(left, right):
            v = a[i]
            a[i] = a[store]
            a[store] = v
            store += v < pivot
        if k < store:  # a[left:store] < pivot <= a[store:right + 1]
            right = store - 1
            continue
        if store > left:
            left = store
            continue
        equal = store
        for i in range(store, right + 1):
            v = a[i]
            a[i] = a[equal]
            a[equal] = v
            equal += v <= pivot
        if k < equal:  # a[store:equal] are the pivot
            return
        left = equal
    for i in range(left + 1, right + 1):  # a few left: insertion sort
        v = a[i]
        j = i - 1
        while j >= left and a[j] > v:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = v


@njit(cache=True, nogil=True)
def _median(a: Array, n: int) -> float:  # pragma: no cover - compiled
    """Median of ``a[:n]`` (reordered in place) as polars computes it, in float64; NaN if empty."""
    if n == 0:
        return np.nan
    half = n // 2
    _select(a, n, half)
    upper = np.float64(a[half])
    if n % 2 == 1:
        return upper
    lower = np.float64(a[0])
    for i in range(1, half):
        lower = max(lower, np.float64(a[i]))
    return lower + (upper - lower) * 0.5


@njit(cache=True, nogil=True)
def _fmin(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``numpy.fmin``: the smaller, skipping a NaN argument (written out so loops vectorise)."""
    return a if (a <= b or np.isnan(b)) else b


@njit(cache=True, nogil=True)
def _fmax(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``numpy.fmax``: the larger, skipping a NaN argument."""
    return a if (a >= b or np.isnan(b)) else b


@njit(cache=True, nogil=True)
def _med3(a: float, b: float, c: float) -> float:  # pragma: no cover - compiled
    """Median of three as the reference computes it: ``fmax(fmin(a, b), fmin(fmax(a, b), c))``."""
    return _fmax(_fmin(a, b), _fmin(_fmax(a, b), c))


@njit(cache=True, nogil=True)
def _combine(value: float, side_before: float, side_after: float) -> float:  # pragma: no cover
    """The residual of a reading from the medians of its two sides (see ``anomaly_spikes``):
    the nearer distance when both are in the same direction, else zero; zero too for a reading
    with nothing on one side (NaN), NaN for a missing reading."""
    before = value - side_before
    after = value - side_after
    nearer = before if abs(before) < abs(after) else after
    residual = nearer if before * after > 0 else 0.0
    if np.isnan(value):
        residual = np.nan
    return residual


@njit(cache=True, nogil=True)
def _edge_residual(x: Floats, m: int, i: int) -> float:  # pragma: no cover - compiled
    """The residual of reading ``i`` of ``m``, fewer than three of them on one side: one
    reading gives itself, two their mean, none NaN."""
    if i >= SIDE:
        side_before = _med3(x[i - 1], x[i - 2], x[i - 3])
    elif i == 2:
        side_before = (x[i - 1] + x[i - 2]) / 2
    elif i == 1:
        side_before = x[i - 1]
    else:
        side_before = np.nan
    until = m - 1 - i
    if until >= SIDE:
        side_after = _med3(x[i + 1], x[i + 2], x[i + 3])
    elif until == 2:
        side_after = (x[i + 1] + x[i + 2]) / 2
    elif until == 1:
        side_after = x[i + 1]
    else:
        side_after = np.nan
    return _combine(x[i], side_before, side_after)


@njit(cache=True, nogil=True)
def _residuals(x: Floats, m: int, out: Floats) -> None:  # pragma: no cover - compiled
    """Spike residual of each of the ``m`` readings of one device (NaN for a missing one)."""
    for i in range(min(SIDE, m)):
        out[i] = _edge_residual(x, m, i)
    for i in range(SIDE, m - SIDE):  # the bulk: no edge to check, a loop the compiler vectorises
        side_before = _med3(x[i - 1], x[i - 2], x[i - 3])
        side_after = _med3(x[i + 1], x[i + 2], x[i + 3])
        out[i] = _combine(x[i], side_before, side_after)
    for i in range(max(SIDE, m - SIDE), m):
        out[i] = _edge_residual(x, m, i)


@njit(cache=True, nogil=True)
def _hour(t: int) -> int:  # pragma: no cover - compiled
    return t // HOUR_NS  # floor division, as polars' on the epoch


@njit(cache=True, nogil=True)
def field_pass(  # noqa: PLR0917 - numba kernels take arrays positionally
    values: Floats,
    times: Ints,
    offsets: Ints,
    first_device: int,
    end_device: int,
    low: float,
    high: float,
    gauge: bool,
    unit: float,
    threshold: float,
    floor_share: float,
    mad_to_sigma: float,
) -> tuple[Any, ...]:  # pragma: no cover - compiled
    """Every per-device detector on one field, for devices ``first_device:end_device``.

    ``values`` and ``times`` are in the grouped layout (:func:`device_layout`). Readings outside
    ``[low, high]`` are collected for any field; a ``gauge`` field (not a counter) also gets its
    hourly medians and spike scales, its spike runs and its flatline runs.

    Returns a tuple of arrays (see :class:`processing.anomalies.compiled.FieldResult`).
    """
    lo_all = offsets[first_device]
    rows = offsets[end_device] - lo_all
    longest = 1
    for d in range(first_device, end_device):
        longest = max(longest, offsets[d + 1] - offsets[d])
    # Outputs are appended device after device; no output has more entries than readings, so
    # each is allocated for the range's readings and only the pages written are ever touched.
    oob_dev = np.empty(rows, np.int64)
    oob_time = np.empty(rows, np.int64)
    oob_value = np.empty(rows, np.float64)
    n_oob = 0
    size = rows if gauge else 0
    hour_dev = np.empty(size, np.int64)
    hour_key = np.empty(size, np.int64)
    hour_median = np.empty(size, np.float64)
    hour_mad = np.empty(size, np.float64)
    n_hours = 0
    spike_dev = np.empty(size, np.int64)
    spike_start = np.empty(size, np.int64)
    spike_end = np.empty(size, np.int64)
    spike_observed = np.empty(size, np.float64)
    spike_expected = np.empty(size, np.float64)
    spike_score = np.empty(size, np.float64)
    n_spikes = 0
    run_dev = np.empty(size, np.int64)
    run_start = np.empty(size, np.int64)
    run_end = np.empty(size, np.int64)
    run_value = np.empty(size, np.float64)
    run_readings = np.empty(size, np.int64)
    run_open = np.empty(size, np.bool_)
    n_runs = 0
    comparable = 0
    repeated = 0

    residual = np.empty(longest, np.float64)
    scratch = np.empty(longest + 1, np.float64)
    scratch32 = np.empty(longest + 1, np.float32)
    hour_scale = np.empty(longest, np.float64)
    hour_stop = np.empty(longest, np.int64)

    for d in range(first_device, end_device):
        lo = offsets[d]
        m = offsets[d + 1] - lo
        x = values[lo : lo + m]
        t = times[lo : lo + m]
        for i in range(m):
            if x[i] < low or x[i] > high:
                oob_dev[n_oob] = d
                oob_time[n_oob] = t[i]
                oob_value[n_oob] = x[i]
                n_oob += 1
        if not gauge or m == 0:
            continue

        # Hourly medians of the readings and of the non-zero absolute residuals.
        _residuals(x, m, residual)
        first_hour = n_hours
        nh = 0
        a = 0
        while a < m:
            h = _hour(t[a])
            next_hour = (h + 1) * HOUR_NS
            b = a + 1
            while b < m and t[b] < next_hour:
                b += 1
            # Compacted without a branch (which half the zero residuals would mispredict):
            # every value is written, the count moves only for those kept.
            k = 0
            k32 = 0
            for i in range(a, b):
                value = x[i]
                scratch[k] = value
                k += not np.isnan(value)
                q = abs(residual[i])
                scratch32[k32] = np.float32(q)
                k32 += q > 0
            hour_dev[n_hours] = d
            hour_key[n_hours] = h
            hour_median[n_hours] = _median(scratch, k)
            mad = _median(scratch32, k32)
            # polars takes the median of float32 values in float64, then rounds to float32.
            hour_mad[n_hours] = np.float64(np.float32(mad)) if k32 > 0 else np.nan
            hour_stop[nh] = b
            n_hours += 1
            nh += 1
            a = b

        # The device's floor: a share of its median hourly scale, never below a unit's noise.
        k = 0
        for j in range(nh):
            mad = hour_mad[first_hour + j]
            if not np.isnan(mad):
                scratch[k] = mad
                k += 1
        floor = unit / mad_to_sigma
        if k > 0:
            floor = max(floor_share * _median(scratch, k), floor)
        for j in range(nh):
            mad = hour_mad[first_hour + j]
            hour_scale[j] = mad_to_sigma * (max(mad, floor) if not np.isnan(mad) else floor)

        # Spikes: consecutive readings beyond the threshold form one run.
        j = 0
        in_run = False
        best = 0.0
        for i in range(m):
            while i >= hour_stop[j]:
                j += 1
            score = residual[i] / hour_scale[j]
            flagged = abs(score) > threshold
            if flagged:
                if not in_run:
                    in_run = True
                    spike_dev[n_spikes] = d
                    spike_start[n_spikes] = t[i]
                    best = -1.0
                if abs(score) > best:  # the first of equal scores, as the reference's arg_max
                    best = abs(score)
                    spike_observed[n_spikes] = x[i]
                    spike_expected[n_spikes] = x[i] - residual[i]
                    spike_score[n_spikes] = best
                spike_end[n_spikes] = t[i]
            if in_run and (not flagged or i == m - 1):
                in_run = False
                n_spikes += 1

        # Flatlines: runs of readings equal to the one before.
        run_from = -1
        for i in range(1, m):
            same = False
            if not np.isnan(x[i]) and not np.isnan(x[i - 1]):
                comparable += 1
                if x[i] == x[i - 1]:
                    repeated += 1
                    same = True
            if same and run_from < 0:
                run_from = i
            if run_from >= 0 and (not same or i == m - 1):
                last = i if same else i - 1
                run_dev[n_runs] = d
                run_start[n_runs] = t[run_from - 1]
                run_end[n_runs] = t[last]
                run_value[n_runs] = x[run_from]
                run_readings[n_runs] = last - run_from + 2
                run_open[n_runs] = last == m - 1
                n_runs += 1
                run_from = -1

    return (
        oob_dev[:n_oob].copy(),
        oob_time[:n_oob].copy(),
        oob_value[:n_oob].copy(),
        hour_dev[:n_hours].copy(),
        hour_key[:n_hours].copy(),
        hour_median[:n_hours].copy(),
        hour_mad[:n_hours].copy(),
        spike_dev[:n_spikes].copy(),
        spike_start[:n_spikes].copy(),
        spike_end[:n_spikes].copy(),
        spike_observed[:n_spikes].copy(),
        spike_expected[:n_spikes].copy(),
        spike_score[:n_spikes].copy(),
        run_dev[:n_runs].copy(),
        run_start[:n_runs].copy(),
        run_end[:n_runs].copy(),
        run_value[:n_runs].copy(),
        run_readings[:n_runs].copy(),
        run_open[:n_runs].copy(),
        comparable,
        repeated,
    )


@njit(cache=True, nogil=True)
def offline_pass(  # noqa: PLR0917 - numba kernels take arrays positionally
    times: Ints,
    offsets: Ints,
    first_device: int,
    end_device: int,
    min_readings: float,
    default_ns: int,
    periods: float,
) -> tuple[Ints, Ints, Ints, Floats, Floats, Ints]:  # pragma: no cover - compiled
    """Silences longer than ``periods`` reporting periods, for devices ``first_device:end_device``.

    A device's period is the median of its gaps (as polars computes a median of integers) when
    it has ``min_readings`` readings or more and that median is positive, else ``default_ns``.
    Returns the closed silences (device, last reading before, first reading after, period) and
    each device's period and last reading, from which the caller finds those still silent.
    """
    lo_all = offsets[first_device]
    rows = offsets[end_device] - lo_all
    devices = end_device - first_device
    longest = 1
    for d in range(first_device, end_device):
        longest = max(longest, offsets[d + 1] - offsets[d])
    gap_dev = np.empty(rows, np.int64)
    gap_start = np.empty(rows, np.int64)
    gap_end = np.empty(rows, np.int64)
    gap_period = np.empty(rows, np.float64)
    n_gaps = 0
    period = np.empty(devices, np.float64)
    last = np.empty(devices, np.int64)
    scratch = np.empty(longest, np.int64)
    for d in range(first_device, end_device):
        lo = offsets[d]
        m = offsets[d + 1] - lo
        t = times[lo : lo + m]
        for i in range(1, m):
            scratch[i - 1] = t[i] - t[i - 1]
        median = _median(scratch, m - 1)
        own = float(default_ns)
        if m >= min_readings and median > 0:
            own = median
        period[d - first_device] = own
        last[d - first_device] = t[m - 1]
        for i in range(1, m):
            gap = t[i] - t[i - 1]
            if np.float64(gap) > periods * own:
                gap_dev[n_gaps] = d
                gap_start[n_gaps] = t[i - 1]
                gap_end[n_gaps] = t[i]
                gap_period[n_gaps] = own
                n_gaps += 1
    return (
        gap_dev[:n_gaps].copy(),
        gap_start[:n_gaps].copy(),
        gap_end[:n_gaps].copy(),
        gap_period[:n_gaps].copy(),
        period,
        last,
    )
