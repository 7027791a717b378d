"""Fixtures shared by the storage tests: open each kind of store, fresh, for one test.

The InfluxDB stores of one test module share one real ``influxd`` (starting one takes a second
or two); each test gets its own freshly provisioned database, so tests never see each other's
data.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.base import Store
from storage.config import InfluxSettings
from storage.duckdb_store import DuckDBStore
from storage.influx import InfluxStore
from storage.provision import provision
from tests.servers import Influxd, ServerUnavailable

STORE_KINDS = ["duckdb", "influxdb"]
_databases = itertools.count()


@pytest.fixture(scope="module")
def shared_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One real influxd (auth off) for a whole test module."""
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.kill()


def influx_settings(server: Influxd, **overrides: object) -> InfluxSettings:
    """Settings for a fresh database on ``server`` (fast retries, to keep fault tests short)."""
    values: dict[str, object] = {
        "url": server.url,
        "database": f"test{next(_databases)}",
        "retry_backoff_s": 0.05,
        "retry_max_backoff_s": 1.0,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return InfluxSettings.model_validate(values)


def open_influx(server: Influxd, **overrides: object) -> InfluxStore:
    """A provisioned ``InfluxStore`` on a fresh database of ``server``."""
    settings = influx_settings(server, **overrides)
    provision(settings)
    return InfluxStore(settings)


@contextlib.contextmanager
def provisioned_influxd(directory: Path) -> Iterator[tuple[Influxd, InfluxSettings]]:
    """A real influxd in ``directory`` with a provisioned database, killed on exit."""
    from tests.conftest import _start

    server = Influxd(directory)
    _start(server)
    try:
        settings = influx_settings(server)
        provision(settings)
        yield server, settings
    finally:
        server.kill()


@contextlib.contextmanager
def open_test_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store named by ``request.param``, empty, closed after the test."""
    kind = request.param
    store: Store
    if kind == "duckdb":
        tmp: Path = request.getfixturevalue("tmp_path")
        store = DuckDBStore(tmp / "store.duckdb")
    elif kind == "influxdb":
        store = open_influx(request.getfixturevalue("shared_influxd"))
    else:
        raise ValueError(kind)
    try:
        yield store
    finally:
        store.close()
