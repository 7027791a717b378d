"""What an operator may not publish: communes that opted out and devices flagged private."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from opendata.config import OpenDataSettings


@dataclass(frozen=True, slots=True)
class Exclusions:
    """Communes and devices whose data never leaves the platform through an export."""

    communes: frozenset[str] = frozenset()
    devices_anywhere: frozenset[str] = frozenset()
    devices_in: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def from_settings(cls, settings: OpenDataSettings) -> Exclusions:
        """The exclusions the ``[opendata]`` settings name."""
        anywhere: set[str] = set()
        located: set[tuple[str, str]] = set()
        for ref in settings.exclude_devices:
            insee, _, device = ref.rpartition("/")
            if insee:
                located.add((insee, device))
            else:
                anywhere.add(device)
        return cls(frozenset(settings.exclude_communes), frozenset(anywhere), frozenset(located))

    def _device_excluded(self) -> pl.Expr:
        located = pl.lit(False)
        if self.devices_in:
            keys = [f"{insee}/{device}" for insee, device in sorted(self.devices_in)]
            located = (pl.col("insee") + "/" + pl.col("device_id")).is_in(keys)
        return pl.col("device_id").is_in(sorted(self.devices_anywhere)) | located

    def keep(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Rows of ``frame`` that may be published (by its ``insee`` and, when present, ``device_id``)."""
        allowed = ~pl.col("insee").is_in(sorted(self.communes))
        if "device_id" in frame.columns:
            allowed &= ~self._device_excluded()
        return frame.filter(allowed)

    def communes_with_excluded_devices(self, series: pl.DataFrame) -> set[str]:
        """Communes where one of the devices of ``series`` (``insee``, ``device_id``) is excluded."""
        if series.is_empty():
            return set()
        return set(series.filter(self._device_excluded()).get_column("insee").to_list())
