"""``smartcity demo`` (interim): the simulated fleet through an embedded broker, decoded live.

Needs nothing installed beyond the package: an embedded MQTT broker (amqtt) starts in-process,
the fleet of every commune of the registry is replayed from a day ago at a speed-up (with a few
faults switched on) and then follows the real clock, and a subscriber decodes every message with
the contract's decoder and prints what it received per family every few seconds. Ctrl-C stops
everything cleanly (exit 0). Later issues grow this into the whole platform.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensors.communes import CommuneRegistry, RegistryError
from sensors.decoder import Decoder
from sensors.families import Family
from sensors.faults import FaultRates, FaultSpecError
from sensors.fleet import FleetConfig, FleetConfigError, generate_fleet
from sensors.publisher import PublishError, PublishOptions, PublishReport, publish_fleet
from sensors.topics import SUBSCRIPTION
from smartcity.broker import PROTOCOL, EmbeddedBroker, EmbeddedBrokerError
from smartcity.commands.simulate import parse_duration, parse_speedup, positive_int
from smartcity.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the simulated fleet through an embedded broker and show what arrives (Ctrl-C stops)",
        description="Start an embedded MQTT broker, replay the simulated fleet of every commune of the "
        "registry from --history ago at --speedup (then in real time) with a few faults, decode every "
        "message and print the readings received per family. Nothing to install. Ctrl-C stops.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address of the embedded broker (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        help="port of the embedded broker; 0 picks a free one (default: settings mqtt.port)",
    )
    parser.add_argument(
        "--devices-per-family",
        type=positive_int,
        metavar="N",
        help="devices of each family in each commune (default: settings simulator.devices_per_family)",
    )
    parser.add_argument(
        "--period", type=parse_duration, metavar="DURATION", help="time between two readings (default: 60s)"
    )
    parser.add_argument("--seed", type=int, help="random seed (default: settings simulator.seed)")
    parser.add_argument(
        "--faults",
        default="default",
        metavar="SPEC",
        help="faults to inject, as for simulate (default: default)",
    )
    parser.add_argument(
        "--speedup",
        type=parse_speedup,
        default=1440.0,
        metavar="FACTOR",
        help="replay speed of the past until the fleet catches up with the clock "
        "(default: 1440, a day a minute)",
    )
    parser.add_argument(
        "--history",
        type=parse_duration,
        default=86400.0,
        metavar="DURATION",
        help="how far back the replay starts (default: 1d)",
    )
    parser.add_argument(
        "--report-every",
        type=parse_duration,
        default=5.0,
        metavar="DURATION",
        help="how often to print the counts (default: 5s)",
    )
    parser.set_defaults(func=run)


@dataclass
class Tally:
    """What the demo's subscriber received and decoded."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    messages: int = 0
    readings: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def line(self, elapsed: float) -> str:
        with self.lock:
            families = " ".join(f"{family.value}={self.readings[family.value]}" for family in Family)
            errors = " ".join(f"{reason}={count}" for reason, count in sorted(self.errors.items())) or "none"
            return f"[{elapsed:5.0f}s] {self.messages} messages; readings {families}; refused: {errors}"


def _subscribe(broker: EmbeddedBroker, decoder: Decoder, tally: Tally) -> mqtt.Client:
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        decoded = decoder.decode(message.topic, bytes(message.payload))
        with tally.lock:
            tally.messages += 1
            for reading in decoded.readings:
                tally.readings[reading.family] += 1
            for error in decoded.errors:
                tally.errors[error.reason] += 1

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="smartcity-demo-receiver", protocol=PROTOCOL)
    client.on_message = on_message
    client.on_connect = lambda c, *args: c.subscribe(SUBSCRIPTION, qos=1)
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    if not subscribed.wait(15):
        client.loop_stop()
        raise EmbeddedBrokerError("the demo's receiver could not subscribe to the embedded broker")
    return client


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run until Ctrl-C (or SIGTERM); exit 0 after a clean stop."""
    try:
        registry = CommuneRegistry.load(settings.communes_file)
        config = FleetConfig(
            devices_per_family=args.devices_per_family or settings.simulator.devices_per_family,
            period_s=args.period or settings.simulator.period_s,
            seed=args.seed if args.seed is not None else settings.simulator.seed,
            faults=FaultRates.parse(args.faults),
            registry=registry,
        )
        now = datetime.now(UTC)
        period = max(config.period_s, 1.0)
        start = datetime.fromtimestamp((now.timestamp() - args.history) // period * period, UTC)
        # Readings up to a day ahead, published when their time comes: the demo runs a day at least.
        fleet = generate_fleet(config, start, now + timedelta(days=1))
    except (FaultSpecError, FleetConfigError, RegistryError, ValueError) as exc:
        print(f"smartcity demo: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    tally = Tally()
    broker = EmbeddedBroker(args.host, args.port if args.port is not None else settings.mqtt.port)
    failure: list[BaseException] = []
    reports: list[PublishReport] = []
    receiver: mqtt.Client | None = None
    publisher: threading.Thread | None = None
    try:
        broker.start()
        receiver = _subscribe(broker, Decoder(registry), tally)
        print(
            f"smartcity demo: embedded MQTT broker on {broker.host}:{broker.port} (MQTT 3.1.1); "
            f"{fleet.devices.height} devices in {len(registry)} communes, "
            f"replaying from {start:%Y-%m-%d %H:%M} UTC at x{args.speedup:g}, faults {config.faults}. "
            "Ctrl-C to stop.",
            flush=True,
        )
        options = PublishOptions(
            host=broker.host,
            port=broker.port,
            protocol="3.1.1",
            client_id="smartcity-demo-fleet",
            speedup=args.speedup,
            live=True,
        )

        def publish() -> None:
            try:
                report = publish_fleet(fleet, options, stop=stop)
                reports.append(report)
                print(f"smartcity demo: fleet {report.summary()}", flush=True)
            except PublishError as exc:
                failure.append(exc)
                stop.set()

        publisher = threading.Thread(target=publish, name="demo-fleet", daemon=True)
        publisher.start()
        started = time.monotonic()
        while not stop.wait(args.report_every):
            print(tally.line(time.monotonic() - started), flush=True)
    except KeyboardInterrupt:
        pass
    except EmbeddedBrokerError as exc:
        print(f"smartcity demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.set()
        _shutdown(
            publisher, receiver=receiver, broker=broker, previous=previous, tally=tally, reports=reports
        )
    if failure:
        print(f"smartcity demo: {failure[0]}", file=sys.stderr)
        return 1
    print(tally.line(0).replace("[    0s]", "final:"), flush=True)
    return 0


def _shutdown(
    publisher: threading.Thread | None,
    *,
    receiver: mqtt.Client | None,
    broker: EmbeddedBroker,
    previous: Any,
    tally: Tally,
    reports: list[PublishReport],
) -> None:
    """Stop in flow order: the fleet, then the receiver once it got what was sent, then the broker."""
    if publisher is not None:
        publisher.join(30)
    deadline = time.monotonic() + 10
    while reports and tally.messages < reports[0].published and time.monotonic() < deadline:
        time.sleep(0.05)
    if receiver is not None:
        receiver.disconnect()
        receiver.loop_stop()
    broker.stop()
    signal.signal(signal.SIGTERM, previous)
