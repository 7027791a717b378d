"""``smartcity simulate``: publish a simulated fleet of sensors over MQTT."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sensors.communes import CommuneRegistry, RegistryError
from sensors.families import Family
from simulator.faults import FaultRates, FaultSpecError, write_ground_truth
from simulator.fleet import Fleet, FleetConfig, FleetConfigError, generate_fleet
from simulator.publisher import ProtocolName, PublishError, PublishOptions, PublishReport, publish_fleet
from smartcity.broker import EmbeddedBroker, EmbeddedBrokerError
from smartcity.settings import Settings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``500ms``."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration (e.g. 90s, 15m, 2h, 1d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_start(text: str) -> datetime:
    """An ISO 8601 date or date-time (UTC when it has no offset), or ``now``."""
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date-time (e.g. 2026-03-02T06:00:00+01:00, 2026-03-02, now)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_list(text: str) -> list[str]:
    """``a,b, c`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_speedup(text: str) -> float:
    """A speed-up factor >= 0 (0: as fast as possible)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"speed-up {text!r} is not a number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"speed-up {text!r} must be >= 0 (0: as fast as possible)")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def add_fleet_arguments(parser: argparse.ArgumentParser) -> None:
    """Options that choose the fleet and its faults (shared with ``smartcity demo``)."""
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument(
        "--communes",
        type=parse_list,
        metavar="INSEE,...",
        help="INSEE codes of the communes to simulate, comma-separated "
        "(default: every commune of the registry)",
    )
    fleet.add_argument(
        "--families",
        type=parse_list,
        metavar="FAMILY,...",
        help=f"sensor families to simulate, comma-separated, among {', '.join(f.value for f in Family)} "
        "(default: all)",
    )
    fleet.add_argument(
        "--devices-per-family",
        type=positive_int,
        metavar="N",
        help="devices of each family in each commune (default: settings simulator.devices_per_family, 2)",
    )
    fleet.add_argument(
        "--period",
        type=parse_duration,
        metavar="DURATION",
        help="time between two readings of a device, e.g. 10s or 1m "
        "(default: settings simulator.period_s, 60s)",
    )
    fleet.add_argument("--seed", type=int, help="random seed: same seed, same data (default: settings, 42)")
    fleet.add_argument(
        "--faults",
        metavar="SPEC",
        help="faults to inject: 'none', 'default', or kind=rate pairs such as 'spike=2,dropout=0.01' "
        "('default,spike=5' starts from the defaults). Kinds spike, stuck, drift, offline, reset, "
        "out_of_bounds, down, tamper are rated in events per device-day; dropout, late, out_of_order, "
        "duplicate, malformed in probability per reading (default: settings simulator.faults, none)",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` sub-command."""
    parser = subparsers.add_parser(
        "simulate",
        help="publish a simulated fleet of sensors over MQTT",
        description="Generate a realistic fleet (diurnal cycles, correlated communes, injected faults) and "
        "publish it over MQTT (QoS 1) in simulated time. Prints what was published and acknowledged. "
        "See docs/simulator.md.",
    )
    broker = parser.add_argument_group("broker")
    broker.add_argument("--host", help="MQTT broker host (default: settings mqtt.host, 127.0.0.1)")
    broker.add_argument("--port", type=int, help="MQTT broker port (default: settings mqtt.port, 1883)")
    broker.add_argument("--username", help="MQTT user name (default: settings mqtt.username)")
    broker.add_argument("--password", help="MQTT password (default: settings mqtt.password)")
    broker.add_argument(
        "--protocol",
        choices=["5", "3.1.1"],
        help="MQTT protocol version (default: settings mqtt.protocol, 5; 3.1.1 with --embedded-broker, "
        "which only speaks 3.1.1)",
    )
    broker.add_argument(
        "--client-id", default="smartcity-simulator", help="MQTT client id (default: smartcity-simulator)"
    )
    broker.add_argument(
        "--embedded-broker",
        action="store_true",
        help="start an embedded MQTT 3.1.1 broker (amqtt) in-process on --host/--port and publish to it "
        "(--port 0 picks a free port)",
    )
    broker.add_argument(
        "--max-inflight",
        type=positive_int,
        metavar="N",
        help="QoS 1 messages sent and not yet acknowledged, at most (default: settings, 100)",
    )
    broker.add_argument(
        "--max-queued",
        type=positive_int,
        metavar="N",
        help="messages queued in the client (in flight included) before publishing waits for "
        "acknowledgements: back-pressure, nothing is dropped (default: settings, 1000)",
    )
    add_fleet_arguments(parser)
    timing = parser.add_argument_group("time")
    timing.add_argument(
        "--start",
        type=parse_start,
        metavar="DATETIME",
        help="simulated time of the first reading, ISO 8601 (UTC without an offset) or 'now' "
        "(default: now minus --duration, so that no reading is in the future)",
    )
    timing.add_argument(
        "--duration",
        type=parse_duration,
        metavar="DURATION",
        help="simulated time to cover, e.g. 90s, 15m, 2h, 1d (default: settings simulator.duration_s, 1h)",
    )
    timing.add_argument(
        "--speedup",
        type=parse_speedup,
        metavar="FACTOR",
        help="simulated seconds per real second: 1 is real time, 1440 replays a day in a minute, "
        "0 publishes as fast as the broker acknowledges (default: settings simulator.speedup, 1)",
    )
    timing.add_argument(
        "--as-fast-as-possible",
        action="store_true",
        help="same as --speedup 0",
    )
    timing.add_argument(
        "--live",
        action="store_true",
        help="never publish a reading before its time has come on the real clock (catch up at "
        "--speedup, then follow real time)",
    )
    wire = parser.add_argument_group("payloads")
    wire.add_argument(
        "--batch-size",
        type=positive_int,
        default=1,
        metavar="N",
        help="devices that batch send a JSON list of N readings at a time (default: 1, no batches)",
    )
    wire.add_argument(
        "--batch-share",
        type=float,
        default=0.25,
        metavar="SHARE",
        help="share of the devices that batch when --batch-size > 1, 0 to 1 (default: 0.25)",
    )
    wire.add_argument(
        "--ground-truth",
        type=Path,
        metavar="FILE",
        help="write the injected faults to FILE: Parquet if it ends in .parquet, CSV otherwise",
    )
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class SimulateArguments:
    """The simulate options once merged with the settings."""

    fleet: FleetConfig
    start: datetime
    duration: timedelta
    publish: PublishOptions
    embedded_broker: bool
    ground_truth: Path | None


def resolve(args: argparse.Namespace, settings: Settings) -> SimulateArguments:
    """Merge command-line options over settings; raise ``ValueError`` with a clear message."""
    sim, mqtt = settings.simulator, settings.mqtt
    registry = CommuneRegistry.load(settings.communes_file)
    faults = FaultRates.parse(args.faults if args.faults is not None else sim.faults)
    if not 0 <= args.batch_share <= 1:
        raise ValueError(f"--batch-share {args.batch_share} must be between 0 and 1")
    fleet = FleetConfig(
        communes=args.communes,
        families=args.families,
        devices_per_family=args.devices_per_family or sim.devices_per_family,
        period_s=args.period or sim.period_s,
        seed=args.seed if args.seed is not None else sim.seed,
        faults=faults,
        registry=registry,
    )
    fleet.family_list()
    fleet.commune_list(registry)
    duration = timedelta(seconds=args.duration or sim.duration_s)
    start = args.start or _default_start(duration, fleet.period_s)
    speedup = 0.0 if args.as_fast_as_possible else (args.speedup if args.speedup is not None else sim.speedup)
    protocol: ProtocolName = args.protocol or ("3.1.1" if args.embedded_broker else settings.mqtt.protocol)
    if args.embedded_broker and protocol == "5":
        raise ValueError("--protocol 5 cannot be used with --embedded-broker: amqtt only speaks MQTT 3.1.1")
    publish = PublishOptions(
        host=args.host or mqtt.host,
        port=args.port if args.port is not None else mqtt.port,
        username=args.username or mqtt.username,
        password=args.password or mqtt.password,
        protocol=protocol,
        client_id=args.client_id,
        keepalive_s=mqtt.keepalive_s,
        speedup=speedup,
        live=args.live,
        max_inflight=args.max_inflight or sim.max_inflight,
        max_queued=args.max_queued or sim.max_queued,
        batch_size=args.batch_size,
        batch_share=args.batch_share,
    )
    return SimulateArguments(fleet, start, duration, publish, args.embedded_broker, args.ground_truth)


def _default_start(duration: timedelta, period_s: float) -> datetime:
    """Now minus the duration, on a whole period: every reading is in the past."""
    now = datetime.now(UTC).timestamp()
    period = max(period_s, 1.0)
    return datetime.fromtimestamp((now - duration.total_seconds()) // period * period, UTC)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Generate the fleet, publish it, print the report. Exit 0 when every message was acknowledged."""
    try:
        resolved = resolve(args, settings)
        fleet = generate_fleet(resolved.fleet, resolved.start, resolved.duration)
    except (ValueError, FaultSpecError, FleetConfigError, RegistryError) as exc:
        print(f"smartcity simulate: {exc}", file=sys.stderr)
        return 2
    print(_describe(fleet, resolved), flush=True)
    if resolved.ground_truth is not None:
        path = write_ground_truth(fleet.ground_truth, resolved.ground_truth)
        print(f"ground truth: {fleet.ground_truth.height} faults written to {path}", flush=True)
    broker: EmbeddedBroker | None = None
    publish = resolved.publish
    try:
        if resolved.embedded_broker:
            broker = EmbeddedBroker(publish.host, publish.port)
            broker.start()
            print(f"embedded MQTT 3.1.1 broker listening on {broker.host}:{broker.port}", flush=True)
            publish = replace(publish, port=broker.port)
        report = publish_fleet(fleet, publish, on_progress=_print_progress)
    except (PublishError, EmbeddedBrokerError) as exc:
        print(f"smartcity simulate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("smartcity simulate: interrupted", file=sys.stderr)
        return 130
    finally:
        if broker is not None:
            broker.stop()
    print(report.summary(), flush=True)
    return 0 if report.acknowledged == report.published == report.messages and not report.refused else 1


def _describe(fleet: Fleet, resolved: SimulateArguments) -> str:
    config = resolved.fleet
    speed = (
        "as fast as possible" if resolved.publish.speedup == 0 else f"speed-up {resolved.publish.speedup:g}"
    )
    return (
        f"simulating {fleet.devices.height} devices ({len(fleet.frames)} families, "
        f"{fleet.devices['insee'].n_unique()} communes, {config.devices_per_family} per family and commune), "
        f"{fleet.start.isoformat()} to {fleet.end.isoformat()} every {config.period_s:g}s: "
        f"{fleet.rows} readings, seed {config.seed}, faults {config.faults}; publishing to "
        f"{resolved.publish.host}:{resolved.publish.port} (MQTT {resolved.publish.protocol}, QoS 1), {speed}"
    )


def _print_progress(report: PublishReport) -> None:
    print(
        f"  ... {report.published}/{report.messages} published, {report.acknowledged} acknowledged",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``smartcity simulate`` with these arguments (for tests and scripts)."""
    from smartcity.cli import main as cli_main

    return cli_main(["simulate", *(argv or [])])
