"""Payload decoders for devices whose network server did not decode the uplink.

``JavaScriptCodec`` runs a vendor codec in the format of the LoRaWAN device repository
(TheThingsNetwork/lorawan-devices): a script defining ``decodeUplink({bytes, fPort})`` that
returns ``{data, warnings, errors}``. The script runs in QuickJS (PyPI ``quickjs``), an
interpreter of its own with no file, network or process access, under a time limit and a memory
limit: a vendor script that loops or allocates without end fails its uplink, never the ingestor.
``decode_cayenne_lpp`` reads Cayenne LPP frames with ``pycayennelpp``.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import quickjs
from cayennelpp import LppFrame


class CodecError(ValueError):
    """The payload could not be decoded; the message says why, for the dead-letter."""


class JavaScriptCodec:
    """One vendor ``decodeUplink`` script in its own QuickJS context.

    A context is not thread-safe: calls are serialised. A script that failed on a limit leaves
    its context in an unknown state, so the context is rebuilt before the next call.
    """

    def __init__(
        self, source: str, *, name: str, time_limit_s: float = 0.5, memory_limit_bytes: int = 32 << 20
    ):
        self.name = name
        self._source = source
        self._time_limit_s = time_limit_s
        self._memory_limit = memory_limit_bytes
        self._lock = threading.Lock()
        self._context: quickjs.Context | None = None
        self._new_context()  # a script that does not even load is refused when the map loads

    def _new_context(self) -> quickjs.Context:
        context = quickjs.Context()
        context.set_memory_limit(self._memory_limit)
        context.set_time_limit(self._time_limit_s)
        try:
            context.eval(self._source)
            kind = context.eval("typeof decodeUplink")
        except quickjs.JSException as exc:
            raise CodecError(f"codec {self.name}: the script fails to load: {_first_line(exc)}") from None
        if kind != "function":
            raise CodecError(f"codec {self.name}: the script defines no decodeUplink function")
        # Only JSON crosses the boundary: the script never holds a Python object.
        context.eval(
            "function __smartcity_decode(input) {  return JSON.stringify(decodeUplink(JSON.parse(input)));}"
        )
        self._context = context
        return context

    def decode(self, payload: bytes, f_port: int) -> dict[str, Any]:
        """The ``data`` object the script returns for one uplink; ``CodecError`` otherwise."""
        argument = json.dumps({"bytes": list(payload), "fPort": f_port})
        with self._lock:
            context = self._context or self._new_context()
            try:
                output = context.eval(f"__smartcity_decode({json.dumps(argument)})")
            except quickjs.JSException as exc:
                self._context = None
                raise CodecError(f"codec {self.name} failed: {_first_line(exc)}") from None
        if type(output) is not str:
            raise CodecError(f"codec {self.name} returned no JSON-serialisable result")
        result = json.loads(output)
        if type(result) is not dict:
            raise CodecError(f"codec {self.name} returned {output[:80]}, not an object")
        errors = result.get("errors")
        if errors:
            raise CodecError(f"codec {self.name} refused the payload: {'; '.join(map(str, errors))}")
        data = result.get("data")
        if type(data) is not dict:
            raise CodecError(f"codec {self.name} returned no data object")
        return data


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    message = text[0] if text else type(exc).__name__
    # QuickJS reports both limits as InternalError; say which one in plain words.
    if message == "InternalError: interrupted":
        return "time limit exceeded (the script ran too long)"
    if message == "InternalError: out of memory":
        return "memory limit exceeded"
    return message


def decode_cayenne_lpp(payload: bytes) -> dict[str, Any]:
    """Cayenne LPP items as ``{"<type>_<channel>": value}``, e.g. ``temperature_3``.

    A multi-valued type (accelerometer, GPS) gives a list. ``CodecError`` on a malformed frame.
    """
    try:
        frame = LppFrame().from_bytes(payload)
    except Exception as exc:  # pycayennelpp raises BufferError, ValueError, KeyError...
        raise CodecError(f"not a Cayenne LPP frame: {type(exc).__name__}: {exc}") from None
    data: dict[str, Any] = {}
    for item in frame.data:
        key = f"{_snake(str(item.type))}_{item.channel}"
        values = list(item.value)
        data[key] = values[0] if len(values) == 1 else values
    return data


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
