"""`smartcity ingest`: MQTT readings into the store, losing nothing (see docs/ingest.md)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from smartcity.commands.stopping import stop_on_signals
from smartcity.settings import Settings

log = logging.getLogger("smartcity.ingest")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ingest` sub-command."""
    parser = subparsers.add_parser(
        "ingest",
        help="subscribe to the sensors' MQTT topics and write every reading to the store",
        description="Subscribe to the readings (MQTT 5, QoS 1, persistent session), decode them, "
        "write them to the store in batches, spool them on disk while the store is down, send "
        "refused messages to the dead-letter, and acknowledge each message only once it is "
        "durable. Every option defaults to the settings (SMARTCITY_INGEST__*). Stops cleanly on "
        "SIGTERM or Ctrl-C.",
    )
    parser.add_argument(
        "--topic", help="topic filter (default: the ingest.topic setting, smartcity/v1/+/+/+)"
    )
    parser.add_argument(
        "--shared-group", metavar="GROUP", help="join the shared subscription $share/GROUP/..."
    )
    parser.add_argument("--client-id", help="fixed MQTT client id (one per ingestor)")
    parser.add_argument("--batch-size", type=int, help="readings per store write")
    parser.add_argument("--batch-interval", type=float, metavar="SECONDS", help="flush a batch after this")
    parser.add_argument("--spool-dir", type=Path, help="directory of the on-disk spool")
    parser.add_argument("--spool-max-bytes", type=int, help="bound of the spool")
    parser.add_argument("--deadletter-file", type=Path, help="JSONL file of refused messages")
    parser.add_argument("--metrics-port", type=int, help="port of /metrics and /healthz (0: any free port)")
    parser.add_argument("--no-metrics", action="store_true", help="serve no metrics endpoint")
    parser.add_argument("--mqtt-host", help="broker host")
    parser.add_argument("--mqtt-port", type=int, help="broker port")
    parser.set_defaults(func=run)


def _apply(args: argparse.Namespace, settings: Settings) -> Settings:
    ingest_updates = {
        key: value
        for key, value in {
            "topic": args.topic,
            "shared_group": args.shared_group,
            "client_id": args.client_id,
            "batch_size": args.batch_size,
            "batch_interval_s": args.batch_interval,
            "spool_dir": args.spool_dir,
            "spool_max_bytes": args.spool_max_bytes,
            "deadletter_file": args.deadletter_file,
            "metrics_port": args.metrics_port,
        }.items()
        if value is not None
    }
    if args.no_metrics:
        ingest_updates["metrics_port"] = None
    mqtt_updates = {
        key: value
        for key, value in {"host": args.mqtt_host, "port": args.mqtt_port}.items()
        if value is not None
    }
    # Validate the command-line values with the same rules as the settings.
    ingest = type(settings.ingest).model_validate({**settings.ingest.model_dump(), **ingest_updates})
    mqtt = type(settings.mqtt).model_validate({**settings.mqtt.model_dump(), **mqtt_updates})
    # A store slower than the ingest timeout counts as down: batches go to the spool instead of
    # stalling the flow, and the spool replays them when the store answers again.
    influx = settings.store.influxdb.model_copy(
        update={
            "timeout_s": min(settings.store.influxdb.timeout_s, ingest.store_timeout_s),
            "max_retries": min(settings.store.influxdb.max_retries, ingest.store_max_retries),
        }
    )
    store = settings.store.model_copy(update={"influxdb": influx})
    return settings.model_copy(update={"ingest": ingest, "mqtt": mqtt, "store": store})


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the ingestor until SIGTERM/SIGINT; 0 when it stopped cleanly."""
    from pydantic import ValidationError

    from ingest.service import Ingestor
    from sensors.communes import CommuneRegistry, RegistryError
    from storage import StoreError, open_store

    try:
        settings = _apply(args, settings)
    except ValidationError as exc:
        print(f"smartcity ingest: invalid option: {exc}", file=sys.stderr)
        return 2
    try:
        registry = CommuneRegistry.load(settings.communes_file)
    except RegistryError as exc:
        print(f"smartcity ingest: {exc}", file=sys.stderr)
        return 2
    try:
        store = open_store(settings.store)
    except StoreError as exc:
        print(f"smartcity ingest: cannot open the store: {exc}", file=sys.stderr)
        return 1
    try:
        ingestor = Ingestor(settings.mqtt, settings.ingest, store, registry)
    except (OSError, ValueError) as exc:  # ValueError: an invalid LoRaWAN device map, among others
        store.close()
        print(f"smartcity ingest: {exc}", file=sys.stderr)
        return 1

    # The MQTT network thread does many short socket reads per message, and after each it must
    # get the GIL back from the writer thread: with the default 5 ms switch interval it would
    # wait behind the decoding. A short interval keeps the network thread fed (see
    # docs/performance.md, Ingest).
    sys.setswitchinterval(settings.ingest.switch_interval_s)
    stop = stop_on_signals(log, "flushing and stopping")
    ingestor.start()
    log.info(
        "ingesting %s from %s:%d into %s",
        ", ".join(settings.ingest.subscriptions),
        settings.mqtt.host,
        settings.mqtt.port,
        settings.store.backend,
    )
    while not stop.wait(settings.ingest.log_interval_s):
        ingestor.log_stats()
        if not ingestor.writer.alive:
            log.error("the writer thread died; stopping")
            break
    clean = ingestor.stop()
    ingestor.log_stats()
    store.close()
    return 0 if clean else 1
