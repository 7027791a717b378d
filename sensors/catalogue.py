"""What the platform stores and how it is named: aggregate windows and levels, statistics, indices.

This is the one list every part reads: processing computes what it declares, the store holds
measurements named by it, the API, the dashboards and the alert rules accept what it lists.
docs/measurements.md describes the same contract for people.

- **Measurements** of aggregates are named ``{family}_{window}`` (device level) or
  ``{family}_{window}_commune``; ``aggregate_measurement`` is the one place that spells it.
- **Statistics** are the rows of ``STATISTICS``: each says how it is computed from a window's
  readings (a polars expression), how it composes from finer windows when it does, which
  fields it applies to (plain values or cumulative counters), and how it is labelled and which
  unit it carries. Adding a statistic (a p99, say) is one row here; processing, the API and
  the alert rules pick it up.
- **Indices** (ATMO, EAQI, congestion...) register themselves from their own module with
  ``register_index``, as Telegraf plugins do; ``import processing.indices`` loads them all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

import polars as pl

from sensors.families import Family, FieldSpec, family_spec

WINDOWS: Final[tuple[str, ...]] = ("1m", "15m", "1h", "1d")
"""Aggregate windows, finest first: UTC minutes, quarter-hours and hours, Paris days."""

Level = Literal["device", "commune"]
LEVELS: Final[tuple[Level, ...]] = ("device", "commune")
LEVEL_TAGS: Final[dict[Level, tuple[str, ...]]] = {"device": ("insee", "device_id"), "commune": ("insee",)}
"""The tag columns of an aggregate row at each level."""


def aggregate_measurement(family: str, window: str, level: Level = "device") -> str:
    """The measurement of one family's aggregates, e.g. ``air_quality_1h_commune``.

    ``ValueError`` names the known families or windows when ``family`` or ``window`` is unknown.
    """
    if family_spec(family) is None:
        raise ValueError(f"unknown family {family!r}: expected one of {', '.join(f.value for f in Family)}")
    if window not in WINDOWS:
        raise ValueError(f"unknown window {window!r}: expected one of {', '.join(WINDOWS)}")
    return f"{family}_{window}" + ("_commune" if level == "commune" else "")


# -- statistics -------------------------------------------------------------------------------


def _percentile(q: float) -> tuple[Callable[[str], list[pl.Expr]], Callable[[str], pl.Expr]]:
    """The linear-interpolation percentile with numpy's own rounding (``np.percentile``): the
    window's two order statistics around rank q (n - 1), then numpy's interpolation formula.

    polars' linear quantile can differ from numpy in the last bit; this keeps every engine and
    numpy equal. The order statistics are plain aggregations, the formula runs on their columns.
    """
    tag = f"q{round(q * 100)}"

    def parts(name: str) -> list[pl.Expr]:
        value = pl.col(name).cast(pl.Float64)
        return [
            value.quantile(q, "lower").alias(f"_{name}_{tag}_low"),
            value.quantile(q, "higher").alias(f"_{name}_{tag}_high"),
        ]

    def formula(name: str) -> pl.Expr:
        low, high = pl.col(f"_{name}_{tag}_low"), pl.col(f"_{name}_{tag}_high")
        position = (pl.col(f"{name}_count") - 1).cast(pl.Float64) * q
        fraction = position - position.floor()
        step = high - low
        return pl.when(fraction >= 0.5).then(high - step * (1 - fraction)).otherwise(low + step * fraction)

    return parts, formula


def _known_sum(column: str) -> pl.Expr:
    # A window where nothing is known has an unknown (null) total, not 0.
    return pl.when(pl.col(column).count() > 0).then(pl.col(column).sum())


@dataclass(frozen=True, slots=True)
class Statistic:
    """One statistic of an aggregate row: column ``{field}_{name}``."""

    name: str
    of: Literal["plain", "counter", "both"]
    """Plain numeric fields, cumulative counters (``FieldSpec.counter``), or both."""
    readings: Callable[[str], pl.Expr]
    """From a window's readings of field ``f`` (an aggregation), or from its ``parts`` and its
    ``{f}_count`` when it has parts. Counters are read as the columns ``_inc_{f}`` and
    ``_reset_{f}`` (increase since the device's previous reading, reset flag)."""
    composes: Callable[[str], pl.Expr] | None
    """From rows of finer windows (or of a commune's devices), over columns ``{f}_{stat}``; None
    when only the readings give it (percentiles)."""
    dtype: type[pl.DataType]
    label: tuple[str, str]
    """French, English."""
    unit: Literal["field", "none"]
    """``field``: the field's unit; ``none``: a number of readings or of resets."""
    default: bool = True
    """Computed and stored unless asked otherwise; the others are computed on request."""
    parts: Callable[[str], list[pl.Expr]] | None = None
    """Aggregations of the window's readings that ``readings`` then combines (hidden columns
    named ``_{f}_...``): simple aggregations keep polars on its fast path."""


def _weighted_mean(name: str) -> pl.Expr:
    count = pl.col(f"{name}_count")
    return pl.when(count.sum() > 0).then((pl.col(f"{name}_mean") * count).sum() / count.sum())


_P95, _MEDIAN = _percentile(0.95), _percentile(0.5)

# fmt: off
STATISTICS: Final[dict[str, Statistic]] = {
    s.name: s
    for s in (
        Statistic(
            "mean", "plain", lambda f: pl.col(f).cast(pl.Float64).mean(), _weighted_mean,
            pl.Float64, ("moyenne", "mean"), "field",
        ),
        Statistic(
            "min", "plain", lambda f: pl.col(f).cast(pl.Float64).min(), lambda f: pl.col(f"{f}_min").min(),
            pl.Float64, ("minimum", "minimum"), "field",
        ),
        Statistic(
            "max", "plain", lambda f: pl.col(f).cast(pl.Float64).max(), lambda f: pl.col(f"{f}_max").max(),
            pl.Float64, ("maximum", "maximum"), "field",
        ),
        Statistic(
            "p95", "plain", _P95[1], None,
            pl.Float64, ("95e centile", "95th percentile"), "field", parts=_P95[0],
        ),
        Statistic(
            "median", "plain", _MEDIAN[1], None,
            pl.Float64, ("médiane", "median"), "field", default=False, parts=_MEDIAN[0],
        ),
        Statistic(
            "increase", "counter", lambda f: _known_sum(f"_inc_{f}"), lambda f: _known_sum(f"{f}_increase"),
            pl.Float64, ("augmentation", "increase"), "field",
        ),
        Statistic(
            "resets", "counter", lambda f: pl.col(f"_reset_{f}").sum().cast(pl.Int64),
            lambda f: pl.col(f"{f}_resets").sum(), pl.Int64, ("remises à zéro", "resets"), "none",
        ),
        Statistic(
            "count", "both", lambda f: pl.col(f).count().cast(pl.Int64), lambda f: pl.col(f"{f}_count").sum(),
            pl.Int64, ("nombre de mesures", "reading count"), "none",
        ),
    )
}
# fmt: on
"""Every statistic, in the order of an aggregate row's columns (per field)."""


def statistics_of(field: FieldSpec, wanted: Iterable[str] | None = None) -> list[Statistic]:
    """The statistics of ``field`` (all its defaults when ``wanted`` is None), in table order."""
    chosen = set(STATISTICS) if wanted is None else set(wanted)
    kind = "counter" if field.counter else "plain"
    return [
        s
        for s in STATISTICS.values()
        if s.of in (kind, "both") and s.name in chosen and (wanted is not None or s.default)
    ]


def check_statistics(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple; ``ValueError`` naming the known statistics for an unknown one."""
    names = tuple(names)
    if bad := [n for n in names if n not in STATISTICS]:
        raise ValueError(f"unknown statistic(s) {', '.join(bad)}: expected some of {', '.join(STATISTICS)}")
    return names


def statistic_unit(statistic: str, field_unit: str) -> str:
    """The unit of a statistic's column for a field in ``field_unit``."""
    return field_unit if STATISTICS[statistic].unit == "field" else ""


# -- indices ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """An index measurement: what it is computed from and what its rows hold."""

    name: str
    """The measurement, e.g. ``atmo_daily``."""
    family: Family
    """The family whose readings or aggregates it is computed from."""
    tags: tuple[str, ...]
    """``("insee",)`` for commune rows, ``("insee", "device_id")`` for device rows."""
    shown: tuple[str, ...]
    """The fields a dashboard or an API client reads first."""
    units: dict[str, str]
    """The numeric fields an alert rule may test, with their units (``""``: none)."""
    staleness: timedelta
    """How far back a reader looks for the latest row: a row older than this is stale."""
    compute: Callable[..., pl.DataFrame]
    """The pure function giving its rows (module of the index, docs/indices.md)."""
    update: Callable[..., None]
    """How the processing runner keeps its rows up to date: what it reads and which windows it
    recomputes when new readings of ``family`` arrive (``processing.incremental.UpdateFunc``).
    The runner runs every registered index through it, after the aggregates of its family."""
    from_daily_rows: bool = False
    """Computed from the 1-day aggregate rows: the runner runs it after them, in the loop of the
    jobs that read whole days (``processing.runner``), not at every run."""
    rule_name: str | None = None
    """What alert rules call it (``index = "atmo"`` of an ``index_at_least`` rule): set for the
    indices whose ``index`` field is a class of the six-class scale, None for the others."""


_INDICES: dict[str, IndexSpec] = {}


def register_index(spec: IndexSpec) -> IndexSpec:
    """Declare an index (called by its module at import). The same spec twice is a no-op; a
    different spec under a name already taken is a ``ValueError``."""
    known = _INDICES.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"index {spec.name!r} is registered twice, differently")
    _INDICES[spec.name] = spec
    return spec


def indices() -> dict[str, IndexSpec]:
    """Every registered index, by measurement, in registration order.

    The index modules register on import: ``import processing.indices`` first.
    """
    return dict(_INDICES)


def index_spec(name: str) -> IndexSpec:
    """One index; ``ValueError`` naming the known ones for an unknown name."""
    spec = _INDICES.get(name)
    if spec is None:
        raise ValueError(f"unknown index {name!r}: expected one of {', '.join(_INDICES)}")
    return spec
