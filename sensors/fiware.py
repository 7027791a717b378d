"""FIWARE Smart Data Models support: unit codes and the attributes that are not measurements.

FIWARE writes units as UN/CEFACT common codes in an attribute's ``unitCode`` metadata (NGSI v2
normalized form). The decoder converts a value to the contract's unit when the conversion is
exact and independent of the substance measured; it refuses the field otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

UNIT_NAMES: dict[str, str] = {
    "GQ": "µg/m³",
    "GP": "mg/m³",
    "59": "ppm",
    "61": "ppb",
    "CEL": "°C",
    "FAH": "°F",
    "KEL": "K",
    "C62": "one (dimensionless)",
    "P1": "percent",
    "KMH": "km/h",
    "MTS": "m/s",
    "WHR": "Wh",
    "KWH": "kWh",
    "MWH": "MWh",
    "WTT": "W",
    "KWT": "kW",
    "MAW": "MW",
    "IE": "person",
    "SEC": "s",
    "MIN": "min",
}
"""The UN/CEFACT codes the decoder knows, with the unit they stand for."""


def _scale(factor: float) -> Callable[[float], float]:
    return lambda value: value * factor


CONVERSIONS: dict[tuple[str, str], Callable[[float], float]] = {
    ("GP", "GQ"): _scale(1000.0),
    ("GQ", "GP"): _scale(0.001),
    ("61", "59"): _scale(0.001),
    ("59", "61"): _scale(1000.0),
    ("P1", "C62"): _scale(0.01),
    ("C62", "P1"): _scale(100.0),
    ("FAH", "CEL"): lambda value: (value - 32.0) * 5.0 / 9.0,
    ("KEL", "CEL"): lambda value: value - 273.15,
    ("MTS", "KMH"): _scale(3.6),
    ("WHR", "KWH"): _scale(0.001),
    ("MWH", "KWH"): _scale(1000.0),
    ("WTT", "KWT"): _scale(0.001),
    ("MAW", "KWT"): _scale(1000.0),
    ("MIN", "SEC"): _scale(60.0),
}
"""Exact conversions ``(from, to) -> function``; identity conversions are implicit."""

_MASS_CONCENTRATIONS = frozenset({"GQ", "GP"})
_MIXING_RATIOS = frozenset({"59", "61"})

COMPATIBLE_WITH_UNITLESS = frozenset({"C62", "IE"})
"""Codes accepted on a field that has no unit code (counts, lane numbers): "one" and "person"."""

LEGACY_ATTRIBUTE_NAMES: dict[str, str] = {
    "CO": "co",
    "CO2": "co2",
    "NO2": "no2",
    "O3": "o3",
    "SO2": "so2",
    "PM10": "pm10",
    "PM2.5": "pm25",
    "PM25": "pm25",
}
"""Upper-case pollutant names of the early (FIWARE Data Models 2017) AirQualityObserved,
still sent by deployed gateways; read as the current lower-case names."""

DESCRIPTIVE_ATTRIBUTES = frozenset(
    {
        "id",
        "type",
        "@context",
        "dateObserved",
        "dateObservedFrom",
        "dateObservedTo",
        "dateCreated",
        "dateModified",
        "location",
        "address",
        "name",
        "description",
        "alternateName",
        "areaServed",
        "dataProvider",
        "source",
        "seeAlso",
        "owner",
        "refDevice",
        "refPointOfInterest",
        "refRoadSegment",
        "typeOfLocation",
        "annotations",
    }
)
"""Attributes every Smart Data Model shares (GSMA commons, location commons) that describe the
entity rather than measure something: ignored, never stored. Each family adds the attributes of
its own model that it ignores (``FamilySpec.ignored_attributes``); any other attribute that is
not a field of the family is reported as ``unknown_field``.
"""

STRUCTURE_KEYS = frozenset(
    {
        # NGSI v2 normalized attributes and their metadata
        "value",
        "metadata",
        "unitCode",
        "timestamp",
        # NGSI-LD properties and relationships
        "@type",
        "@value",
        "object",
        "observedAt",
        # GeoJSON (location)
        "coordinates",
        "bbox",
        # schema.org PostalAddress (address)
        "streetAddress",
        "streetNr",
        "addressLocality",
        "addressRegion",
        "addressCountry",
        "postalCode",
        "postOfficeBoxNumber",
        "district",
    }
)
"""Keys that only give the FIWARE forms, GeoJSON locations and postal addresses their shape:
what a closed (privacy) family's payload may nest besides its fields and metadata."""


def convert_unit(value: float, unit_code: str, target: str | None) -> float | str:
    """``value`` given in ``unit_code`` converted to ``target`` (a field's unit code).

    Returns the converted value, or a sentence saying why it cannot be converted.
    """
    if unit_code == target:
        return value
    if target is None:
        if unit_code in COMPATIBLE_WITH_UNITLESS:
            return value
        return f"unit code {unit_code!r} does not apply to a count (expected no unitCode, or C62)"
    convert = CONVERSIONS.get((unit_code, target))
    if convert is not None:
        return convert(value)
    target_name = UNIT_NAMES.get(target, target)
    if unit_code not in UNIT_NAMES:
        return f"unknown unit code {unit_code!r} (expected {target!r}, {target_name})"
    if (unit_code in _MASS_CONCENTRATIONS and target in _MIXING_RATIOS) or (
        unit_code in _MIXING_RATIOS and target in _MASS_CONCENTRATIONS
    ):
        # ppb <-> µg/m³ depends on the gas's molar mass and on the temperature and pressure the
        # sensor reports at; guessing them would silently bias every index computed downstream.
        return (
            f"unit code {unit_code!r} ({UNIT_NAMES[unit_code]}) cannot be converted to {target!r} "
            f"({target_name}) without the gas's molar mass and reference conditions: "
            f"send {target_name}"
        )
    return (
        f"unit code {unit_code!r} ({UNIT_NAMES[unit_code]}) cannot be converted to {target!r} ({target_name})"
    )
