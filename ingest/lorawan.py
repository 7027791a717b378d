"""The LoRaWAN input: network-server uplinks read beside the native contract.

A Telegraf-style input plugin with one interface, the decoder's: ``decode(topic, payload) ->
Decoded``. A message on a ChirpStack or The Things Stack topic is translated into the native
contract message it stands for (``sensors.lorawan.translate``) and decoded by the contract's own
decoder; its radio metadata joins the readings as rows of ``lorawan_radio`` / ``lorawan_status``.
Everything after the decoder (batching, acknowledgement once durable, spool, dead-letter) is the
native path, unchanged. Sample configuration: examples/lorawan.toml.

A replayed uplink (same ChirpStack ``deduplicationId``; same DevEUI, frame counter and reception
time on The Things Stack) is dropped while remembered, and beyond that rewrites the same rows at
the same time: a no-op in the store either way.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.families import FAMILIES, Family
from sensors.lorawan.devicemap import DeviceMap
from sensors.lorawan.translate import translate_event
from sensors.lorawan.uplink import (
    CHIRPSTACK_SUBSCRIPTION,
    TTS_SUBSCRIPTION,
    UplinkError,
    is_lorawan_topic,
    parse_event,
)
from sensors.readings import Decoded, DecodeError

log = logging.getLogger(__name__)


class LorawanSettings(BaseModel):
    """``[ingest.lorawan]``: where the device map is and which network-server topics to read."""

    model_config = ConfigDict(extra="forbid")

    device_map: Path
    """The operator's device map (TOML; docs/contract.md, LoRaWAN)."""
    chirpstack_topic: str | None = CHIRPSTACK_SUBSCRIPTION
    """ChirpStack v4 event topics (JSON marshaler); None to not subscribe."""
    tts_topic: str | None = TTS_SUBSCRIPTION
    """The Things Stack v3 uplink topics; None to not subscribe."""
    replay_memory: int = Field(100_000, ge=0)
    """How many recent uplink ids are remembered to drop replays before decoding them again."""

    @property
    def topics(self) -> list[str]:
        """The topic filters this input subscribes to."""
        return [topic for topic in (self.chirpstack_topic, self.tts_topic) if topic]


class LorawanDecoder(Decoder):
    """The contract decoder, extended to read network-server topics."""

    def __init__(
        self,
        registry: CommuneRegistry,
        settings: LorawanSettings,
        *,
        devices: DeviceMap | None = None,
        clock: Callable[[], int] | None = None,
        **options: Any,
    ) -> None:
        if clock is not None:
            options["clock"] = clock
        super().__init__(registry, **options)
        self.devices = devices if devices is not None else DeviceMap.load(settings.device_map, registry)
        self._memory = settings.replay_memory
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.replays = 0
        """Replayed uplinks dropped so far."""

    def decode(self, topic: str, payload: bytes) -> Decoded:
        """Decode a native message, or translate and decode a network server's one."""
        if type(topic) is not str or not is_lorawan_topic(topic):
            return super().decode(topic, payload)
        try:
            return self._decode_lorawan(topic, payload)
        except Exception as exc:  # a translation bug must never stop ingest
            log.exception("LoRaWAN translation failed on %s", topic)
            return Decoded(
                errors=[DecodeError("internal_error", f"LoRaWAN input failed: {type(exc).__name__}: {exc}")]
            )

    def _decode_lorawan(self, topic: str, payload: bytes) -> Decoded:
        if len(payload) > self.max_payload_bytes:
            detail = f"uplink of {len(payload)} bytes exceeds the limit of {self.max_payload_bytes}"
            return Decoded(errors=[DecodeError("oversized", detail)])
        try:
            event = parse_event(topic, bytes(payload))
        except UplinkError as exc:
            return Decoded(errors=[DecodeError("bad_uplink", str(exc))])
        if event is None:
            return Decoded()  # join, ack, txack, log...: nothing to store
        if self._replayed(event.uplink_id):
            self.replays += 1
            return Decoded()
        translation = translate_event(event, self.devices)
        device = translation.device
        if device is None:
            assert translation.error is not None
            return Decoded(errors=[translation.error])
        if translation.native is not None:
            decoded = super().decode(*translation.native)
        else:
            decoded = Decoded(
                insee=device.insee,
                family=device.family,
                device_id=device.device_id,
                private=FAMILIES[Family(device.family)].private,
            )
            if translation.error is not None:
                decoded.errors.append(translation.error)
        decoded.readings.extend(translation.radio)
        return decoded

    def _replayed(self, uplink_id: str) -> bool:
        if not uplink_id or not self._memory:
            return False
        with self._lock:
            if uplink_id in self._seen:
                self._seen.move_to_end(uplink_id)
                return True
            self._seen[uplink_id] = None
            if len(self._seen) > self._memory:
                self._seen.popitem(last=False)
        return False
