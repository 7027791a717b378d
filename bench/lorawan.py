"""LoRaWAN input throughput: uplinks per second on one core, per decoding path, against the
native decoder on the very message each uplink is translated into.

Run: ``.venv/bin/python -m bench.lorawan [--quick]``. The uplinks are the real-format samples of
tests/data/lorawan with the device map beside them: ChirpStack with the server's decoded object,
ChirpStack with a Cayenne LPP payload, The Things Stack with a vendor JavaScript codec run in the
QuickJS sandbox. The replay memory is off, so the same uplink is decoded again every time.
The baseline decodes, in the same run, the native contract message the uplink becomes: the ratio
of CPU times is what the LoRaWAN layer costs on top of the contract's own checks. CPU time is
process time, so it stays meaningful on a loaded machine where wall-clock rates do not.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from ingest.lorawan import LorawanDecoder, LorawanSettings
from sensors.communes import CommuneRegistry
from sensors.decoder import Decoder
from sensors.lorawan.translate import translate

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "lorawan"
APP = "17c82e96-be03-4f38-aef3-f83d48582d97"
WORKLOADS = {
    "ChirpStack, server-decoded": (
        "chirpstack_up_decoded",
        f"application/{APP}/device/0101010101010101/event/up",
    ),
    "ChirpStack, Cayenne LPP": ("chirpstack_up_raw", f"application/{APP}/device/0202020202020202/event/up"),
    "TTS, JavaScript codec": ("tts_up_raw", "v3/conflans-trafic@ttn/devices/trafic-rue-de-paris/up"),
}


def _rate(run: Callable[[], object], seconds: float) -> tuple[float, float]:
    """(calls per wall second, CPU microseconds per call)."""
    count = 0
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            run()
        count += 50
    return count / (time.perf_counter() - wall), (time.process_time() - cpu) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1 s per measurement instead of 5")
    args = parser.parse_args()
    seconds = 1.0 if args.quick else 5.0
    registry = CommuneRegistry.load()
    settings = LorawanSettings(device_map=DATA / "devices.toml", replay_memory=0)
    lorawan = LorawanDecoder(registry, settings)
    native = Decoder(registry)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    print(f"{'workload':<28} {'uplinks/s':>10} {'CPU µs/uplink':>14} {'native CPU µs/msg':>18} {'ratio':>6}")
    for name, (sample, topic) in WORKLOADS.items():
        uplink = (DATA / f"{sample}.json").read_text("utf-8").replace("2026-12-05", yesterday).encode()
        assert lorawan.decode(topic, uplink).ok, name
        native_message = translate(topic, uplink, lorawan.devices).native
        assert native_message is not None and native.decode(*native_message).ok
        rate, cpu_us = _rate(partial(lorawan.decode, topic, uplink), seconds)
        _, native_cpu_us = _rate(partial(native.decode, *native_message), seconds)
        print(
            f"{name:<28} {rate:>10,.0f} {cpu_us:>14,.1f} {native_cpu_us:>18,.1f}"
            f" {cpu_us / native_cpu_us:>6.1f}"
        )


if __name__ == "__main__":
    main()
