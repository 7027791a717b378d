"""Helpers of the LoRaWAN tests: the network servers' sample events of tests/data/lorawan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.servers import REPO

DATA = REPO / "tests" / "data" / "lorawan"
DEVICE_MAP = DATA / "devices.toml"
SAMPLE_DAY = "2026-12-05"
"""The day the samples were written on; tests move them to yesterday (inside InfluxDB's retention)."""

CHIRPSTACK_APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
SAMPLES: dict[str, str] = {
    "chirpstack_up_decoded": f"application/{CHIRPSTACK_APP}/device/0101010101010101/event/up",
    "chirpstack_up_raw": f"application/{CHIRPSTACK_APP}/device/0202020202020202/event/up",
    "chirpstack_status": f"application/{CHIRPSTACK_APP}/device/0101010101010101/event/status",
    "tts_up_raw": "v3/conflans-trafic@ttn/devices/trafic-rue-de-paris/up",
    "tts_up_decoded": "v3/andresy-air@ttn/devices/aq-andresy-ecole/up",
}
"""Sample file name -> the topic its server publishes it on."""


def sample_day() -> str:
    """The day the samples are moved to: yesterday, UTC."""
    return (datetime.now(UTC) - timedelta(days=1)).date().isoformat()


def sample(name: str, replace: dict[str, str] | None = None) -> bytes:
    """A sample event as its server sends it, dated yesterday; ``replace`` edits its text."""
    text = (DATA / f"{name}.json").read_text("utf-8").replace(SAMPLE_DAY, sample_day())
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    return text.encode()


def codec_path(name: str) -> Path:
    """A JavaScript codec of tests/data/lorawan/codecs."""
    return DATA / "codecs" / name
