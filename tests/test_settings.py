"""Settings: environment variables and a TOML file, the environment wins, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smartcity.cli import main
from smartcity.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SMARTCITY_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.startswith("SMARTCITY_"):
            monkeypatch.delenv(name)


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "smartcity.toml"
    path.write_text(text, "utf-8")
    return path


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings()
    assert settings.store.backend == "duckdb"
    assert settings.mqtt.port == 1883


def test_environment_variables_with_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCITY_STORE__BACKEND", "influxdb")
    monkeypatch.setenv("SMARTCITY_STORE__INFLUXDB__URL", "http://db:8086")
    monkeypatch.setenv("SMARTCITY_MQTT__PORT", "8883")
    settings = load_settings()
    assert settings.store.backend == "influxdb"
    assert settings.store.influxdb.url == "http://db:8086"
    assert settings.mqtt.port == 8883


def test_toml_file_and_the_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _toml(
        tmp_path,
        '[mqtt]\nhost = "broker.example"\nport = 1884\n[store]\nbackend = "influxdb"\n'
        '[store.influxdb]\ndatabase = "poissy"\n',
    )
    from_file = load_settings(path)
    assert (from_file.mqtt.host, from_file.mqtt.port) == ("broker.example", 1884)
    assert from_file.store.influxdb.database == "poissy"

    monkeypatch.setenv("SMARTCITY_MQTT__PORT", "2883")
    both = load_settings(path)
    assert both.mqtt.port == 2883  # the environment wins...
    assert both.mqtt.host == "broker.example"  # ...only for what it sets


def test_config_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTCITY_CONFIG", str(_toml(tmp_path, "[mqtt]\nport = 1999\n")))
    assert load_settings().mqtt.port == 1999


def test_wrong_value_names_the_setting_and_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTCITY_MQTT__PORT", "70000")
    with pytest.raises(SettingsError) as from_env:
        load_settings()
    assert "mqtt.port" in str(from_env.value)
    assert "SMARTCITY_MQTT__PORT" in str(from_env.value)
    assert "70000" in str(from_env.value)

    monkeypatch.delenv("SMARTCITY_MQTT__PORT")
    path = _toml(tmp_path, '[store]\nbackend = "postgres"\n')
    with pytest.raises(SettingsError) as from_file:
        load_settings(path)
    message = str(from_file.value)
    assert "store.backend" in message and "SMARTCITY_STORE__BACKEND" in message
    assert "postgres" in message and str(path) in message


def test_unknown_top_level_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="data_dri"):
        load_settings(_toml(tmp_path, 'data_dri = "var"\n'))


def test_unknown_nested_setting_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"mqtt\.hots"):
        load_settings(_toml(tmp_path, '[mqtt]\nhots = "typo"\n'))


def test_unreadable_or_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(_toml(tmp_path, "[mqtt\nport = 1\n"))


def test_cli_stops_with_the_settings_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _toml(tmp_path, "[mqtt]\nport = -1\n")
    # Settings are validated before any sub-command runs, so the command never starts.
    assert main(["--config", str(bad), "simulate"]) == 2
    error = capsys.readouterr().err
    assert "mqtt.port" in error and "SMARTCITY_MQTT__PORT" in error
