"""A silent LoRaWAN gateway is the parent of the devices it served: one message, not one per device.

The links come from the ``lorawan_radio`` rows ingest writes (no topology file); the gateway is
monitored as network equipment under the id the device map gives it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from sensors.frames import TAGS, readings_to_frames
from sensors.lorawan.radio import RADIO_MEASUREMENT
from sensors.readings import Reading
from tests.alerts_fixtures import (
    AlertWorld,
    WebhookReceiver,
    make_world,
    raw_readings,
    receiver,  # noqa: F401  (fixture)
    webhook_delivery,
)

POISSY = "78498"
GATEWAY = "gw-poissy-gare"
SENSORS = [f"aq-poissy-{i}" for i in range(1, 6)]
RULES = [
    {"name": "reseau", "communes": "*", "family": "network", "condition": "offline", "silence": "5m"},
    {"name": "capteurs", "communes": "*", "family": "air_quality", "condition": "offline", "silence": "5m"},
]


@pytest.fixture
def world(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[AlertWorld]:  # noqa: F811
    made = make_world(tmp_path, RULES, {"*": webhook_delivery(receiver.url)})
    yield made
    made.close()


def _everything_reports(world: AlertWorld) -> None:
    now = world.clock.now - timedelta(seconds=30)
    raw_readings(world.store, "network", POISSY, [GATEWAY], [now])
    raw_readings(world.store, "air_quality", POISSY, SENSORS, [now])
    radio = [
        Reading(POISSY, RADIO_MEASUREMENT, device, int(now.timestamp() * 1e9), {"gateway_id": GATEWAY})
        for device in SENSORS
    ]
    for measurement, frame in readings_to_frames(radio).items():
        world.store.write(measurement, frame, tags=TAGS)


def test_devices_heard_through_a_silent_gateway_are_folded_into_its_message(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    _everything_reports(world)
    evaluator.evaluate()
    world.clock.advance(minutes=10)  # the gateway goes silent, and with it every device it served
    evaluator.evaluate()
    evaluator.deliver()
    [message] = receiver.accepted()
    alert = message.json["alert"]
    assert alert["rule"] == "reseau"
    assert [item["device_id"] for item in alert["items"]] == [GATEWAY]
    assert alert["suppressed_devices"] == sorted(SENSORS)
