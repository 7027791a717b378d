"""The evaluator against a real influxd: offline devices seen through series(), alert history
written and read back with its tags (scopes hold '/', rule names '-')."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.alerts_fixtures import (
    FakeClock,
    WebhookReceiver,
    commune_aggregate,
    make_world,
    raw_readings,
    receiver,  # noqa: F401  (fixture)
    webhook_delivery,
)
from tests.servers import Influxd
from tests.storage_fixtures import open_influx

POISSY = "78498"


def test_alerts_run_on_influxdb(
    tmp_path: Path,
    influxd: Influxd,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    rules: list[dict[str, Any]] = [
        {
            "name": "hors-ligne",
            "communes": "*",
            "family": "air_quality",
            "condition": "offline",
            "silence": "5m",
        },
        {
            "name": "pm10-eleve",
            "communes": [POISSY],
            "family": "air_quality",
            "condition": "above",
            "measurement": "air_quality_15m_commune",
            "field": "pm10_mean",
            "raise": 50,
        },
    ]
    # Real time: raw readings older than the raw retention (30 days) are refused by InfluxDB.
    clock = FakeClock(datetime.now(UTC).replace(microsecond=0))
    world = make_world(
        tmp_path, rules, {"*": webhook_delivery(receiver.url)}, store=open_influx(influxd), clock=clock
    )
    try:
        devices = ["poissy-aq-1", "poissy-aq-2"]
        raw_readings(world.store, "air_quality", POISSY, devices, [world.clock.now - timedelta(minutes=20)])
        commune_aggregate(world.store, POISSY, [world.clock.now - timedelta(minutes=15)], [64.0])
        evaluator = world.evaluator()
        report = evaluator.evaluate()
        evaluator.deliver()
        assert sorted((t.rule.name, t.record.scope) for t in report.transitions) == [
            ("hors-ligne", f"{POISSY}/poissy-aq-1"),
            ("hors-ligne", f"{POISSY}/poissy-aq-2"),
            ("pm10-eleve", POISSY),
        ]
        assert sorted(r.json["alert"]["rule"] for r in receiver.accepted()) == ["hors-ligne", "pm10-eleve"]
        history = world.store.read(
            "alert_events",
            start=world.clock.now - timedelta(hours=1),
            end=world.clock.now + timedelta(seconds=1),
        )
        assert sorted(history["scope"].to_list()) == [
            POISSY,
            f"{POISSY}/poissy-aq-1",
            f"{POISSY}/poissy-aq-2",
        ]
        assert set(history["state"].to_list()) == {"firing"}
        assert history.filter(history["rule"] == "pm10-eleve")["value"].to_list() == [64.0]
    finally:
        world.close()
