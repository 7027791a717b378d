"""The JSON events of the two network servers, parsed into one neutral shape.

ChirpStack v4 (JSON marshaler) publishes on ``application/{application_id}/device/{dev_eui}/event/{event}``
an ``UplinkEvent`` (``up``) or a ``StatusEvent`` (``status``) of its integration API
(api/proto/integration/integration.proto), in protobuf's canonical JSON (camelCase keys, bytes in
base64). The Things Stack v3 publishes ``ApplicationUp`` messages on
``v3/{application}@{tenant}/devices/{device}/up`` (``/up`` is the only event read here); it
omits empty fields, so an absent ``f_cnt`` or ``f_port`` is 0.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from sensors.decoder import parse_rfc3339

Server = Literal["chirpstack", "tts"]

CHIRPSTACK_TOPIC = re.compile(r"^application/([^/]+)/device/([0-9A-Fa-f]{16})/event/([a-z]+)$")
TTS_TOPIC = re.compile(r"^v3/([^/@]+)(?:@([^/]+))?/devices/([^/]+)/up$")

CHIRPSTACK_SUBSCRIPTION = "application/+/device/+/event/+"
TTS_SUBSCRIPTION = "v3/+/devices/+/up"


@dataclass(frozen=True, slots=True)
class RadioReception:
    """One gateway's reception of an uplink."""

    gateway_id: str
    rssi: float | None
    snr: float | None


@dataclass(slots=True)
class Uplink:
    """A data uplink, whichever server it came through."""

    server: Server
    dev_eui: str
    """Upper-case hex, 16 digits."""
    time: str
    """When the network server received it, RFC 3339 as the server wrote it."""
    time_ns: int
    f_cnt: int
    f_port: int
    payload: bytes
    decoded: dict[str, Any] | None
    """The network server's own decoded object, when its device profile has a codec."""
    receptions: list[RadioReception] = field(default_factory=list)
    uplink_id: str = ""
    """What makes a replay recognisable: ChirpStack's ``deduplicationId``; for The Things Stack,
    the frame counter and reception time (it has no such id)."""


@dataclass(slots=True)
class DeviceStatus:
    """A ChirpStack ``status`` event: the answer to a DevStatusReq MAC command."""

    dev_eui: str
    time: str
    time_ns: int
    uplink_id: str
    margin: int | None
    """Demodulation margin of the last DevStatusReq, dB."""
    battery_level: float | None
    """Percent; None when the device is on external power or cannot measure it."""
    external_power: bool


Event = Uplink | DeviceStatus


class UplinkError(ValueError):
    """The event is not a well-formed uplink of its server; the message says what is wrong."""


def is_lorawan_topic(topic: str) -> bool:
    """Whether ``topic`` is a network server's topic this module reads (cheap prefix test)."""
    return topic.startswith(("application/", "v3/"))


def parse_event(topic: str, payload: bytes) -> Event | None:
    """Parse one network-server message; None for an event that carries no data (join, ack, ...).

    Raises ``UplinkError`` naming the topic or key at fault.
    """
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise UplinkError(f"payload is not valid JSON: {exc}") from None
    if type(document) is not dict:
        raise UplinkError("payload is not a JSON object")
    match = CHIRPSTACK_TOPIC.match(topic)
    if match is not None:
        event = match.group(3)
        if event == "up":
            return _chirpstack_up(document, match.group(2))
        if event == "status":
            return _chirpstack_status(document, match.group(2))
        return None
    match = TTS_TOPIC.match(topic)
    if match is not None:
        return _tts_up(document)
    raise UplinkError(
        f"topic {topic!r} is neither application/{{application_id}}/device/{{dev_eui}}/event/{{event}} "
        "(ChirpStack) nor v3/{application}@{tenant}/devices/{device}/up (The Things Stack)"
    )


def _get(document: dict[str, Any], key: str, kind: type, where: str, default: Any = None) -> Any:
    value = document.get(key, default)
    if value is default and default is not None:
        return value
    if value is None:
        raise UplinkError(f"{where}{key} is missing")
    # JSON integers are acceptable where a float is expected (an RSSI of -80).
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise UplinkError(f"{where}{key} is {value!r}, expected a {kind.__name__}")
    return value


def _dev_eui(value: str, where: str) -> str:
    if not re.fullmatch(r"[0-9A-Fa-f]{16}", value):
        raise UplinkError(f"{where} {value!r} is not a DevEUI (16 hex digits)")
    return value.upper()


def _instant(text: str, where: str) -> int:
    parsed = parse_rfc3339(text)
    if isinstance(parsed, str):
        raise UplinkError(f"{where}: {parsed}")
    return parsed


def _base64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UplinkError(f"{where} is not valid base64") from None


def _object(value: Any, where: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise UplinkError(f"{where} is {value!r}, expected a JSON object")
    return value


def _chirpstack_device(document: dict[str, Any], topic_eui: str) -> str:
    info = _get(document, "deviceInfo", dict, "")
    dev_eui = _dev_eui(_get(info, "devEui", str, "deviceInfo."), "deviceInfo.devEui")
    if dev_eui != topic_eui.upper():
        raise UplinkError(f"deviceInfo.devEui {dev_eui} differs from the topic's DevEUI {topic_eui}")
    return dev_eui


def _chirpstack_up(document: dict[str, Any], topic_eui: str) -> Uplink:
    dev_eui = _chirpstack_device(document, topic_eui)
    time = _get(document, "time", str, "")
    receptions = []
    for position, rx in enumerate(_get(document, "rxInfo", list, "", [])):
        if type(rx) is not dict:
            raise UplinkError(f"rxInfo[{position}] is not an object")
        where = f"rxInfo[{position}]."
        receptions.append(
            RadioReception(
                gateway_id=_get(rx, "gatewayId", str, where).lower(),
                rssi=_get(rx, "rssi", float, where, 0.0) if "rssi" in rx else None,
                snr=_get(rx, "snr", float, where, 0.0) if "snr" in rx else None,
            )
        )
    return Uplink(
        server="chirpstack",
        dev_eui=dev_eui,
        time=time,
        time_ns=_instant(time, "time"),
        f_cnt=_get(document, "fCnt", int, "", 0),
        f_port=_get(document, "fPort", int, "", 0),
        payload=_base64(_get(document, "data", str, "", ""), "data"),
        decoded=_object(document.get("object"), "object"),
        receptions=receptions,
        uplink_id=_get(document, "deduplicationId", str, ""),
    )


def _chirpstack_status(document: dict[str, Any], topic_eui: str) -> DeviceStatus:
    dev_eui = _chirpstack_device(document, topic_eui)
    time = _get(document, "time", str, "")
    unavailable = _get(document, "batteryLevelUnavailable", bool, "", False)
    external = _get(document, "externalPowerSource", bool, "", False)
    battery = None if unavailable or external else _get(document, "batteryLevel", float, "", 0.0)
    return DeviceStatus(
        dev_eui=dev_eui,
        time=time,
        time_ns=_instant(time, "time"),
        uplink_id=_get(document, "deduplicationId", str, ""),
        margin=_get(document, "margin", int, "", 0),
        battery_level=battery,
        external_power=external,
    )


def _tts_up(document: dict[str, Any]) -> Uplink | None:
    ids = _get(document, "end_device_ids", dict, "")
    message = document.get("uplink_message")
    # A console-simulated uplink is a test by a person, not a measurement of the commune.
    if message is None or document.get("simulated") is True:
        return None
    if type(message) is not dict:
        raise UplinkError("uplink_message is not an object")
    dev_eui = _dev_eui(_get(ids, "dev_eui", str, "end_device_ids."), "end_device_ids.dev_eui")
    # The Network Server's reception time is the uplink's; the top-level one is the Application
    # Server's, later by the processing delay.
    time = message.get("received_at") or _get(document, "received_at", str, "")
    if type(time) is not str:
        raise UplinkError(f"uplink_message.received_at is {time!r}, expected a string")
    receptions = []
    for position, rx in enumerate(_get(message, "rx_metadata", list, "uplink_message.", [])):
        if type(rx) is not dict:
            raise UplinkError(f"uplink_message.rx_metadata[{position}] is not an object")
        where = f"uplink_message.rx_metadata[{position}]."
        gateway_ids = _get(rx, "gateway_ids", dict, where)
        gateway = gateway_ids.get("eui") or gateway_ids.get("gateway_id")
        if type(gateway) is not str:
            raise UplinkError(f"{where}gateway_ids has neither eui nor gateway_id")
        receptions.append(
            RadioReception(
                gateway_id=gateway.lower(),
                rssi=_get(rx, "rssi", float, where, 0.0) if "rssi" in rx else None,
                snr=_get(rx, "snr", float, where, 0.0) if "snr" in rx else None,
            )
        )
    f_cnt = _get(message, "f_cnt", int, "uplink_message.", 0)
    return Uplink(
        server="tts",
        dev_eui=dev_eui,
        time=time,
        time_ns=_instant(time, "uplink_message.received_at"),
        f_cnt=f_cnt,
        f_port=_get(message, "f_port", int, "uplink_message.", 0),
        payload=_base64(
            _get(message, "frm_payload", str, "uplink_message.", ""), "uplink_message.frm_payload"
        ),
        decoded=_object(message.get("decoded_payload"), "uplink_message.decoded_payload"),
        receptions=receptions,
        uplink_id=f"{dev_eui}/{f_cnt}/{time}",
    )
