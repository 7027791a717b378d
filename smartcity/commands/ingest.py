"""`smartcity ingest`: MQTT readings into the store, losing nothing (see docs/ingest.md)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Any

from smartcity.commands.stopping import stop_on_signals
from smartcity.settings import Settings

log = logging.getLogger("smartcity.ingest")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `ingest` sub-command."""
    parser = subparsers.add_parser(
        "ingest",
        help="subscribe to the sensors' MQTT topics and write every reading to the store",
        description="Subscribe to the readings (QoS 1, persistent session), decode them, "
        "write them to the store in batches, spool them on disk while the store is down, send "
        "refused messages to the dead-letter, and acknowledge each message only once it is "
        "durable. With --workers N, N processes share one subscription, each with its own "
        "client id, spool, dead-letter file and metrics port. Every option defaults to the "
        "settings (SMARTCITY_INGEST__*). Stops cleanly on SIGTERM or Ctrl-C.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="ingest processes on one shared subscription (default: the ingest.workers setting, "
        "else one per core when the broker has shared subscriptions, one on the embedded broker)",
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
    parser.add_argument(
        "--check-health",
        action="store_true",
        help="do not ingest: ask every worker's /healthz (the same settings and --workers as the "
        "running service) and exit 0 only if all of them are healthy (container health checks)",
    )
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
            "workers": args.workers,
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
    """Run the ingestor (or its workers) until SIGTERM/SIGINT; 0 when it stopped cleanly."""
    from pydantic import ValidationError

    try:
        settings = _apply(args, settings)
    except ValidationError as exc:
        print(f"smartcity ingest: invalid option: {exc}", file=sys.stderr)
        return 2
    workers = worker_count(settings)
    if args.check_health:
        return check_health(settings, workers)
    if workers == 1:
        return run_ingestor(settings)
    return _supervise(settings, workers, logging.getLogger().level)


def check_health(settings: Settings, workers: int) -> int:
    """Print every worker's health; 0 when all are healthy, 1 when one is not, 2 when unknowable."""
    from ingest.health import probe_workers

    port = settings.ingest.metrics_port
    if not port:
        print(
            "smartcity ingest --check-health: the workers' health is served on ingest.metrics_port, "
            f"which is {port!r} (set a fixed port)",
            file=sys.stderr,
        )
        return 2
    answers = probe_workers(settings.ingest.metrics_host, port, workers)
    for answer in answers:
        print(answer)
    return 0 if all(answer.healthy for answer in answers) else 1


def worker_count(settings: Settings) -> int:
    """How many ingest processes to run: the setting, else one per core when the broker has
    shared subscriptions (MQTT 5 brokers such as Mosquitto), else one (the embedded broker)."""
    if settings.ingest.workers is not None:
        return settings.ingest.workers
    if settings.mqtt.protocol != "5":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_settings(settings: Settings, index: int) -> Settings:
    """The settings of worker ``index`` of ``smartcity ingest --workers N``.

    Every worker joins the same shared group (``ingest.shared_group``, by default
    ``smartcity-ingest``). Worker 0 keeps the configured client id, spool and dead-letter file,
    so what a single ingestor left (its broker session, its spool) is picked up; worker ``i``
    adds ``-i`` to each, and serves its metrics on ``metrics_port + i``.
    """
    from ingest.config import DEFAULT_SHARED_GROUP

    ingest = settings.ingest
    update: dict[str, Any] = {"shared_group": ingest.shared_group or DEFAULT_SHARED_GROUP, "workers": 1}
    if index:
        deadletter = ingest.deadletter_file
        update |= {
            "client_id": f"{ingest.client_id}-{index}",
            "spool_dir": ingest.spool_dir.with_name(f"{ingest.spool_dir.name}-{index}"),
            "deadletter_file": deadletter.with_name(f"{deadletter.stem}-{index}{deadletter.suffix}"),
        }
        if ingest.metrics_port:
            update["metrics_port"] = ingest.metrics_port + index
    return settings.model_copy(update={"ingest": ingest.model_copy(update=update)})


RESTART_DELAY_S = 2.0
"""A worker that died is started again after this long (its broker session waits for it)."""


def _supervise(settings: Settings, workers: int, log_level: int) -> int:
    """Run ``workers`` ingest processes, restart any that dies, stop them all on a signal."""
    context = multiprocessing.get_context("spawn")
    specs = [worker_settings(settings, index) for index in range(workers)]

    def start(index: int) -> multiprocessing.process.BaseProcess:
        process = context.Process(
            target=_worker_main, args=(specs[index], index, log_level), name=f"ingest-worker-{index}"
        )
        process.start()
        return process

    stop = stop_on_signals(log, "stopping the workers")
    processes = [start(index) for index in range(workers)]
    started = [time.monotonic()] * workers
    log.info(
        "%d ingest workers on $share/%s/%s (client ids %s..%s; metrics on port %s + worker index)",
        workers,
        specs[0].ingest.shared_group,
        settings.ingest.topic,
        specs[0].ingest.client_id,
        specs[-1].ingest.client_id,
        settings.ingest.metrics_port,
    )
    failed = False
    while not stop.wait(0.5):
        for index, process in enumerate(processes):
            if process.is_alive():
                continue
            if process.exitcode == 2:  # a configuration error: restarting cannot help
                log.error("worker %d refused its configuration; stopping", index)
                failed = True
                stop.set()
                break
            if time.monotonic() - started[index] < RESTART_DELAY_S:
                continue
            log.error(
                "worker %d (%s) exited with code %s; starting it again (its broker session kept "
                "what it had not acknowledged)",
                index,
                specs[index].ingest.client_id,
                process.exitcode,
            )
            processes[index] = start(index)
            started[index] = time.monotonic()
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker flushes, acknowledges and disconnects
    for process in processes:
        process.join(120)
    codes = [process.exitcode for process in processes]
    log.info("ingest workers stopped (exit codes %s)", codes)
    return 1 if failed or any(code not in (0, -15) for code in codes) else 0


def _worker_main(settings: Settings, index: int, log_level: int) -> None:
    """Entry point of one worker process (spawned, so nothing is shared with the supervisor)."""
    _stop_with_parent()
    from smartcity.logs import configure_logging

    configure_logging(log_level, process=f"worker-{index}")
    sys.exit(run_ingestor(settings))


def _stop_with_parent() -> None:
    """Ask Linux for a SIGTERM when the supervisor dies (even by kill -9): an orphaned worker
    would fight the next supervisor's worker for its client id."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run_ingestor(settings: Settings) -> int:
    """Run one ingestor in this process until SIGTERM/SIGINT; 0 when it stopped cleanly."""
    from ingest.service import Ingestor
    from sensors.communes import CommuneRegistry, RegistryError
    from storage import StoreError, open_store

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
    except ValueError as exc:  # a setting the ingestor refuses, an invalid LoRaWAN device map...
        store.close()
        print(f"smartcity ingest: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        store.close()
        print(f"smartcity ingest: {exc}", file=sys.stderr)
        return 1

    # The MQTT network thread does many short socket reads per message, and after each it must
    # get the GIL back from the batcher thread: with the default 5 ms switch interval it would
    # wait behind the decoding. A short interval keeps the network thread fed (see
    # docs/performance.md, Ingest).
    sys.setswitchinterval(settings.ingest.switch_interval_s)
    stop = stop_on_signals(log, "flushing and stopping")
    ingestor.start()
    log.info(
        "ingesting %s from %s:%d (MQTT %s) into %s",
        ", ".join(settings.ingest.subscriptions),
        settings.mqtt.host,
        settings.mqtt.port,
        "5" if settings.mqtt.protocol == "5" and settings.ingest.protocol == "5" else "3.1.1",
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
