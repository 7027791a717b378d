"""bench.demo_ready's table: a row per cold start of the demo and their median."""

from __future__ import annotations

import statistics

from bench.demo_ready import STEPS, DemoRun, report


def test_the_table_gives_each_run_and_the_median_of_each_column() -> None:
    names = [name for name, _, _ in STEPS]
    runs = [
        DemoRun(10.0 + n, {name: 20.0 + n + i for i, name in enumerate(names)}, 30.0 * (n + 1), 5.0 + n)
        for n in range(3)
    ]
    lines = report(runs).splitlines()
    assert lines[0].split(" | ")[1:3] == ["banner", names[0]]
    assert len(lines) == 2 + len(runs) + 1
    median = lines[-1].strip("| ").split(" | ")
    assert median[0] == "median"
    assert median[1] == f"{statistics.median(run.banner_s for run in runs):.1f} s"
    assert median[-2] == f"{statistics.median(run.cpu_s for run in runs):.1f} s"
    assert len(report(runs[:1]).splitlines()) == 3  # one run: no median row
