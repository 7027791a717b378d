"""Platform settings, from ``SMARTCITY_*`` environment variables and an optional TOML file.

Nested values use a double underscore in the environment, e.g.
``SMARTCITY_STORE__BACKEND=influxdb`` or ``SMARTCITY_STORE__INFLUXDB__URL=http://db:8086``.
The TOML file (``--config`` or ``SMARTCITY_CONFIG``) uses the same names as tables::

    [store]
    backend = "influxdb"
    [store.influxdb]
    url = "http://db:8086"

Environment variables win over the file. Wrong values stop start-up with a message that names
the setting, the value and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from alerts.config import AlertSettings
from dashboards.config import DashboardSettings
from ingest.config import IngestSettings
from opendata.config import OpenDataSettings
from processing.config import ProcessingSettings
from sensors.config import MqttSettings
from simulator.config import SimulatorSettings
from storage.config import StoreSettings


class SettingsError(ValueError):
    """Settings are invalid; the message lists every problem, one per line."""


class Settings(BaseSettings):
    """Everything the platform's commands can be configured with."""

    model_config = SettingsConfigDict(env_prefix="SMARTCITY_", env_nested_delimiter="__", extra="forbid")

    communes_file: Path | None = None
    """The operator's CSV of served communes and their coordinates (docs/registry.md); the shipped
    one when unset. Names, départements, populations and EPCI come from the official registry."""
    data_dir: Path = Path("var")
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    opendata: OpenDataSettings = Field(default_factory=OpenDataSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives through init_settings (see load_settings), below the environment.
        return env_settings, init_settings


def load_settings(config_file: str | Path | None = None) -> Settings:
    """Read and validate settings; raise ``SettingsError`` with every problem spelled out."""
    path = config_file or os.environ.get("SMARTCITY_CONFIG")
    file_values: dict[str, Any] = {}
    if path:
        try:
            file_values = tomllib.loads(Path(path).read_text("utf-8"))
        except OSError as exc:
            raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from exc
    try:
        return Settings(**file_values)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, path)) from None


def _explain(exc: ValidationError, path: str | Path | None) -> str:
    lines = ["invalid settings:"]
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        env = "SMARTCITY_" + "__".join(str(part).upper() for part in error["loc"])
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  {dotted}: {error['msg']}{shown} [env {env}" + (f", file {path}]" if path else "]"))
    return "\n".join(lines)
