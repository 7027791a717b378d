"""One publisher of the soak's fleet, run as its own process so its CPU is measured apart:

    python -m bench.soak.feed SPEC.json

SPEC names the broker, the communes and families this publisher covers, the fleet size, the simulated span
and the speed-up. It generates its part of the fleet (default faults), writes the readings the
store should hold (``family``, ``device_id``, ``time``) to ``SPEC.expected.parquet`` and
``ready`` beside SPEC when it starts publishing, publishes, and writes the result (what was
sent, what the store should hold) to ``SPEC.result.json``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from sensors.communes import CommuneRegistry
from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet
from simulator.publisher import PublishOptions, build_messages, publish_messages


@dataclass(frozen=True)
class FeedSpec:
    """What one publisher sends."""

    host: str
    port: int
    communes: list[str]
    families: list[str]
    devices_per_family: int
    period_s: float
    start: str
    """Simulated time of the first reading (ISO 8601, UTC)."""
    span_s: float
    """Simulated seconds covered."""
    speedup: float
    """Simulated seconds per wall second."""
    client_id: str
    seed: int = 42
    faults: str = "default"
    communes_file: str | None = None
    """The commune registry the communes are in (None: the shipped one)."""


def spread(messages: pl.DataFrame, period_s: float, end_ns: int) -> pl.DataFrame:
    """Delay each device's messages by a fixed share of its period, so the fleet does not send
    on one grid instant (real devices boot at random times): a steady rate, not a burst a period.

    Late deliveries due after the span (up to 30 simulated minutes: half an hour of wall time
    at real time) go out at its end instead, still after the readings that followed them, so a
    run lasts its span."""
    period_ns = int(period_s * 1e9)
    offset = (pl.col("topic").hash(seed=7) % period_ns).cast(pl.Int64)
    return messages.with_columns(pl.min_horizontal(pl.col("send_ns") + offset, pl.lit(end_ns))).sort(
        "send_ns", maintain_order=True
    )


def expected_keys(frames: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """``family``, ``device_id``, ``time`` of every reading the store should hold: what names
    the missing ones when a soak comes up short."""
    return pl.concat(
        [
            frame.select(pl.lit(family).alias("family"), "device_id", "time")
            for family, frame in frames.items()
        ]
    )


def main(spec_path: Path) -> int:
    """Generate, publish, report."""
    spec = FeedSpec(**json.loads(spec_path.read_text()))
    start = datetime.fromisoformat(spec.start)
    config = FleetConfig(
        communes=spec.communes,
        families=spec.families,
        devices_per_family=spec.devices_per_family,
        period_s=spec.period_s,
        seed=spec.seed,
        faults=FaultRates.parse(spec.faults),
        registry=CommuneRegistry.load(spec.communes_file) if spec.communes_file else None,
    )
    fleet = generate_fleet(config, start, start + timedelta(seconds=spec.span_s))
    options = PublishOptions(
        host=spec.host,
        port=spec.port,
        client_id=spec.client_id,
        speedup=spec.speedup,
        max_inflight=1000,
        max_queued=5000,
    )
    end_ns = int((start.timestamp() + spec.span_s + spec.period_s) * 1e9)
    messages = spread(build_messages(fleet, options), spec.period_s, end_ns)
    send = messages["send_ns"]
    planned_s = (send.max() - send.min()) / 1e9 / spec.speedup if spec.speedup and len(send) else 0.0  # type: ignore[operator]
    expected = {family: frame.height for family, frame in fleet.frames.items()}
    faults = dict(fleet.ground_truth.group_by("kind").len().iter_rows())
    expected_keys(fleet.frames).write_parquet(spec_path.parent / (spec_path.stem + ".expected.parquet"))
    (spec_path.parent / (spec_path.stem + ".ready")).write_text(str(time.time()))
    started = time.monotonic()
    report = publish_messages(messages, options)
    result = {
        "spec": asdict(spec),
        "devices": fleet.devices.height,
        "expected_rows": expected,
        "faults": faults,
        "messages": report.messages,
        "acknowledged": report.acknowledged,
        "refused": report.refused,
        "readings": report.readings,
        "waits": report.waits,
        "wall_s": time.monotonic() - started,
        # Late deliveries go out after the span: the schedule is the messages' own.
        "planned_s": planned_s,
    }
    (spec_path.parent / (spec_path.stem + ".result.json")).write_text(json.dumps(result, indent=1))
    return 0 if report.acknowledged == report.messages else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
