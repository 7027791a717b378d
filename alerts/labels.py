"""Words for commune staff instead of field names: ``pm10_mean`` of ``air_quality_15m_commune``
reads "PM10, moyenne sur 15 min" in French and "PM10, 15 min mean" in English.

A field without a label here is shown by its name, which is always correct if less friendly.
"""

from __future__ import annotations

import re

FIELD_LABELS: dict[str, tuple[str, str]] = {
    # field -> (French, English)
    "pm25": ("PM2,5", "PM2.5"),
    "pm10": ("PM10", "PM10"),
    "no2": ("dioxyde d'azote (NO2)", "nitrogen dioxide (NO2)"),
    "o3": ("ozone (O3)", "ozone (O3)"),
    "so2": ("dioxyde de soufre (SO2)", "sulphur dioxide (SO2)"),
    "co": ("monoxyde de carbone (CO)", "carbon monoxide (CO)"),
    "co2": ("CO2", "CO2"),
    "temperature": ("température", "temperature"),
    "relativeHumidity": ("humidité relative", "relative humidity"),
    "intensity": ("nombre de véhicules", "vehicle count"),
    "averageVehicleSpeed": ("vitesse moyenne des véhicules", "average vehicle speed"),
    "occupancy": ("occupation", "occupancy"),
    "energy": ("index du compteur d'énergie", "energy meter index"),
    "activePower": ("puissance active", "active power"),
    "peopleCount": ("personnes comptées", "people counted"),
    "elevatedTemperatureCount": ("températures élevées détectées", "elevated temperatures detected"),
    "deviceTemperature": ("température de l'appareil", "device temperature"),
    "framesPerSecond": ("images par seconde", "frames per second"),
    "peopleCountTowards": ("personnes comptées dans le sens aller", "people counted towards"),
    "peopleCountAway": ("personnes comptées dans le sens retour", "people counted away"),
    "averageCrowdSpeed": ("vitesse de marche moyenne", "average walking speed"),
    "averageHeadwayTime": ("intervalle moyen entre passants", "average time between passers-by"),
    "opticalRxPower": ("puissance optique reçue", "received optical power"),
    "opticalTxPower": ("puissance optique émise", "transmitted optical power"),
    "throughputIn": ("débit entrant", "inbound throughput"),
    "throughputOut": ("débit sortant", "outbound throughput"),
    "inErrors": ("erreurs en entrée", "input errors"),
    "crcErrors": ("erreurs CRC", "CRC errors"),
    "latency": ("latence", "latency"),
    "cpuLoad": ("charge processeur", "CPU load"),
    "linkUp": ("lien actif", "link up"),
    "level": ("niveau de congestion", "congestion level"),
    "speed_ratio": ("vitesse rapportée à l'habituelle", "speed against the usual"),
    "energy_kwh": ("énergie consommée", "energy used"),
    "baseline_kwh": ("consommation habituelle", "usual consumption"),
    "deviation": ("écart à la consommation habituelle", "deviation from the usual consumption"),
    "people": ("personnes comptées", "people counted"),
    "elevated_temperature": ("températures élevées détectées", "elevated temperatures detected"),
    "online_ratio": ("part du temps en ligne", "share of time online"),
    "tampered": ("sabotage détecté", "tampering detected"),
    "availability": ("disponibilité", "availability"),
    "rx_margin_db": ("marge de puissance optique", "optical power margin"),
    "error_rate": ("taux d'erreurs", "error rate"),
    "index": ("indice", "index"),
}

STAT_LABELS: dict[str, tuple[str, str]] = {
    "mean": ("moyenne", "mean"),
    "min": ("minimum", "minimum"),
    "max": ("maximum", "maximum"),
    "p95": ("95e centile", "95th percentile"),
    "count": ("nombre de mesures", "reading count"),
}

WINDOW_LABELS: dict[str, tuple[str, str]] = {
    "1m": ("1 min", "1 min"),
    "15m": ("15 min", "15 min"),
    "1h": ("1 h", "1 h"),
    "1d": ("la journée", "1 day"),
}


def field_label(field: str, measurement: str, language: str) -> str:
    """A readable name for ``field`` of ``measurement`` in ``language`` (``fr`` or ``en``)."""
    which = 0 if language == "fr" else 1
    if field in FIELD_LABELS:
        return FIELD_LABELS[field][which]
    if field.startswith("sub_"):
        pollutant = FIELD_LABELS.get(field[4:], (field[4:], field[4:]))[which]
        return f"sous-indice {pollutant}" if which == 0 else f"{pollutant} sub-index"
    base, _, stat = field.rpartition("_")
    if stat not in STAT_LABELS or not base:
        return field
    name = FIELD_LABELS.get(base, (base, base))[which]
    window = re.search(r"_(1m|15m|1h|1d)(?:_commune)?$", measurement)
    stat_name = STAT_LABELS[stat][which]
    if window is None:
        return f"{name}, {stat_name}"
    span = WINDOW_LABELS[window.group(1)][which]
    return f"{name}, {stat_name} sur {span}" if which == 0 else f"{name}, {span} {stat_name}"
