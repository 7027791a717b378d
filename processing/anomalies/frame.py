"""What the anomaly detectors share: their options, the output schema, and the prepared frame.

A detector needs each device's readings contiguous and in time order. Store reads come sorted
by time then tags, so :func:`prepare` re-sorts once (by an integer device code, which is much
cheaper than sorting by the ``device_id`` strings) and every detector works on that.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from sensors.families import FAMILIES, Family, FamilySpec, FieldSpec
from storage.base import epoch_ns

TIME_DTYPE = pl.Datetime("ns", "UTC")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAD_TO_SIGMA = 1.4826
"""Turns a median absolute deviation into a standard deviation for Gaussian noise."""
HOUR_NS = 3_600_000_000_000
SECOND_NS = 1_000_000_000

KINDS = ("out_of_bounds", "spike", "stuck", "drift", "offline")
"""Every value of the ``kind`` tag, in the order the detectors run."""

ANOMALY_SCHEMA: dict[str, pl.DataType] = {
    "time": TIME_DTYPE,
    "insee": pl.String(),
    "family": pl.String(),
    "device_id": pl.String(),
    "field": pl.String(),
    "kind": pl.String(),
    "end_ns": pl.Int64(),
    "observed": pl.Float64(),
    "expected": pl.Float64(),
    "score": pl.Float64(),
    "open": pl.Boolean(),
}
"""Columns of the ``anomalies`` measurement (docs/measurements.md), in order."""

ANOMALY_TAGS = ("insee", "family", "device_id", "field", "kind")
"""The tag columns of ``anomalies``: pass them to ``Store.write``."""

WHOLE_DEVICE = ""
"""The ``field`` tag of an anomaly about the whole device (offline), as ``rejected_readings`` does."""

DEV = "_dev"
"""Integer device code column of a prepared frame."""
FIRST = "_first"
"""Boolean column of a prepared frame: the row is its device's first reading."""


class AnomalyOptionError(ValueError):
    """An anomaly option is unknown or has a value that cannot work; the message says which."""


@dataclass(frozen=True, slots=True)
class AnomalyOptions:
    """Tuning of the detectors. The defaults are the ones measured in docs/anomalies.md."""

    spike_threshold: float = 10.0
    """Robust z-score (residual over 1.4826 x MAD) above which a reading is a spike."""
    spike_scale_floor: float = 0.5
    """Lowest scale of an hour, as a share of the device's median hourly scale: a quiet hour
    (rounded values, a flatline) must not turn every small wiggle into a spike."""
    stuck_min_duration_s: float = 1200.0
    """A flatline shorter than this is never reported, whatever the field."""
    stuck_min_readings: int = 4
    """Nor one of fewer identical readings than this."""
    stuck_factor: float = 2.0
    """The allowed duration is at least this times the longest legitimate repeat (see below)."""
    stuck_tail: float = 1e-3
    """The longest legitimate repeat of a field is the (1 - stuck_tail) quantile of the run
    durations of that field over the whole fleet."""
    stuck_min_change_rate: float = 0.02
    """A field that changes in fewer than this share of consecutive readings over the fleet is
    constant by nature (a lane number, a configuration): it is not checked for flatlines."""
    drift_threshold: float = 20.0
    """Score of one hour (its residual against the commune, in units of the device's own typical
    residual) beyond which the hour drifts on its own."""
    drift_run_threshold: float = 6.0
    """Score beyond which an hour drifts when the next or previous hour is beyond it too, in the
    same direction."""
    drift_scale_floor: float = 0.15
    """Lowest typical residual of a device, as a share of its own spread: a device that follows
    its neighbours very closely must not turn a small wobble into a drift."""
    drift_min_devices: int = 3
    """Devices of the family a commune needs for its median to be a reference."""
    drift_fields: tuple[str, ...] | None = None
    """Fields checked for drift; None means the family's measured continuous fields
    (``processing.anomalies.drift.DRIFT_FIELDS``)."""
    offline_periods: float = 5.0
    """Silent for more than this many reporting periods means offline."""
    offline_min_readings: int = 10
    """Readings a device needs for its own median interval to be its period; fewer and the
    family's ``reporting_period_s`` is used."""
    out_of_bounds_merge_s: float = 600.0
    """Out-of-bounds readings of one device and field closer than this form one anomaly."""

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "drift_fields":
                if value is not None and not all(isinstance(v, str) for v in value):
                    raise AnomalyOptionError(f"drift_fields must be field names, got {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise AnomalyOptionError(f"anomaly option {item.name}={value!r} must be a finite number")
            if value <= 0 and item.name not in ("stuck_min_change_rate",):
                raise AnomalyOptionError(f"anomaly option {item.name}={value!r} must be > 0")
        if not 0 < self.stuck_tail < 1:
            raise AnomalyOptionError(f"stuck_tail={self.stuck_tail} must be between 0 and 1")

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> AnomalyOptions:
        """Options from keyword arguments, with a clear error for a misspelt one."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise AnomalyOptionError(
                f"unknown anomaly option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        if isinstance(options.get("drift_fields"), list):
            options = {**options, "drift_fields": tuple(options["drift_fields"])}
        return cls(**options)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A family's readings (or a chunk of its devices) ready for the detectors.

    ``frame`` holds ``time``, ``_dev`` (a device index, increasing along the rows), ``_first``
    and the family's numeric fields present in the input, as Float64; rows are grouped by device
    and in time order within a device. ``devices`` maps ``_dev`` to ``insee`` and ``device_id``.
    """

    spec: FamilySpec
    frame: pl.DataFrame
    devices: pl.DataFrame
    numeric_fields: tuple[str, ...]
    """Float and int fields present, counters included."""
    now_ns: int | None
    """The reference time for "still open", ns since the epoch: ``now``, or the latest reading
    of the whole input (not of the chunk); None when there is no reading."""

    @property
    def family(self) -> str:
        """The family name, as written in the ``family`` tag."""
        return self.spec.family.value

    def field_spec(self, name: str) -> FieldSpec:
        """The contract of one field of the family."""
        spec = self.spec.field(name)
        assert spec is not None  # prepare() kept only the family's fields
        return spec

    def gauge_fields(self) -> list[str]:
        """The fields checked for spikes, flatlines and stuck values: the numeric ones but counters
        and ratios of counts."""
        return [
            name
            for name in self.numeric_fields
            if not (spec := self.field_spec(name)).counter and not spec.ratio_of_counts
        ]

    def with_tags(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` (with a ``_dev`` column) with ``insee``, ``device_id`` and ``family`` added."""
        return rows.join(self.devices, on=DEV, how="left").with_columns(family=pl.lit(self.family))


CHUNK_ROWS = 500_000
"""Readings per chunk of devices: bounds the memory of the intermediate columns."""


def family_spec_of(family: str) -> FamilySpec:
    """The contract of a family by name; a clear error for an unknown one."""
    try:
        return FAMILIES[Family(family)]
    except ValueError:
        known = ", ".join(f.value for f in Family)
        raise ValueError(f"unknown family {family!r}; known: {known}") from None


@dataclass(frozen=True, slots=True)
class CheckedReadings:
    """Readings of one family, checked: what every implementation of the pass starts from."""

    spec: FamilySpec
    frame: pl.DataFrame
    """The input less rows without a time or a device."""
    numeric_fields: tuple[str, ...]
    """The family's float and int fields present in ``frame``, counters included."""
    now_ns: int | None
    """``now``, or the latest reading, in ns since the epoch; None when there is no reading."""


def _utc_time(frame: pl.DataFrame) -> pl.Expr:
    """The ``time`` column as a UTC datetime (a naive time is taken as UTC)."""
    dtype = frame.schema["time"]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.col("time").dt.replace_time_zone("UTC")
    return pl.col("time")


def check_readings(frame: pl.DataFrame, family: str, *, now: datetime | None = None) -> CheckedReadings:
    """Check ``frame`` (raw readings of ``family`` in the store convention).

    Raises ``ValueError`` naming the problem when a required column is missing or mistyped.
    Extra columns (``received_at``, unknown fields) are ignored, and so are booleans and enums:
    no detector looks at them (a switch that stays off is not a fault).
    """
    spec = family_spec_of(family)
    missing = [name for name in ("time", "insee", "device_id") if name not in frame.columns]
    if missing:
        raise ValueError(f"{family} readings lack the column(s) {', '.join(missing)}")
    time_dtype = frame.schema["time"]
    if not isinstance(time_dtype, pl.Datetime):
        raise ValueError(f"{family} readings: column time must be a Datetime, got {time_dtype}")
    numeric = tuple(f.name for f in spec.fields if f.kind in ("float", "int") and f.name in frame.columns)
    for name in numeric:
        dtype = frame.schema[name]
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise ValueError(f"{family} readings: field {name} must be numeric, got {dtype}")
    if frame.select((pl.col("time").is_null() | pl.col("device_id").is_null()).any()).item():
        frame = frame.filter(pl.col("time").is_not_null() & pl.col("device_id").is_not_null())
    return CheckedReadings(spec=spec, frame=frame, numeric_fields=numeric, now_ns=_now_ns(frame, now))


def prepare(frame: pl.DataFrame, family: str, *, now: datetime | None = None) -> Prepared:
    """Check ``frame`` (raw readings of ``family`` in the store convention) and sort it by device.

    Raises ``ValueError`` naming the problem when a required column is missing or mistyped.
    Extra columns (``received_at``, unknown fields) are ignored, and so are booleans and enums:
    no detector looks at them (a switch that stays off is not a fault).
    """
    chunks = list(prepare_chunks(frame, family, now=now, chunk_rows=None))
    return chunks[0]


def prepare_chunks(
    frame: pl.DataFrame, family: str, *, now: datetime | None = None, chunk_rows: int | None = -1
) -> Iterator[Prepared]:
    """Like :func:`prepare`, in chunks of whole devices of about ``chunk_rows`` readings each
    (``CHUNK_ROWS`` by default, one chunk when None). Device indices and ``now_ns`` are those of
    the whole input."""
    if chunk_rows == -1:
        chunk_rows = CHUNK_ROWS
    checked = check_readings(frame, family, now=now)
    spec, frame, numeric, now_ns = checked.spec, checked.frame, checked.numeric_fields, checked.now_ns
    time_expr = _utc_time(frame)
    code = frame.select(pl.col("device_id").cast(pl.Categorical).to_physical()).to_series()
    order: pl.Series | None = None
    if not _grouped_by_device(frame, code):
        if not frame["time"].is_sorted():
            frame = frame.sort("time", maintain_order=True)  # stable: equal times keep their order
            code = frame.select(pl.col("device_id").cast(pl.Categorical).to_physical()).to_series()
        # A stable sort on an integer code keeps the time order within each device, and costs
        # a fraction of a sort on the strings or on (device, time).
        order = code.to_frame("_code").select(pl.arg_sort_by("_code", maintain_order=True)).to_series()
    in_order = order is None
    if order is None:
        # Already one block per device, in time order (e.g. read device by device): the
        # chunks are slices, with no reordering at all.
        order = pl.int_range(frame.height, dtype=pl.UInt32, eager=True)
    sorted_code = code.gather(order)
    first = (sorted_code != sorted_code.shift(1)).fill_null(True)
    starts = first.arg_true()
    devices = frame.select("insee", "device_id")[order.gather(starts)].with_columns(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias(DEV),
        pl.col("insee").cast(pl.String),
        pl.col("device_id").cast(pl.String),
    )
    device_index = (first.cum_sum() - 1).cast(pl.UInt32).alias(DEV)
    columns = frame.select(
        time_expr.cast(TIME_DTYPE).alias("time"), *(pl.col(n).cast(pl.Float64) for n in numeric)
    )
    bounds = _chunk_bounds(starts, frame.height, chunk_rows)
    for lo, hi in bounds:
        rows = order.slice(lo, hi - lo)
        picked = columns.slice(lo, hi - lo) if in_order else columns[rows]
        chunk = picked.with_columns(device_index.slice(lo, hi - lo), first.slice(lo, hi - lo).alias(FIRST))
        chunk = chunk.select("time", DEV, FIRST, *numeric)
        yield Prepared(spec=spec, frame=chunk, devices=devices, numeric_fields=numeric, now_ns=now_ns)


def _grouped_by_device(frame: pl.DataFrame, code: pl.Series) -> bool:
    """Whether each device's readings already form one block, in time order."""
    if frame.height == 0:
        return True
    if code.rle_id().n_unique() != code.n_unique():
        return False
    new_block = code != code.shift(1)
    backwards = frame.select(
        ((pl.col("time").diff() < 0) & ~pl.Series(new_block).fill_null(True)).any()
    ).item()
    return not backwards


def _chunk_bounds(starts: pl.Series, height: int, chunk_rows: int | None) -> list[tuple[int, int]]:
    """Row ranges of chunks that never split a device (``starts``: first row of each device)."""
    if chunk_rows is None or height <= chunk_rows:
        return [(0, height)]
    bounds: list[tuple[int, int]] = []
    lo = 0
    # One step per device, not per reading: a Python loop is fine here.
    cut_points = [*starts.to_list()[1:], height]
    for cut in cut_points:
        if cut - lo >= chunk_rows or cut == height:
            bounds.append((lo, cut))
            lo = cut
    return bounds


def _now_ns(frame: pl.DataFrame, now: datetime | None) -> int | None:
    if now is not None:
        return epoch_ns(now)  # a naive ``now`` is taken as UTC
    if frame.height == 0:
        return None
    latest = frame.select(pl.col("time").max().dt.epoch("ns")).item()
    return int(latest)


def empty_anomalies() -> pl.DataFrame:
    """An ``anomalies`` frame with no row."""
    return pl.DataFrame(schema=ANOMALY_SCHEMA)


def finish(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast to the ``anomalies`` schema, in its column order, sorted so that output is stable."""
    if frame.height == 0:
        return empty_anomalies()
    return frame.select(pl.col(name).cast(dtype) for name, dtype in ANOMALY_SCHEMA.items()).sort(
        "time", "insee", "device_id", "field", "kind"
    )


def new_group(keys: list[str], breaks: pl.Expr) -> pl.Expr:
    """A group number that changes when a key changes or ``breaks`` is true (rows in key order)."""
    for key in keys:
        breaks = breaks | (pl.col(key) != pl.col(key).shift(1))
    return breaks.fill_null(True).cum_sum().alias("group")
