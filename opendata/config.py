"""Settings of ``smartcity opendata export``: what may be published, and where counters stand."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sensors.communes import INSEE_PATTERN


class OpenDataSettings(BaseModel):
    """The ``[opendata]`` table of the settings."""

    model_config = ConfigDict(extra="forbid")

    exclude_communes: list[str] = Field(default_factory=list)
    """INSEE codes of communes that opted out: none of their data is exported."""
    exclude_devices: list[str] = Field(default_factory=list)
    """Devices flagged private: ``insee/device_id`` for one device, or a bare ``device_id`` for
    that id in every commune. None of their data is exported, and a commune index computed
    over one of them is withheld."""
    sites_file: Path | None = None
    """CSV ``insee,device_id,site_id,site_name,latitude,longitude`` placing each traffic counter:
    the national schema requires coordinates, so a counter without a row is not exported."""
    publisher: str = ""
    """Name of the producer, written as ``data_provider_name`` in the traffic channels."""

    @field_validator("exclude_communes")
    @classmethod
    def _insee_codes(cls, codes: list[str]) -> list[str]:
        bad = [code for code in codes if not INSEE_PATTERN.fullmatch(code)]
        if bad:
            raise ValueError(f"not INSEE commune codes: {', '.join(map(repr, bad))}")
        return codes

    @field_validator("exclude_devices")
    @classmethod
    def _device_refs(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            insee, slash, device = ref.rpartition("/")
            if not device or (slash and not INSEE_PATTERN.fullmatch(insee)):
                raise ValueError(f"{ref!r} is neither a device id nor insee/device_id")
        return refs
