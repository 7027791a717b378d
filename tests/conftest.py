"""Shared fixtures: a real Mosquitto and a real InfluxDB, started by the tests themselves.

A test that needs a server and cannot start it fails with a message that says what to install;
it never skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers import Influxd, Mosquitto, ServerProcess, ServerUnavailable


def _start(server: ServerProcess) -> None:
    try:
        server.start()
    except ServerUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A fresh Mosquitto broker on a free port, stopped after the test."""
    server = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    _start(server)
    yield server
    server.kill()


@pytest.fixture
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """A fresh InfluxDB 1.x server, authentication off, on a free port, stopped after the test."""
    server = Influxd(tmp_path_factory.mktemp("influxd"))
    _start(server)
    yield server
    server.kill()


@pytest.fixture
def influxd_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Influxd]]:
    """Start InfluxDB servers with options (``auth=True``); all are stopped after the test."""
    started: list[Influxd] = []

    def make(*, auth: bool = False) -> Influxd:
        server = Influxd(tmp_path_factory.mktemp("influxd"), auth=auth)
        _start(server)
        started.append(server)
        return server

    yield make
    for server in started:
        server.kill()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return Path(__file__).resolve().parent.parent
