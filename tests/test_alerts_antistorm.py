"""No floods: flapping input, a gateway going silent with its devices, cooldowns, suppression of
devices behind an offline parent; and the lifecycle carries on across a restart."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from alerts.engine import Evaluator
from storage.base import WriteReport
from storage.errors import StoreUnavailable
from tests.alerts_fixtures import (
    AlertWorld,
    WebhookReceiver,
    commune_aggregate,
    make_world,
    raw_readings,
    receiver,  # noqa: F401  (fixture)
    webhook_delivery,
)

POISSY, ACHERES = "78498", "78005"


def _threshold_rule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "pm10-eleve",
        "communes": [POISSY],
        "family": "air_quality",
        "condition": "above",
        "measurement": "air_quality_15m_commune",
        "field": "pm10_mean",
        "raise": 50,
        "clear": 40,
        "for": "15m",
        **overrides,
    }


def _types(receiver: WebhookReceiver) -> list[str]:  # noqa: F811
    return [r.json["type"] for r in receiver.accepted()]


def _run_series(world: AlertWorld, values: list[float], step_minutes: int = 5) -> Evaluator:
    """Feed one value per step (the latest 15-minute mean) and evaluate after each."""
    evaluator = world.evaluator()
    for value in values:
        commune_aggregate(world.store, POISSY, [world.clock.now - timedelta(minutes=15)], [value])
        evaluator.evaluate()
        evaluator.deliver()
        world.clock.advance(minutes=step_minutes)
    return evaluator


# A value wobbling around the raise level for three hours, then back to clean air.
FLAPPING = [49.0, 52.0, 48.0, 53.0, 47.5, 51.0] * 6 + [30.0] * 3
# A value jumping across both levels (a sensor with a loose contact), then clean air.
JUMPING = [60.0, 35.0, 61.0, 34.0, 62.0, 33.0] * 6 + [30.0] * 10


def _naive_crossings(values: list[float], level: float) -> int:
    """How many times a bare threshold check would change its mind: what a naive alerter sends."""
    states = [v > level for v in values]
    return sum(1 for a, b in itertools.pairwise(states) if a != b)


@pytest.mark.parametrize(
    ("values", "overrides"),
    [
        (FLAPPING, {}),  # hysteresis: never back under the clear level while it wobbles
        (JUMPING, {"for": "0s", "clear_for": "30m"}),  # crossing both levels: the clear must hold 30 min
    ],
)
def test_flapping_input_gives_one_firing_and_one_resolved_message(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
    values: list[float],
    overrides: dict[str, Any],
) -> None:
    assert _naive_crossings(values, 50) > 20  # the input really flaps
    world = make_world(tmp_path, [_threshold_rule(**overrides)], {POISSY: webhook_delivery(receiver.url)})
    try:
        _run_series(world, values)
        assert _types(receiver) == ["alert.firing", "alert.resolved"]
    finally:
        world.close()


def test_without_the_protections_the_same_input_is_a_storm(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    """The counter-test: no hysteresis, no delays, no cooldown -> one message per crossing."""
    rule = _threshold_rule(clear=50, **{"for": "0s"}, cooldown="0s")
    world = make_world(tmp_path, [rule], {POISSY: webhook_delivery(receiver.url)})
    try:
        _run_series(world, FLAPPING)
        firing_count = _types(receiver).count("alert.firing")
        assert firing_count > 10
    finally:
        world.close()


def test_cooldown_holds_back_a_new_alert_after_one_resolved(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    rule = _threshold_rule(**{"for": "0s"}, cooldown="1h")
    world = make_world(tmp_path, [rule], {POISSY: webhook_delivery(receiver.url)})
    try:
        # fires, resolves 10 min later, comes back 10 min after that (inside the hour of cooldown)
        _run_series(world, [70.0, 30.0, 70.0, 70.0], step_minutes=10)
        assert _types(receiver) == ["alert.firing", "alert.resolved"]
        world.clock.advance(hours=1)
        _run_series(world, [70.0])
        assert _types(receiver) == ["alert.firing", "alert.resolved", "alert.firing"]
    finally:
        world.close()


# -- offline devices, grouping and suppression ------------------------------------------------

GATEWAY = "poissy-gw-1"
SENSORS = [f"poissy-aq-{i:02d}" for i in range(1, 31)]


def _fleet_reports(
    world: AlertWorld, *, gateway: bool = True, sensors: bool = True, insee: str = POISSY
) -> None:
    """Every device of the commune reports now (prefixed by commune for other communes)."""
    now = [world.clock.now - timedelta(seconds=30)]
    if gateway:
        raw_readings(world.store, "network", insee, [GATEWAY if insee == POISSY else f"{insee}-gw"], now)
    if sensors:
        devices = SENSORS if insee == POISSY else [f"{insee}-aq-{i}" for i in range(3)]
        raw_readings(world.store, "air_quality", insee, devices, now)


OFFLINE_ALL = {"name": "hors-ligne", "communes": "*", "family": "*", "condition": "offline", "silence": "5m"}


def test_a_gateway_going_silent_with_its_30_devices_gives_one_grouped_message(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    world = make_world(tmp_path, [OFFLINE_ALL], {"*": webhook_delivery(receiver.url)})
    try:
        evaluator = world.evaluator()
        for _ in range(3):  # everything reports for a while: nothing to say
            _fleet_reports(world)
            _fleet_reports(world, insee=ACHERES)
            evaluator.evaluate()
            world.clock.advance(minutes=1)
        assert receiver.accepted() == []

        for _ in range(15):  # Poissy's gateway drops; Achères keeps reporting
            _fleet_reports(world, insee=ACHERES)
            evaluator.evaluate()
            evaluator.deliver()
            world.clock.advance(minutes=1)
        [message] = receiver.accepted()
        body = message.json
        assert body["alert"]["commune"]["insee"] == POISSY
        assert {i["device_id"] for i in body["alert"]["items"]} == {GATEWAY, *SENSORS}
        assert "31 appareil(s)" in body["text"]
        assert all(device in body["text"] for device in [GATEWAY, *SENSORS])

        for _ in range(3):  # back
            _fleet_reports(world)
            _fleet_reports(world, insee=ACHERES)
            evaluator.evaluate()
            evaluator.deliver()
            world.clock.advance(minutes=1)
        assert _types(receiver) == ["alert.firing", "alert.resolved"]
        assert len(receiver.accepted()[1].json["alert"]["items"]) == 31
    finally:
        world.close()


TOPOLOGY = "device_id,parent\n" + "".join(f"{d},{GATEWAY}\n" for d in SENSORS)
OFFLINE_NETWORK = {
    "name": "reseau",
    "communes": "*",
    "family": "network",
    "condition": "offline",
    "silence": "5m",
}
OFFLINE_SENSORS = {
    "name": "capteurs",
    "communes": "*",
    "family": "air_quality",
    "condition": "offline",
    "silence": "5m",
}


def _suppression_world(tmp_path: Path, url: str) -> AlertWorld:
    world = make_world(tmp_path, [OFFLINE_NETWORK, OFFLINE_SENSORS], {"*": webhook_delivery(url)})
    world.topology_csv = TOPOLOGY
    return world


@pytest.fixture
def suppression(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[AlertWorld]:  # noqa: F811
    world = _suppression_world(tmp_path, receiver.url)
    yield world
    world.close()


def test_devices_behind_an_offline_gateway_are_folded_into_its_message(
    suppression: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    world = suppression
    evaluator = world.evaluator()
    _fleet_reports(world)
    evaluator.evaluate()
    world.clock.advance(minutes=10)
    evaluator.evaluate()
    evaluator.deliver()
    [message] = receiver.accepted()
    body = message.json
    assert body["alert"]["rule"] == "reseau"
    assert [i["device_id"] for i in body["alert"]["items"]] == [GATEWAY]
    assert body["alert"]["suppressed_devices"] == sorted(SENSORS)
    assert "30 appareil(s) situés derrière cet équipement" in body["text"]

    # The history still records every device's alert, marked as suppressed.
    events = world.store.read(
        "alert_events", start=world.clock.now - timedelta(hours=1), end=world.clock.now + timedelta(1)
    )
    sensors_events = events.filter(pl.col("rule") == "capteurs")
    assert sensors_events.height == 30
    assert sensors_events["summary"].str.contains("suppressed").all()

    # Everything comes back: one resolved message (for the gateway), none for the silenced.
    world.clock.advance(minutes=1)
    _fleet_reports(world)
    evaluator.evaluate()
    evaluator.deliver()
    assert _types(receiver) == ["alert.firing", "alert.resolved"]


def test_a_device_still_down_when_its_parent_returns_gets_its_own_message(
    suppression: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    world = suppression
    evaluator = world.evaluator()
    _fleet_reports(world)
    evaluator.evaluate()
    world.clock.advance(minutes=10)
    evaluator.evaluate()
    evaluator.deliver()
    world.clock.advance(minutes=1)
    # The gateway and 29 sensors are back; poissy-aq-07 is not.
    raw_readings(world.store, "network", POISSY, [GATEWAY], [world.clock.now])
    raw_readings(
        world.store, "air_quality", POISSY, [d for d in SENSORS if d != "poissy-aq-07"], [world.clock.now]
    )
    evaluator.evaluate()
    evaluator.deliver()
    messages = [r.json for r in receiver.accepted()]
    assert [(m["type"], m["alert"]["rule"]) for m in messages] == [
        ("alert.firing", "reseau"),
        ("alert.resolved", "reseau"),
        ("alert.firing", "capteurs"),
    ]
    assert [i["device_id"] for i in messages[2]["alert"]["items"]] == ["poissy-aq-07"]


# -- lifecycle across restarts and store outages ----------------------------------------------


def test_a_restart_neither_repeats_nor_forgets_a_firing_alert(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    world = make_world(tmp_path, [_threshold_rule(**{"for": "0s"})], {POISSY: webhook_delivery(receiver.url)})
    try:
        _run_series(world, [80.0, 81.0])
        _run_series(world, [82.0, 83.0])  # a new evaluator: same state file
        assert _types(receiver) == ["alert.firing"]
        _run_series(world, [20.0])  # and another one sees it end
        assert _types(receiver) == ["alert.firing", "alert.resolved"]
    finally:
        world.close()


class _HistoryDown:
    """The store, except that alert history cannot be written (as when InfluxDB is down)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.down = True

    def write(self, measurement: str, frame: pl.DataFrame, *, tags: Any) -> WriteReport:
        if self.down and measurement == "alert_events":
            raise StoreUnavailable("connection refused")
        result: WriteReport = self.store.write(measurement, frame, tags=tags)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_history_events_wait_for_the_store_and_are_not_lost(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    world = make_world(tmp_path, [_threshold_rule(**{"for": "0s"})], {POISSY: webhook_delivery(receiver.url)})
    flaky = _HistoryDown(world.store)
    try:
        evaluator = world.evaluator()
        evaluator.store = flaky
        commune_aggregate(world.store, POISSY, [world.clock.now - timedelta(minutes=15)], [90.0])
        evaluator.evaluate()
        evaluator.deliver()
        assert _types(receiver) == ["alert.firing"]  # delivery does not wait for the history
        world.clock.advance(minutes=5)
        flaky.down = False
        evaluator.evaluate()
        events = world.store.read(
            "alert_events", start=world.clock.now - timedelta(hours=1), end=world.clock.now
        )
        assert events["state"].to_list() == ["firing"]
    finally:
        world.close()


def test_the_run_loop_evaluates_and_delivers_until_stopped(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    import threading

    from tests.servers import wait_until

    world = make_world(tmp_path, [_threshold_rule(**{"for": "0s"})], {POISSY: webhook_delivery(receiver.url)})
    try:
        commune_aggregate(world.store, POISSY, [world.clock.now - timedelta(minutes=15)], [75.0])
        evaluator = world.evaluator()
        stop = threading.Event()
        loop = threading.Thread(
            target=evaluator.run, args=(stop,), kwargs={"interval_s": 60, "delivery_interval_s": 0.02}
        )
        loop.start()
        wait_until(lambda: len(receiver.accepted()) == 1, timeout=10, what="the firing message")
        stop.set()
        loop.join(timeout=10)
        assert not loop.is_alive()
        assert _types(receiver) == ["alert.firing"]
    finally:
        world.close()
