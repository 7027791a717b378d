"""The signal model of the fleet simulator: what a clean device of each family reports.

Every function here works on whole arrays of shape ``(devices, steps)``: there is no loop over
readings, so a day of thousands of devices is generated in seconds.

A value is built from

* a **profile** of the local time of day and day of week (Europe/Paris): rush hours, opening
  hours, the afternoon ozone peak, the evening peak of home internet use;
* a **commune-wide component** shared by every device of the commune (weather, background
  pollution), correlated between communes by their distance (closer communes move together);
* a **device component**: a constant offset (calibration, siting) plus slow drift-free
  variations of its own;
* **white noise** at the sensor's resolution.

Values of clean data always stay inside the physical bounds of ``sensors.families``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from sensors.families import Family

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

LOCAL_TIME_ZONE = "Europe/Paris"
CORRELATION_LENGTH_KM = 15.0
"""Distance at which the commune-wide components of two communes are e^-1 correlated."""


@dataclass(frozen=True, slots=True)
class Calendar:
    """The time grid of a simulation and what each step means in local time."""

    times_ns: IntArray
    """Observed time of each step, ns since the Unix epoch (UTC)."""
    elapsed_s: FloatArray
    """Seconds since the first step."""
    hour: FloatArray
    """Local (Europe/Paris) hour of day as a fraction, e.g. 8.5 for 08:30."""
    workday: BoolArray
    """Monday to Friday (public holidays are not modelled)."""
    day_of_year: FloatArray

    @classmethod
    def from_times(cls, times_ns: IntArray) -> Calendar:
        """Compute local hour, weekday and season for each step of a UTC time grid."""
        local = pl.Series(times_ns, dtype=pl.Int64).cast(pl.Datetime("ns", "UTC"))
        local = local.dt.convert_time_zone(LOCAL_TIME_ZONE)
        hour = (
            local.dt.hour().cast(pl.Float64)
            + local.dt.minute().cast(pl.Float64) / 60
            + local.dt.second().cast(pl.Float64) / 3600
        ).to_numpy()
        weekday = local.dt.weekday().to_numpy()  # 1 = Monday ... 7 = Sunday
        return cls(
            times_ns=times_ns,
            elapsed_s=(times_ns - times_ns[0]).astype(np.float64) / 1e9 if len(times_ns) else np.zeros(0),
            hour=hour.astype(np.float64),
            workday=weekday <= 5,
            day_of_year=local.dt.ordinal_day().to_numpy().astype(np.float64),
        )

    @property
    def steps(self) -> int:
        """Number of steps."""
        return len(self.times_ns)


def bump(hour: FloatArray, centre: float, width: float) -> FloatArray:
    """A Gaussian bump of height 1 around ``centre`` hours (wrapping round midnight)."""
    distance = np.abs(hour - centre)
    distance = np.minimum(distance, 24 - distance)
    out: FloatArray = np.exp(-0.5 * (distance / width) ** 2)
    return out


def window(hour: FloatArray, opens: float, closes: float, sharpness: float = 3.0) -> FloatArray:
    """About 1 between ``opens`` and ``closes`` hours, 0 outside, with soft edges."""
    out: FloatArray = (
        1 / (1 + np.exp(-(hour - opens) * sharpness)) / (1 + np.exp(-(closes - hour) * sharpness))
    )
    return out


def smooth_noise(
    rng: np.random.Generator, series: int, elapsed_s: FloatArray, spacing_s: float
) -> FloatArray:
    """Slowly varying noise of roughly unit scale, one row per series.

    Random knots every ``spacing_s`` seconds joined by smooth steps: cheaper than an AR process
    and just as plausible for weather or background pollution.
    """
    steps = len(elapsed_s)
    if steps == 0:
        return np.zeros((series, 0))
    position = elapsed_s / spacing_s
    knot = np.floor(position).astype(np.int64)
    knots = rng.standard_normal((series, int(knot[-1]) + 2))
    fraction = position - knot
    fraction = fraction * fraction * (3 - 2 * fraction)
    out: FloatArray = knots[:, knot] * (1 - fraction) + knots[:, knot + 1] * fraction
    return out


def distance_km(latitudes: FloatArray, longitudes: FloatArray) -> FloatArray:
    """Pairwise great-circle distances (haversine), in km."""
    lat = np.radians(latitudes)[:, None]
    lon = np.radians(longitudes)[:, None]
    dlat = lat - lat.T
    dlon = lon - lon.T
    a = np.sin(dlat / 2) ** 2 + np.cos(lat) * np.cos(lat.T) * np.sin(dlon / 2) ** 2
    out: FloatArray = 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(a, 0, 1)))
    return out


@dataclass(frozen=True, slots=True)
class Region:
    """The communes of a simulation and how their shared components correlate."""

    latitudes: FloatArray
    longitudes: FloatArray

    def mixing(self) -> FloatArray:
        """A matrix L with L @ L.T = exp(-distance / CORRELATION_LENGTH_KM)."""
        covariance = np.exp(-distance_km(self.latitudes, self.longitudes) / CORRELATION_LENGTH_KM)
        covariance += np.eye(len(covariance)) * 1e-6  # numerical safety for near-duplicate points
        out: FloatArray = np.linalg.cholesky(covariance)
        return out

    def shared_noise(self, rng: np.random.Generator, elapsed_s: FloatArray, spacing_s: float) -> FloatArray:
        """Smooth noise per commune, ``(communes, steps)``, correlated by distance."""
        independent = smooth_noise(rng, len(self.latitudes), elapsed_s, spacing_s)
        out: FloatArray = self.mixing() @ independent
        return out


@dataclass(frozen=True, slots=True)
class Weather:
    """Commune-level outdoor conditions, ``(communes, steps)``, shared by air quality and buildings."""

    temperature: FloatArray
    daily_mean: FloatArray
    sunshine: FloatArray
    """0..1, how sunny (drives the afternoon ozone peak and camera housing heat)."""

    @classmethod
    def simulate(cls, rng: np.random.Generator, region: Region, calendar: Calendar) -> Weather:
        """Outdoor temperature with a seasonal mean, a 15h daily peak and weather systems."""
        seasonal = 12.0 - 8.0 * np.cos(2 * math.pi * (calendar.day_of_year - 20) / 365.25)
        systems = region.shared_noise(rng, calendar.elapsed_s, 12 * 3600.0)
        daily_mean = seasonal[None, :] + 3.0 * systems
        clouds = region.shared_noise(rng, calendar.elapsed_s, 6 * 3600.0)
        sunshine = 1 / (1 + np.exp(-1.2 * clouds))
        amplitude = 3.0 + 3.0 * sunshine
        diurnal = np.cos(2 * math.pi * (calendar.hour - 15.0) / 24)[None, :]
        return cls(temperature=daily_mean + amplitude * diurnal, daily_mean=daily_mean, sunshine=sunshine)


@dataclass(frozen=True, slots=True)
class SignalContext:
    """Everything a family model needs: the grid, the devices' communes and the weather."""

    rng: np.random.Generator
    calendar: Calendar
    device_commune: IntArray
    """Index of each device's commune in the region."""
    region: Region
    weather: Weather
    period_s: float

    @property
    def devices(self) -> int:
        """Number of devices."""
        return len(self.device_commune)

    def per_device(self, commune_rows: FloatArray) -> FloatArray:
        """Spread a ``(communes, steps)`` array to ``(devices, steps)``."""
        out: FloatArray = commune_rows[self.device_commune]
        return out

    def shared(self, spacing_s: float) -> FloatArray:
        """A fresh commune-wide smooth component spread to the devices."""
        return self.per_device(self.region.shared_noise(self.rng, self.calendar.elapsed_s, spacing_s))

    def own(self, spacing_s: float) -> FloatArray:
        """A smooth component of each device's own."""
        return smooth_noise(self.rng, self.devices, self.calendar.elapsed_s, spacing_s)

    def noise(self, scale: float) -> FloatArray:
        """White noise of standard deviation ``scale``."""
        out: FloatArray = self.rng.normal(0.0, scale, (self.devices, self.calendar.steps))
        return out

    def constant(self, low: float, high: float) -> FloatArray:
        """A per-device constant drawn uniformly, shaped ``(devices, 1)`` to broadcast."""
        out: FloatArray = self.rng.uniform(low, high, (self.devices, 1))
        return out

    def row(self, profile: FloatArray) -> FloatArray:
        """A ``(steps,)`` profile shaped ``(1, steps)`` to broadcast over devices."""
        return profile[None, :]


Columns = dict[str, npt.NDArray[Any]]
"""Field name -> ``(devices, steps)`` values: float64, int64 (integers), bool, or int codes of
an enum field (index into its choices)."""


def traffic_profile(calendar: Calendar) -> FloatArray:
    """Relative road traffic (about 0.1 at night, 1 at rush hour)."""
    hour = calendar.hour
    work = 0.06 + 0.85 * bump(hour, 8.0, 0.9) + 0.75 * bump(hour, 17.8, 1.2) + 0.35 * window(hour, 6.5, 20.5)
    weekend = 0.06 + 0.45 * bump(hour, 14.5, 3.5) + 0.15 * window(hour, 9, 22)
    return np.where(calendar.workday, work, weekend)


def rush_profile(calendar: Calendar) -> FloatArray:
    """Exhaust emissions index: the rush hours, weaker at weekends (drives NO2, CO)."""
    hour = calendar.hour
    work = bump(hour, 8.3, 1.3) + 0.9 * bump(hour, 18.5, 1.6)
    weekend = 0.4 * bump(hour, 15, 3.5)
    return np.where(calendar.workday, work, weekend)


def footfall_profile(calendar: Calendar) -> FloatArray:
    """Pedestrian footfall: commuting, lunch and shopping peaks; midday and afternoon at weekends."""
    hour = calendar.hour
    work = 0.03 + 0.7 * bump(hour, 8.2, 0.8) + 0.8 * bump(hour, 12.5, 1.0) + 0.9 * bump(hour, 17.7, 1.3)
    work += 0.25 * window(hour, 7, 20)
    weekend = 0.03 + 0.9 * bump(hour, 15.0, 2.8) + 0.3 * bump(hour, 11.0, 1.5)
    return np.where(calendar.workday, work, weekend)


def opening_profile(calendar: Calendar) -> FloatArray:
    """Share of a public building's capacity present: work days 8h–18h, a lunch dip."""
    hour = calendar.hour
    open_hours = window(hour, 8.0, 18.0, sharpness=4.0) * (1 - 0.35 * bump(hour, 12.5, 0.7))
    return np.where(calendar.workday, open_hours, 0.02 * window(hour, 9, 12))


def internet_profile(calendar: Calendar) -> FloatArray:
    """Relative network throughput: low at 4h, office hours, a strong evening peak at 21h."""
    hour = calendar.hour
    out: FloatArray = 0.12 + 0.35 * window(hour, 8, 19, 1.5) + 0.65 * bump(hour, 21.0, 2.0)
    return out


def air_quality(ctx: SignalContext) -> Columns:
    """An outdoor air-quality station."""
    cal = ctx.calendar
    temperature = ctx.per_device(ctx.weather.temperature) + ctx.constant(-0.4, 0.4) + ctx.noise(0.08)
    anomaly = temperature - ctx.per_device(ctx.weather.daily_mean)
    wetness = 0.72 - 0.03 * anomaly + 0.06 * ctx.shared(8 * 3600) + 0.02 * ctx.own(3600)
    # A logistic squash keeps humidity below saturation, so that clean data never flatlines at 1.
    humidity = 0.05 + 0.93 / (1 + np.exp(-(wetness - 0.6) / 0.12)) + ctx.noise(0.004)
    rush = ctx.row(rush_profile(cal)) * ctx.constant(0.6, 1.4)  # busy-road stations see more
    background = ctx.shared(6 * 3600)
    # Multiplicative variations keep concentrations positive without clipping (a clipped signal
    # would flatline, which is what a stuck sensor looks like).
    no2 = (14 + 38 * rush) * np.exp(0.3 * background + 0.1 * ctx.own(1800)) + ctx.noise(1.0)
    sun = ctx.per_device(ctx.weather.sunshine)
    o3 = (22 + 70 * sun * ctx.row(bump(cal.hour, 15.5, 3.0))) * np.exp(0.25 * ctx.shared(8 * 3600))
    o3 = o3 * np.exp(-0.008 * np.clip(no2 - 14, 0, None)) + ctx.noise(1.2)  # NO titrates ozone
    pm25 = 9 * np.exp(0.35 * ctx.shared(10 * 3600) + 0.1 * ctx.own(2 * 3600)) + 3 * rush + ctx.noise(0.4)
    pm10 = 1.5 * pm25 + 4 + 1.2 * ctx.own(2 * 3600) + ctx.noise(0.6)
    so2 = 2.5 * np.exp(0.3 * ctx.shared(12 * 3600)) + ctx.noise(0.15)
    co = 0.25 + 0.35 * rush + 0.04 * background + ctx.noise(0.01)
    co2 = 415 + 30 * rush + 8 * background + ctx.noise(2.0)
    return {
        "pm25": np.round(np.clip(pm25, 0.5, 900), 2),
        "pm10": np.round(np.clip(pm10, 1.0, 1800), 2),
        "no2": np.round(np.clip(no2, 0.5, 1800), 2),
        "o3": np.round(np.clip(o3, 0.5, 900), 2),
        "so2": np.round(np.clip(so2, 0.1, 1800), 2),
        "co": np.round(np.clip(co, 0.01, 90), 3),
        "co2": np.round(np.clip(co2, 300, 9000), 1),
        "temperature": np.round(np.clip(temperature, -39, 59), 2),
        "relativeHumidity": np.round(np.clip(humidity, 0.03, 1.0), 3),
    }


def traffic(ctx: SignalContext) -> Columns:
    """An inductive-loop counter on one lane."""
    cal = ctx.calendar
    capacity = ctx.constant(900, 1800)  # vehicles per hour at the busiest
    load = ctx.row(traffic_profile(cal)) * (1 + 0.12 * ctx.shared(3 * 3600) + 0.05 * ctx.own(1800))
    load = np.clip(load, 0.01, 1.6)
    expected = capacity * load / 1.2 * ctx.period_s / 3600
    intensity = ctx.rng.poisson(expected).astype(np.int64)
    saturation = np.clip(load / 1.2, 0, 1.3)
    occupancy = np.clip((0.012 + 0.32 * saturation**2) * np.exp(ctx.noise(0.15)), 0.0, 0.98)
    free_speed = ctx.rng.choice(np.array([50.0, 70.0, 90.0]), size=(ctx.devices, 1))
    speed = free_speed * (1 - 0.55 * np.clip(saturation - 0.4, 0, None) ** 1.5) + ctx.noise(2.0)
    speed = np.clip(speed, 3, 200)
    lane = ctx.rng.integers(1, 4, size=(ctx.devices, 1)) + np.zeros((1, cal.steps), dtype=np.int64)
    return {
        "intensity": intensity,
        "averageVehicleSpeed": np.round(speed, 1),
        "occupancy": np.round(occupancy, 4),
        "laneId": lane.astype(np.int64),
        "congested": (occupancy > 0.3) | (speed < 0.45 * free_speed),
    }


HVAC_MODES = ("off", "heating", "cooling", "ventilation")


def building(ctx: SignalContext) -> Columns:
    """A public building's meter: occupancy on work days, heating when it is cold outside."""
    cal = ctx.calendar
    capacity = np.round(ctx.constant(40, 600))
    presence = np.clip(ctx.row(opening_profile(cal)) * (1 + 0.1 * ctx.own(2 * 3600)), 0, 1.05)
    occupancy = ctx.rng.poisson(capacity * presence).astype(np.int64)
    outdoor = ctx.per_device(ctx.weather.temperature)
    scheduled = ctx.row(window(cal.hour, 6.5, 18.5, 4.0) * cal.workday)  # pre-heat before opening
    heating = (outdoor < 15.0) & (scheduled > 0.5)
    cooling = (outdoor > 26.0) & (scheduled > 0.5)
    mode = np.where(heating, 1, np.where(cooling, 2, np.where(scheduled > 0.5, 3, 0))).astype(np.int64)
    base_kw = capacity * ctx.constant(0.03, 0.06)
    hvac_kw = capacity * 0.08 * np.where(heating, np.clip(15 - outdoor, 0, 20) / 10, 0)
    hvac_kw += capacity * 0.06 * cooling
    power = base_kw + 0.12 * occupancy + hvac_kw + np.abs(ctx.noise(0.2))
    power = np.clip(power, 0.05, 9000)
    setpoint = np.where(heating | cooling, 20.5, 17.0)
    indoor = setpoint + 0.15 * (outdoor - 15) + 0.004 * occupancy + 0.3 * ctx.own(3 * 3600) + ctx.noise(0.05)
    co2 = 430 + 900 * presence * ctx.constant(0.6, 1.2) + ctx.noise(6.0)
    hours = ctx.period_s / 3600
    # A real meter integrates power: the index only ever grows, from a device's own start value.
    energy = ctx.constant(1_000, 500_000) + np.cumsum(power * hours, axis=1)
    return {
        "energy": np.round(energy, 3),
        "activePower": np.round(power, 3),
        "temperature": np.round(np.clip(indoor, -5, 45), 2),
        "co2": np.round(np.clip(co2, 300, 9000), 1),
        "occupancy": occupancy,
        "hvacMode": mode,
    }


def camera(ctx: SignalContext) -> Columns:
    """A video-protection camera's aggregates: people counted, thermographic screening, health."""
    cal = ctx.calendar
    site_rate = ctx.constant(5, 60)  # people per minute at the busiest
    load = ctx.row(footfall_profile(cal)) * np.exp(0.15 * ctx.shared(3 * 3600) + 0.1 * ctx.own(3600))
    people = ctx.rng.poisson(site_rate * np.clip(load, 0, 3) * ctx.period_s / 60).astype(np.int64)
    elevated = ctx.rng.binomial(people, 0.002).astype(np.int64)
    housing = ctx.per_device(ctx.weather.temperature + 12 * ctx.weather.sunshine) + 6 + ctx.noise(0.2)
    nominal_fps = ctx.rng.choice(np.array([25.0, 30.0]), size=(ctx.devices, 1))
    fps = nominal_fps - np.abs(ctx.noise(0.15))
    # The CrowdFlowObserved measurements follow from the count, without drawing from the random
    # stream (the other signals keep their values).
    towards = (people * 3 + 1) // 5
    occupancy = np.clip(people / (3 * site_rate * ctx.period_s / 60), 0, 1)
    return {
        "peopleCount": people,
        "peopleCountTowards": towards,
        "peopleCountAway": people - towards,
        "occupancy": np.round(occupancy, 3),
        "averageCrowdSpeed": np.round(5.0 - 3.0 * occupancy, 2),
        "averageHeadwayTime": np.round(ctx.period_s / np.maximum(people, 1), 2),
        "congested": occupancy > 0.8,
        "elevatedTemperatureCount": elevated,
        "deviceTemperature": np.round(np.clip(housing, -39, 99), 2),
        "framesPerSecond": np.round(np.clip(fps, 1, 240), 2),
        "online": np.ones((ctx.devices, cal.steps), dtype=np.bool_),
        "tampered": np.zeros((ctx.devices, cal.steps), dtype=np.bool_),
    }


def network(ctx: SignalContext) -> Columns:
    """A fibre access or switching device."""
    cal = ctx.calendar
    link_bps = ctx.rng.choice(np.array([1e9, 1e10]), size=(ctx.devices, 1))
    utilisation = ctx.row(internet_profile(cal)) * ctx.constant(0.2, 0.6) * np.exp(0.1 * ctx.own(1800))
    utilisation = np.clip(utilisation + np.abs(ctx.noise(0.01)), 0.001, 0.98)
    throughput_in = link_bps * utilisation
    throughput_out = throughput_in * ctx.constant(0.15, 0.4) * np.exp(ctx.noise(0.05))
    rx = ctx.constant(-22, -14) + ctx.noise(0.03)
    tx = ctx.constant(1.0, 4.0) + ctx.noise(0.02)
    error_rate = ctx.constant(0.001, 0.05) * ctx.period_s / 60
    new_errors = ctx.rng.poisson(np.broadcast_to(error_rate, (ctx.devices, cal.steps)))
    new_crc = ctx.rng.binomial(new_errors, 0.6)
    # Counters count since the device booted, long before the simulation starts.
    in_errors = np.round(ctx.constant(100, 100_000)).astype(np.int64) + np.cumsum(new_errors, axis=1)
    crc_errors = np.round(ctx.constant(50, 50_000)).astype(np.int64) + np.cumsum(new_crc, axis=1)
    latency = 1.5 + 4 * utilisation**3 + np.abs(ctx.noise(0.2))
    cpu = 8 + 35 * utilisation + ctx.noise(1.5)
    return {
        "opticalRxPower": np.round(np.clip(rx, -49, 9), 3),
        "opticalTxPower": np.round(np.clip(tx, -19, 9), 3),
        "throughputIn": np.round(np.clip(throughput_in, 0, 3.9e11)),
        "throughputOut": np.round(np.clip(throughput_out, 0, 3.9e11)),
        "inErrors": in_errors.astype(np.int64),
        "crcErrors": crc_errors.astype(np.int64),
        "latency": np.round(latency, 3),
        "linkUp": np.ones((ctx.devices, cal.steps), dtype=np.bool_),
        "cpuLoad": np.round(np.clip(cpu, 0.5, 99.5), 2),
    }


MODELS: dict[Family, Callable[[SignalContext], Columns]] = {
    Family.AIR_QUALITY: air_quality,
    Family.TRAFFIC: traffic,
    Family.BUILDING: building,
    Family.CAMERA: camera,
    Family.NETWORK: network,
}
"""The signal model of each family."""

ENUM_CHOICES: dict[tuple[Family, str], tuple[str, ...]] = {(Family.BUILDING, "hvacMode"): HVAC_MODES}
"""Enum fields: the codes a model returns index these choices."""

FAULTABLE_FIELDS: dict[Family, tuple[str, ...]] = {
    Family.AIR_QUALITY: ("pm25", "pm10", "no2", "o3", "so2", "co", "co2", "temperature", "relativeHumidity"),
    Family.TRAFFIC: ("intensity", "averageVehicleSpeed", "occupancy"),
    Family.BUILDING: ("activePower", "temperature", "co2"),
    Family.CAMERA: ("peopleCount", "deviceTemperature", "framesPerSecond"),
    Family.NETWORK: (
        "opticalRxPower",
        "opticalTxPower",
        "throughputIn",
        "throughputOut",
        "latency",
        "cpuLoad",
    ),
}
"""Fields that can carry spike, stuck and drift faults: measured values, not constants (laneId),
booleans, enums or cumulative counters."""

SMOOTH_FIELDS: dict[Family, tuple[str, ...]] = {
    family: tuple(f for f in fields if f not in ("intensity", "peopleCount"))
    for family, fields in FAULTABLE_FIELDS.items()
}
"""Float fields of FAULTABLE_FIELDS: the ones stuck and drift faults are injected on (a count of
zero vehicles all night is not a stuck sensor, so counts are left out)."""
