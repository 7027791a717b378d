"""Errors raised by stores. Callers decide what to do by type, never by message."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every store error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached or is overloaded; the same call may succeed later.

    Ingest spools readings on this error rather than losing them.
    """


class StoreAuthError(StoreError):
    """The store refused the credentials: retrying will not help."""


class QueryError(StoreError):
    """The query is invalid (unknown measurement is *not* an error: it reads as empty)."""


class WriteRejected(StoreError):
    """The store refused data as invalid (type conflict, bad name): retrying will not help."""
