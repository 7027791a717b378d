"""``smartcity storage init`` and ``smartcity storage health`` against a real influxd and DuckDB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from smartcity.cli import main
from tests.servers import Influxd, free_port


def _influx_env(monkeypatch: pytest.MonkeyPatch, url: str, **extra: str) -> None:
    monkeypatch.setenv("SMARTCITY_STORE__BACKEND", "influxdb")
    monkeypatch.setenv("SMARTCITY_STORE__INFLUXDB__URL", url)
    monkeypatch.setenv("SMARTCITY_STORE__INFLUXDB__DATABASE", "city")
    for key, value in extra.items():
        monkeypatch.setenv(f"SMARTCITY_STORE__INFLUXDB__{key.upper()}", value)


def test_init_then_health_on_influxdb(
    influxd: Influxd, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _influx_env(monkeypatch, influxd.url, raw_retention_days="10")
    assert main(["storage", "init"]) == 0
    out = capsys.readouterr().out
    assert "created database 'city'" in out and "created retention policy 'raw' (10 days)" in out
    assert main(["storage", "init"]) == 0
    assert "already in place" in capsys.readouterr().out
    assert main(["storage", "health"]) == 0
    assert capsys.readouterr().out.startswith("ok: influxdb 1.")


def test_health_with_a_wrong_password_fails_clearly(
    influxd_factory: Callable[..., Influxd],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = influxd_factory(auth=True)
    assert server.query("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES") == 200
    _influx_env(monkeypatch, server.url, username="admin", password="wrong")
    assert main(["storage", "init"]) == 1
    assert "refused" in capsys.readouterr().err
    assert main(["storage", "health"]) == 1
    assert "401" in capsys.readouterr().out


def test_health_of_an_unreachable_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _influx_env(monkeypatch, f"http://127.0.0.1:{free_port()}", max_retries="0")
    assert main(["storage", "health"]) == 1
    assert "cannot reach" in capsys.readouterr().out


def test_init_and_health_on_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "sub" / "city.duckdb"
    monkeypatch.setenv("SMARTCITY_STORE__BACKEND", "duckdb")
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(path))
    assert main(["storage", "init"]) == 0
    assert path.exists()
    assert main(["storage", "health"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("ok: duckdb")
