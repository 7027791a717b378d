"""Tumbling-window aggregates of raw readings, per device and per commune.

For every numeric field ``f`` of a family and every window of ``sensors.catalogue.WINDOWS``
(1 min, 15 min, 1 h, and the day from Paris midnight), an aggregate row holds ``f_{stat}`` for
each statistic of the catalogue's table (``sensors.catalogue.STATISTICS``) that applies to
the field: by default ``mean``, ``min``, ``max``, ``p95`` (numpy's linear percentile) and
``count`` for plain fields, ``increase``, ``resets`` and ``count`` for cumulative counters;
``median`` on request. Windows without readings have no row.

Two engines give the same rows:

- ``polars`` (``reference``): the table's polars expressions, in plain polars.
- ``compiled`` (``compiled``): numba kernels that lay each field out so that every window is
  one stretch of memory and select its percentile without sorting; many times faster on a
  fleet-day. Statistics it lacks (the median) are computed by the reference and joined.

``engine="auto"`` (the default) takes the compiled engine from ``AUTO_COMPILED_ROWS``
readings, below which its fixed costs outweigh what it saves. Every call is pure: frames in,
frames out, and nothing of the process changes (allocator or thread settings belong to the
service: ``processing.memory``, ``processing.threads``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import polars as pl

from processing.aggregates import reference
from processing.aggregates.reference import fields_present, spec_of, with_counter_increases
from processing.threads import worker_threads
from processing.windows import check_window
from sensors.catalogue import LEVEL_TAGS, LEVELS, WINDOWS, Level, aggregate_measurement, check_statistics

Engine = Literal["auto", "polars", "compiled"]
ENGINES: tuple[Engine, ...] = ("auto", "polars", "compiled")
AUTO_COMPILED_ROWS = 20_000
"""From this many readings ``engine="auto"`` takes the compiled engine."""


def aggregate_all(
    readings: pl.DataFrame | pl.LazyFrame,
    family: str,
    windows: Iterable[str] = WINDOWS,
    levels: Iterable[Level] = LEVELS,
    *,
    statistics: Iterable[str] | None = None,
    engine: Engine = "auto",
    threads: int | None = None,
) -> dict[str, pl.DataFrame]:
    """Aggregate raw readings of ``family`` over every window and level, keyed by measurement.

    ``readings`` has ``time`` (UTC), ``insee``, ``device_id`` and the family's fields (missing
    fields are skipped, extra columns ignored; a lazy scan reads only what is used). Each
    result has ``time`` (window start), the level's tags, then each field's statistics
    (``statistics``: names from the catalogue, default: its defaults), sorted by time and tags.
    ``threads``: how many the compiled engine uses (default: ``processing.threads``).
    """
    windows = [check_window(w) for w in windows]
    levels = list(levels)
    wanted = None if statistics is None else check_statistics(statistics)
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    frame = reference.readings_frame(readings, family)
    if engine == "auto":
        engine = "compiled" if frame.height >= AUTO_COMPILED_ROWS else "polars"
    if engine == "polars" or frame.is_empty():
        return reference.aggregate_all(frame, family, windows, levels, wanted)
    from processing.aggregates import compiled  # numba loads on the first compiled call only

    plain, counters = fields_present(frame, family)
    columns = reference.output_columns(family, plain, counters, wanted)
    found = compiled.aggregate_all(frame, family, windows, levels, threads=threads or worker_threads())
    lacking = set(wanted or ()) - compiled.COMPILED_STATISTICS
    extra = reference.aggregate_all(frame, family, windows, levels, lacking) if lacking else {}
    result: dict[str, pl.DataFrame] = {}
    for name, rows_found in found.items():
        rows = rows_found
        if name in extra:
            rows = rows.join(extra[name], on=["time", *_tags(name)], how="left", maintain_order="left")
        result[name] = rows.select("time", *_tags(name), *columns)
    return result


def _tags(measurement: str) -> tuple[str, ...]:
    return LEVEL_TAGS["commune" if measurement.endswith("_commune") else "device"]


def aggregate(
    readings: pl.DataFrame | pl.LazyFrame,
    family: str,
    window: str,
    level: Level = "device",
    *,
    statistics: Iterable[str] | None = None,
    engine: Engine = "auto",
) -> pl.DataFrame:
    """One window and level of ``aggregate_all``, which see."""
    found = aggregate_all(readings, family, [window], [level], statistics=statistics, engine=engine)
    return found[aggregate_measurement(family, window, level)]


__all__ = [
    "AUTO_COMPILED_ROWS",
    "ENGINES",
    "Engine",
    "aggregate",
    "aggregate_all",
    "fields_present",
    "spec_of",
    "with_counter_increases",
]
