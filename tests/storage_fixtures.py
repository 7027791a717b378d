"""Fixtures shared by the storage tests: open each kind of store, fresh, for one test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.base import Store
from storage.duckdb_store import DuckDBStore

STORE_KINDS = ["duckdb"]


@contextlib.contextmanager
def open_test_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store named by ``request.param``, empty, closed after the test."""
    kind = request.param
    if kind == "duckdb":
        tmp: Path = request.getfixturevalue("tmp_path")
        store: Store = DuckDBStore(tmp / "store.duckdb")
    else:
        raise ValueError(kind)
    try:
        yield store
    finally:
        store.close()
