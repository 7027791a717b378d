"""The measurements of LoRaWAN radio metadata, beside the families' readings (docs/measurements.md).

They travel as ``Reading`` objects of a pseudo-family so they share the readings' batching,
spool and store path; ``sensors.frames`` gives them their columns. Text columns use the
``enum`` kind only for its store dtype (String): these rows are built here, never decoded.
"""

from __future__ import annotations

from sensors.families import FieldSpec

RADIO_MEASUREMENT = "lorawan_radio"
STATUS_MEASUREMENT = "lorawan_status"

RADIO_FIELDS = (
    FieldSpec("gateway_id", "enum", "", "Gateway that heard the uplink best (highest SNR, then RSSI)"),
    FieldSpec("rssi", "float", "dBm", "RSSI at that gateway"),
    FieldSpec("snr", "float", "dB", "SNR at that gateway"),
    FieldSpec("gateways", "int", "1", "How many gateways heard the uplink"),
    FieldSpec("gateway_ids", "enum", "", "Every gateway that heard it, comma-separated"),
    FieldSpec("f_cnt", "int", "1", "Uplink frame counter"),
    FieldSpec("f_port", "int", "1", "Uplink port"),
    FieldSpec("dev_eui", "enum", "", "The device's DevEUI"),
)
STATUS_FIELDS = (
    FieldSpec("battery", "float", "%", "Battery level; null on external power or when not measurable"),
    FieldSpec("margin", "int", "dB", "Demodulation margin of the last DevStatusReq"),
    FieldSpec("external_power", "bool", "", "Whether the device is on external power"),
)

MEASUREMENT_FIELDS: dict[str, tuple[FieldSpec, ...]] = {
    RADIO_MEASUREMENT: RADIO_FIELDS,
    STATUS_MEASUREMENT: STATUS_FIELDS,
}
"""Fields of each LoRaWAN measurement, by measurement name."""
