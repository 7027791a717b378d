"""`smartcity ingest --workers N`: N processes on one shared subscription of a real Mosquitto,
into a real influxd, lose nothing and store nothing twice, even when one of them is killed."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

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

__all__ = ["shared_influxd"]

_databases = itertools.count()


@pytest.fixture
def influx(shared_influxd: Influxd) -> Iterator[tuple[InfluxStore, dict[str, str]]]:
    """A provisioned database, as a store to check with and as the ingestors' environment."""
    shared_influxd.start()
    settings = InfluxSettings(url=shared_influxd.url, database=f"workers{next(_databases)}")
    provision(settings)
    store = InfluxStore(settings)
    env = {
        "SMARTCITY_STORE__BACKEND": "influxdb",
        "SMARTCITY_STORE__INFLUXDB__URL": settings.url,
        "SMARTCITY_STORE__INFLUXDB__DATABASE": settings.database,
    }
    yield store, env
    store.close()


def _stored(store: InfluxStore, families: list[str]) -> int:
    return sum(
        store.read(family, start=WIDE_START, end=WIDE_END, fields=["received_at"]).height
        for family in families
    )


def test_two_workers_drain_a_backlog_each_taking_a_share_storing_every_reading_once(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=10, period_s=5)
    messages = fleet_messages(fleet)
    ingest = IngestProcess(tmp_path, mosquitto.port, env, workers=2)
    # A first run creates both workers' sessions; the backlog then waits in them while they are down.
    ingest.start()
    assert ingest.terminate() == 0, ingest.log()
    publish(mosquitto.port, messages)
    ingest.start()
    wait_until(
        lambda: _stored(store, list(fleet.frames)) >= fleet.rows,
        timeout=120,
        interval=0.5,
        what=f"the backlog stored; log:\n{ingest.log()}",
    )
    shares = [metric(ingest.worker_metrics(i), "smartcity_ingest_messages_total") for i in range(2)]
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)
    assert sum(shares) == messages.height, shares
    assert min(shares) > messages.height // 4, f"one worker did almost nothing: {shares}"
    # Each worker kept its own dead-letter file and spool (worker 0 the configured ones).
    assert (tmp_path / "spool").is_dir() and (tmp_path / "spool-1").is_dir()


def test_a_worker_killed_mid_stream_is_restarted_and_nothing_is_lost(
    mosquitto: Mosquitto, influx: tuple[InfluxStore, dict[str, str]], tmp_path: Path
) -> None:
    store, env = influx
    fleet = make_fleet(minutes=20, period_s=5)
    messages = fleet_messages(fleet)
    ingest = IngestProcess(tmp_path, mosquitto.port, env, workers=2)
    ingest.start()
    assert ingest.terminate() == 0, ingest.log()
    publish(mosquitto.port, messages)
    ingest.start()
    victim = ingest.worker_pids()[1]
    wait_until(
        lambda: metric(ingest.worker_metrics(1), "smartcity_ingest_acked_messages_total") > 0,
        timeout=60,
        interval=0.02,
        what="worker 1 acknowledging",
    )
    stored_before = _stored(store, list(fleet.frames))
    os.kill(victim, signal.SIGKILL)
    assert stored_before < fleet.rows, "the kill came too late to test anything"
    wait_until(
        lambda: _stored(store, list(fleet.frames)) >= fleet.rows,
        timeout=180,
        interval=0.5,
        what=f"every reading stored after the kill; log:\n{ingest.log()}",
    )
    assert victim not in ingest.worker_pids()
    assert "worker 1" in ingest.log() and "starting it again" in ingest.log()
    assert ingest.terminate() == 0, ingest.log()
    assert_store_holds_fleet(store, fleet)
