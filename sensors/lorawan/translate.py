"""One network-server event -> the native contract message it stands for, and its radio rows.

The translation only reshapes: the native message (topic ``smartcity/v1/{insee}/{family}/{device_id}``,
payload ``{"ts": <uplink time>, <field>: <value>...}``) then goes through the contract's own
decoder, so a LoRaWAN reading is checked (types, bounds, allowed fields) exactly like one a
device publishes natively.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sensors.families import FAMILIES, Family
from sensors.fiware import convert_unit
from sensors.lorawan.codecs import CodecError, decode_cayenne_lpp
from sensors.lorawan.devicemap import DeviceMap, LorawanDevice
from sensors.lorawan.radio import RADIO_MEASUREMENT, STATUS_MEASUREMENT
from sensors.lorawan.uplink import DeviceStatus, Event, Uplink, UplinkError, parse_event
from sensors.readings import DecodeError, FieldValue, Reading
from sensors.topics import reading_topic


@dataclass(slots=True)
class Translation:
    """What one network-server message becomes."""

    event: Event | None = None
    device: LorawanDevice | None = None
    native: tuple[str, bytes] | None = None
    """The native contract message (topic, JSON payload), when the event carries data."""
    radio: list[Reading] = field(default_factory=list)
    error: DecodeError | None = None
    """Why the message was refused as a whole (bad_uplink, unknown_device, codec_error)."""


def translate(topic: str, payload: bytes, devices: DeviceMap) -> Translation:
    """Translate one message of a network-server topic; never raises on bad input."""
    try:
        event = parse_event(topic, payload)
    except UplinkError as exc:
        return Translation(error=DecodeError("bad_uplink", str(exc)))
    if event is None:
        return Translation()
    return translate_event(event, devices)


def translate_event(event: Event, devices: DeviceMap) -> Translation:
    """Translate one parsed event (see ``translate``)."""
    device = devices.get(event.dev_eui)
    if device is None:
        return Translation(
            event=event,
            error=DecodeError(
                "unknown_device", f"DevEUI {event.dev_eui} is not in the device map {devices.source}"
            ),
        )
    result = Translation(event=event, device=device)
    if isinstance(event, DeviceStatus):
        result.radio.append(_status_row(device, event))
        return result
    result.radio.append(_radio_row(device, event, devices))
    if not event.payload and event.decoded is None:
        return result  # a MAC-only uplink (port 0 or empty): radio metadata, no reading
    try:
        data = _decoded(device, event)
    except CodecError as exc:
        result.error = DecodeError("codec_error", str(exc))
        return result
    body: dict[str, Any] = {"ts": event.time}
    body.update(_mapped(device, data))
    result.native = (
        reading_topic(device.insee, device.family, device.device_id),
        json.dumps(body, ensure_ascii=False, default=str).encode(),
    )
    return result


def _decoded(device: LorawanDevice, uplink: Uplink) -> dict[str, Any]:
    if uplink.decoded is not None:
        return uplink.decoded
    profile = device.profile
    if profile.script is not None:
        return profile.script.decode(uplink.payload, uplink.f_port)
    if profile.codec == "cayenne_lpp":
        return decode_cayenne_lpp(uplink.payload)
    raise CodecError(
        f"the network server sent no decoded object and profile {profile.name!r} has no codec "
        "(set codec = 'javascript' or 'cayenne_lpp', or add a codec to the device profile on the server)"
    )


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if type(value) is dict:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _mapped(device: LorawanDevice, data: dict[str, Any]) -> dict[str, Any]:
    """Decoded keys renamed to contract fields and converted to the contract's units.

    A key neither mapped nor ignored is passed on under its own name: the contract decoder
    keeps it if it is a field of the family and refuses it (``unknown_field``) otherwise. For a
    private family (cameras, an allow-list) an unmapped key is passed on with its whole top-level
    structure, so the decoder's allow-list sees every key inside it.
    """
    profile = device.profile
    spec = FAMILIES[Family(device.family)]
    out: dict[str, Any] = {}
    for key, value in _flatten(data).items():
        target = profile.targets.get(key)
        if target is None:
            if spec.private:
                top = key.split(".", 1)[0]
                out.setdefault(top, data.get(top, value))
            elif key not in profile.ignore:
                out.setdefault(key, value)
            continue
        out[target.field] = value
        if target.unit is not None and isinstance(value, int | float) and not isinstance(value, bool):
            field_spec = spec.field(target.field)
            converted = convert_unit(float(value), target.unit, field_spec.unit_code if field_spec else None)
            # Convertibility was checked when the map loaded; a non-number is left to the decoder.
            if not isinstance(converted, str):
                out[target.field] = converted
    return out


def _radio_row(device: LorawanDevice, uplink: Uplink, devices: DeviceMap) -> Reading:
    fields: dict[str, FieldValue] = {
        "gateways": len(uplink.receptions),
        "f_cnt": uplink.f_cnt,
        "f_port": uplink.f_port,
        "dev_eui": uplink.dev_eui,
    }
    if uplink.receptions:
        best = max(
            uplink.receptions,
            key=lambda rx: (rx.snr if rx.snr is not None else -1e9, rx.rssi if rx.rssi is not None else -1e9),
        )
        fields["gateway_id"] = devices.gateway_id(best.gateway_id)
        fields["gateway_ids"] = ",".join(
            sorted({devices.gateway_id(rx.gateway_id) for rx in uplink.receptions})
        )
        if best.rssi is not None:
            fields["rssi"] = best.rssi
        if best.snr is not None:
            fields["snr"] = best.snr
    return Reading(device.insee, RADIO_MEASUREMENT, device.device_id, uplink.time_ns, fields)


def _status_row(device: LorawanDevice, status: DeviceStatus) -> Reading:
    fields: dict[str, FieldValue] = {"external_power": status.external_power}
    if status.margin is not None:
        fields["margin"] = status.margin
    if status.battery_level is not None:
        fields["battery"] = status.battery_level
    return Reading(device.insee, STATUS_MEASUREMENT, device.device_id, status.time_ns, fields)
