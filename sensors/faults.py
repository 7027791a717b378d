"""Fault injection for the fleet simulator, and the ground truth of what was injected.

Two kinds of rate:

* **events per device-day** for faults that last or that hit one reading of one field:
  ``spike``, ``stuck``, ``drift``, ``offline``, ``reset`` (cumulative counters),
  ``out_of_bounds``, ``down`` (network link or camera video lost), ``tamper`` (camera). A rate
  of 0.5 means on average one event every two days per device (drawn from a Poisson law, so
  short simulations may get none);
* **probability per reading** for faults of delivery: ``dropout``, ``late``, ``out_of_order``,
  ``duplicate``, ``malformed``.

Faults never hide one another: a spike is never placed where the device is offline, a
dropout never removes a spiked reading, two faults never share a (device, field, reading), so
the ground truth says exactly what can be seen in the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

from sensors.families import Family, FamilySpec
from sensors.signals import FAULTABLE_FIELDS, SMOOTH_FIELDS, BoolArray, Columns, FloatArray, IntArray


class FaultKind(StrEnum):
    """What the simulator can inject; the value is the ``kind`` column of the ground truth."""

    SPIKE = "spike"
    STUCK = "stuck"
    DRIFT = "drift"
    DROPOUT = "dropout"
    OFFLINE = "offline"
    LATE = "late"
    OUT_OF_ORDER = "out_of_order"
    DUPLICATE = "duplicate"
    MALFORMED = "malformed"
    RESET = "reset"
    OUT_OF_BOUNDS = "out_of_bounds"
    DOWN = "down"
    TAMPER = "tamper"


PER_DEVICE_DAY = frozenset(
    {
        FaultKind.SPIKE,
        FaultKind.STUCK,
        FaultKind.DRIFT,
        FaultKind.OFFLINE,
        FaultKind.RESET,
        FaultKind.OUT_OF_BOUNDS,
        FaultKind.DOWN,
        FaultKind.TAMPER,
    }
)
"""Kinds rated in events per device-day; the others are rated per reading."""

WIRE_ONLY = frozenset({FaultKind.DUPLICATE, FaultKind.MALFORMED, FaultKind.OUT_OF_BOUNDS})
"""Kinds that only show on the MQTT path: in ``Fleet.frames`` a duplicate is one row, a malformed
reading and an out-of-bounds field are absent (as the store would hold them)."""


class FaultSpecError(ValueError):
    """A ``--faults`` specification cannot be understood; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class FaultRates:
    """How often each fault is injected. See the module docstring for the units."""

    spike: float = 0.0
    stuck: float = 0.0
    drift: float = 0.0
    offline: float = 0.0
    reset: float = 0.0
    out_of_bounds: float = 0.0
    dropout: float = 0.0
    late: float = 0.0
    out_of_order: float = 0.0
    duplicate: float = 0.0
    malformed: float = 0.0
    down: float = 0.0
    tamper: float = 0.0

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise FaultSpecError(f"fault rate {item.name}={value!r} must be a finite number >= 0")
            if item.name not in {k.value for k in PER_DEVICE_DAY} and value > 1:
                raise FaultSpecError(
                    f"fault rate {item.name}={value} is a probability per reading: at most 1"
                )

    @classmethod
    def none(cls) -> FaultRates:
        """No fault at all: clean data."""
        return cls()

    @classmethod
    def default(cls) -> FaultRates:
        """A few of every kind: what the demo runs with."""
        return cls(
            spike=1.0,
            stuck=0.3,
            drift=0.1,
            offline=0.2,
            reset=0.1,
            out_of_bounds=0.2,
            dropout=0.002,
            late=0.002,
            out_of_order=0.002,
            duplicate=0.002,
            malformed=0.001,
            down=0.2,
            tamper=0.1,
        )

    @classmethod
    def parse(cls, text: str) -> FaultRates:
        """Read ``none``, ``default``, or ``kind=rate,...`` (starting from none, or from the
        defaults when the list begins with ``default,``)."""
        text = text.strip()
        if text in ("", "none"):
            return cls.none()
        parts = [part.strip() for part in text.split(",") if part.strip()]
        rates = cls.default() if parts and parts[0] == "default" else cls.none()
        if parts and parts[0] == "default":
            parts = parts[1:]
        known = {item.name for item in fields(cls)}
        changes: dict[str, float] = {}
        for part in parts:
            name, sep, value = part.partition("=")
            name = name.strip().replace("-", "_")
            if not sep:
                raise FaultSpecError(f"fault {part!r}: expected kind=rate, e.g. spike=0.5")
            if name not in known:
                raise FaultSpecError(f"unknown fault kind {name!r}; known: {', '.join(sorted(known))}")
            try:
                changes[name] = float(value)
            except ValueError:
                raise FaultSpecError(f"fault {name}: rate {value.strip()!r} is not a number") from None
        return replace(rates, **changes)

    def enabled(self) -> list[str]:
        """Names of the kinds with a non-zero rate."""
        return [item.name for item in fields(self) if getattr(self, item.name) > 0]

    def __str__(self) -> str:
        return ",".join(f"{name}={getattr(self, name):g}" for name in self.enabled()) or "none"


GROUND_TRUTH_SCHEMA: dict[str, pl.DataType] = {
    "insee": pl.String(),
    "family": pl.String(),
    "device_id": pl.String(),
    "field": pl.String(),
    "kind": pl.String(),
    "start": pl.Datetime("ns", "UTC"),
    "end": pl.Datetime("ns", "UTC"),
    "value": pl.Float64(),
}
"""Columns of ``Fleet.ground_truth``; ``field`` is "" for faults of a whole reading."""


@dataclass(slots=True)
class _Truth:
    """Ground-truth rows being collected, as index arrays (device, start step, end step)."""

    device: list[IntArray] = field(default_factory=list)
    start: list[IntArray] = field(default_factory=list)
    end: list[IntArray] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)
    kind: list[list[str]] = field(default_factory=list)
    value: list[FloatArray] = field(default_factory=list)
    end_ns: list[IntArray] = field(default_factory=list)
    """Explicit end times (late readings end when received); -1 means: the end step's time."""

    def add(
        self,
        kind: FaultKind,
        device: IntArray,
        start: IntArray,
        end: IntArray,
        *,
        field_names: Sequence[str] | str = "",
        value: FloatArray | None = None,
        end_ns: IntArray | None = None,
    ) -> None:
        n = len(device)
        if n == 0:
            return
        self.device.append(device.astype(np.int64))
        self.start.append(start.astype(np.int64))
        self.end.append(end.astype(np.int64))
        self.names.append([field_names] * n if isinstance(field_names, str) else list(field_names))
        self.kind.append([kind.value] * n)
        self.value.append(np.full(n, np.nan) if value is None else value.astype(np.float64))
        self.end_ns.append(np.full(n, -1, dtype=np.int64) if end_ns is None else end_ns.astype(np.int64))


@dataclass(slots=True)
class Injected:
    """A family's arrays after fault injection."""

    columns: Columns
    present: BoolArray
    """``(devices, steps)``: whether the reading reaches the store."""
    received_ns: IntArray
    """``(devices, steps)``: when the reading is delivered (observed time + latency, or later)."""
    nulls: dict[str, BoolArray]
    """Field -> mask of readings where the field is absent in the store (out of bounds)."""
    ground_truth: pl.DataFrame


class _Occupancy:
    """Which (device, field, step) already carry a fault, so faults never hide one another."""

    def __init__(self, devices: int, steps: int) -> None:
        self.shape = (devices, steps)
        self.by_field: dict[str, BoolArray] = {}
        self.any_field = np.zeros(self.shape, dtype=np.bool_)

    def mask(self, name: str) -> BoolArray:
        if name not in self.by_field:
            self.by_field[name] = np.zeros(self.shape, dtype=np.bool_)
        return self.by_field[name]

    def claim(self, name: str, device: int, start: int, stop: int) -> bool:
        """Reserve ``[start, stop)`` of one device's field; False when any of it is taken."""
        mask = self.mask(name)
        if mask[device, start:stop].any():
            return False
        mask[device, start:stop] = True
        self.any_field[device, start:stop] = True
        return True


def inject(
    spec: FamilySpec,
    columns: Columns,
    times_ns: IntArray,
    *,
    period_s: float,
    rates: FaultRates,
    rng: np.random.Generator,
    device_tags: pl.DataFrame,
) -> Injected:
    """Inject faults into one family's ``(devices, steps)`` arrays (modified in place).

    ``device_tags`` has one row per device (``insee``, ``device_id``) in the arrays' order.
    """
    injector = _Injector(spec, columns, times_ns, period_s, rng)
    injector.offline(rates.offline)
    if len(times_ns) >= 2:
        injector.drift(rates.drift)
        injector.stuck(rates.stuck)
        injector.spike(rates.spike)
        injector.out_of_bounds(rates.out_of_bounds)
        injector.reset(rates.reset)
    injector.delivery(rates)
    # Last, so that adding these kinds left every other fault where it was for a given seed.
    injector.status(FaultKind.DOWN, rates.down, DOWN_EFFECTS)
    injector.status(FaultKind.TAMPER, rates.tamper, TAMPER_EFFECTS)
    return Injected(
        columns=columns,
        present=injector.present,
        received_ns=injector.received,
        nulls=injector.nulls,
        ground_truth=_truth_frame(injector.truth, spec, times_ns, device_tags),
    )


StatusEffects = dict[Family, tuple[str, dict[str, float | bool]]]
"""Family -> (the status field the device reports, the values of its fields meanwhile)."""

NOBODY: dict[str, float | bool] = {
    "peopleCount": 0,
    "peopleCountTowards": 0,
    "peopleCountAway": 0,
    "elevatedTemperatureCount": 0,
}
"""A camera that cannot see counts nobody."""

DOWN_EFFECTS: StatusEffects = {
    Family.NETWORK: ("linkUp", {"linkUp": False, "throughputIn": 0.0, "throughputOut": 0.0}),
    Family.CAMERA: (
        "online",
        {"online": False, "framesPerSecond": 0.0, **NOBODY},
    ),
}
"""``down``: the device still reports, and reports that it does not work (fibre cut, video lost)."""

TAMPER_EFFECTS: StatusEffects = {
    Family.CAMERA: ("tampered", {"tampered": True, **NOBODY}),
}
"""``tamper``: a camera masked or turned away flags it, and counts nobody meanwhile."""

TruthRow = tuple[int, int, int, str, float]
"""(device, first step, last step, field, value) of one fault."""


class _Injector:
    """The fault injection of one family: the arrays, what is taken, and the ground truth."""

    def __init__(
        self,
        spec: FamilySpec,
        columns: Columns,
        times_ns: IntArray,
        period_s: float,
        rng: np.random.Generator,
    ) -> None:
        self.spec = spec
        self.columns = columns
        self.times_ns = times_ns
        self.period_s = period_s
        self.rng = rng
        self.devices = len(next(iter(columns.values())))
        self.steps = len(times_ns)
        self.present = np.ones((self.devices, self.steps), dtype=np.bool_)
        # Normal network latency: 20 to 400 ms.
        self.received = rng.integers(20_000_000, 400_000_000, (self.devices, self.steps), dtype=np.int64)
        self.received += times_ns[None, :]
        self.nulls: dict[str, BoolArray] = {}
        self.truth = _Truth()
        self.taken = _Occupancy(self.devices, self.steps)

    def events(self, rate: float) -> tuple[IntArray, IntArray]:
        """Devices and start steps of Poisson-distributed events (``rate`` per device-day)."""
        days = self.steps * self.period_s / 86400
        counts = self.rng.poisson(rate * days, self.devices) if rate > 0 else np.zeros(self.devices, np.int64)
        device = np.repeat(np.arange(self.devices), counts)
        return device, self.rng.integers(0, max(self.steps, 1), len(device))

    def lengths(self, low_h: float, high_h: float, minimum: int, n: int) -> IntArray:
        """``n`` event lengths in readings, from ``low_h`` to ``high_h`` hours, at least ``minimum``."""
        hours = self.rng.uniform(low_h, high_h, n)
        return np.maximum(minimum, np.round(hours * 3600 / self.period_s)).astype(np.int64)

    def fields_for(self, candidates: Sequence[str], n: int) -> list[str]:
        """``n`` field names drawn among the candidates this family's arrays have."""
        names = [name for name in candidates if name in self.columns]
        if not names:
            return []
        return [names[i] for i in self.rng.integers(0, len(names), n)]

    def bounds(self, name: str) -> tuple[float, float]:
        """The physical bounds of a field (infinite where the contract sets none)."""
        field_spec = self.spec.field(name)
        assert field_spec is not None
        low = field_spec.minimum if field_spec.minimum is not None else -math.inf
        high = field_spec.maximum if field_spec.maximum is not None else math.inf
        return low, high

    def claimable(self, device: int, start: int, stop: int, name: str) -> bool:
        """Whether a fault may go on ``[start, stop)``: online all along and untouched."""
        return bool(self.present[device, start:stop].all()) and self.taken.claim(name, device, start, stop)

    def record(self, kind: FaultKind, rows: list[TruthRow]) -> None:
        """Add per-event rows to the ground truth."""
        if not rows:
            return
        device, start, end, names, value = zip(*rows, strict=True)
        self.truth.add(
            kind,
            np.array(device, dtype=np.int64),
            np.array(start, dtype=np.int64),
            np.array(end, dtype=np.int64),
            field_names=list(names),
            value=np.array(value, dtype=np.float64),
        )

    def offline(self, rate: float) -> None:
        """Long silences: the device sends nothing from start to end. Placed first, so that the
        other faults are only placed where the device is online."""
        device, start = self.events(rate)
        stop = np.minimum(
            start + np.minimum(self.lengths(0.5, 6.0, 3, len(device)), max(1, self.steps // 2)), self.steps
        )
        kept = _keep_disjoint(device, start, stop)
        for d, s, e in zip(device[kept], start[kept], stop[kept], strict=True):
            self.present[d, s:e] = False
        self.truth.add(FaultKind.OFFLINE, device[kept], start[kept], stop[kept] - 1)

    def drift(self, rate: float) -> None:
        """A slow linear ramp away from the neighbours, then a recalibration back to normal."""
        device, start = self.events(rate)
        names = self.fields_for(SMOOTH_FIELDS[self.spec.family], len(device))
        spans = self.lengths(2.0, 12.0, 10, len(device))
        signs = self.rng.choice(np.array([-1.0, 1.0]), len(device))
        rows: list[TruthRow] = []
        for d, s, n, name, sign in zip(
            device.tolist(), start.tolist(), spans.tolist(), names, signs, strict=True
        ):
            e = min(s + n, self.steps)
            if e - s < 3 or not self.claimable(d, s, e, name):
                continue
            values = self.columns[name]
            low, high = self.bounds(name)
            size = 2.5 * _scale(values[d])
            # Drift where there is room for it: the ramp must not be flattened by the bounds.
            room = {1.0: high - float(values[d, s:e].max()), -1.0: float(values[d, s:e].min()) - low}
            side = -sign if room[sign] < size and room[-sign] > room[sign] else sign
            total = float(side * min(size, 0.9 * room[side]))
            if total == 0:
                continue
            values[d, s:e] = values[d, s:e] + np.linspace(0.0, total, e - s)
            rows.append((d, s, e - 1, name, total))
        self.record(FaultKind.DRIFT, rows)

    def stuck(self, rate: float) -> None:
        """A flatline: the field repeats the value it had when it froze."""
        device, start = self.events(rate)
        names = self.fields_for(SMOOTH_FIELDS[self.spec.family], len(device))
        spans = self.lengths(0.5, 3.0, 5, len(device))
        rows: list[TruthRow] = []
        for d, s, n, name in zip(device.tolist(), start.tolist(), spans.tolist(), names, strict=True):
            e = min(s + n, self.steps)
            if e - s < 3 or not self.claimable(d, s, e, name):
                continue
            values = self.columns[name]
            values[d, s:e] = values[d, s]
            rows.append((d, s, e - 1, name, float(values[d, s])))
        self.record(FaultKind.STUCK, rows)

    def spike(self, rate: float) -> None:
        """One to three readings far from the device's usual values, still physically possible."""
        device, start = self.events(rate)
        names = self.fields_for(FAULTABLE_FIELDS[self.spec.family], len(device))
        spans = self.rng.integers(1, 4, len(device))
        rows: list[TruthRow] = []
        for d, s, n, name in zip(device.tolist(), start.tolist(), spans.tolist(), names, strict=True):
            e = min(s + n, self.steps)
            if not self.claimable(d, s, e, name):
                continue
            values = self.columns[name]
            low, high = self.bounds(name)
            magnitude = max(8 * _scale(values[d]), 1e-3 * min(high - low, 1e6))
            base = float(values[d, s])
            # Upwards unless that leaves the physical range (a spike is a plausible, wrong value),
            # else downwards, else as far as the range allows on its roomier side.
            up, down = high - base, base - low
            if up >= magnitude:
                target = base + magnitude
            elif down >= magnitude:
                target = base - magnitude
            else:
                target = base + 0.9 * up if up >= down else base - 0.9 * down
            if values.dtype.kind in "iu":
                target = float(round(target))
            values[d, s:e] = target
            rows.append((d, s, e - 1, name, target))
        self.record(FaultKind.SPIKE, rows)

    def out_of_bounds(self, rate: float) -> None:
        """One reading of one field beyond its physical bounds: the decoder refuses the field, so
        the store (and ``Fleet.frames``) holds a null there; the wire carries the bad value."""
        device, start = self.events(rate)
        bounded = [
            name
            for name in FAULTABLE_FIELDS[self.spec.family]
            if (f := self.spec.field(name)) is not None and f.maximum is not None and f.minimum is not None
        ]
        names = self.fields_for(bounded, len(device))
        rows: list[TruthRow] = []
        for d, s, name in zip(device.tolist(), start.tolist(), names, strict=True):
            if not self.claimable(d, s, s + 1, name):
                continue
            low, high = self.bounds(name)
            bad = high + (high - low) * 0.5 if high < 1e8 else low - (high - low) * 0.5
            self.nulls.setdefault(name, np.zeros(self.present.shape, dtype=np.bool_))[d, s] = True
            rows.append((d, s, s, name, float(round(bad))))
        self.record(FaultKind.OUT_OF_BOUNDS, rows)

    def reset(self, rate: float) -> None:
        """Every counter of the device restarts from zero (a reboot or a meter exchange).

        Recorded for each counter where the drop shows: a counter still at zero shows nothing.
        """
        counters = [f.name for f in self.spec.fields if f.counter and f.name in self.columns]
        device, start = self.events(rate)
        if not counters:
            return
        # The first reading after the reset (later than the event if the device is silent then)
        # and the last reading before it: the drop is seen between the two.
        resets: list[tuple[int, int, int]] = []
        for d, s in zip(device.tolist(), start.tolist(), strict=True):
            after = np.flatnonzero(self.present[d, s:])
            before = np.flatnonzero(self.present[d, :s])
            if len(after) and len(before):
                resets.append((d, s + int(after[0]), int(before[-1])))
        rows: list[TruthRow] = []
        last: dict[int, int] = {}
        # In time order per device: a reset shifts everything after it, later resets included.
        for d, first, previous in sorted(resets):
            if first <= last.get(d, -2) + 1:
                continue  # two resets in a row would look like one
            last[d] = first
            for name in counters:
                values = self.columns[name]
                increment = values[d, first] - values[d, first - 1]
                if values[d, previous] <= increment:
                    continue
                values[d, first:] -= values[d, first] - increment
                rows.append((d, first, first, name, float(values[d, first])))
                self.taken.any_field[d, first] = True  # a dropout there would hide the reset
        self.record(FaultKind.RESET, rows)

    def status(self, kind: FaultKind, rate: float, effects: StatusEffects) -> None:
        """Periods of 5 min to 2 h where the device reports a failure of its own (``down``,
        ``tamper``), on readings no other fault touches."""
        if self.spec.family not in effects:
            return
        status_field, values = effects[self.spec.family]
        names = [name for name in values if name in self.columns]
        device, start = self.events(rate)
        spans = self.lengths(5 / 60, 2.0, 2, len(device))
        rows: list[TruthRow] = []
        for d, s, n in zip(device.tolist(), start.tolist(), spans.tolist(), strict=True):
            e = min(s + n, self.steps)
            if not self.present[d, s:e].all() or self.taken.any_field[d, s:e].any():
                continue
            for name in names:
                self.taken.claim(name, d, s, e)
                self.columns[name][d, s:e] = values[name]
            rows.append((d, s, e - 1, status_field, math.nan))
        self.record(kind, rows)

    def draw(self, rate: float) -> tuple[IntArray, IntArray]:
        """Readings hit by a per-reading fault, among those no other fault touches."""
        total = self.devices * self.steps
        if rate <= 0 or total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        flat = np.unique(self.rng.integers(0, total, self.rng.binomial(total, rate)))
        d, s = np.divmod(flat, self.steps)
        ok = self.present[d, s] & ~self.taken.any_field[d, s]
        return d[ok], s[ok]

    def delivery(self, rates: FaultRates) -> None:
        """Faults of delivery: dropouts, malformed payloads, out-of-order, late, duplicates."""
        for kind, rate in ((FaultKind.DROPOUT, rates.dropout), (FaultKind.MALFORMED, rates.malformed)):
            d, s = self.draw(rate)
            self.present[d, s] = False
            self.truth.add(kind, d, s, s)

        d, s = self.draw(rates.out_of_order)
        # Sent just after the next reading, which must exist for the order to be broken; two
        # neighbouring swaps would cancel out, so a swap's neighbours are left alone.
        flat = d * self.steps + s
        ok = (s + 1 < self.steps) & self.present[d, np.minimum(s + 1, self.steps - 1)]
        ok &= ~np.isin(flat + 1, flat) & ~np.isin(flat - 1, flat)
        ok &= ~self.taken.any_field[d, np.minimum(s + 1, self.steps - 1)]
        d, s = d[ok], s[ok]
        period_ns = round(self.period_s * 1e9)
        self.received[d, s] = self.received[d, s + 1] + self.rng.integers(
            1_000_000, max(2_000_000, period_ns // 2), len(d)
        )
        self.taken.any_field[d, s] = True
        self.taken.any_field[d, s + 1] = True
        self.truth.add(FaultKind.OUT_OF_ORDER, d, s, s, end_ns=self.received[d, s])

        d, s = self.draw(rates.late)
        low_s, high_s = max(120.0, 3 * self.period_s), max(1800.0, 20 * self.period_s)
        self.received[d, s] = self.times_ns[s] + (self.rng.uniform(low_s, high_s, len(d)) * 1e9).astype(
            np.int64
        )
        self.taken.any_field[d, s] = True
        self.truth.add(FaultKind.LATE, d, s, s, end_ns=self.received[d, s])

        d, s = self.draw(rates.duplicate)
        self.truth.add(FaultKind.DUPLICATE, d, s, s)


def _keep_disjoint(device: IntArray, start: IntArray, stop: IntArray) -> npt.NDArray[np.bool_]:
    """Mask of events that do not overlap an earlier kept event of the same device."""
    keep = np.zeros(len(device), dtype=np.bool_)
    kept_spans: dict[int, list[tuple[int, int]]] = {}
    for i, (d, s, e) in enumerate(zip(device.tolist(), start.tolist(), stop.tolist(), strict=True)):
        spans = kept_spans.setdefault(d, [])
        if all(e <= s0 or s >= e0 for s0, e0 in spans):
            spans.append((s, e))
            keep[i] = True
    return keep


def _scale(row: npt.NDArray[np.generic]) -> float:
    """A device's typical variation of a field: its spread plus its step-to-step noise."""
    values = row.astype(np.float64)
    return float(np.std(values) + np.std(np.diff(values)))


def _truth_frame(
    truth: _Truth, spec: FamilySpec, times_ns: IntArray, device_tags: pl.DataFrame
) -> pl.DataFrame:
    if not truth.device:
        return pl.DataFrame(schema=GROUND_TRUTH_SCHEMA)
    device = np.concatenate(truth.device)
    end_ns = np.concatenate(truth.end_ns)
    end_ns = np.where(end_ns >= 0, end_ns, times_ns[np.concatenate(truth.end)])
    frame = pl.DataFrame(
        {
            "insee": device_tags["insee"].gather(device),
            "family": pl.Series([spec.family.value] * len(device), dtype=pl.String),
            "device_id": device_tags["device_id"].gather(device),
            "field": pl.Series([name for names in truth.names for name in names], dtype=pl.String),
            "kind": pl.Series([kind for kinds in truth.kind for kind in kinds], dtype=pl.String),
            "start": pl.Series(times_ns[np.concatenate(truth.start)]).cast(pl.Datetime("ns", "UTC")),
            "end": pl.Series(end_ns).cast(pl.Datetime("ns", "UTC")),
            "value": pl.Series(np.concatenate(truth.value), nan_to_null=True),
        }
    )
    return frame.sort("start", "insee", "device_id", "kind", "field")


def write_ground_truth(frame: pl.DataFrame, path: str | Path) -> Path:
    """Write the ground truth as Parquet (``.parquet``) or CSV (anything else).

    CSV times are RFC 3339 UTC with nanoseconds; ``read_ground_truth`` reads either back.
    """
    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.write_parquet(path)
    else:
        frame.with_columns(
            pl.col("start", "end").dt.strftime("%Y-%m-%dT%H:%M:%S%.9fZ"),
        ).write_csv(path)
    return path


def read_ground_truth(path: str | Path) -> pl.DataFrame:
    """Read a ground-truth file written by ``write_ground_truth`` (``GROUND_TRUTH_SCHEMA``)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pl.read_parquet(path).cast(GROUND_TRUTH_SCHEMA)  # type: ignore[arg-type]
    text_schema = {name: pl.String() for name in GROUND_TRUTH_SCHEMA} | {"value": pl.Float64()}
    frame = pl.read_csv(path, schema=text_schema)
    return frame.with_columns(
        pl.col("field").fill_null(""),
        pl.col("start", "end").str.to_datetime("%Y-%m-%dT%H:%M:%S%.9fZ", time_unit="ns", time_zone="UTC"),
    )
