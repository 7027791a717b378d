"""``smartcity lorawan``: check the device map; republish The Things Stack's stored uplinks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sensors.communes import CommuneRegistry
from sensors.lorawan.devicemap import DeviceMap, DeviceMapError
from sensors.lorawan.storage import StorageError, stored_uplinks
from simulator.publisher import PublishError, PublishOptions, publish_messages
from smartcity.settings import Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``lorawan`` sub-command."""
    parser = subparsers.add_parser(
        "lorawan",
        help="LoRaWAN input: check the device map, replay The Things Stack's stored uplinks",
        description="Tools of the LoRaWAN input (docs/contract.md section 11).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate the device map (its codecs included) and exit")
    check.add_argument(
        "device_map", nargs="?", type=Path, help="default: ingest.lorawan.device_map of the settings"
    )
    check.set_defaults(func=run_check)
    replay = actions.add_parser(
        "replay-storage",
        help="publish a Storage Integration answer (NDJSON) again, to fill what QoS 0 lost",
        description=(
            "Reads the answer of The Things Stack's Storage Integration API "
            "(.../packages/storage/uplink_message, Accept: text/event-stream), one "
            '{"result": ApplicationUp} per line, and publishes each uplink with QoS 1 on '
            "v3/{application}@{tenant}/devices/{device}/up of the platform's broker. Uplinks "
            "already stored are no-ops."
        ),
    )
    replay.add_argument("answer", help="the saved answer, or - for standard input")
    replay.add_argument("--tenant", default="ttn", help="tenant of uplinks that do not name one")
    replay.set_defaults(func=run_replay)


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    """Validate a device map; print a one-line summary, or every problem."""
    path = args.device_map or (settings.ingest.lorawan.device_map if settings.ingest.lorawan else None)
    if path is None:
        print("smartcity lorawan check: give a device map, or set ingest.lorawan.device_map", file=sys.stderr)
        return 2
    try:
        devices = DeviceMap.load(path, CommuneRegistry.load(settings.communes_file))
    except DeviceMapError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{path}: {len(devices)} device(s), {len(devices.gateways)} named gateway(s): valid")
    return 0


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Publish the stored uplinks of a Storage Integration answer."""
    try:
        if args.answer == "-":
            uplinks = stored_uplinks(sys.stdin, tenant=args.tenant)
        else:
            with open(args.answer, encoding="utf-8") as answer:
                uplinks = stored_uplinks(answer, tenant=args.tenant)
    except (OSError, StorageError) as exc:
        print(f"smartcity lorawan replay-storage: {exc}", file=sys.stderr)
        return 1
    mqtt = settings.mqtt
    options = PublishOptions(
        host=mqtt.host,
        port=mqtt.port,
        username=mqtt.username,
        password=mqtt.password,
        protocol=mqtt.protocol,
        client_id="smartcity-lorawan-replay",
        keepalive_s=mqtt.keepalive_s,
    )
    try:
        report = publish_messages(uplinks.frame(), options)
    except PublishError as exc:
        print(f"smartcity lorawan replay-storage: {exc}", file=sys.stderr)
        return 1
    print(f"{report.acknowledged} uplink(s) republished, {uplinks.skipped} other stored message(s) skipped")
    return 0 if report.acknowledged == len(uplinks.messages) else 1
