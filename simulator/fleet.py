"""Generate a whole simulated fleet at once, as store-ready polars frames plus ground truth.

    >>> from datetime import datetime, UTC
    >>> from simulator.fleet import FleetConfig, generate_fleet
    >>> fleet = generate_fleet(
    ...     FleetConfig(devices_per_family=2, period_s=60, seed=7),
    ...     datetime(2026, 3, 2, tzinfo=UTC),
    ...     datetime(2026, 3, 3, tzinfo=UTC),
    ... )
    >>> fleet.frames["traffic"].columns[:3]
    ['time', 'insee', 'device_id']

``Fleet.frames[family]`` is exactly what a loss-free ingest would store for that family (see
docs/measurements.md): ``time`` (``Datetime("ns", "UTC")``), tags ``insee`` and ``device_id``,
the family's fields with their contract dtypes, and ``received_at`` (Int64 ns) when asked for.
Rows are sorted by time, then insee, then device_id, like ``Store.read``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES, Family, FamilySpec
from sensors.frames import FIELD_DTYPES
from simulator.faults import GROUND_TRUTH_SCHEMA, FaultRates, Injected, inject
from simulator.signals import ENUM_CHOICES, MODELS, Calendar, IntArray, Region, SignalContext, Weather

DEVICE_PREFIXES: dict[Family, str] = {
    Family.AIR_QUALITY: "aq",
    Family.TRAFFIC: "tr",
    Family.BUILDING: "bd",
    Family.CAMERA: "cam",
    Family.NETWORK: "net",
}
"""Device ids read ``{prefix}-{insee}-{number}``, e.g. ``aq-78498-01``."""


class FleetConfigError(ValueError):
    """The fleet cannot be generated with this configuration; the message says why."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What fleet to simulate. Every field has a sensible default."""

    communes: Sequence[str] | None = None
    """INSEE codes; None means every commune of the registry."""
    families: Sequence[str] | None = None
    """Family names; None means all five."""
    devices_per_family: int = 2
    """Devices of each family in each commune."""
    period_s: float = 60.0
    """Seconds between two readings of a device (rounded to the millisecond)."""
    seed: int = 42
    """Same seed, same fleet, same data, same faults."""
    faults: FaultRates = field(default_factory=FaultRates.none)
    received_at: bool = True
    """Add the ``received_at`` column (simulated arrival time) to the frames."""
    registry: CommuneRegistry | None = None
    """The commune registry; None loads the one shipped with the package."""

    def family_list(self) -> list[Family]:
        """The families to simulate, validated, in contract order."""
        if self.families is None:
            return list(FAMILIES)
        chosen: list[Family] = []
        for name in self.families:
            try:
                chosen.append(Family(name))
            except ValueError:
                known = ", ".join(f.value for f in Family)
                raise FleetConfigError(f"unknown family {name!r}; known: {known}") from None
        return [f for f in FAMILIES if f in chosen]

    def commune_list(self, registry: CommuneRegistry) -> list[str]:
        """The INSEE codes to simulate, validated, sorted."""
        if self.communes is None:
            codes = registry.codes
        else:
            codes = list(dict.fromkeys(self.communes))
            unknown = [code for code in codes if code not in registry]
            if unknown:
                raise FleetConfigError(f"commune(s) not in the registry: {', '.join(unknown)}")
        if not codes:
            raise FleetConfigError("no commune to simulate")
        return sorted(codes)


@dataclass(frozen=True, slots=True)
class Fleet:
    """A generated fleet: one frame per family, and the faults injected into it."""

    config: FleetConfig
    start: datetime
    end: datetime
    devices: pl.DataFrame
    """One row per device: ``family``, ``insee``, ``device_id``."""
    frames: dict[str, pl.DataFrame]
    """Family name -> readings in the store convention (see the module docstring)."""
    ground_truth: pl.DataFrame
    """One row per injected fault: ``insee, family, device_id, field, kind, start, end, value``."""

    @property
    def rows(self) -> int:
        """Readings in all frames."""
        return sum(frame.height for frame in self.frames.values())


def device_ids(family: Family, insee: str, count: int) -> list[str]:
    """The ids of a commune's devices of one family, e.g. ``aq-78498-01``, ``aq-78498-02``."""
    width = max(2, len(str(count)))
    return [f"{DEVICE_PREFIXES[family]}-{insee}-{number:0{width}d}" for number in range(1, count + 1)]


def time_grid(start: datetime, end: datetime, period_s: float) -> IntArray:
    """Observed times ``start, start + period, ...`` before ``end``, in ns, on whole milliseconds."""
    if start.tzinfo is None or end.tzinfo is None:
        raise FleetConfigError("start and end must be timezone-aware datetimes (e.g. tzinfo=UTC)")
    period_ms = round(period_s * 1000)
    if period_ms < 1:
        raise FleetConfigError(f"period {period_s} s is shorter than a millisecond")
    start_ms = int(start.timestamp() * 1000)
    end_ms = int(end.timestamp() * 1000)
    if end_ms <= start_ms:
        raise FleetConfigError(f"end {end.isoformat()} is not after start {start.isoformat()}")
    out: IntArray = np.arange(start_ms, end_ms, period_ms, dtype=np.int64) * 1_000_000
    return out


def _seed(*parts: int | str) -> np.random.SeedSequence:
    """A random stream named by its parts, so one family's data does not depend on another's."""
    return np.random.SeedSequence([p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts])


def generate_fleet(config: FleetConfig, start: datetime, end: datetime | timedelta) -> Fleet:
    """Simulate every device of ``config`` from ``start`` (included) to ``end`` (excluded).

    ``end`` may be a duration. Turning faults on or off does not change the clean signal: the
    faults come from their own random stream.
    """
    if isinstance(end, timedelta):
        end = start + end
    if config.devices_per_family < 1:
        raise FleetConfigError(f"devices_per_family must be >= 1, got {config.devices_per_family}")
    registry = config.registry or CommuneRegistry.load()
    codes = config.commune_list(registry)
    families = config.family_list()
    times = time_grid(start, end, config.period_s)
    calendar = Calendar.from_times(times)
    communes = [registry[code] for code in codes]
    region = Region(
        latitudes=np.array([c.latitude for c in communes]),
        longitudes=np.array([c.longitude for c in communes]),
    )
    weather = Weather.simulate(np.random.default_rng(_seed(config.seed, "weather")), region, calendar)
    period_s = round(config.period_s * 1000) / 1000

    frames: dict[str, pl.DataFrame] = {}
    truths: list[pl.DataFrame] = []
    device_tables: list[pl.DataFrame] = []
    for family in families:
        spec = FAMILIES[family]
        tags = pl.DataFrame(
            {
                "insee": [code for code in codes for _ in range(config.devices_per_family)],
                "device_id": [
                    d for code in codes for d in device_ids(family, code, config.devices_per_family)
                ],
            }
        )
        context = SignalContext(
            rng=np.random.default_rng(_seed(config.seed, "signal", family.value)),
            calendar=calendar,
            device_commune=np.repeat(np.arange(len(codes)), config.devices_per_family),
            region=region,
            weather=weather,
            period_s=period_s,
        )
        columns = MODELS[family](context)
        injected = inject(
            spec,
            columns,
            times,
            period_s=period_s,
            rates=config.faults,
            rng=np.random.default_rng(_seed(config.seed, "faults", family.value)),
            device_tags=tags,
        )
        frames[family.value] = _frame(spec, injected, times, tags, with_received_at=config.received_at)
        truths.append(injected.ground_truth)
        device_tables.append(tags.select(pl.lit(family.value).alias("family"), "insee", "device_id"))

    ground_truth = (
        pl.concat(truths).sort("start", "insee", "device_id", "kind", "field")
        if truths
        else pl.DataFrame(schema=GROUND_TRUTH_SCHEMA)
    )
    return Fleet(
        config=config,
        start=start.astimezone(UTC),
        end=end.astimezone(UTC),
        devices=pl.concat(device_tables),
        frames=frames,
        ground_truth=ground_truth,
    )


def _frame(
    spec: FamilySpec, injected: Injected, times: IntArray, tags: pl.DataFrame, *, with_received_at: bool
) -> pl.DataFrame:
    """Flatten ``(devices, steps)`` arrays to a time-major frame, keeping present readings only.

    Each field is copied once, straight into its filtered time-major order, and its array is
    released as soon as it is copied: the peak memory stays near the size of the frame.
    """
    devices, _ = injected.present.shape
    # Boolean indexing of the transposed (steps, devices) views yields time-major order.
    keep = injected.present.T
    kept = np.flatnonzero(keep)
    step, device = np.divmod(kept, devices)
    del kept
    columns: dict[str, pl.Series] = {
        "time": pl.Series("time", times[step]).cast(pl.Datetime("ns", "UTC")),
        "insee": tags["insee"].gather(device),
        "device_id": tags["device_id"].gather(device),
    }
    del step, device
    for field_spec in spec.fields:
        values = injected.columns.pop(field_spec.name).T[keep]
        choices = ENUM_CHOICES.get((spec.family, field_spec.name))
        if choices is not None:
            series = pl.Series(field_spec.name, choices, dtype=pl.String).gather(values)
        else:
            series = pl.Series(field_spec.name, values).cast(FIELD_DTYPES[field_spec.kind])
        del values
        nulls = injected.nulls.get(field_spec.name)
        if nulls is not None:
            series.scatter(np.flatnonzero(nulls.T[keep]), None)
        columns[field_spec.name] = series.alias(field_spec.name)
    if with_received_at:
        columns["received_at"] = pl.Series("received_at", injected.received_ns.T[keep])
    return pl.DataFrame(columns)
