"""Readings of one device at one instant within one batch: merged when they agree, else the last wins.

A reading is identified by (commune, device, observed time). Two readings of that identity in
one batch are either consistent (a redelivered message, or a gateway that splits one instant's
fields over several messages: every field both carry has the same value) and are merged, which
is what the store would do with them in two batches; or they disagree on some field, and then
the **last received reading wins whole**: mixing fields of two readings that contradict each
other would store a reading the device never sent. The earlier readings are dropped and each
conflict is reported, for a counter and a dead-letter record.

Vectorised: the common batch has no duplicate and costs one ``is_duplicated`` pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from sensors.frames import RECEIVED_AT

KEYS = ("insee", "device_id", "time")
_ORDER = "__order"
_ROWS = "__rows"
_CONFLICT = "__conflict"


@dataclass(frozen=True, slots=True)
class Conflict:
    """Readings of one device at one instant that disagreed: ``kept`` won, ``dropped`` lost."""

    insee: str
    device_id: str
    time_ns: int
    fields: tuple[str, ...]
    """The fields on which the readings disagreed."""
    kept: dict[str, object]
    dropped: list[dict[str, object]]


def resolve_same_instant(frame: pl.DataFrame, fields: list[str]) -> tuple[pl.DataFrame, list[Conflict]]:
    """``frame`` (rows in arrival order) with one row per (insee, device_id, time), and the conflicts.

    ``fields`` are the frame's value columns; the other columns are the keys and
    ``received_at`` (the latest arrival is kept for a merged reading).
    """
    duplicated = frame.select(pl.struct(KEYS).is_duplicated()).to_series()
    if not duplicated.any():
        return frame, []
    numbered = frame.with_row_index(_ORDER)
    single = numbered.filter(~duplicated)
    multi = numbered.filter(duplicated)
    disagree = [(pl.col(f).drop_nulls().n_unique() > 1).alias(f"__disagree_{f}") for f in fields]
    extra = [c for c in frame.columns if c not in KEYS and c not in fields]
    grouped = multi.group_by(list(KEYS), maintain_order=True).agg(
        *disagree,
        *(pl.col(f).drop_nulls().last().alias(f"__merged_{f}") for f in fields),
        *(pl.col(f).last() for f in fields),
        *(pl.col(c).max() if c == RECEIVED_AT else pl.col(c).last() for c in extra),
        pl.col(_ORDER).max(),
        pl.len().alias(_ROWS),
    )
    grouped = grouped.with_columns(pl.any_horizontal(f"__disagree_{f}" for f in fields).alias(_CONFLICT))
    resolved = grouped.select(
        *KEYS,
        *(
            pl.when(pl.col(_CONFLICT)).then(pl.col(f)).otherwise(pl.col(f"__merged_{f}")).alias(f)
            for f in fields
        ),
        *extra,
        _ORDER,
    )
    out = (
        pl.concat([single.select(resolved.columns), resolved.cast(single.select(resolved.columns).schema)])
        .sort(_ORDER)
        .drop(_ORDER)
        .select(frame.columns)
    )
    return out, _conflicts(grouped.filter(pl.col(_CONFLICT)), multi, fields)


def _conflicts(grouped: pl.DataFrame, multi: pl.DataFrame, fields: list[str]) -> list[Conflict]:
    if grouped.height == 0:
        return []
    flags = [f"__disagree_{f}" for f in fields]
    members = (
        multi.join(grouped.select(*KEYS, *flags, pl.col(_ORDER).alias("__last")), on=list(KEYS))
        .with_columns(pl.col("time").dt.epoch("ns").alias("__time_ns"))
        .sort(_ORDER)
    )
    found: list[Conflict] = []
    # Only the rare conflicting groups are spelled out row by row, for their dead-letter records.
    for part in members.partition_by(list(KEYS), maintain_order=True):
        first = part.row(0, named=True)
        values = part.select(fields).to_dicts()
        found.append(
            Conflict(
                insee=first["insee"],
                device_id=first["device_id"],
                time_ns=int(first["__time_ns"]),
                fields=tuple(f for f in fields if first[f"__disagree_{f}"]),
                kept=_present(values[-1]),
                dropped=[_present(row) for row in values[:-1]],
            )
        )
    return found


def _present(row: dict[str, object]) -> dict[str, object]:
    return {name: value for name, value in row.items() if value is not None}
