"""Staff act on alerts: an acknowledgement and a maintenance window (silence), written to the store
as the dashboards do, are honoured by delivery and written to the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts import actions
from alerts.actions import ActionError
from alerts.engine import Evaluator
from tests.alerts_fixtures import (
    AlertWorld,
    WebhookReceiver,
    commune_aggregate,
    make_world,
    receiver,  # noqa: F401  (fixture)
    webhook_delivery,
)

POISSY, ACHERES = "78498", "78005"
SCOPE = POISSY  # a commune-level rule: the scope is the commune


def _rule(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "pm10-eleve",
        "title": {"fr": "Particules PM10 élevées", "en": "High PM10 particles"},
        "communes": [POISSY],
        "family": "air_quality",
        "condition": "above",
        "measurement": "air_quality_15m_commune",
        "field": "pm10_mean",
        "raise": 50,
        "clear": 40,
        "cooldown": "0s",
        **overrides,
    }


@pytest.fixture
def world(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[AlertWorld]:  # noqa: F811
    """Poissy with one PM10 rule (no cooldown, so an alert may start again at once)."""
    made = make_world(tmp_path, [_rule()], {POISSY: webhook_delivery(receiver.url)})
    yield made
    made.close()


def _step(world: AlertWorld, evaluator: Evaluator, value: float, minutes: int = 5) -> None:
    commune_aggregate(world.store, POISSY, [world.clock.now - timedelta(minutes=15)], [value])
    evaluator.evaluate()
    evaluator.deliver()
    world.clock.advance(minutes=minutes)


def _types(receiver: WebhookReceiver) -> list[str]:  # noqa: F811
    return [r.json["type"] for r in receiver.accepted()]


def test_a_silenced_commune_gets_no_message_until_the_window_ends(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    window = actions.silence(
        POISSY,
        user="agent.poissy",
        at=world.clock.now,
        until=world.clock.now + timedelta(hours=1),
        reason="Remplacement des capteurs de la place",
    )
    actions.record(world.store, window)
    for _ in range(6):  # 30 minutes above the raise level, inside the window
        _step(world, evaluator, 80.0)
    assert _types(receiver) == []
    history = world.store.read("alert_events", start=world.clock.now - timedelta(days=1), end=world.clock.now)
    assert history.get_column("state").to_list() == ["firing"]
    assert window.id in history.get_column("summary").item()
    world.clock.advance(minutes=31)  # past the window, still above
    _step(world, evaluator, 80.0)
    assert _types(receiver) == ["alert.firing"]
    audit = [r for r in world.audit() if r["type"] == "action.silence"]
    assert len(audit) == 1
    assert audit[0]["by"] == "agent.poissy"
    assert audit[0]["comment"] == "Remplacement des capteurs de la place"
    assert audit[0]["until"] == window.until.isoformat()  # type: ignore[union-attr]


def test_a_silence_of_another_commune_or_ended_early_does_not_hold_messages(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    now, later = world.clock.now, world.clock.now + timedelta(hours=2)
    elsewhere = actions.silence(ACHERES, user="agent.acheres", at=now, until=later, reason="travaux")
    here = actions.silence(POISSY, user="agent.poissy", at=now, until=later, reason="travaux")
    for action in (elsewhere, here, actions.end_silence(here, user="agent.poissy", at=now)):
        actions.record(world.store, action)
    _step(world, evaluator, 80.0)
    assert _types(receiver) == ["alert.firing"]
    kinds = sorted(r["type"] for r in world.audit() if r["type"].startswith("action."))
    assert kinds == ["action.end_silence", "action.silence", "action.silence"]


def test_an_acknowledged_alert_is_not_announced_after_its_silence_and_says_who_took_it(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    now = world.clock.now
    window = actions.silence(
        POISSY, user="agent", at=now, until=now + timedelta(minutes=20), reason="maintenance"
    )
    actions.record(world.store, window)
    _step(world, evaluator, 80.0)  # fires, silenced
    ack = actions.acknowledge(
        POISSY, "pm10-eleve", SCOPE, user="agent.poissy", at=world.clock.now, comment="Équipe sur place"
    )
    actions.record(world.store, ack)
    for _ in range(6):  # past the window, still above: acknowledged, so still quiet
        _step(world, evaluator, 80.0)
    assert _types(receiver) == []
    for _ in range(2):
        _step(world, evaluator, 30.0)
    assert _types(receiver) == []  # never announced firing, so no resolved message either
    audit = [r for r in world.audit() if r["type"] == "action.acknowledge"]
    assert [(r["by"], r["comment"], r["scope"]) for r in audit] == [
        ("agent.poissy", "Équipe sur place", SCOPE)
    ]


def test_the_resolved_message_of_an_acknowledged_alert_names_who_acknowledged_it(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    _step(world, evaluator, 80.0)
    actions.record(
        world.store,
        actions.acknowledge(POISSY, "pm10-eleve", SCOPE, user="agent.poissy", at=world.clock.now),
    )
    _step(world, evaluator, 80.0)
    _step(world, evaluator, 30.0)
    firing, resolved = receiver.accepted()
    assert firing.json["alert"]["title"] == "Particules PM10 élevées"
    assert firing.json["alert"]["items"][0]["acknowledged"] is None
    assert resolved.json["alert"]["items"][0]["acknowledged"]["by"] == "agent.poissy"
    assert "Prise en charge par agent.poissy le " in resolved.json["text"]
    assert "Prise en charge" not in firing.json["text"]


def test_an_acknowledgement_of_an_earlier_episode_does_not_cover_a_new_one(world: AlertWorld) -> None:
    evaluator = world.evaluator()
    _step(world, evaluator, 80.0)
    actions.record(
        world.store, actions.acknowledge(POISSY, "pm10-eleve", SCOPE, user="a", at=world.clock.now)
    )
    _step(world, evaluator, 80.0)
    assert evaluator.state.alerts[f"pm10-eleve|{SCOPE}"].acknowledged_by == "a"
    _step(world, evaluator, 30.0)
    _step(world, evaluator, 80.0)
    record = evaluator.state.alerts[f"pm10-eleve|{SCOPE}"]
    assert record.status == "firing"
    assert record.acknowledged_by is None


def test_titles_in_both_languages_reach_the_history(world: AlertWorld) -> None:
    _step(world, world.evaluator(), 80.0)
    history = world.store.read("alert_events", start=world.clock.now - timedelta(days=1), end=world.clock.now)
    assert history.select("title_fr", "title_en").row(0) == (
        "Particules PM10 élevées",
        "High PM10 particles",
    )
    rule = world.rules.rule("pm10-eleve")
    assert rule.title_in("en") == "High PM10 particles"


def test_bad_actions_are_refused_with_a_reason(world: AlertWorld) -> None:
    now = world.clock.now
    with pytest.raises(ActionError, match="reason is required"):
        actions.silence(POISSY, user="a", at=now, until=now + timedelta(hours=1), reason="  ")
    with pytest.raises(ActionError, match="in the future"):
        actions.silence(POISSY, user="a", at=now, until=now, reason="x")
    with pytest.raises(ActionError, match="at most 90 days"):
        actions.silence(POISSY, user="a", at=now, until=now + timedelta(days=91), reason="x")
    with pytest.raises(ActionError, match="not an alert scope of commune 78498"):
        actions.acknowledge(POISSY, "pm10-eleve", f"{ACHERES}/air_quality", user="a", at=now)


def test_actions_read_back_as_written(world: AlertWorld) -> None:
    now = world.clock.now
    written = [
        actions.silence(
            POISSY, user="a", at=now, until=now + timedelta(hours=2), reason="r", device_id="aq-1"
        ),
        actions.acknowledge(POISSY, "pm10-eleve", SCOPE, user="b", at=now, comment="vu"),
    ]
    for action in written:
        actions.record(world.store, action)
    log = actions.read(world.store, now + timedelta(seconds=1))
    assert sorted(log.actions, key=lambda a: a.kind) == sorted(written, key=lambda a: a.kind)
    assert log.silence_of(POISSY, "aq-1", now + timedelta(hours=1)) == written[0]
    assert log.silence_of(POISSY, "aq-2", now + timedelta(hours=1)) is None
    assert log.silence_of(POISSY, "aq-1", now + timedelta(hours=3)) is None
