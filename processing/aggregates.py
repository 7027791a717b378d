"""Tumbling-window aggregates of raw readings, per device and per commune.

For every numeric field ``f`` of a family (``FamilySpec.numeric_fields``) and every window of
``WINDOWS`` (1 min, 15 min, 1 h, 1 day aligned on Paris midnight), an aggregate row holds
``f_mean``, ``f_min``, ``f_max``, ``f_p95`` (Float64) and ``f_count`` (Int64, readings carrying
the field). ``f_p95`` is the linear-interpolation 95th percentile (numpy's and pandas' default),
computed from the raw readings of the window: percentiles cannot be composed from finer
windows, so every window size is computed from the raw data.

Cumulative counters (``FieldSpec.counter``: the building energy meter, network error counters)
are not averaged: the mean of a meter index means nothing. They give ``f_increase`` (Float64,
how much the counter grew in the window), ``f_resets`` (Int64, how many times it went backwards)
and ``f_count``. The increase between two consecutive readings of a device counts in the window
of the later reading; when the counter goes backwards (meter replaced, equipment rebooted) the
device is taken to have restarted from zero, so the increase is the new value itself.

Every function here is pure: polars frames in, polars frames out, in the Store frame convention
(``time`` in UTC; tags ``insee``, ``device_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from processing.windows import MINUTE_NS, WINDOWS, check_window, window_start_ns
from sensors.families import FamilySpec, family_spec
from storage.base import TIME_DTYPE

Level = Literal["device", "commune"]
LEVELS: tuple[Level, ...] = ("device", "commune")
P95 = 0.95
_TAGS: dict[Level, list[str]] = {"device": ["insee", "device_id"], "commune": ["insee"]}
_SHIFT = 1 << 32
"""Group keys pack (entity code, window start in minutes since the epoch) in one Int64: polars
groups on one integer column several times faster than on a string and a datetime."""


def measurement_name(family: str, window: str, level: Level = "device") -> str:
    """The store measurement of one family's aggregates, e.g. ``air_quality_1h_commune``."""
    check_window(window)
    return f"{family}_{window}" + ("_commune" if level == "commune" else "")


def output_tags(level: Level) -> list[str]:
    """The tag columns of an aggregate measurement at ``level``."""
    return list(_TAGS[level])


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
        if name not in names:
            continue
        field = spec.field(name)
        (counters if field is not None and field.counter else plain).append(name)
    return plain, counters


def _encode_entities(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``_dev`` and ``_com`` integer codes of the device (insee, device_id) and commune."""
    frame = frame.with_columns(
        pl.col("insee").cast(pl.Categorical).to_physical().alias("_com"),
        pl.col("device_id").cast(pl.Categorical).to_physical().alias("_dev"),
    )
    spread = frame.group_by("_dev").agg((pl.col("_com").min() != pl.col("_com").max()).alias("shared"))
    if spread["shared"].any():
        # The same device id in two communes: two devices. Rare, so the slower exact code.
        frame = frame.with_columns(
            (pl.col("_com").cast(pl.Int64) * _SHIFT + pl.col("_dev"))
            .rank("dense")
            .cast(pl.UInt32)
            .alias("_dev")
        )
    return frame


def with_counter_increases(
    frame: pl.DataFrame, counters: Sequence[str], device: str = "_dev"
) -> pl.DataFrame:
    """Order by (device, time) and add ``_inc_{f}`` and ``_reset_{f}`` for each counter ``f``.

    ``_inc_f`` is the increase since the device's previous reading carrying ``f`` (null for its
    first one: nothing says what came before it); ``_reset_f`` flags a counter going backwards.
    """
    if not counters:
        return frame
    if not (device == "_dev" and frame["_dev"].is_sorted()):
        frame = frame.sort([device, "time"])
    dev = pl.col(device)
    columns: list[pl.Expr] = []
    for name in counters:
        value = pl.col(name).cast(pl.Float64)
        present = value.is_not_null()
        previous = value.forward_fill().shift(1)
        # The previous non-null value must come from the same device (no over(): one pass).
        owner = pl.when(present).then(dev).forward_fill().shift(1)
        delta = pl.when(owner == dev).then(value - previous)
        columns.append(
            pl.when(delta >= 0).then(delta).when(delta < 0).then(value).otherwise(None).alias(f"_inc_{name}")
        )
        columns.append((delta < 0).fill_null(False).alias(f"_reset_{name}"))
    return frame.with_columns(columns)


def _stat_exprs(plain: Sequence[str], counters: Sequence[str], *, p95: bool = True) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    for name in plain:
        value = pl.col(name).cast(pl.Float64)
        exprs += [
            value.mean().alias(f"{name}_mean"),
            value.min().alias(f"{name}_min"),
            value.max().alias(f"{name}_max"),
            pl.col(name).count().cast(pl.Int64).alias(f"{name}_count"),
        ]
        if p95:
            exprs.append(value.quantile(P95, interpolation="linear").alias(f"{name}_p95"))
    for name in counters:
        increase = pl.col(f"_inc_{name}")
        exprs += [
            # A window where no increase is known has an unknown (null) one, not 0.
            pl.when(increase.count() > 0).then(increase.sum()).alias(f"{name}_increase"),
            pl.col(f"_reset_{name}").sum().cast(pl.Int64).alias(f"{name}_resets"),
            pl.col(name).count().cast(pl.Int64).alias(f"{name}_count"),
        ]
    return exprs


CHUNK_ROWS = 2_000_000
"""Device-level aggregates are computed on slices of about this many readings (whole devices),
each sorted on its own: the sorted copy then costs a slice, not the whole frame."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    frame: pl.DataFrame
    """``_t`` (ns), ``_dev``, ``_com`` codes and the fields; no strings (they cost memory)."""
    plain: list[str]
    counters: list[str]
    device_names: pl.DataFrame
    commune_names: pl.DataFrame


def _prepare(readings: pl.DataFrame | pl.LazyFrame, family: str) -> _Prepared:
    frame = readings.lazy().collect() if isinstance(readings, pl.LazyFrame) else readings
    missing = [c for c in ("time", "insee", "device_id") if c not in frame.columns]
    if missing:
        raise ValueError(f"readings lack the column(s) {', '.join(missing)}")
    plain, counters = fields_present(frame, family)
    frame = frame.select("time", "insee", "device_id", *plain, *counters).with_columns(
        pl.col("time").cast(TIME_DTYPE).cast(pl.Int64).alias("_t")
    )
    frame = _encode_entities(frame)
    device_names = frame.group_by("_dev").agg(
        pl.col("insee").first(), pl.col("device_id").first(), pl.col("_com").first()
    )
    commune_names = frame.group_by("_com").agg(pl.col("insee").first())
    return _Prepared(frame.drop("time", "insee", "device_id"), plain, counters, device_names, commune_names)


def _device_slices(frame: pl.DataFrame, counters: Sequence[str]) -> Iterator[pl.DataFrame]:
    """Whole devices, about ``CHUNK_ROWS`` readings at a time, in (device, time) order.

    Device-major, time-minor order makes every device-level group key non-decreasing: polars
    then groups contiguous slices, about twice as fast for the percentiles.
    """
    sizes = frame.group_by("_dev").len().sort("_dev")
    chunk = (sizes["len"].cum_sum() - 1) // CHUNK_ROWS
    bounds = (
        sizes.with_columns(chunk.alias("chunk"))
        .group_by("chunk")
        .agg(pl.col("_dev").min().alias("lo"), pl.col("_dev").max().alias("hi"))
    )
    for lo, hi in bounds.sort("chunk").select("lo", "hi").iter_rows():
        part = frame.filter(pl.col("_dev").is_between(lo, hi)) if bounds.height > 1 else frame
        yield with_counter_increases(part.sort(["_dev", "_t"]), counters)


SMALL_GROUP = 21
"""In a window of at most this many readings, the linear 95th percentile lies between the two
largest values: position 0.95 (n - 1) is at least n - 2."""


def _small_group_stats(
    part: pl.DataFrame, plain: Sequence[str], key: pl.Expr, *, full: bool
) -> pl.DataFrame | None:
    """Statistics per group of ``key``, for contiguous groups of at most ``SMALL_GROUP``.

    ``part`` is in key order. Per-group percentiles cost a sort per group; when every group is
    small (1-minute windows of 10-second readings hold 6), the two largest values per group
    come from a few vectorised numpy reductions over contiguous segments instead, and so do the
    mean, min, max and count when ``full``. Returns ``_key`` and the ``p95`` columns (all the
    statistics when ``full``); None when some group is larger.
    """
    keys = part.select(key).to_series().to_numpy()
    if keys.size == 0:
        return None
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    lengths = np.diff(np.append(starts, keys.size))
    if lengths.max() > SMALL_GROUP:
        return None
    columns: dict[str, np.ndarray] = {"_key": keys[starts]}
    for name in plain:
        values = part[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        valid = ~np.isnan(values)
        padded = np.where(valid, values, -np.inf)
        count = np.add.reduceat(valid.astype(np.int64), starts)
        top = np.maximum.reduceat(padded, starts)
        top_each = np.repeat(top, lengths)
        ties = np.add.reduceat((padded == top_each) & valid, starts)
        second = np.maximum.reduceat(np.where(padded < top_each, padded, -np.inf), starts)
        second = np.where(ties >= 2, top, second)
        position = P95 * (count - 1)
        fraction = position - np.floor(position)
        with np.errstate(invalid="ignore"):
            p95 = np.where(count <= 1, top, second + fraction * (top - second))
        columns[f"{name}_p95"] = np.where(count == 0, np.nan, p95)
        if full:
            total = np.add.reduceat(np.where(valid, values, 0.0), starts)
            with np.errstate(invalid="ignore", divide="ignore"):
                columns[f"{name}_mean"] = np.where(count == 0, np.nan, total / np.maximum(count, 1))
            columns[f"{name}_min"] = np.where(
                count == 0, np.nan, np.minimum.reduceat(np.where(valid, values, np.inf), starts)
            )
            columns[f"{name}_max"] = np.where(count == 0, np.nan, top)
            columns[f"{name}_count"] = count
    floats = [c for c in columns if c != "_key" and not c.endswith("_count")]
    return pl.DataFrame(columns).with_columns(pl.col(floats).fill_nan(None))


def _query(
    prepared: pl.LazyFrame,
    exprs: list[pl.Expr],
    *,
    window: str,
    entity: str,
    bounds: tuple[int, int],
    key_sorted: bool,
    extra: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """Statistics per (entity code, window): columns ``time``, ``entity`` and the statistics.

    ``extra`` holds more statistics per ``_key`` (the fast percentiles), joined in.
    """
    grouped = (
        prepared.with_columns(_key_expr(entity, window, bounds).alias("_key"))
        .with_columns(pl.col("_key").set_sorted() if key_sorted else pl.col("_key"))
        .group_by("_key")
        .agg(exprs)
    )
    if extra is not None:
        grouped = grouped.join(extra.lazy(), on="_key", how="left")
    return grouped.with_columns(
        ((pl.col("_key") % _SHIFT) * MINUTE_NS).cast(TIME_DTYPE).alias("time"),
        (pl.col("_key") // _SHIFT).cast(pl.UInt32).alias(entity),
    ).drop("_key")


def _from_key(frame: pl.DataFrame, entity: str) -> pl.DataFrame:
    """Split ``_key`` back into ``time`` and the entity code (see ``_key_expr``)."""
    return frame.with_columns(
        ((pl.col("_key") % _SHIFT) * MINUTE_NS).cast(TIME_DTYPE).alias("time"),
        (pl.col("_key") // _SHIFT).cast(pl.UInt32).alias(entity),
    ).drop("_key")


def _key_expr(entity: str, window: str, bounds: tuple[int, int]) -> pl.Expr:
    """One Int64 per (entity, window): the entity code and the window start in minutes."""
    minutes = window_start_ns(pl.col("_t"), window, *bounds) // MINUTE_NS
    return (pl.col(entity).cast(pl.Int64) * _SHIFT + minutes).cast(pl.Int64)


def _commune_counters(device: pl.DataFrame, devices: pl.DataFrame, counters: Sequence[str]) -> pl.DataFrame:
    """A commune's counter statistics are the sums of its devices' (an increase adds up)."""
    exprs: list[pl.Expr] = []
    for name in counters:
        increase = pl.col(f"{name}_increase")
        exprs += [
            pl.when(increase.count() > 0).then(increase.sum()).alias(f"{name}_increase"),
            pl.col(f"{name}_resets").sum(),
            pl.col(f"{name}_count").sum(),
        ]
    return device.join(devices, on="_dev", how="left").group_by("time", "_com").agg(exprs)


def _finish(frame: pl.DataFrame, level: Level, names: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    entity = "_dev" if level == "device" else "_com"
    tags = output_tags(level)
    return frame.join(names, on=entity, how="left").select("time", *tags, *columns).sort(["time", *tags])


def aggregate_all(
    readings: pl.DataFrame | pl.LazyFrame,
    family: str,
    windows: Iterable[str] = WINDOWS,
    levels: Iterable[Level] = LEVELS,
) -> dict[str, pl.DataFrame]:
    """Aggregate raw readings of ``family`` over every window and level, keyed by measurement.

    ``readings`` has ``time`` (UTC), ``insee``, ``device_id`` and the family's fields (missing
    fields are skipped, extra columns ignored). Each result has ``time`` (window start), the
    level's tags (``insee``, ``device_id`` / ``insee``), then each field's statistics (module
    docstring), sorted by time and tags. Windows without readings have no row.
    """
    windows = [check_window(w) for w in windows]
    levels = list(levels)
    prep = _prepare(readings, family)
    plain, counters, frame = prep.plain, prep.counters, prep.frame
    columns = _empty_output(plain, counters).drop("time", "insee", "device_id").columns
    result: dict[str, pl.DataFrame] = {}
    if frame.is_empty():
        empty = _empty_output(plain, counters)
        for window in windows:
            for level in levels:
                result[measurement_name(family, window, level)] = empty.select(
                    "time", *output_tags(level), *columns
                )
        return result
    bounds = (int(frame["_t"].min()), int(frame["_t"].max()))  # type: ignore[arg-type]
    device: dict[str, list[pl.DataFrame]] = {w: [] for w in windows}
    if "device" in levels or counters:
        for part in _device_slices(frame, counters):
            lazy = part.lazy()
            full = not counters
            fast = {
                w: _small_group_stats(part, plain, _key_expr("_dev", w, bounds), full=full) if plain else None
                for w in windows
            }
            slow = [w for w in windows if not (full and fast[w] is not None)]
            queries = [
                _query(
                    lazy,
                    _stat_exprs(plain, counters, p95=fast[w] is None),
                    window=w,
                    entity="_dev",
                    bounds=bounds,
                    key_sorted=True,
                    extra=fast[w],
                )
                for w in slow
            ]
            found = dict(zip(slow, pl.collect_all(queries), strict=True))
            for window in windows:
                if window in found:
                    device[window].append(found[window])
                else:
                    device[window].append(_from_key(fast[window], "_dev"))  # type: ignore[arg-type]
    commune: list[pl.DataFrame] = []
    if "commune" in levels:
        lazy = frame.lazy()
        queries = [
            _query(lazy, _stat_exprs(plain, []), window=w, entity="_com", bounds=bounds, key_sorted=False)
            for w in windows
        ]
        commune = pl.collect_all(queries)
    devices = prep.device_names.select("_dev", "_com")
    for index, window in enumerate(windows):
        per_device = pl.concat(device[window]) if device[window] else None
        if "device" in levels and per_device is not None:
            result[measurement_name(family, window, "device")] = _finish(
                per_device, "device", prep.device_names, columns
            )
        if "commune" in levels:
            per_commune = commune[index]
            if counters and per_device is not None:
                sums = _commune_counters(per_device, devices, counters)
                per_commune = per_commune.join(sums, on=["time", "_com"], how="left")
            result[measurement_name(family, window, "commune")] = _finish(
                per_commune, "commune", prep.commune_names, columns
            )
    return result


def aggregate(
    readings: pl.DataFrame | pl.LazyFrame, family: str, window: str, level: Level = "device"
) -> pl.DataFrame:
    """Aggregate raw readings of ``family`` over tumbling ``window``s, per device or commune.

    One window and level of ``aggregate_all``, which see.
    """
    return aggregate_all(readings, family, [window], [level])[measurement_name(family, window, level)]


def _empty_output(plain: Sequence[str], counters: Sequence[str]) -> pl.DataFrame:
    schema: dict[str, pl.DataType] = {"time": TIME_DTYPE, "insee": pl.String(), "device_id": pl.String()}
    for name in plain:
        for stat in ("mean", "min", "max", "p95"):
            schema[f"{name}_{stat}"] = pl.Float64()
        schema[f"{name}_count"] = pl.Int64()
    for name in counters:
        schema[f"{name}_increase"] = pl.Float64()
        schema[f"{name}_resets"] = pl.Int64()
        schema[f"{name}_count"] = pl.Int64()
    return pl.DataFrame(schema=schema)
