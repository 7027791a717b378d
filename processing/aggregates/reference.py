"""The polars reference of the aggregates: what every statistic of the catalogue means.

Each window's statistics come from the table ``sensors.catalogue.STATISTICS``: a statistic that
composes (count, min, max, mean, a counter's increase) is taken from the rows of the next finer
window, and a commune's from its devices' rows of the same window; the others (percentiles)
from the readings of the window. Plain polars, no kernel: the compiled engine
(``processing.aggregates.compiled``) must give the same rows, faster.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import polars as pl

from processing.windows import window_start_ns
from sensors.catalogue import (
    LEVEL_TAGS,
    STATISTICS,
    WINDOWS,
    Level,
    Statistic,
    aggregate_measurement,
    statistics_of,
)
from sensors.families import FamilySpec, family_spec
from storage.base import TIME_DTYPE

TAGS = ("insee", "device_id")


def spec_of(family: str) -> FamilySpec:
    """The spec of ``family``; ``ValueError`` when there is no such family."""
    spec = family_spec(family)
    if spec is None:
        raise ValueError(f"unknown family {family!r}")
    return spec


def fields_present(readings: pl.DataFrame | pl.LazyFrame, family: str) -> tuple[list[str], list[str]]:
    """The family's (plain numeric, counter) fields that are columns of ``readings``."""
    spec = spec_of(family)
    names = set(readings.collect_schema().names())
    plain: list[str] = []
    counters: list[str] = []
    for name in spec.numeric_fields:
        field = spec.field(name)
        if name in names and field is not None:
            (counters if field.counter else plain).append(name)
    return plain, counters


def with_counter_increases(
    frame: pl.DataFrame, counters: Sequence[str], device: str = "_dev"
) -> pl.DataFrame:
    """Order by (device, time) and add ``_inc_{f}`` and ``_reset_{f}`` for each counter ``f``.

    ``_inc_f`` is the increase since the device's previous reading carrying ``f`` (null for its
    first one: nothing says what came before it); when the counter goes backwards (meter
    replaced, equipment rebooted) the device restarted from zero, so the increase is the new
    value itself, and ``_reset_f`` flags it.
    """
    if not counters:
        return frame
    if not (device == "_dev" and frame["_dev"].is_sorted()):
        frame = frame.sort([device, "time"])
    dev = pl.col(device)
    columns: list[pl.Expr] = []
    for name in counters:
        value = pl.col(name).cast(pl.Float64)
        previous = value.forward_fill().shift(1)
        # The previous non-null value must come from the same device (no over(): one pass).
        owner = pl.when(value.is_not_null()).then(dev).forward_fill().shift(1)
        delta = pl.when(owner == dev).then(value - previous)
        columns.append(
            pl.when(delta >= 0).then(delta).when(delta < 0).then(value).otherwise(None).alias(f"_inc_{name}")
        )
        columns.append((delta < 0).fill_null(False).alias(f"_reset_{name}"))
    return frame.with_columns(columns)


def readings_frame(readings: pl.DataFrame | pl.LazyFrame, family: str) -> pl.DataFrame:
    """The columns the aggregates read (a lazy scan reads only those); ``ValueError`` when a tag
    or the time is missing."""
    names = readings.collect_schema().names()
    if missing := [c for c in ("time", *TAGS) if c not in names]:
        raise ValueError(f"readings lack the column(s) {', '.join(missing)}")
    plain, counters = fields_present(readings, family)
    selected = readings.select("time", *TAGS, *plain, *counters)
    return selected.collect() if isinstance(selected, pl.LazyFrame) else selected


def output_columns(
    family: str, plain: Sequence[str], counters: Sequence[str], wanted: Iterable[str] | None
) -> list[str]:
    """The statistics columns of an aggregate row, field by field in table order."""
    spec = spec_of(family)
    wanted = None if wanted is None else list(wanted)
    return [
        f"{name}_{stat.name}"
        for name in (*plain, *counters)
        for stat in statistics_of(spec.field(name), wanted)  # type: ignore[arg-type]
    ]


def aggregate_all(
    readings: pl.DataFrame | pl.LazyFrame,
    family: str,
    windows: Sequence[str],
    levels: Sequence[Level],
    statistics: Iterable[str] | None = None,
) -> dict[str, pl.DataFrame]:
    """Every (window, level) of ``family``'s aggregates, keyed by measurement (see the package)."""
    frame = readings_frame(readings, family)
    plain, counters = fields_present(frame, family)
    spec = spec_of(family)
    wanted = None if statistics is None else list(statistics)
    chosen = {name: statistics_of(spec.field(name), wanted) for name in (*plain, *counters)}  # type: ignore[arg-type]
    columns = output_columns(family, plain, counters, wanted)
    # Count is always computed: a mean composes weighted by it.
    count = STATISTICS["count"]
    every = {name: [s for s in stats if s is not count] + [count] for name, stats in chosen.items()}
    time_ns = frame["time"].cast(TIME_DTYPE).cast(pl.Int64)
    bounds = (int(time_ns.min() or 0), int(time_ns.max() or 0))  # type: ignore[arg-type]
    frame = frame.with_columns(time_ns.alias("_t"), pl.struct(*TAGS).rank("dense").alias("_dev"))
    frame = with_counter_increases(frame.sort("_dev", "_t"), counters)
    result: dict[str, pl.DataFrame] = {}
    finer: pl.DataFrame | None = None
    # Every window composes from the whole chain of finer ones, asked for or not, so that a
    # window's row does not depend on which other windows a call asks for.
    composing = {f: [s for s in stats if s.composes] for f, stats in every.items()}
    for window in WINDOWS[: max(WINDOWS.index(w) for w in windows) + 1]:
        asked = window in windows
        windowed = frame.with_columns(window_start_ns(pl.col("_t"), window, *bounds).alias("_t"))
        stats = every if asked or finer is None else composing
        device = _window_rows(windowed, finer, stats=stats, keys=list(TAGS), window=window, bounds=bounds)
        # In (time, tags) order: what composes from these rows then adds them in one order.
        device = finer = device.sort("_t", *TAGS)
        for level in levels if asked else ():
            rows = (
                device
                if level == "device"
                else _window_rows(windowed, device, stats=every, keys=["insee"], window=None, bounds=bounds)
            )
            tags = list(LEVEL_TAGS[level])
            result[aggregate_measurement(family, window, level)] = (
                rows.sort("_t", *tags, maintain_order=True)
                .with_columns(pl.col("_t").cast(TIME_DTYPE).alias("time"))
                .select("time", *tags, *columns)
            )
    return {
        name: result[name]
        for name in (aggregate_measurement(family, w, lv) for w in windows for lv in levels)
    }


def _window_rows(
    readings: pl.DataFrame,
    finer: pl.DataFrame | None,
    *,
    stats: dict[str, list[Statistic]],
    keys: list[str],
    window: str | None,
    bounds: tuple[int, int],
) -> pl.DataFrame:
    """Rows per (``_t``, ``keys``): what composes from ``finer`` rows (re-windowed to ``window``,
    or already in it when None), the rest from ``readings``."""
    composed = (
        []
        if finer is None
        else [s.composes(f).alias(f"{f}_{s.name}") for f, ss in stats.items() for s in ss if s.composes]
    )
    fresh = [(f, s) for f, ss in stats.items() for s in ss if finer is None or s.composes is None]
    direct = [
        expression
        for f, s in fresh
        for expression in (s.parts(f) if s.parts else [s.readings(f).alias(f"{f}_{s.name}")])
    ]
    group = ["_t", *keys]
    parts = []
    if composed and finer is not None:
        rows = (
            finer
            if window is None
            else finer.with_columns(window_start_ns(pl.col("_t"), window, *bounds).alias("_t"))
        )
        parts.append(rows.group_by(group).agg(composed))
    if direct or not parts:
        parts.append(readings.group_by(group).agg(direct))
    rows = parts[0] if len(parts) == 1 else parts[0].join(parts[1], on=group, how="left")
    # Statistics made of parts are combined once every part and the count are in the row.
    rows = rows.with_columns(s.readings(f).alias(f"{f}_{s.name}") for f, s in fresh if s.parts)
    return rows.select(
        *group, *(pl.col(f"{f}_{s.name}").cast(s.dtype) for f, ss in stats.items() for s in ss)
    )
