"""Working arrays kept from one task to the next, so that their memory is touched once.

A day's field needs large dense working arrays. Allocated afresh for each field, every page of
them is a page fault, and the kernel zeroes it first (docs/performance.md gives the share of the
time that took). A ``Workspace`` hands
out views of arrays it keeps, growing them when a request is larger; ``Workspaces`` lends one
to each concurrent task. Nothing a task returns may be a view of its workspace: the next task
overwrites it.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np


class Workspace:
    """Named working arrays of one task at a time."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def array(self, name: str, size: int, dtype: type | np.dtype, fill: float | None = None) -> np.ndarray:
        """A one-dimensional array of ``size`` elements, uninitialised unless ``fill`` is given.

        The same ``name`` returns the same memory each time: an array obtained earlier under
        that name is overwritten.
        """
        kept = self._arrays.get(name)
        if kept is None or kept.dtype != np.dtype(dtype) or kept.size < size:
            kept = None  # let the old one go before its successor is allocated
            self._arrays.pop(name, None)
            kept = np.empty(size, dtype=dtype)
            self._arrays[name] = kept
        view = kept[:size]
        if fill is not None:
            view.fill(fill)
        return view

    def clear(self) -> None:
        """Let every array go."""
        self._arrays.clear()


class Workspaces:
    """A workspace for each of ``count`` tasks running at once."""

    def __init__(self, count: int) -> None:
        self._idle: queue.SimpleQueue[Workspace] = queue.SimpleQueue()
        self._all = [Workspace() for _ in range(count)]
        for workspace in self._all:
            self._idle.put(workspace)

    @contextmanager
    def lend(self) -> Iterator[Workspace]:
        """A workspace no other task holds until this one gives it back (blocks until one is)."""
        workspace = self._idle.get()
        try:
            yield workspace
        finally:
            self._idle.put(workspace)

    def clear(self) -> None:
        """Let every workspace's arrays go."""
        for workspace in self._all:
            workspace.clear()
