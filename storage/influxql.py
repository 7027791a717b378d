"""Building InfluxQL safely: every identifier and every string literal is quoted and escaped.

A commune name or a device id becomes a quoted string literal, never query text, so no value
can end the literal and inject a statement (``' OR 1=1 --``, ``\\'``, line breaks, unicode).
"""

from __future__ import annotations

from collections.abc import Sequence

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str, quote: str) -> str:
    out = text
    for raw, escaped in _ESCAPES.items():
        out = out.replace(raw, escaped)
    return out.replace(quote, "\\" + quote)


def quote_ident(name: str) -> str:
    """An identifier (database, retention policy, measurement, tag or field key) in double quotes."""
    return '"' + _escape(name, '"') + '"'


def quote_string(value: str) -> str:
    """A string literal (a tag value) in single quotes."""
    return "'" + _escape(value, "'") + "'"


def source(database: str, retention_policy: str | None, measurement: str) -> str:
    """``"db"."rp"."measurement"``, or ``"measurement"`` when the server has no retention policy."""
    if retention_policy is None:
        return quote_ident(measurement)
    return f"{quote_ident(database)}.{quote_ident(retention_policy)}.{quote_ident(measurement)}"


def time_range(start_ns: int, end_ns: int, *, end_inclusive: bool = False) -> str:
    """``time >= start AND time < end`` with integer nanosecond bounds."""
    return f"time >= {int(start_ns)} AND time {'<=' if end_inclusive else '<'} {int(end_ns)}"


def tag_condition(key: str, values: Sequence[str]) -> str:
    """``("key" = 'a' OR "key" = 'b')``; the caller handles an empty ``values``."""
    ident = quote_ident(key)
    return "(" + " OR ".join(f"{ident} = {quote_string(v)}" for v in values) + ")"


def field_greater_than(key: str, value: int) -> str:
    """``"key" > value`` for an integer ``value``, written as an integer literal.

    An integer literal compares exactly with an integer field; a float literal would round a
    nanosecond timestamp (2026 is about 1.8e18, past float64's exact integers) to 256 ns.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"field_greater_than needs an int, got {type(value).__name__}")
    return f"{quote_ident(key)} > {int(value)}"
