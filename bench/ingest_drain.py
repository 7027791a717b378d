"""Ingest throughput, measured by draining a backlog from the broker.

One run, one broker, one backlog: persistent sessions are registered for every contender, then
N realistic one-reading messages of the simulated fleet are published once (QoS 1), so the
broker queues the same backlog for each. Then each contender drains its session alone:

* ``mosquitto_sub`` (the C client, output to /dev/null): the physical limit of the broker and
  the loopback on this machine;
* a bare paho-mqtt subscriber that only counts (the Python baseline the issue compares with);
* ``smartcity ingest`` into a real influxd, timed from process start until every reading is
  stored (a write InfluxDB 1.x acknowledged is queryable), then checked with a count query;
* two ``smartcity ingest`` on a shared subscription (``$share/bench/...``), same measure.

    .venv/bin/python -m bench.ingest_drain            # 200,000 readings
    .venv/bin/python -m bench.ingest_drain --quick    # 50,000
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import polars as pl
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.ingest_common import (
    TOPIC,
    count_stored,
    provision_database,
    publish_all,
    realistic_messages,
    register_session,
    servers,
    start_ingest,
    wait_for,
)


def drain_mosquitto_sub(port: int, client_id: str, count: int) -> tuple[float, float]:
    """Seconds (wall, CPU) for the C client to receive ``count`` messages of its session."""
    binary = shutil.which("mosquitto_sub")
    if binary is None:
        raise SystemExit("mosquitto_sub not found: apt-get install mosquitto-clients")
    cpu_before = _children_cpu()
    started = time.perf_counter()
    subprocess.run(
        [
            binary,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-V",
            "mqttv5",
            "-c",
            "-x",
            "86400",
            "-i",
            client_id,
            "-q",
            "1",
            "-t",
            TOPIC,
            "-C",
            str(count),
        ],
        stdout=subprocess.DEVNULL,
        check=True,
        timeout=900,
    )
    return time.perf_counter() - started, _children_cpu() - cpu_before


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain_bare_paho(port: int, client_id: str, count: int) -> tuple[float, float]:
    """Seconds (wall, CPU) for a paho-mqtt subscriber that only counts to receive ``count`` messages.

    It runs in this process, idle otherwise, so the process CPU time is the subscriber's."""
    received = 0
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 86400
    cpu_before = time.process_time()
    started = time.perf_counter()
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    if not done.wait(900):
        raise TimeoutError(f"bare subscriber received {received}/{count}")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    client.disconnect()
    client.loop_stop()
    return elapsed, cpu


def drain_ingest(
    workdir: Path,
    port: int,
    influxd: Any,
    count: int,
    client_ids: list[str],
    *,
    group: str | None,
    database: str,
    profile: bool,
) -> dict[str, float]:
    """Seconds for ingest process(es) to store ``count`` readings, with CPU and memory used."""
    settings = provision_database(influxd, database)
    started = time.perf_counter()
    runs = [
        start_ingest(
            workdir / client_id,
            port,
            settings,
            client_id,
            shared_group=group,
            profile_to=(workdir / f"{client_id}.folded.txt") if profile else None,
        )
        for client_id in client_ids
    ]
    try:
        finished = wait_for(
            lambda: sum(run.metric("smartcity_ingest_rows_written_total") for run in runs) >= count,
            timeout=900,
            interval=0.05,
            what="every reading written",
        )
        cpu = sum(run.cpu_seconds() for run in runs)
        rss = max(run.rss_bytes() for run in runs)
        shares = [run.metric("smartcity_ingest_messages_total") for run in runs]
        stored = count_stored(influxd, database)
        confirmed = time.perf_counter()
    finally:
        codes = [run.stop() for run in runs]
    if stored != count:
        raise RuntimeError(f"{stored} readings in influxd for {count} published")
    return {
        "seconds": finished - started,
        "confirmed_seconds": confirmed - started,
        "cpu_seconds": cpu,
        "rss_mib": rss / 2**20,
        "min_share": min(shares) / max(sum(shares), 1),
        "exit_codes": float(sum(codes)),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=200_000, help="backlog size (default 200,000)")
    parser.add_argument("--quick", action="store_true", help="50,000 readings")
    parser.add_argument("--no-shared", action="store_true", help="skip the two-ingestor run")
    parser.add_argument("--profile", action="store_true", help="record the single ingestor with py-spy")
    args = parser.parse_args(argv)
    count = 50_000 if args.quick else args.readings

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        messages = realistic_messages(count)
        count = messages.height
        size = float(messages.select(pl.col("payload").bin.size().mean()).item())
        print(f"backlog: {count} fleet messages (one reading each), {size:.0f} payload bytes on average")
        with servers(workdir) as (mosquitto, influxd):
            contenders = ["bench-msub", "bench-bare", "bench-ingest"]
            for client_id in contenders:
                register_session(mosquitto.port, client_id)
            if not args.no_shared:
                for client_id in ("bench-shared-a", "bench-shared-b"):
                    register_session(mosquitto.port, client_id, f"$share/bench/{TOPIC}")
            published = publish_all(mosquitto.port, messages)
            print(f"published in {published:.1f}s ({count / published:,.0f} msg/s)")

            msub, msub_cpu = drain_mosquitto_sub(mosquitto.port, "bench-msub", count)
            print(f"mosquitto_sub   {msub:7.2f}s  {count / msub:9,.0f} msg/s  (CPU {msub_cpu:.1f}s)")
            bare, bare_cpu = drain_bare_paho(mosquitto.port, "bench-bare", count)
            print(f"bare paho       {bare:7.2f}s  {count / bare:9,.0f} msg/s  (CPU {bare_cpu:.1f}s)")
            single = drain_ingest(
                workdir,
                mosquitto.port,
                influxd,
                count,
                ["bench-ingest"],
                group=None,
                database="single",
                profile=args.profile,
            )
            print(
                f"ingest x1       {single['seconds']:7.2f}s  {count / single['seconds']:9,.0f} readings/s "
                f"(confirmed by a count query at {single['confirmed_seconds']:.2f}s; "
                f"CPU {single['cpu_seconds']:.1f}s, RSS {single['rss_mib']:.0f} MiB)"
            )
            shared: dict[str, float] | None = None
            if not args.no_shared:
                shared = drain_ingest(
                    workdir,
                    mosquitto.port,
                    influxd,
                    count,
                    ["bench-shared-a", "bench-shared-b"],
                    group="bench",
                    database="shared",
                    profile=False,
                )
                print(
                    f"ingest x2 shared {shared['seconds']:6.2f}s  "
                    f"{count / shared['seconds']:9,.0f} readings/s "
                    f"(smaller share {shared['min_share']:.0%}; CPU {shared['cpu_seconds']:.1f}s)"
                )
            print()
            print(f"ingest / bare paho:      {bare / single['seconds']:.0%}  (target >= 70%)")
            print(f"ingest / mosquitto_sub:  {msub / single['seconds']:.0%}")
            print(f"bare paho / mosquitto_sub: {msub / bare:.0%}")
            print(
                f"CPU ms per 1,000 readings: mosquitto_sub {1e6 * msub_cpu / count:.0f}, "
                f"bare paho {1e6 * bare_cpu / count:.0f}, ingest {1e6 * single['cpu_seconds'] / count:.0f}"
            )
            print(f"uptime load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
            if shared is not None:
                print(f"two shared / one:        {single['seconds'] / shared['seconds']:.2f}x")
            if args.profile:
                for found in workdir.glob("*.folded.txt"):
                    shutil.copy(found, Path("/tmp") / found.name)
                    print(f"profile (py-spy raw, threads): /tmp/{found.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
