"""How the aggregates' large arrays get their memory from the operating system, and give it back.

The aggregates allocate and free dense arrays of tens of megabytes per field (``aggregates``).
glibc's malloc serves such sizes with ``mmap`` at first, but raises its threshold each time one
is freed (up to 32 MB), after which arrays of that size come from its heaps, which it seldom
gives back: the process then keeps the peak of every field's arrays at once, about 0.6 GB more
for a fleet-day. Fixing the threshold at 1 MB keeps every large array in its own mapping,
unmapped when freed. Nothing changes elsewhere than on glibc (musl, macOS: a no-op). While
aggregating, numpy's request for huge pages is turned off (``without_huge_page_requests``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""
LARGE = 1 << 20


@functools.cache
def return_large_arrays_to_os() -> bool:
    """Serve allocations of ``LARGE`` bytes or more with their own mappings (glibc only).

    Process-wide and idempotent; True when the setting took.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE))


@contextmanager
def without_huge_page_requests() -> Iterator[None]:
    """Within the block, numpy does not ask the kernel for transparent huge pages.

    numpy advises huge pages (``MADV_HUGEPAGE``) for every array of 4 MB or more. Under the
    kernel's usual ``defrag=madvise`` setting (Debian's default) that makes each first touch of
    such an array compact memory, synchronously, to find a free 2 MB page: with two fields
    aggregated at once, the aggregates of a fleet-day spent 2.7 to 4.6 s of system time in
    those faults, against 1.7 s with ordinary pages (measured, docs/performance.md). The
    setting is numpy's and process-wide; it is put back as it was on leaving.
    """
    multiarray = getattr(np, "_core", None)
    multiarray = getattr(multiarray, "multiarray", None)
    get = getattr(multiarray, "_get_madvise_hugepage", None)
    set_ = getattr(multiarray, "_set_madvise_hugepage", None)
    if get is None or set_ is None:
        yield
        return
    before = bool(get())
    set_(False)
    try:
        yield
    finally:
        set_(before)
