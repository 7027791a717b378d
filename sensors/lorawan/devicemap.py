"""The device map: which LoRaWAN device is which contract device, and how its data maps.

A TOML file the operator edits (example: examples/lorawan-devices.toml)::

    [profiles.elsys-ers-co2]
    codec = "javascript"            # or "cayenne_lpp", or "none": the network server decodes
    script = "codecs/elsys.js"      # relative to this file
    ignore = ["vdd", "light"]       # decoded keys deliberately not kept
    [profiles.elsys-ers-co2.fields]
    temperature = "temperature"                       # decoded key = contract field
    humidity = { field = "relativeHumidity", unit = "P1" }  # with its UN/CEFACT unit code

    [devices.A81758FFFE0312AB]
    insee = "78498"
    family = "building"
    device_id = "ers-mairie-1"
    profile = "elsys-ers-co2"

It is validated with pydantic like the settings; a problem raises ``DeviceMapError`` naming the
file, the line of the table at fault and the key.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES, Family
from sensors.fiware import UNIT_NAMES, convert_unit
from sensors.lorawan.codecs import CodecError, JavaScriptCodec
from sensors.topics import device_id_problem

DEV_EUI = re.compile(r"[0-9A-Fa-f]{16}")
CodecKind = Literal["none", "javascript", "cayenne_lpp"]


class DeviceMapError(ValueError):
    """The device map is not valid; the message names the line and key."""


class FieldMapping(BaseModel):
    """Where one decoded key goes: a contract field, in a unit the decoder converts from."""

    model_config = ConfigDict(extra="forbid")

    field: str
    unit: str | None = None
    """UN/CEFACT code of the decoded value's unit (``P1`` percent, ``FAH``, ``WHR``...), when it
    is not already the contract's."""


class Profile(BaseModel):
    """A device profile: one kind of device, decoded and mapped the same way."""

    model_config = ConfigDict(extra="forbid")

    codec: CodecKind = "none"
    script: Path | None = None
    codec_time_limit_s: float = Field(0.2, gt=0, le=10)
    """CPU time one ``decodeUplink`` call may take."""
    codec_memory_limit_mb: int = Field(32, ge=1, le=1024)
    fields: dict[str, str | FieldMapping] = Field(min_length=1)
    """Decoded key (dotted for a nested object: ``air.pm25``) -> contract field."""
    ignore: list[str] = []
    """Decoded keys not kept, without a word; any other unmapped key is refused as unknown_field."""

    @model_validator(mode="after")
    def _script_for_javascript(self) -> Profile:
        if self.codec == "javascript" and self.script is None:
            raise ValueError("codec 'javascript' needs script = '<file>.js'")
        if self.codec != "javascript" and self.script is not None:
            raise ValueError(
                f"script is only for codec 'javascript' (this profile's codec is {self.codec!r})"
            )
        return self

    def mappings(self) -> dict[str, FieldMapping]:
        """Every decoded key's mapping in the long form."""
        return {
            key: value if isinstance(value, FieldMapping) else FieldMapping(field=value)
            for key, value in self.fields.items()
        }


class Device(BaseModel):
    """One LoRaWAN device, by DevEUI."""

    model_config = ConfigDict(extra="forbid")

    insee: str = Field(pattern=r"^[0-9][0-9AB][0-9]{3}$")
    family: Family
    device_id: str
    profile: str
    private: bool = False
    """Never published: ``smartcity opendata export`` leaves its data out (``exclude_devices``)."""

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return _valid_device_id(value)


def _valid_device_id(value: str) -> str:
    problem = device_id_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class Gateway(BaseModel):
    """A gateway, by EUI: the id it has on the platform (as network equipment, for alerts)."""

    model_config = ConfigDict(extra="forbid")

    device_id: str

    @field_validator("device_id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        return _valid_device_id(value)


class DeviceMapModel(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    profiles: dict[str, Profile] = {}
    devices: dict[str, Device] = {}
    gateways: dict[str, Gateway] = {}


@dataclass(frozen=True, slots=True)
class Target:
    """A contract field and how to bring a decoded value into its unit."""

    field: str
    unit: str | None


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A checked profile, its codec loaded."""

    name: str
    codec: CodecKind
    script: JavaScriptCodec | None
    targets: dict[str, Target]
    ignore: frozenset[str]


@dataclass(frozen=True, slots=True)
class LorawanDevice:
    """A checked device entry."""

    dev_eui: str
    insee: str
    family: str
    device_id: str
    profile: DeviceProfile
    private: bool = False


class DeviceMap:
    """DevEUI -> device, checked against the contract (and the commune registry, when given)."""

    def __init__(
        self,
        devices: dict[str, LorawanDevice],
        source: str = "<device map>",
        gateways: dict[str, str] | None = None,
    ) -> None:
        self.devices = devices
        self.source = source
        self.gateways = gateways or {}
        """Gateway EUI (lower case) -> its device id on the platform."""

    def gateway_id(self, eui: str) -> str:
        """The platform's id of a gateway: the one the map gives it, else its EUI."""
        return self.gateways.get(eui.lower(), eui.lower())

    def get(self, dev_eui: str) -> LorawanDevice | None:
        """The device of a DevEUI (any case), or None when the map does not know it."""
        return self.devices.get(dev_eui.upper())

    def private_devices(self) -> list[str]:
        """The devices flagged private, as ``insee/device_id`` (``[opendata] exclude_devices``)."""
        return [f"{d.insee}/{d.device_id}" for d in self.devices.values() if d.private]

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[LorawanDevice]:
        return iter(self.devices.values())

    @classmethod
    def load(cls, path: str | Path, registry: CommuneRegistry | None = None) -> DeviceMap:
        """Read and check a device map file; ``DeviceMapError`` naming the line and key."""
        path = Path(path)
        try:
            text = path.read_text("utf-8")
        except OSError as exc:
            raise DeviceMapError(f"cannot read device map {path}: {exc.strerror}") from None
        return cls.parse(text, source=str(path), base=path.parent, registry=registry)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        source: str = "<device map>",
        base: Path = Path(),
        registry: CommuneRegistry | None = None,
    ) -> DeviceMap:
        """Check a device map given as TOML text; scripts are found relative to ``base``."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DeviceMapError(f"{source}: not valid TOML: {exc}") from None
        bad = [
            (table, key)
            for table in ("devices", "gateways")
            if type(entries := raw.get(table)) is dict
            for key in entries
            if not DEV_EUI.fullmatch(key)
        ]
        if bad:
            problems = [
                f"{_where(text, source, [table, key])}: {key!r} is not an EUI (16 hex digits)"
                for table, key in bad
            ]
            raise DeviceMapError("invalid device map:\n  " + "\n  ".join(problems))
        try:
            model = DeviceMapModel(**raw)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                loc = [
                    str(part) for part in error["loc"] if not str(part).startswith(("str", "FieldMapping"))
                ]
                value = error.get("input")
                shown = "" if isinstance(value, dict) else f" (got {value!r})"
                problems.append(f"{_where(text, source, loc)}: {error['msg']}{shown}")
            raise DeviceMapError("invalid device map:\n  " + "\n  ".join(problems)) from None
        problems = []
        profiles: dict[str, DeviceProfile] = {}
        for name, profile in model.profiles.items():
            try:
                profiles[name] = _check_profile(name, profile, base)
            except DeviceMapError as exc:
                problems.append(f"{_where(text, source, ['profiles', name])}: {exc}")
        devices: dict[str, LorawanDevice] = {}
        seen: dict[tuple[str, str, str], str] = {}
        for dev_eui, device in model.devices.items():
            where = _where(text, source, ["devices", dev_eui])
            checked = profiles.get(device.profile)
            if checked is None:
                if device.profile not in model.profiles:
                    problems.append(f"{where}: profile {device.profile!r} is not defined under [profiles]")
                continue
            if registry is not None and device.insee not in registry:
                problems.append(f"{where}: insee {device.insee!r} is not in the commune registry")
            spec = FAMILIES[device.family]
            if spec.private and checked.ignore:
                problems.append(
                    f"{where}: profile {device.profile!r} has an ignore list, which {device.family.value} "
                    "devices may not have: every decoded key is checked against the family's allow-list "
                    "(no images, faces and identities)"
                )
            for key, target in checked.targets.items():
                field_spec = spec.field(target.field)
                if field_spec is None:
                    problems.append(
                        f"{where}: profile {device.profile!r} maps {key!r} to {target.field!r}, "
                        f"which is not a field of {device.family.value}"
                    )
                elif target.unit is not None:
                    converted = convert_unit(1.0, target.unit, field_spec.unit_code)
                    if isinstance(converted, str):
                        problems.append(f"{where}: profile {device.profile!r}, key {key!r}: {converted}")
            identity = (device.insee, device.family.value, device.device_id)
            if identity in seen:
                problems.append(f"{where}: {'/'.join(identity)} is already the device of {seen[identity]}")
            seen[identity] = dev_eui
            devices[dev_eui.upper()] = LorawanDevice(
                dev_eui=dev_eui.upper(),
                insee=device.insee,
                family=device.family.value,
                device_id=device.device_id,
                profile=checked,
                private=device.private,
            )
        if problems:
            raise DeviceMapError("invalid device map:\n  " + "\n  ".join(problems))
        gateways = {eui.lower(): gateway.device_id for eui, gateway in model.gateways.items()}
        return cls(devices, source, gateways)


def _check_profile(name: str, profile: Profile, base: Path) -> DeviceProfile:
    targets: dict[str, Target] = {}
    for key, mapping in profile.mappings().items():
        if mapping.unit is not None and mapping.unit not in UNIT_NAMES:
            known = ", ".join(f"{code} ({unit})" for code, unit in UNIT_NAMES.items())
            raise DeviceMapError(f"fields.{key}: unknown unit code {mapping.unit!r}; known: {known}")
        targets[key] = Target(mapping.field, mapping.unit)
    script = None
    if profile.script is not None:
        path = profile.script if profile.script.is_absolute() else base / profile.script
        try:
            source = path.read_text("utf-8")
        except OSError as exc:
            raise DeviceMapError(f"script {path}: {exc.strerror}") from None
        try:
            script = JavaScriptCodec(
                source,
                name=name,
                time_limit_s=profile.codec_time_limit_s,
                memory_limit_bytes=profile.codec_memory_limit_mb << 20,
            )
        except CodecError as exc:
            raise DeviceMapError(str(exc)) from None
    return DeviceProfile(name, profile.codec, script, targets, frozenset(profile.ignore))


def _where(text: str, source: str, loc: list[str]) -> str:
    """``file:line: key.path``, the line being that of the table header of the entry at fault."""
    dotted = ".".join(loc)
    if len(loc) >= 2:
        header = re.compile(rf'^[ \t]*\[\s*{re.escape(loc[0])}\s*\.\s*"?{re.escape(loc[1])}"?\s*[\].]', re.M)
        match = header.search(text)
        if match is not None:
            return f"{source}:{text.count(chr(10), 0, match.start()) + 1}: {dotted}"
    return f"{source}: {dotted}"
