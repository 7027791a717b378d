"""Working arrays reused between tasks."""

from __future__ import annotations

import threading

import numpy as np

from processing.aggregates.workspace import Workspace, Workspaces


def test_a_name_gives_the_same_memory_until_a_larger_array_is_asked_for() -> None:
    workspace = Workspace()
    first = workspace.array("values", 1_000, np.float64, 1.0)
    assert first.shape == (1_000,) and (first == 1.0).all()
    smaller = workspace.array("values", 600, np.float64, 2.0)
    assert np.shares_memory(first, smaller)
    assert (first[:600] == 2.0).all()  # overwritten: the caller copies what it keeps
    larger = workspace.array("values", 5_000, np.float64, 0.0)
    assert larger.shape == (5_000,) and not np.shares_memory(first, larger)
    other_type = workspace.array("values", 10, np.int64, 3)
    assert other_type.dtype == np.int64 and (other_type == 3).all()


def test_each_concurrent_task_gets_its_own_workspace() -> None:
    workspaces = Workspaces(2)
    both_held = threading.Barrier(2, timeout=10)
    held: list[Workspace] = []
    lock = threading.Lock()

    def task() -> None:
        with workspaces.lend() as workspace:
            with lock:
                held.append(workspace)
            both_held.wait()  # both tasks hold one at the same time

    threads = [threading.Thread(target=task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(held) == 2 and held[0] is not held[1]
