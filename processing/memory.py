"""Process-wide memory settings for a processing service, applied once at its start.

Nothing in the processing library calls this: changing the allocator or numpy's settings is
the service's decision (``smartcity process``, ``smartcity backfill``, the image), never a side
effect of a function an analyst calls in a notebook.

- glibc's malloc serves large arrays with ``mmap`` at first but raises its threshold each time
  one is freed, after which arrays of that size come from its heaps, which it seldom gives
  back: a service aggregating field after field would keep the peak of every field's arrays.
  A fixed threshold keeps every large array in its own mapping, unmapped when freed
  (``MALLOC_MMAP_THRESHOLD_`` in the environment does the same, as the image sets it).
- numpy asks the kernel for transparent huge pages for every large array; under the usual
  ``defrag=madvise`` setting each first touch of such an array then compacts memory
  synchronously. The aggregates touch large fresh arrays all the time, so the service turns the
  request off (``NUMPY_MADVISE_HUGEPAGE=0`` in the environment does the same).

docs/performance.md gives the figures behind both.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter number (malloc.h)."""
LARGE = 1 << 20


def return_large_arrays_to_os() -> bool:
    """Serve allocations of ``LARGE`` bytes or more with their own mappings (glibc only).

    True when the setting took; False elsewhere (musl, macOS), where nothing changes.
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


def stop_huge_page_requests() -> bool:
    """Make numpy stop advising huge pages for its arrays; True when numpy offers the switch."""
    multiarray = getattr(getattr(np, "_core", None), "multiarray", None)
    set_ = getattr(multiarray, "_set_madvise_hugepage", None)
    if set_ is None:
        return False
    set_(False)
    return True


def tune_for_service() -> None:
    """Apply both settings to this process: call once, at the start of a processing service."""
    return_large_arrays_to_os()
    stop_huge_page_requests()
