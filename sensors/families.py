"""The five sensor families: their fields, units and physical bounds.

Field names follow the FIWARE Smart Data Models where one exists (AirQualityObserved,
TrafficFlowObserved, CrowdFlowObserved for camera people counts). A bound is physical:
a value outside it cannot be a real measurement, so the decoder refuses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from sensors.fiware import DESCRIPTIVE_ATTRIBUTES, STRUCTURE_KEYS

FieldKind = Literal["float", "int", "bool", "enum"]


class Family(StrEnum):
    """A sensor family; the value is the name used in topics and as the store measurement."""

    AIR_QUALITY = "air_quality"
    TRAFFIC = "traffic"
    BUILDING = "building"
    CAMERA = "camera"
    NETWORK = "network"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a family's readings."""

    name: str
    kind: FieldKind
    unit: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    counter: bool = False
    """A cumulative counter (energy meter, error counters): only its increase is meaningful."""
    ratio_of_counts: bool = False
    """A ratio over a small count (the period over the people counted): it jumps between a few
    values by nature, so a jump or a repeated value of it is no sign of a faulty device."""
    unit_code: str | None = None
    """UN/CEFACT common code, as FIWARE writes it in ``unitCode`` metadata."""

    def check(self, value: float | int | bool | str) -> str | None:
        """Why ``value`` is not acceptable for this field, or None when it is."""
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"expected a boolean, got {value!r}"
        if self.kind == "enum":
            if not isinstance(value, str) or value not in self.choices:
                return f"expected one of {', '.join(self.choices)}, got {value!r}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected a number, got {value!r}"
        if self.kind == "int" and not float(value).is_integer():
            return f"expected an integer, got {value!r}"
        if not math.isfinite(value):
            return f"expected a finite number, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"{value} {self.unit} is below the physical minimum {self.minimum} {self.unit}"
        if self.maximum is not None and value > self.maximum:
            return f"{value} {self.unit} is above the physical maximum {self.maximum} {self.unit}"
        return None


@dataclass(frozen=True, slots=True)
class FamilySpec:
    """A sensor family: its fields and the FIWARE data model it follows, if any."""

    family: Family
    description: str
    fields: tuple[FieldSpec, ...]
    fiware_type: str | None = None
    reporting_period_s: float = 60.0
    """The period at which a device of this family is expected to report."""
    ignored_attributes: frozenset[str] = field(default_factory=frozenset)
    """Attributes of the family's FIWARE data model that the contract does not store and ignores
    silently, besides those every model shares (``sensors.fiware.DESCRIPTIVE_ATTRIBUTES``)."""
    allowed_metadata: frozenset[str] | None = None
    """Privacy allow-list. None: an open family (an unknown field is refused on its own). A set:
    a closed family, whose payloads may hold only its fields, ``ts`` and these keys, at any depth;
    any other key refuses the whole message, and its payload is never kept anywhere."""

    @property
    def private(self) -> bool:
        """Whether the family's payloads are never kept (not even in the dead-letter)."""
        return self.allowed_metadata is not None

    @property
    def allowed_keys(self) -> frozenset[str] | None:
        """Every key a payload of a closed family may hold, or None for an open family."""
        if self.allowed_metadata is None:
            return None
        return frozenset({"ts", *(f.name for f in self.fields)}) | self.allowed_metadata

    def field(self, name: str) -> FieldSpec | None:
        """The spec of one field, or None."""
        return _FIELD_INDEX[self.family].get(name)

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        """Names of the float and int fields (what aggregates are computed on)."""
        return tuple(f.name for f in self.fields if f.kind in ("float", "int"))


_UG = "µg/m³"

AIR_QUALITY = FamilySpec(
    family=Family.AIR_QUALITY,
    description="Ambient air quality station (FIWARE AirQualityObserved).",
    fiware_type="AirQualityObserved",
    reporting_period_s=60.0,
    # Derived or qualitative: the platform computes its own indices (ATMO, EAQI) from the
    # concentrations, and a sender's reliability is not a measurement of the air.
    ignored_attributes=frozenset(
        {
            "reliability",
            "airQualityIndex",
            "airQualityLevel",
            "coLevel",
            "typeofLocation",
            "refWeatherObserved",
        }
    ),
    fields=(
        FieldSpec("pm25", "float", _UG, "Fine particles PM2.5", 0, 1000, unit_code="GQ"),
        FieldSpec("pm10", "float", _UG, "Particles PM10", 0, 2000, unit_code="GQ"),
        FieldSpec("no2", "float", _UG, "Nitrogen dioxide", 0, 2000, unit_code="GQ"),
        FieldSpec("o3", "float", _UG, "Ozone", 0, 1000, unit_code="GQ"),
        FieldSpec("so2", "float", _UG, "Sulphur dioxide", 0, 2000, unit_code="GQ"),
        FieldSpec("co", "float", "mg/m³", "Carbon monoxide", 0, 100, unit_code="GP"),
        FieldSpec("co2", "float", "ppm", "Carbon dioxide", 250, 10000, unit_code="59"),
        FieldSpec("temperature", "float", "°C", "Air temperature", -40, 60, unit_code="CEL"),
        FieldSpec(
            "relativeHumidity",
            "float",
            "1",
            "Relative humidity as a 0–1 fraction",
            0,
            1,
            unit_code="C62",
        ),
    ),
)

TRAFFIC = FamilySpec(
    family=Family.TRAFFIC,
    description="Road traffic counter on one lane (FIWARE TrafficFlowObserved).",
    fiware_type="TrafficFlowObserved",
    reporting_period_s=60.0,
    ignored_attributes=frozenset({"laneDirection", "reversedLane"}),
    fields=(
        FieldSpec(
            "intensity",
            "int",
            "vehicles",
            "Vehicles counted since the previous reading",
            0,
            10000,
        ),
        FieldSpec(
            "averageVehicleSpeed",
            "float",
            "km/h",
            "Mean speed of the vehicles counted",
            0,
            250,
            unit_code="KMH",
        ),
        FieldSpec(
            "occupancy",
            "float",
            "1",
            "Share of time the detector was occupied (0–1)",
            0,
            1,
            unit_code="C62",
        ),
        FieldSpec("laneId", "int", "1", "Lane number, 1 being the rightmost", 0, 32),
        FieldSpec("congested", "bool", "", "Whether the device itself flags congestion"),
    ),
)

BUILDING = FamilySpec(
    family=Family.BUILDING,
    description="Public building energy and comfort meter (school, town hall, gymnasium).",
    reporting_period_s=300.0,
    fields=(
        FieldSpec(
            "energy",
            "float",
            "kWh",
            "Cumulative electricity meter index",
            0,
            1e9,
            counter=True,
            unit_code="KWH",
        ),
        FieldSpec("activePower", "float", "kW", "Instantaneous active power", 0, 10000, unit_code="KWT"),
        FieldSpec("temperature", "float", "°C", "Indoor air temperature", -10, 50, unit_code="CEL"),
        FieldSpec("co2", "float", "ppm", "Indoor CO2 concentration", 250, 10000, unit_code="59"),
        FieldSpec("occupancy", "int", "people", "People present", 0, 100000),
        FieldSpec(
            "hvacMode",
            "enum",
            "",
            "Heating, ventilation and air-conditioning mode",
            choices=("off", "heating", "cooling", "ventilation"),
        ),
    ),
)

CAMERA_IGNORED = frozenset({"direction"})
"""CrowdFlowObserved's ``direction`` (inbound or outbound, relative to the city centre) describes
the walkway, not the period: the directional counts are what is stored."""

CAMERA_METADATA = DESCRIPTIVE_ATTRIBUTES | STRUCTURE_KEYS | CAMERA_IGNORED
"""The harmless keys a camera payload may carry besides its fields: entity description (ignored,
never stored), the structure of the FIWARE forms and of GeoJSON and addresses, and the
CrowdFlowObserved attributes the contract does not store. Nothing else, at any depth."""

CAMERA = FamilySpec(
    family=Family.CAMERA,
    description=(
        "Video-protection camera, aggregates only. Cameras never send images, faces or "
        "identities: the family is an allow-list, and a payload carrying any other key is refused."
    ),
    fiware_type="CrowdFlowObserved",
    reporting_period_s=60.0,
    ignored_attributes=CAMERA_IGNORED,
    allowed_metadata=CAMERA_METADATA,
    fields=(
        FieldSpec("peopleCount", "int", "people", "People counted since the previous reading", 0, 100000),
        FieldSpec(
            "elevatedTemperatureCount",
            "int",
            "people",
            "People flagged by thermographic screening since the previous reading",
            0,
            100000,
        ),
        FieldSpec(
            "deviceTemperature", "float", "°C", "Camera housing temperature", -40, 100, unit_code="CEL"
        ),
        FieldSpec("framesPerSecond", "float", "fps", "Video frame rate", 0, 240),
        FieldSpec("online", "bool", "", "Whether the video stream is up"),
        FieldSpec("tampered", "bool", "", "Whether tampering (masking, moving) is detected"),
        FieldSpec(
            "peopleCountTowards",
            "int",
            "people",
            "People counted walking towards the camera's reference direction (CrowdFlowObserved)",
            0,
            100000,
        ),
        FieldSpec(
            "peopleCountAway",
            "int",
            "people",
            "People counted walking away from the camera's reference direction (CrowdFlowObserved)",
            0,
            100000,
        ),
        FieldSpec(
            "occupancy",
            "float",
            "1",
            "Share of the period someone occupied the observed walkway (0–1)",
            0,
            1,
            unit_code="C62",
        ),
        FieldSpec(
            "averageCrowdSpeed", "float", "km/h", "Mean walking speed of the crowd", 0, 50, unit_code="KMH"
        ),
        FieldSpec(
            "averageHeadwayTime",
            "float",
            "s",
            "Mean time between two consecutive people",
            0,
            86400,
            unit_code="SEC",
            ratio_of_counts=True,
        ),
        FieldSpec("congested", "bool", "", "Whether the camera flags crowd congestion on the walkway"),
    ),
)

NETWORK = FamilySpec(
    family=Family.NETWORK,
    description="Fibre and switching equipment (OLT, ONT, switch port, router).",
    reporting_period_s=60.0,
    fields=(
        FieldSpec("opticalRxPower", "float", "dBm", "Received optical power", -50, 10),
        FieldSpec("opticalTxPower", "float", "dBm", "Transmitted optical power", -20, 10),
        FieldSpec("throughputIn", "float", "bit/s", "Inbound throughput", 0, 4e11),
        FieldSpec("throughputOut", "float", "bit/s", "Outbound throughput", 0, 4e11),
        FieldSpec(
            "inErrors", "int", "frames", "Cumulative inbound error counter", 0, 2**63 - 1, counter=True
        ),
        FieldSpec("crcErrors", "int", "frames", "Cumulative CRC error counter", 0, 2**63 - 1, counter=True),
        FieldSpec("latency", "float", "ms", "Round-trip latency to the core", 0, 60000),
        FieldSpec("linkUp", "bool", "", "Whether the link is up"),
        FieldSpec("cpuLoad", "float", "%", "CPU load in percent", 0, 100),
    ),
)

FAMILIES: dict[Family, FamilySpec] = {
    spec.family: spec for spec in (AIR_QUALITY, TRAFFIC, BUILDING, CAMERA, NETWORK)
}

_FIELD_INDEX: dict[Family, dict[str, FieldSpec]] = {
    spec.family: {f.name: f for f in spec.fields} for spec in FAMILIES.values()
}


def family_spec(name: str) -> FamilySpec | None:
    """The spec of a family by its topic name, or None when there is no such family."""
    try:
        return FAMILIES[Family(name)]
    except ValueError:
        return None
