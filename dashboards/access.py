"""The one place where commune rights are enforced: every page, callback and API call reads here.

``CommuneData`` wraps the store for one signed-in user. Each read names its communes, is
refused with ``Forbidden`` when any of them is not the user's, and always queries the store with
an ``insee`` filter restricted to the user's communes, so no code path above can widen it.
Rights granted by EPCI or by département are the user's communes too (``User.reach``); an EPCI
is shown through ``epci``, which narrows the view to its member communes the user may see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import polars as pl

import processing.indices  # noqa: F401 - the index modules register themselves in the catalogue
from dashboards.timerange import WINDOWS, TimeRange
from dashboards.users import User
from sensors import catalogue
from sensors.catalogue import Level, indices
from sensors.communes import Commune, CommuneRegistry
from sensors.families import Family, family_spec
from sensors.lorawan.radio import MEASUREMENT_FIELDS
from sensors.territory import Epci, official
from storage.base import TIME, Store

INDICES: dict[str, tuple[str, ...]] = {name: spec.shown for name, spec in indices().items()}
"""Index measurements of the catalogue (docs/measurements.md) and their main fields."""

COMMUNE_DEVICE = "_commune"
"""``device_id`` of commune-level rows in ``traffic_congestion``."""


class AccessError(Exception):
    """Base class of the errors of this module."""


class Forbidden(AccessError):
    """The user may not see a commune they asked for."""

    def __init__(self, insee: str, message: str = "") -> None:
        super().__init__(message or f"commune {insee} is not among the communes you may see")
        self.insee = insee


class BadQuery(AccessError, ValueError):
    """The query names something that does not exist (family, resolution, commune, index)."""


def aggregate_measurement(family: str, window: str, level: Level) -> str:
    """``air_quality_1h`` or ``air_quality_1h_commune``; ``BadQuery`` for an unknown name."""
    if family_spec(family) is None:
        raise BadQuery(f"unknown family {family!r}: expected one of {', '.join(f.value for f in Family)}")
    if window not in WINDOWS:
        raise BadQuery(f"unknown resolution {window!r}: expected one of {', '.join(WINDOWS)}")
    return catalogue.aggregate_measurement(family, window, level)


@dataclass(frozen=True, slots=True)
class CommuneData:
    """The store as one user may see it."""

    store: Store
    user: User
    registry: CommuneRegistry
    scope: frozenset[str] | None = None
    """When set (an API token narrowed to some communes), only these of the user's communes."""

    # -- rights -----------------------------------------------------------------------------

    def may_see(self, insee: str) -> bool:
        """Whether the user, within this scope, may see the commune."""
        return self.user.may_see(insee) and (self.scope is None or insee in self.scope)

    def communes(self) -> list[Commune]:
        """The registry's communes this user may see, in registry order."""
        return [c for c in self.registry if self.may_see(c.insee)]

    def check(self, insee: str) -> Commune:
        """The commune when the user may see it; ``Forbidden`` or ``BadQuery`` otherwise.

        Rights are checked before existence, so a non-admin learns nothing about other codes.
        """
        if not self.user.may_see(insee):
            raise Forbidden(insee)
        if not self.may_see(insee):
            raise Forbidden(insee, f"commune {insee} is not among the communes of this API token")
        commune = self.registry.get(insee)
        if commune is None:
            raise BadQuery(f"unknown commune {insee!r}: not in the commune registry")
        return commune

    def resolve(self, communes: Sequence[str] | None) -> list[str]:
        """The asked communes after checking each; all the user's communes when none is asked."""
        if not communes:
            return [c.insee for c in self.communes()]
        return [self.check(code).insee for code in dict.fromkeys(communes)]

    def within(self, codes: Sequence[str]) -> CommuneData:
        """This view narrowed to ``codes`` (never widened: the user's rights and scope still hold)."""
        narrowed = frozenset(codes) if self.scope is None else self.scope & frozenset(codes)
        return replace(self, scope=narrowed)

    def epcis(self) -> list[tuple[Epci, list[Commune]]]:
        """Each EPCI with served communes the user may see, with those communes, in registry order."""
        territory = official()
        found: dict[str, tuple[Epci, list[Commune]]] = {}
        for commune in self.communes():
            epci = territory.epci(commune.epci) if commune.epci else None
            if epci is not None:
                found.setdefault(epci.siren, (epci, []))[1].append(commune)
        return list(found.values())

    def epci(self, siren: str) -> tuple[Epci, list[Commune]]:
        """An EPCI and its served member communes the user may see.

        ``Forbidden`` when the user may see none of its communes (whether it exists or not, so a
        non-admin learns nothing); ``BadQuery`` for an administrator naming an unknown SIREN.
        """
        for epci, communes in self.epcis():
            if epci.siren == siren:
                return epci, communes
        found = official().epci(siren) if self.user.is_admin and self.scope is None else None
        if found is not None:
            return found, []
        if self.user.is_admin and self.scope is None:
            raise BadQuery(f"unknown EPCI {siren!r}: not a SIREN of the official registry")
        raise Forbidden(siren, f"EPCI {siren} has none of the communes you may see")

    # -- reads ------------------------------------------------------------------------------

    def _read(
        self,
        measurement: str,
        communes: Sequence[str] | None,
        span: TimeRange,
        *,
        where: dict[str, str | Sequence[str]] | None = None,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        codes = self.resolve(communes)
        if not codes:
            return pl.DataFrame({TIME: pl.Series([], dtype=pl.Datetime("ns", "UTC")), "insee": []})
        # The insee filter is set last, so nothing passed in ``where`` can widen it.
        filters: dict[str, str | Sequence[str]] = {**(where or {}), "insee": codes}
        return self.store.read(measurement, start=span.start, end=span.end, where=filters, fields=fields)

    def aggregates(
        self,
        family: str,
        communes: Sequence[str] | None,
        span: TimeRange,
        window: str,
        *,
        level: Level = "commune",
        fields: Sequence[str] | None = None,
        device_id: str | None = None,
    ) -> pl.DataFrame:
        """Rolling aggregates (``f_mean``, ``f_min``...) at one resolution."""
        measurement = aggregate_measurement(family, window, level)
        where: dict[str, str | Sequence[str]] = {"device_id": device_id} if device_id else {}
        return self._read(measurement, communes, span, where=where, fields=fields)

    def kept_window(
        self,
        family: str,
        span: TimeRange,
        window: str,
        *,
        level: Level = "commune",
        now: datetime | None = None,
    ) -> str:
        """``window``, or the next coarser resolution when the store no longer keeps ``window``'s
        aggregates as far back as ``span.start`` (the minute aggregates are kept weeks, the
        others years: ``Store.retention``)."""
        now = now or datetime.now(UTC)
        names = list(WINDOWS)
        for name in names[names.index(window) :]:
            kept = self.store.retention(catalogue.aggregate_measurement(family, name, level))
            if kept is None or span.start >= now - kept:
                return name
        return names[-1]

    def readings(
        self,
        family: str,
        insee: str,
        span: TimeRange,
        *,
        device_id: str | Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Raw readings of one commune (optionally of one device, or of some)."""
        if family_spec(family) is None:
            raise BadQuery(f"unknown family {family!r}: expected one of {', '.join(f.value for f in Family)}")
        where: dict[str, str | Sequence[str]] = {} if device_id is None else {"device_id": device_id}
        return self._read(family, [insee], span, where=where, fields=fields)

    def index(
        self,
        name: str,
        communes: Sequence[str] | None,
        span: TimeRange,
        *,
        fields: Sequence[str] | None = None,
        where: dict[str, str | Sequence[str]] | None = None,
    ) -> pl.DataFrame:
        """An index measurement: ``atmo_daily``, ``traffic_congestion``..."""
        if name not in INDICES:
            raise BadQuery(f"unknown index {name!r}: expected one of {', '.join(INDICES)}")
        return self._read(name, communes, span, fields=fields, where=where)

    def lorawan(self, measurement: str, insee: str, span: TimeRange, *, device_id: str) -> pl.DataFrame:
        """A LoRaWAN device's ``lorawan_radio`` or ``lorawan_status`` rows (docs/measurements.md)."""
        if measurement not in MEASUREMENT_FIELDS:
            raise BadQuery(
                f"unknown measurement {measurement!r}: expected one of {', '.join(MEASUREMENT_FIELDS)}"
            )
        return self._read(measurement, [insee], span, where={"device_id": device_id})

    def anomalies(
        self,
        communes: Sequence[str] | None,
        span: TimeRange,
        *,
        device_id: str | None = None,
        kind: str | None = None,
    ) -> pl.DataFrame:
        """Anomalies that started in the range (one row per anomaly), of one kind when asked."""
        where: dict[str, str | Sequence[str]] = {"device_id": device_id} if device_id else {}
        if kind:
            where["kind"] = kind
        return self._read("anomalies", communes, span, where=where)

    def alerts(self, communes: Sequence[str] | None, span: TimeRange) -> pl.DataFrame:
        """Alert transitions (pending, firing, resolved) in the range."""
        return self._read("alert_events", communes, span)

    def open_alerts(
        self, communes: Sequence[str] | None, now: datetime, lookback_days: int = 90
    ) -> pl.DataFrame:
        """The alerts whose latest transition is ``firing``: one row per (insee, rule, scope)."""
        events = self.alerts(
            communes, TimeRange(now - timedelta(days=lookback_days), now + timedelta(minutes=1))
        )
        if events.is_empty() or "state" not in events.columns:
            return events.head(0)
        latest = events.sort(TIME).group_by("insee", "rule", "scope", maintain_order=True).last()
        return latest.filter(pl.col("state") == "firing")

    def devices(self, communes: Sequence[str] | None) -> pl.DataFrame:
        """Every device seen: ``family``, ``insee``, ``device_id``, ``last_time``, ``period_s``."""
        codes = self.resolve(communes)
        frames = []
        for family in Family:
            if not codes:
                break
            seen = self.store.series(family.value, where={"insee": codes})
            if seen.is_empty():
                continue
            spec = family_spec(family.value)
            frames.append(
                seen.select(
                    pl.lit(family.value).alias("family"),
                    pl.col("insee"),
                    pl.col("device_id"),
                    pl.col("last_time").cast(pl.Datetime("ns", "UTC")),
                    pl.lit(spec.reporting_period_s if spec else 60.0).alias("period_s"),
                )
            )
        if not frames:
            return pl.DataFrame(
                schema={
                    "family": pl.String,
                    "insee": pl.String,
                    "device_id": pl.String,
                    "last_time": pl.Datetime("ns", "UTC"),
                    "period_s": pl.Float64,
                }
            )
        return pl.concat(frames).sort("insee", "family", "device_id")


Clock = Callable[[], datetime]
"""What the pages read the time from: the real clock, or a fixed one where the data is fixed."""


def utc_now() -> datetime:
    """The current time, UTC: the clock the server runs on unless ``create_app`` is given another."""
    return datetime.now(UTC)
