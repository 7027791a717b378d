"""`smartcity ingest` as a real process against real Mosquitto and influxd, through the failures
it must survive: kill -9 mid-stream, influxd down for a while, and SIGTERM."""

from __future__ import annotations

import itertools
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import polars as pl
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from simulator import Fleet
from storage.config import InfluxSettings
from storage.influx import InfluxStore
from storage.provision import provision
from tests.ingest_fixtures import (
    WIDE_END,
    WIDE_START,
    IngestProcess,
    assert_store_holds_fleet,
    fleet_messages,
    make_fleet,
    metric,
    publish,
)
from tests.servers import Influxd, Mosquitto, wait_until
from tests.storage_fixtures import shared_influxd

pytestmark = pytest.mark.slow

__all__ = ["shared_influxd"]  # the module's one influxd; each test provisions its own database

_databases = itertools.count()


@pytest.fixture
def influx(shared_influxd: Influxd) -> Iterator[tuple[InfluxStore, dict[str, str]]]:
    """A provisioned database, as a store to check with and as the ingestor's environment."""
    shared_influxd.start()  # a test may have left it stopped
    settings = InfluxSettings(
        url=shared_influxd.url,
        database=f"ingest{next(_databases)}",
        retry_backoff_s=0.05,
        retry_max_backoff_s=0.5,
    )
    provision(settings)
    store = InfluxStore(settings)
    env = {
        "SMARTCITY_STORE__BACKEND": "influxdb",
        "SMARTCITY_STORE__INFLUXDB__URL": settings.url,
        "SMARTCITY_STORE__INFLUXDB__DATABASE": settings.database,
        "SMARTCITY_STORE__INFLUXDB__RETRY_BACKOFF_S": "0.05",
        "SMARTCITY_STORE__INFLUXDB__RETRY_MAX_BACKOFF_S": "0.5",
    }
    yield store, env
    store.close()


def _rows_stored(store: InfluxStore, families: list[str]) -> int:
    return sum(
        store.read(family, start=WIDE_START, end=WIDE_END, fields=["received_at"]).height
        for family in families
    )


def _publish_in_background(port: int, messages: pl.DataFrame) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            publish(port, messages, max_queued=500)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_kill_9_mid_stream_then_restart_stores_every_reading(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=20, period_s=5)
    messages = fleet_messages(fleet)
    ingest = IngestProcess(tmp_path, mosquitto.port, env)
    ingest.start()
    publisher, errors = _publish_in_background(mosquitto.port, messages)
    wait_until(
        lambda: metric(ingest.metrics(), "smartcity_ingest_acked_messages_total") > messages.height // 5,
        timeout=60,
        what="a fifth of the stream acknowledged",
    )
    ingest.kill()
    publisher.join(120)
    assert not errors, errors
    assert _rows_stored(store, list(fleet.frames)) < fleet.rows, "the kill came too late to test anything"
    ingest.start()
    wait_until(
        lambda: _rows_stored(store, list(fleet.frames)) >= fleet.rows,
        timeout=120,
        interval=0.5,
        what=f"every reading stored after the restart; log:\n{ingest.log()}",
    )
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)


def test_influxd_down_for_a_while_readings_are_spooled_then_replayed(
    mosquitto: Mosquitto,
    shared_influxd: Influxd,
    influx: tuple[InfluxStore, dict[str, str]],
    tmp_path: Path,
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=9)
    messages = fleet_messages(fleet)
    thirds = [messages.slice(i * messages.height // 3, messages.height // 3 + (i == 2) * 3) for i in range(3)]
    assert sum(part.height for part in thirds) == messages.height
    ingest = IngestProcess(tmp_path, mosquitto.port, env)
    ingest.start()
    publish(mosquitto.port, thirds[0])
    wait_until(
        lambda: metric(ingest.metrics(), "smartcity_ingest_acked_messages_total") == thirds[0].height,
        timeout=60,
        what="first third stored",
    )
    shared_influxd.stop()
    publish(mosquitto.port, thirds[1])
    # Spooled is durable: every message is acknowledged while influxd is down.
    wait_until(
        lambda: (
            metric(ingest.metrics(), "smartcity_ingest_acked_messages_total")
            == thirds[0].height + thirds[1].height
        ),
        timeout=60,
        what="second third spooled and acknowledged",
    )
    page = ingest.metrics()
    assert metric(page, "smartcity_ingest_spool_batches") > 0
    assert metric(page, "smartcity_ingest_store_up") == 0
    assert ingest.healthy(), "spooling is a degraded but healthy state"
    shared_influxd.start()
    publish(mosquitto.port, thirds[2])
    wait_until(
        lambda: _rows_stored(store, list(fleet.frames)) >= fleet.rows,
        timeout=120,
        interval=0.5,
        what=f"every reading stored; log:\n{ingest.log()}",
    )
    wait_until(
        lambda: metric(ingest.metrics(), "smartcity_ingest_spool_batches") == 0,
        timeout=30,
        what="spool empty",
    )
    assert metric(ingest.metrics(), "smartcity_ingest_replayed_batches_total") > 0
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)


def test_sigterm_flushes_acknowledges_and_exits_0(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=3)
    messages = fleet_messages(fleet)
    # Batches that would only flush after a minute: at SIGTERM everything is still in memory.
    env = {**env, "SMARTCITY_INGEST__BATCH_INTERVAL_S": "60", "SMARTCITY_INGEST__BATCH_SIZE": "1000000"}
    ingest = IngestProcess(tmp_path, mosquitto.port, env)
    ingest.start()
    publish(mosquitto.port, messages)
    # Every message in the open batch: received, not yet acknowledged (a minute before it would
    # flush on its own).
    wait_until(
        lambda: metric(ingest.metrics(), "smartcity_ingest_held_messages") == messages.height,
        timeout=50,
        what="every message received and held",
    )
    assert metric(ingest.metrics(), "smartcity_ingest_acked_messages_total") == 0
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)
    assert _nothing_left_in_session(mosquitto.port, ingest.env["SMARTCITY_INGEST__CLIENT_ID"])


def _nothing_left_in_session(port: int, client_id: str) -> bool:
    """Resume the ingestor's session after a marker message: a message acknowledged by no one
    would be delivered again before the marker."""
    marker_topic = "smartcity/v1/78498/air_quality/marker-1"
    received: list[str] = []
    marker = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == marker_topic:
            marker.set()
        else:
            received.append(message.topic)

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    publisher.publish(marker_topic, b"{}", qos=1).wait_for_publish(10)
    publisher.disconnect()
    publisher.loop_stop()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_start()
    try:
        assert marker.wait(15), "the marker published into the session never arrived"
    finally:
        client.disconnect()
        client.loop_stop()
    assert not received, f"{len(received)} message(s) were left unacknowledged"
    return True


# --- smartcity ingest --workers N ---------------------------------------------------------------


def _two_workers_with_a_backlog(
    workdir: Path, port: int, env: dict[str, str], messages: pl.DataFrame
) -> IngestProcess:
    """``--workers 2`` started on a backlog: a first run creates both workers' sessions, the
    messages are published while they are down, then the workers start again."""
    ingest = IngestProcess(workdir, port, env, workers=2)
    ingest.start()
    assert ingest.terminate() == 0, ingest.log()
    publish(port, messages)
    ingest.start()
    return ingest


def _wait_until_stored(store: InfluxStore, fleet: Fleet, ingest: IngestProcess) -> None:
    wait_until(
        lambda: _rows_stored(store, list(fleet.frames)) >= fleet.rows,
        timeout=180,
        interval=0.5,
        what=f"every reading stored; log:\n{ingest.log()}",
    )


def test_two_workers_drain_a_backlog_each_taking_a_share_storing_every_reading_once(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=10, period_s=5)
    messages = fleet_messages(fleet)
    ingest = _two_workers_with_a_backlog(tmp_path, mosquitto.port, env, messages)
    _wait_until_stored(store, fleet, ingest)
    shares = [metric(ingest.worker_metrics(i), "smartcity_ingest_messages_total") for i in range(2)]
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)
    assert sum(shares) == messages.height, shares
    assert min(shares) > messages.height // 4, f"one worker did almost nothing: {shares}"
    # Each worker kept its own dead-letter file and spool (worker 0 the configured ones).
    assert (tmp_path / "spool").is_dir() and (tmp_path / "spool-1").is_dir()
    # Workers log like a single ingestor: no line per store request at INFO.
    assert "HTTP Request" not in ingest.log()


def test_a_worker_killed_mid_stream_is_restarted_and_nothing_is_lost(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=20, period_s=5)
    messages = fleet_messages(fleet)
    ingest = _two_workers_with_a_backlog(tmp_path, mosquitto.port, env, messages)
    victim = ingest.worker_pids()[1]
    wait_until(
        lambda: metric(ingest.worker_metrics(1), "smartcity_ingest_acked_messages_total") > 0,
        timeout=60,
        interval=0.02,
        what="worker 1 acknowledging",
    )
    stored_before = _rows_stored(store, list(fleet.frames))
    os.kill(victim, signal.SIGKILL)
    assert stored_before < fleet.rows, "the kill came too late to test anything"
    _wait_until_stored(store, fleet, ingest)
    # The other worker may drain the rest before the supervisor's next look at its workers.
    wait_until(
        lambda: "starting it again" in ingest.log(last=None) and len(ingest.worker_pids()) == 2,
        timeout=30,
        what=f"the supervisor starting worker 1 again; log:\n{ingest.log()}",
    )
    assert victim not in ingest.worker_pids()
    assert "worker 1" in ingest.log(last=None)
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)


def test_the_health_check_covers_every_worker_down_or_stalled(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    _, env = influx
    ingest = IngestProcess(tmp_path, mosquitto.port, env, workers=2)
    ingest.start()
    supervisor = ingest.process
    assert supervisor is not None
    code, output = ingest.check_health()
    assert code == 0, output
    assert "worker 0" in output and "worker 1" in output

    # Stalled: worker 1 stops answering while worker 0 stays healthy.
    stalled = ingest.worker_pids()[1]
    os.kill(stalled, signal.SIGSTOP)
    try:
        code, output = ingest.check_health()
    finally:
        os.kill(stalled, signal.SIGCONT)
    assert code == 1, output
    assert "worker 1" in output and "no answer" in output
    wait_until(lambda: ingest.check_health()[0] == 0, timeout=30, interval=0.5, what="healthy again")

    # Down: worker 1 killed while the supervisor is held, so it cannot start it again yet.
    os.kill(supervisor.pid, signal.SIGSTOP)
    try:
        down = ingest.worker_pids()[1]
        os.kill(down, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{down}/cmdline").read_text(), timeout=10, what="worker 1 gone")
        code, output = ingest.check_health()
    finally:
        os.kill(supervisor.pid, signal.SIGCONT)
    assert code == 1, output
    assert "worker 0 (port" in output and "worker 1 (port" in output and "no answer" in output
    wait_until(lambda: ingest.check_health()[0] == 0, timeout=60, interval=0.5, what="worker 1 back")
    assert ingest.terminate() == 0, ingest.log()
