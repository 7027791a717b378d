"""Checking and normalising the frames handed to ``Store.write``, the same way for every store.

Both stores accept exactly the same rows and refuse exactly the same rows, so that a platform
moved from DuckDB to InfluxDB (or back) behaves the same. The rules follow what InfluxDB can
hold:

* ``time`` is converted to ``Datetime("ns", "UTC")``; a naive datetime is taken as UTC, any
  other time zone is converted. A row without a time is refused.
* Tag values are strings; a null tag is the empty string, which means "no such tag" (InfluxDB
  stores no empty tag). A tag value with a line break, or with a backslash at its end or just
  before ``,``, ``=`` or a space, cannot be carried by InfluxDB's line protocol: its row is
  refused.
* An empty string field is no value (InfluxDB's CSV answers cannot tell them apart).
* Fields are ``Float64``, ``Int64``, ``Boolean`` or ``String`` (other integer and float widths
  are widened). A null, NaN or infinite value means the field is absent from the row. A row
  without any field is refused.
* Several rows of one batch with the same (tags, time) are merged, the later one winning field
  by field, as InfluxDB does with the points of one batch.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from storage.base import TIME, TIME_DTYPE, RejectedRow
from storage.errors import QueryError, WriteRejected

ROW = "__row"
"""Column carrying each row's index in the caller's frame, to report refused rows by index."""

FIELD_DTYPES: tuple[pl.DataType, ...] = (pl.Float64(), pl.Int64(), pl.Boolean(), pl.String())


@dataclass(slots=True)
class PreparedFrame:
    """A frame ready to store: ``time``, tags, fields, plus the ``__row`` index column."""

    frame: pl.DataFrame
    tags: list[str]
    fields: list[str]
    rejected: list[RejectedRow] = field(default_factory=list)


def _field_dtype(name: str, dtype: pl.DataType) -> pl.DataType:
    if dtype in FIELD_DTYPES:
        return dtype
    if dtype.is_integer():
        if dtype == pl.UInt64:
            raise WriteRejected(f"field {name!r}: UInt64 does not fit the stores' Int64; cast it first")
        return pl.Int64()
    if dtype.is_float():
        return pl.Float64()
    if dtype in (pl.Categorical, pl.Enum) or isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.String()
    raise WriteRejected(
        f"field {name!r} has dtype {dtype}; a store field is Float64, Int64, Boolean or String"
    )


def _time_expr(dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.Datetime):
        col = pl.col(TIME)
        if dtype.time_zone is None:
            col = col.dt.replace_time_zone("UTC")
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("ns")
    if dtype == pl.Date:
        return pl.col(TIME).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")
    raise WriteRejected(f"column {TIME!r} has dtype {dtype}; expected a Datetime")


def check_name(kind: str, name: str) -> None:
    """Refuse a measurement, tag or field name that a store cannot hold."""
    if not name:
        raise WriteRejected(f"{kind} name is empty")
    if "\n" in name or "\r" in name or name.endswith("\\"):
        raise WriteRejected(f"{kind} name {name!r} contains a line break or ends with a backslash")
    if name == TIME or name.startswith("__"):
        raise WriteRejected(f"{kind} name {name!r} is reserved")
    if kind != "measurement" and (name == "*" or (name.startswith("^") and name.endswith("$"))):
        # Polars reads such a column name as every column or a pattern: its values would be lost
        # or mixed with others'.
        raise WriteRejected(f"{kind} name {name!r} reads as a wildcard or a regular expression in polars")
    if kind == "measurement" and name.startswith("#"):
        # A line starting with "#" is a comment in line protocol: InfluxDB would skip it silently.
        raise WriteRejected(f"measurement name {name!r} starts with '#'")


@functools.lru_cache(maxsize=256)
def _normalising(
    measurement: str, schema: tuple[tuple[str, pl.DataType], ...], tags: tuple[str, ...]
) -> tuple[list[str], list[str], list[pl.Expr]]:
    """The tags, the fields and the expressions that normalise a frame of ``schema``: the same
    for every write of a writer's frames, so they are built once."""
    check_name("measurement", measurement)
    columns = dict(schema)
    tag_list = list(dict.fromkeys(tags))
    missing = [t for t in tag_list if t not in columns]
    if missing:
        raise WriteRejected(f"tag column(s) {', '.join(missing)} not in the frame")
    field_list = [c for c in columns if c != TIME and c not in tag_list]
    for name in tag_list:
        check_name("tag", name)
    for name in field_list:
        check_name("field", name)
    exprs: list[pl.Expr] = [_time_expr(columns[TIME]).alias(TIME)]
    exprs += [pl.col(t).cast(pl.String).fill_null("").alias(t) for t in tag_list]
    for name in field_list:
        dtype = _field_dtype(name, columns[name])
        expr = pl.col(name).cast(dtype)
        if dtype == pl.Float64:
            # NaN and infinities have no line-protocol form: they mean "no value".
            expr = pl.when(expr.is_finite()).then(expr)
        elif dtype == pl.String:
            # InfluxDB's CSV answers cannot tell "" from no value: both stores read "" as null.
            expr = pl.when(expr != "").then(expr)
        exprs.append(expr.alias(name))
    return tag_list, field_list, exprs


def _kept_rows_checks(keys: list[str], tag_list: list[str]) -> list[pl.Expr]:
    """Whether rows repeat a key (``duplicated``) and which tags carry a value (``carried<i>``):
    asked of every frame, and again of a frame's rows left after refusals."""
    return [
        pl.struct(keys).hash().is_duplicated().any().alias("duplicated"),
        *((pl.col(t) != "").any().alias(f"carried{i}") for i, t in enumerate(tag_list)),
    ]


def prepare(measurement: str, frame: pl.DataFrame, tags: Sequence[str]) -> PreparedFrame:
    """Check and normalise ``frame`` (see the module docstring); raise ``WriteRejected`` when the
    frame as a whole is unusable (no ``time`` column, an unsupported dtype, a bad name)."""
    if TIME not in frame.columns:
        check_name("measurement", measurement)
        raise WriteRejected(f"the frame has no {TIME!r} column (columns: {', '.join(frame.columns)})")
    cached = _normalising(measurement, tuple(frame.schema.items()), tuple(tags))
    tag_list, field_list, exprs = list(cached[0]), list(cached[1]), cached[2]
    out = frame.with_row_index(ROW).select(pl.col(ROW), *exprs)

    keys = [*tag_list, TIME]
    no_field = pl.all_horizontal(pl.col(f).is_null() for f in field_list) if field_list else pl.lit(True)
    reasons: list[tuple[pl.Expr, str]] = [(pl.col(TIME).is_null(), "no time")]
    # Every check of a clean frame in one pass: a cheap literal scan of the tags (the exact
    # pattern only runs on frames that need it), refusals, duplicates (hashes, much cheaper than
    # the keys: a collision only costs the merge below, which is right in any case) and empty
    # tags. Frames with refusals are checked again after them.
    checks = out.select(
        pl.any_horizontal(pl.col(TIME).is_null(), no_field).any().alias("refused"),
        *(
            pl.col(t).str.contains_any(["\n", "\r", "\\"]).any().alias(f"suspect{i}")
            for i, t in enumerate(tag_list)
        ),
        *_kept_rows_checks(keys, tag_list),
    ).row(0, named=True)
    for i, t in enumerate(tag_list):
        if checks[f"suspect{i}"]:
            bad = pl.col(t).str.contains(r"[\r\n]|\\([,= ]|$)")
            reasons.append(
                (bad, f"tag {t!r} has a line break, or a backslash at its end or before , = or space")
            )
    reasons.append((no_field, "no field value"))
    rejected: list[RejectedRow] = []
    if checks["refused"] or any(checks[f"suspect{i}"] for i in range(len(tag_list))):
        reason = pl.lit(None, dtype=pl.String)
        for condition, text in reversed(reasons):
            reason = pl.when(condition).then(pl.lit(text)).otherwise(reason)
        flagged = out.with_columns(reason.alias("__reason"))
        refused = flagged.filter(pl.col("__reason").is_not_null())
        rejected = [RejectedRow(row=r, reason=why) for r, why in refused.select(ROW, "__reason").iter_rows()]
        out = flagged.filter(pl.col("__reason").is_null()).drop("__reason")
    if rejected:
        checks.update(out.select(*_kept_rows_checks(keys, tag_list)).row(0, named=True))

    if out.height > 1 and checks["duplicated"]:
        out = out.group_by(keys, maintain_order=True).agg(
            pl.col(ROW).last(), *(pl.col(f).last(ignore_nulls=True) for f in field_list)
        )
        out = out.select(ROW, TIME, *tag_list, *field_list)
    # Columns empty on every remaining row carry nothing: a store would otherwise create a
    # field with a type guessed from nothing, or a tag key InfluxDB would never see.
    empty = [f for f in field_list if out.height == 0 or out[f].null_count() == out.height]
    empty_tags = [t for i, t in enumerate(tag_list) if out.height == 0 or not checks[f"carried{i}"]]
    if empty or empty_tags:
        out = out.drop(empty, *empty_tags)
        field_list = [f for f in field_list if f not in empty]
        tag_list = [t for t in tag_list if t not in empty_tags]
    return PreparedFrame(out, tag_list, field_list, rejected)


def field_kind(dtype: pl.DataType) -> str:
    """The store-neutral name of a field dtype: float, integer, boolean or string."""
    if dtype == pl.Float64:
        return "float"
    if dtype == pl.Int64:
        return "integer"
    if dtype == pl.Boolean:
        return "boolean"
    return "string"


KIND_DTYPES: dict[str, pl.DataType] = {
    "float": pl.Float64(),
    "integer": pl.Int64(),
    "boolean": pl.Boolean(),
    "string": pl.String(),
}


def check_read_range(start: datetime, end: datetime) -> None:
    """Refuse a read range given in naive datetimes: which time zone was meant is unknown."""
    if start.tzinfo is None or end.tzinfo is None:
        raise QueryError("read() needs time-zone-aware start and end datetimes")


def empty_frame(tags: Sequence[str], fields: Mapping[str, pl.DataType]) -> pl.DataFrame:
    """The frame an empty read returns: ``time``, the tags, the fields with their dtypes."""
    schema: dict[str, pl.DataType] = {TIME: TIME_DTYPE}
    schema.update({t: pl.String() for t in tags})
    schema.update(fields)
    return pl.DataFrame(schema=schema)
