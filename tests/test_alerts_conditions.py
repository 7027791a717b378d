"""Each kind of condition reads the measurement docs/measurements.md says processing writes."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from alerts.rules import INDEX_CLASSES
from storage.base import TIME_DTYPE
from tests.alerts_fixtures import AlertWorld, make_world, webhook_delivery

POISSY, MONTROUGE = "78498", "92049"
NOWHERE = "http://127.0.0.1:9/never-called"


def _world(tmp_path: Path, rule: dict[str, Any]) -> AlertWorld:
    return make_world(tmp_path, [rule], {"*": webhook_delivery(NOWHERE)})


def _states(world: AlertWorld) -> dict[str, str]:
    return {record.scope: record.status for record in world.evaluator().state.alerts.values()}


def _frame(times: list[datetime], **columns: list[Any]) -> pl.DataFrame:
    return pl.DataFrame({"time": times, **columns}).with_columns(pl.col("time").cast(TIME_DTYPE))


def test_below_on_a_device_aggregate_scopes_each_device(tmp_path: Path) -> None:
    rule = {
        "name": "fibre-faible",
        "communes": [MONTROUGE],
        "family": "network",
        "condition": "below",
        "measurement": "network_15m",
        "field": "opticalRxPower_mean",
        "raise": -27,
        "clear": -25,
    }
    world = _world(tmp_path, rule)
    try:
        at = world.clock.now - timedelta(minutes=15)
        world.store.write(
            "network_15m",
            _frame([at, at, at], insee=[MONTROUGE] * 3, device_id=["ont-1", "ont-2", "ont-3"],
                   opticalRxPower_mean=[-28.5, -26.0, -20.0]),
            tags=["insee", "device_id"],
        )  # fmt: skip
        report = world.evaluator().evaluate()
        assert [(t.record.scope, t.after) for t in report.transitions] == [(f"{MONTROUGE}/ont-1", "firing")]
        [message] = report.messages
        assert "-28,5\u00a0dBm" in message.payload["text"]
        assert "en dessous de -27\u00a0dBm" in message.payload["subject"]
    finally:
        world.close()


def test_index_at_least_uses_the_daily_atmo_class_and_ignores_incomplete_days(tmp_path: Path) -> None:
    rule = {
        "name": "atmo",
        "communes": "*",
        "family": "air_quality",
        "condition": "index_at_least",
        "index": "atmo",
        "raise": "mauvais",
    }
    world = _world(tmp_path, rule)
    try:
        day = world.clock.now.replace(hour=0, minute=0) - timedelta(hours=2)
        labels = INDEX_CLASSES["fr"]
        world.store.write(
            "atmo_daily",
            pl.DataFrame(
                {
                    "time": [day, day, day],
                    "insee": [POISSY, MONTROUGE, "78160"],
                    "index": [4, 3, None],
                    "label": [labels[3], labels[2], None],
                    "complete": [True, True, False],
                },
                schema_overrides={"index": pl.Int64},
            ).with_columns(pl.col("time").cast(TIME_DTYPE)),
            tags=["insee"],
        )
        report = world.evaluator().evaluate()
        assert [(t.record.scope, t.after) for t in report.transitions] == [(POISSY, "firing")]
        text = report.messages[0].payload["text"]
        assert "mauvais (4)" in text
        assert "ATMO" in text
    finally:
        world.close()


def test_anomaly_alerts_follow_the_open_flag_written_by_processing(tmp_path: Path) -> None:
    rule = {
        "name": "fige",
        "communes": [POISSY],
        "family": "air_quality",
        "condition": "anomaly",
        "kind": "stuck",
    }
    world = _world(tmp_path, rule)

    def anomaly(start: datetime, device: str, kind: str, is_open: bool) -> None:
        world.store.write(
            "anomalies",
            pl.DataFrame(
                {
                    "time": [start],
                    "insee": [POISSY],
                    "family": ["air_quality"],
                    "device_id": [device],
                    "field": ["pm10"],
                    "kind": [kind],
                    "end_ns": [None if is_open else int(world.clock.now.timestamp() * 1e9)],
                    "observed": [12.0],
                    "expected": [None],
                    "score": [8.0],
                    "open": [is_open],
                },
                schema_overrides={"end_ns": pl.Int64, "expected": pl.Float64},
            ).with_columns(pl.col("time").cast(TIME_DTYPE)),
            tags=["insee", "family", "device_id", "field", "kind"],
        )

    try:
        start = world.clock.now - timedelta(hours=3)
        anomaly(start, "aq-1", "stuck", is_open=True)
        anomaly(start, "aq-2", "spike", is_open=True)  # another kind: not this rule's business
        evaluator = world.evaluator()
        report = evaluator.evaluate()
        assert [(t.record.scope, t.after) for t in report.transitions] == [(f"{POISSY}/aq-1/pm10", "firing")]
        world.clock.advance(minutes=10)
        anomaly(start, "aq-1", "stuck", is_open=False)  # processing rewrites the row when it closes
        report = evaluator.evaluate()
        assert [(t.record.scope, t.after) for t in report.transitions] == [
            (f"{POISSY}/aq-1/pm10", "resolved")
        ]
        assert report.messages[0].payload["type"] == "alert.resolved"
    finally:
        world.close()


def test_a_rule_reading_a_measurement_that_does_not_exist_yet_changes_nothing(tmp_path: Path) -> None:
    rule = {
        "name": "chaud",
        "communes": "*",
        "family": "building",
        "condition": "above",
        "measurement": "building_1h",
        "field": "temperature_max",
        "raise": 28,
    }
    world = _world(tmp_path, rule)
    try:
        report = world.evaluator().evaluate()
        assert report.transitions == []
        assert report.errors == []
    finally:
        world.close()
