"""InfluxDB line protocol, produced from polars frames with vectorised expressions.

One line per row, built column-wise by polars (no Python object per point)::

    measurement,tag1=v1,tag2=v2 field1=1.5,field2=3i,field3=true,field4="text" 1700000000000000000

Escaping follows the line-protocol reference, as InfluxDB 1.x and 2.x parse it:

* measurement: ``,`` and space are backslash-escaped;
* tag keys, tag values and field keys: ``,``, ``=`` and space are backslash-escaped; a backslash
  is written as is (the parser keeps it). A backslash *before* one of those characters, or at
  the end, cannot be written so that InfluxDB reads it back: ``storage.frames.prepare`` refuses
  such rows before they get here;
* string field values: double-quoted, with ``"`` and ``\\`` backslash-escaped (a line break is
  allowed inside the quotes);
* floats in the shortest form that reads back to the same double (``0.1``, ``1e-7``), integers
  with the ``i`` suffix, booleans as ``true``/``false``; a null field is left out of its line;
* tags with an empty value are left out (InfluxDB has no empty tag); tags are written in key
  order, which spares the server a sort;
* timestamps in nanoseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl
import pyarrow as pa

from storage.base import TIME

_KEY_SPECIALS = (",", "=", " ")


def escape_measurement(name: str) -> str:
    """A measurement name as written at the start of a line."""
    return name.replace(",", "\\,").replace(" ", "\\ ")


def escape_key(name: str) -> str:
    """A tag key, tag value or field key as written in a line."""
    for special in _KEY_SPECIALS:
        name = name.replace(special, "\\" + special)
    return name


def _tag_value(column: str) -> pl.Expr:
    # literal=False: a regex, so one pass escapes all three characters.
    return pl.col(column).str.replace_all(r"([,= ])", r"\$1")


def _field_value(column: str, dtype: pl.DataType) -> pl.Expr:
    col = pl.col(column)
    if dtype == pl.Float64:
        return col.cast(pl.String)
    if dtype == pl.Boolean:
        return pl.when(col).then(pl.lit("true")).when(col.not_()).then(pl.lit("false"))
    if dtype.is_integer():
        return pl.concat_str(col.cast(pl.String), pl.lit("i"))
    if dtype == pl.String:
        return pl.concat_str(pl.lit('"'), col.str.replace_all(r'(["\\])', r"\$1"), pl.lit('"'))
    raise TypeError(f"field {column!r}: no line-protocol form for dtype {dtype}")


def _tags_expr(frame: pl.DataFrame, tags: Sequence[str]) -> list[pl.Expr]:
    pieces: list[pl.Expr] = []
    for tag in sorted(tags, key=lambda t: escape_key(t).encode()):
        column = frame[tag]
        # Escaping and the empty-tag test cost a pass each: skip them when no value needs them.
        value = _tag_value(tag) if column.str.contains(r"[,= ]").any() else pl.col(tag)
        piece = pl.concat_str(pl.lit(f",{escape_key(tag)}="), value)
        pieces.append(pl.when(pl.col(tag) != "").then(piece) if (column == "").any() else piece)
    return pieces


def _fields_expr(frame: pl.DataFrame, fields: Sequence[str]) -> list[pl.Expr]:
    """Pieces ``" k=v"`` then ``",k=v"``, null where the value is null, for a flat concat_str.

    The first piece must start with the space that ends the series key. A field without nulls
    goes first so its piece is never null; when every field has nulls, a nested expression
    picks the first present one.
    """
    complete = [f for f in fields if frame[f].null_count() == 0]
    partial = [f for f in fields if f not in complete]
    ordered = complete + partial
    pieces: list[pl.Expr] = []
    for position, name in enumerate(ordered):
        value = _field_value(name, frame.schema[name])
        lead = " " if position == 0 else ","
        pieces.append(pl.concat_str(pl.lit(f"{lead}{escape_key(name)}="), value))
    if not complete:
        # Every field may be null: join them with commas, dropping nulls, then lead with " ".
        body = pl.concat_str(
            [pl.concat_str(pl.lit(f"{escape_key(n)}="), _field_value(n, frame.schema[n])) for n in ordered],
            separator=",",
            ignore_nulls=True,
        )
        return [pl.lit(" "), body]
    return pieces


def line_expr(measurement: str, frame: pl.DataFrame, tags: Sequence[str], fields: Sequence[str]) -> pl.Expr:
    """An expression giving each row's line, ending with a newline.

    The frame must follow ``storage.frames.prepare``: ``time`` as ``Datetime("ns", "UTC")``,
    tags as non-null strings ("" for no tag), fields Float64/Int64/Boolean/String, and at least
    one field value on every row. The expression depends on the frame's content (which columns
    have nulls, which tags need escaping), so build it for the frame it is applied to.
    """
    if not fields:
        raise ValueError("line protocol needs at least one field")
    pieces: list[pl.Expr] = [pl.lit(escape_measurement(measurement))]
    pieces += _tags_expr(frame, tags)
    pieces += _fields_expr(frame, fields)
    pieces += [pl.lit(" "), pl.col(TIME).dt.epoch("ns").cast(pl.String), pl.lit("\n")]
    return pl.concat_str(pieces, ignore_nulls=True)


class Lines:
    """Serialised lines held in one Arrow buffer, sliced into request bodies without copies."""

    def __init__(self, lines: pl.Series) -> None:
        array = lines.to_arrow(compat_level=pl.CompatLevel.oldest())
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        self._array: pa.LargeStringArray = array
        buffers = array.buffers()
        self._data = memoryview(buffers[2] or b"")
        self._offsets = pa.Array.from_buffers(
            pa.int64(), len(array) + 1, [None, buffers[1]], offset=array.offset
        )

    def __len__(self) -> int:
        return len(self._array)

    def body(self, start: int = 0, end: int | None = None) -> memoryview:
        """Lines ``start`` to ``end`` (exclusive) as one newline-terminated UTF-8 body."""
        end = len(self) if end is None else end
        return self._data[self._offsets[start].as_py() : self._offsets[end].as_py()]

    def line(self, index: int) -> str:
        """One line, without its newline (for error reports)."""
        return str(self._array[index].as_py()).rstrip("\n")


def to_lines(measurement: str, frame: pl.DataFrame, tags: Sequence[str], fields: Sequence[str]) -> Lines:
    """Each row of ``frame`` as one line of line protocol."""
    expr = line_expr(measurement, frame, tags, fields)
    return Lines(frame.select(expr.alias("line")).to_series())
