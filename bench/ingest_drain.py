"""Ingest throughput, measured by draining a backlog from the broker.

One run, one broker, one backlog: persistent sessions are registered for every contender, then
N realistic one-reading messages of the simulated fleet are published once (QoS 1), so the
broker queues the same backlog for each. Then each contender drains its session alone:

* ``mosquitto_sub`` (the C client, MQTT 3.1.1, output to /dev/null): the physical limit of the
  broker and the loopback on this machine;
* the baseline: a bare paho-mqtt subscriber, MQTT 3.1.1, persistent session, auto-ack, that only
  counts (the fastest plain Python subscriber); the same with MQTT 5 beside it;
* two such subscribers, each a process of its own, on one shared subscription
  (``$share/bare/...``): the strongest plain baseline for ``--workers 2``, and what the machine
  permits two Python processes beside the broker (and, for ingest, influxd) on its cores;
* the baseline again, reading the connection as the ingestor does (``ingest.mqtt.BufferedClient``:
  a 64 KiB buffer, every buffered packet handled before the next ``select``): what paho itself
  costs once its per-packet system calls are gone;
* ``smartcity ingest --workers 1`` into a real influxd (its default MQTT 3.1.1 connection, and
  with ``SMARTCITY_INGEST__PROTOCOL=5``), timed until every reading is stored (a write InfluxDB
  1.x acknowledged is queryable), then checked with a count query;
* ``smartcity ingest --workers 2`` (one shared subscription ``$share/bench/...``), same measure.

Ingest is timed from its first received message (its process start-up, about a second of
imports, is printed apart), and its CPU is counted from that moment too, so both compare with
the subscribers' drain alone.

    .venv/bin/python -m bench.ingest_drain            # 200,000 readings
    .venv/bin/python -m bench.ingest_drain --quick    # 50,000

Every ingest contender's log, the broker's log and a per-worker progress timeline are kept (in
``--logs``, printed at the end); a drain that makes no progress for ``STALL_S`` gets a py-spy
dump of every worker's threads beside them, and its log tail printed.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
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
from bench.soak import procstat
from ingest.mqtt import BufferedClient

STALL_S = 5.0
"""A drain with no reading written for this long is reported as stalled (threads dumped)."""
PROGRESS_METRICS = (
    "smartcity_ingest_rows_written_total",
    "smartcity_ingest_messages_total",
    "smartcity_ingest_queue_depth",
    "smartcity_ingest_held_messages",
    "smartcity_ingest_acked_messages_total",
    "smartcity_ingest_broker_connected",
)
"""What the progress timeline records per worker, twice a second."""

RECEIVED_SIGNS = ("held_messages", "queue_depth", "rows_written_total")
"""Metrics of which one is above 0 once an ingestor has received its first message."""


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
            "mqttv311",
            "-c",
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


def drain_bare_paho(
    port: int, client_id: str, count: int, protocol: str, *, buffered: bool = False
) -> tuple[float, float]:
    """Seconds (wall, CPU) for a paho-mqtt subscriber that only counts to receive ``count`` messages.

    It runs in this process, idle otherwise, so the process CPU time is the subscriber's. With
    ``buffered``, it reads the connection as the ingestor does (``ingest.mqtt.BufferedClient``)."""
    received = 0
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        received += 1
        if received >= count:
            done.set()

    v5 = protocol == "5"
    client = (BufferedClient if buffered else mqtt.Client)(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 86400
    cpu_before = time.process_time()
    started = time.perf_counter()
    if v5:
        client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    else:
        client.connect("127.0.0.1", port)
    client.loop_start()
    if not done.wait(900):
        raise TimeoutError(f"bare subscriber received {received}/{count}")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    client.disconnect()
    client.loop_stop()
    return elapsed, cpu


def drain_bare_paho_shared(port: int, client_ids: list[str], count: int) -> tuple[float, float, float]:
    """Seconds (wall, CPU) for bare MQTT 3.1.1 subscribers, one process each, on one shared
    subscription to receive ``count`` messages between them, and the smaller one's share.

    Each process imports and builds its client before the clock starts; its CPU is its own,
    counted from its connection to the last message."""
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    stop = context.Event()
    ready = [context.Event() for _ in client_ids]
    received = [context.RawValue("q", 0) for _ in client_ids]
    cpu = [context.RawValue("d", 0.0) for _ in client_ids]
    processes = [
        context.Process(
            target=_shared_subscriber,
            args=(port, client_id, (ready[index], go, stop), (received[index], cpu[index])),
            name=f"bare-shared-{index}",
        )
        for index, client_id in enumerate(client_ids)
    ]
    for process in processes:
        process.start()
    try:
        for event in ready:
            if not event.wait(60):
                raise TimeoutError("a shared bare subscriber did not start")
        started = time.perf_counter()
        go.set()
        finished = wait_for(
            lambda: sum(value.value for value in received) >= count,
            timeout=900,
            interval=0.002,
            what="the shared bare subscribers' messages",
        )
    finally:
        stop.set()
        for process in processes:
            process.join(60)
    shares = [value.value for value in received]
    return finished - started, sum(value.value for value in cpu), min(shares) / max(sum(shares), 1)


def _shared_subscriber(
    port: int, client_id: str, events: tuple[Any, Any, Any], counters: tuple[Any, Any]
) -> None:
    ready, go, stop = events
    received, cpu = counters
    counted = 0

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal counted
        counted += 1
        received.value = counted
        cpu.value = time.process_time() - cpu_before

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311, clean_session=False
    )
    client.on_message = on_message
    ready.set()
    go.wait()
    cpu_before = time.process_time()
    client.connect("127.0.0.1", port)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


def drain_ingest(
    workdir: Path,
    port: int,
    influxd: Any,
    count: int,
    client_id: str,
    *,
    broker_pid: int,
    workers: int,
    group: str | None,
    database: str,
    profile: bool,
    protocol: str = "3.1.1",
    logs: Path | None = None,
) -> dict[str, float]:
    """Seconds for ``smartcity ingest --workers N`` to store ``count`` readings, with CPU and memory."""
    settings = provision_database(influxd, database)
    launched = time.perf_counter()
    run = start_ingest(
        workdir / client_id,
        port,
        settings,
        client_id,
        shared_group=group,
        workers=workers,
        extra_env={"SMARTCITY_INGEST__PROTOCOL": protocol},
        profile_to=(workdir / f"{client_id}.folded.txt") if profile else None,
    )
    try:
        # The drain starts with the first message any worker holds (start-up is printed apart).
        started = wait_for(
            lambda: (
                run.metric("smartcity_ingest_held_messages") + run.metric("smartcity_ingest_queue_depth") > 0
                or run.metric("smartcity_ingest_rows_written_total") > 0
            ),
            timeout=120,
            interval=0.01,
            what="the first message received",
        )
        server_pids = (broker_pid, influxd.process.pid)
        cpu_at_start = run.cpu_seconds()
        servers_at_start = sum(procstat.cpu_seconds(pid) for pid in server_pids)
        watch = _StallWatch(run, workers, count, logs / client_id if logs else None)
        watch.start()
        try:
            finished = wait_for(
                lambda: run.metric("smartcity_ingest_rows_written_total") >= count,
                timeout=900,
                interval=0.05,
                what="every reading written",
            )
        finally:
            watch.stop()
        cpu = run.cpu_seconds() - cpu_at_start
        servers_cpu = sum(procstat.cpu_seconds(pid) for pid in server_pids) - servers_at_start
        rss = run.rss_bytes()
        shares = [
            _worker_metric(run.metrics_port + index, "smartcity_ingest_messages_total")
            for index in range(workers)
        ]
        stored = count_stored(influxd, database)
    finally:
        code = run.stop()
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(run.log_path, logs / f"{client_id}.log")
    if watch.stalls:
        print(f"  {client_id}: no reading written for {STALL_S:.0f}s+ at {', '.join(watch.stalls)}")
        if logs is not None:
            print(f"  logs, timeline and thread dumps: {logs}/{client_id}*")
            tail = (logs / f"{client_id}.log").read_text(errors="replace").splitlines()[-40:]
            print("\n".join("    " + line for line in tail))
    if stored != count:
        raise RuntimeError(f"{stored} readings in influxd for {count} published")
    return {
        "seconds": finished - started,
        "startup_seconds": started - launched,
        "cpu_seconds": cpu,
        "servers_cpu_seconds": servers_cpu,
        "rss_mib": rss / 2**20,
        "min_share": min(shares) / max(sum(shares), 1),
        "exit_code": float(code),
    }


class _StallWatch(threading.Thread):
    """Records each worker's progress twice a second; dumps every worker's threads (py-spy)
    when no reading has been written for ``STALL_S``."""

    def __init__(self, run: Any, workers: int, count: int, prefix: Path | None) -> None:
        super().__init__(name="stall-watch", daemon=True)
        self._run = run
        self._workers = workers
        self._count = count
        self._prefix = prefix
        self._done = threading.Event()
        self.stalls: list[str] = []

    def stop(self) -> None:
        self._done.set()
        self.join(30)

    def run(self) -> None:
        started = time.perf_counter()
        rows, progress_at, dumped_at = -1.0, started, 0.0
        lines: list[str] = []
        while not self._done.wait(0.5):
            now = time.perf_counter()
            samples = [self._sample(self._run.metrics_port + index) for index in range(self._workers)]
            lines.append(
                f"{now - started:7.1f}s "
                + " | ".join(" ".join(f"{value:.0f}" for value in sample) for sample in samples)
            )
            # A worker that does not answer (not started, restarting) counts as no progress.
            total = sum(sample[0] for sample in samples if not math.isnan(sample[0]))
            if total != rows:
                rows, progress_at = total, now
            elif total < self._count and now - progress_at >= STALL_S and now - dumped_at >= 15:
                dumped_at = now
                self.stalls.append(f"{now - started:.1f}s ({total:.0f} rows)")
                self._dump(f"{now - started:.1f}s")
        if self._prefix is not None:
            self._prefix.parent.mkdir(parents=True, exist_ok=True)
            header = "time, per worker: " + " ".join(
                name.removeprefix("smartcity_ingest_") for name in PROGRESS_METRICS
            )
            self._prefix.with_name(self._prefix.name + ".timeline.txt").write_text(
                "\n".join([header, *lines]) + "\n"
            )

    def _sample(self, port: int) -> list[float]:
        try:
            return [_worker_metric(port, name) for name in PROGRESS_METRICS]
        except OSError:
            return [float("nan")] * len(PROGRESS_METRICS)

    def _dump(self, when: str) -> None:
        if self._prefix is None:
            return
        py_spy = Path(sys.executable).parent / "py-spy"
        if not py_spy.exists():
            return
        self._prefix.parent.mkdir(parents=True, exist_ok=True)
        with self._prefix.with_name(self._prefix.name + ".stacks.txt").open("a") as out:
            # Who holds the workers' metrics ports (a worker that cannot bind its port restarts).
            ports = range(self._run.metrics_port, self._run.metrics_port + self._workers)
            out.write(f"=== at {when}, sockets on the metrics ports {list(ports)}\n")
            out.flush()
            selector = " or ".join(f"sport = :{port}" for port in ports)
            subprocess.run(
                ["ss", "-tanp", f"( {selector} )"], stdout=out, stderr=out, timeout=30, check=False
            )
            for pid in procstat.process_tree(self._run.process.pid):
                out.write(f"=== at {when}, pid {pid}\n")
                out.flush()
                subprocess.run(
                    [str(py_spy), "dump", "--pid", str(pid)], stdout=out, stderr=out, timeout=60, check=False
                )


def _worker_metric(port: int, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readings", type=int, default=200_000, help="backlog size (default 200,000)")
    parser.add_argument("--quick", action="store_true", help="50,000 readings")
    parser.add_argument("--no-shared", action="store_true", help="skip the two-ingestor run")
    parser.add_argument(
        "--no-ingest-v5", dest="ingest_v5", action="store_false", help="skip ingest on MQTT 5"
    )
    parser.add_argument("--profile", action="store_true", help="record the single ingestor with py-spy")
    parser.add_argument(
        "--only-shared",
        action="store_true",
        help="only the two-process contenders: bare paho on a shared subscription, ingest --workers 1 and 2",
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path(tempfile.gettempdir())
        / "bench-ingest-logs"
        / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        help="where the ingest and broker logs, progress timelines and stall dumps are kept",
    )
    args = parser.parse_args(argv)
    count = 50_000 if args.quick else args.readings

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        messages = realistic_messages(count)
        count = messages.height
        size = float(messages.select(pl.col("payload").bin.size().mean()).item())
        print(f"backlog: {count} fleet messages (one reading each), {size:.0f} payload bytes on average")
        print(f"load average at the start: {os.getloadavg()[0]:.1f} (uptime; {os.cpu_count()} cores)")
        with servers(workdir) as (mosquitto, influxd):
            sessions = {
                "bench-msub": ("3.1.1", TOPIC),
                "bench-bare311": ("3.1.1", TOPIC),
                "bench-bare311-buffered": ("3.1.1", TOPIC),
                "bench-bare5": ("5", TOPIC),
                "bench-ingest": ("3.1.1", TOPIC),
            }
            if args.ingest_v5:
                sessions["bench-ingest5"] = ("5", TOPIC)
            if args.only_shared:
                args.no_shared = False
                args.ingest_v5 = False
                for skipped in ("bench-msub", "bench-bare5", "bench-ingest5"):
                    sessions.pop(skipped, None)
            if not args.no_shared:
                # --workers 2: worker 0 keeps the client id, worker 1 adds "-1".
                sessions["bench-shared"] = ("3.1.1", f"$share/bench/{TOPIC}")
                sessions["bench-shared-1"] = ("3.1.1", f"$share/bench/{TOPIC}")
                sessions["bench-bare-a"] = ("3.1.1", f"$share/bare/{TOPIC}")
                sessions["bench-bare-b"] = ("3.1.1", f"$share/bare/{TOPIC}")
            for client_id, (protocol, topic) in sessions.items():
                register_session(mosquitto.port, client_id, topic, protocol=protocol)
            published = publish_all(mosquitto.port, messages)
            print(f"published in {published:.1f}s ({count / published:,.0f} msg/s)")

            def line(name: str, seconds: float, cpu: float, extra: str = "") -> None:
                print(
                    f"{name:34s} {seconds:7.2f}s {count / seconds:9,.0f} readings/s  "
                    f"CPU {1e6 * cpu / count:5.1f} ms per 1,000{extra}"
                )

            assert mosquitto.process is not None
            mosquitto_pid = mosquitto.process.pid
            msub: float | None = None
            bare5: float | None = None
            if not args.only_shared:
                msub, msub_cpu = drain_mosquitto_sub(mosquitto.port, "bench-msub", count)
                line("mosquitto_sub (MQTT 3.1.1)", msub, msub_cpu)
            bare, bare_cpu = drain_bare_paho(mosquitto.port, "bench-bare311", count, "3.1.1")
            line("bare paho, MQTT 3.1.1 (baseline)", bare, bare_cpu)
            buffered, buffered_cpu = drain_bare_paho(
                mosquitto.port, "bench-bare311-buffered", count, "3.1.1", buffered=True
            )
            line("bare paho 3.1.1, buffered reading", buffered, buffered_cpu)
            if not args.only_shared:
                bare5, bare5_cpu = drain_bare_paho(mosquitto.port, "bench-bare5", count, "5")
                line("bare paho, MQTT 5", bare5, bare5_cpu)
            bare2: float | None = None
            if not args.no_shared:
                bare2, bare2_cpu, bare2_share = drain_bare_paho_shared(
                    mosquitto.port, ["bench-bare-a", "bench-bare-b"], count
                )
                line(
                    "two bare paho 3.1.1, shared sub",
                    bare2,
                    bare2_cpu,
                    f"  (smaller share {bare2_share:.0%})",
                )
            single = drain_ingest(
                workdir,
                mosquitto.port,
                influxd,
                count,
                "bench-ingest",
                broker_pid=mosquitto_pid,
                workers=1,
                group=None,
                database="single",
                profile=args.profile,
                logs=args.logs,
            )
            line(
                "smartcity ingest --workers 1",
                single["seconds"],
                single["cpu_seconds"],
                f"  (start-up {single['startup_seconds']:.1f}s apart; RSS {single['rss_mib']:.0f} MiB; "
                f"broker + influxd {1e6 * single['servers_cpu_seconds'] / count:.1f} ms per 1,000)",
            )
            single5: dict[str, float] | None = None
            if args.ingest_v5:
                single5 = drain_ingest(
                    workdir,
                    mosquitto.port,
                    influxd,
                    count,
                    "bench-ingest5",
                    broker_pid=mosquitto_pid,
                    workers=1,
                    group=None,
                    database="single5",
                    profile=False,
                    protocol="5",
                    logs=args.logs,
                )
                line("smartcity ingest --workers 1, MQTT 5", single5["seconds"], single5["cpu_seconds"])
            shared: dict[str, float] | None = None
            if not args.no_shared:
                shared = drain_ingest(
                    workdir,
                    mosquitto.port,
                    influxd,
                    count,
                    "bench-shared",
                    broker_pid=mosquitto_pid,
                    workers=2,
                    group="bench",
                    database="shared",
                    profile=False,
                    logs=args.logs,
                )
                line(
                    "smartcity ingest --workers 2",
                    shared["seconds"],
                    shared["cpu_seconds"],
                    f"  (smaller share {shared['min_share']:.0%}; broker + influxd "
                    f"{1e6 * shared['servers_cpu_seconds'] / count:.1f} ms per 1,000)",
                )
            print()
            print(f"ingest / bare paho 3.1.1:    {bare / single['seconds']:.0%} (target >= 80%)")
            print(
                f"ingest CPU / bare paho CPU:  {single['cpu_seconds'] / bare_cpu:.2f}x per reading "
                "(target <= 2x)"
            )
            if bare5 is not None:
                print(f"bare paho 5 / bare paho 3.1.1: {bare / bare5:.0%}")
            if single5 is not None:
                print(f"ingest MQTT 5 / ingest MQTT 3.1.1: {single['seconds'] / single5['seconds']:.0%}")
            if shared is not None:
                ratio = single["seconds"] / shared["seconds"]
                print(f"--workers 2 / --workers 1:  {ratio:.2f}x (target >= 1.6x)")
            if bare2 is not None:
                print(f"two bare paho (shared) / one: {bare / bare2:.2f}x (the machine's own limit)")
            if shared is not None and bare2 is not None:
                print(f"--workers 2 / two bare paho (shared): {bare2 / shared['seconds']:.0%}")
            if msub is not None:
                print(f"bare paho 3.1.1 / mosquitto_sub: {msub / bare:.0%}")
            print(f"load average at the end: {os.getloadavg()[0]:.1f} (uptime; {os.cpu_count()} cores)")
            args.logs.mkdir(parents=True, exist_ok=True)
            shutil.copy(mosquitto.log_path, args.logs / "mosquitto.log")
            print(f"logs: {args.logs}")
            if args.profile:
                for found in workdir.glob("*.folded.txt"):
                    shutil.copy(found, Path("/tmp") / found.name)
                    print(f"profile (py-spy raw, threads): /tmp/{found.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
