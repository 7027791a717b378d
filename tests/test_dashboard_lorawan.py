"""The device page's LoRaWAN radio section: the latest uplinks' gateway, RSSI, SNR and battery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from dashboards.access import Forbidden
from dashboards.pages import radio
from sensors.frames import TAGS, readings_to_frames
from sensors.lorawan.radio import RADIO_MEASUREMENT, STATUS_MEASUREMENT
from sensors.readings import Reading
from tests.dashboard_fixtures import MONTROUGE, POISSY, DashboardEnv, make_env
from tests.test_dashboard_callbacks import data_of

DEVICE = "aq-poissy-gare"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    built = make_env(tmp_path_factory.mktemp("dash"))
    now = built.scenario.now
    rows = [
        Reading(
            POISSY,
            RADIO_MEASUREMENT,
            DEVICE,
            int((now - timedelta(minutes=minutes)).timestamp() * 1e9),
            {
                "gateway_id": "gw-poissy-gare",
                "rssi": -70.0 - minutes,
                "snr": 9.5,
                "gateways": 2,
                "f_cnt": 100 - minutes,
            },
        )
        for minutes in range(1, 16)
    ]
    rows.append(
        Reading(
            POISSY,
            STATUS_MEASUREMENT,
            DEVICE,
            int((now - timedelta(hours=1)).timestamp() * 1e9),
            {"battery": 82.68},
        )
    )
    for measurement, frame in readings_to_frames(rows).items():
        built.store.write(measurement, frame, tags=TAGS)
    yield built
    built.store.close()


def _cells(component: object) -> list[list[str]]:
    table = component.children[0]  # type: ignore[attr-defined]
    body = table.children[2]
    return [[cell.children for cell in row.children] for row in body.children]


def test_the_latest_uplinks_are_listed_newest_first_with_the_battery(env: DashboardEnv) -> None:
    key = {"insee": POISSY, "device_id": DEVICE, "family": "air_quality"}
    section = radio.radio_section(
        data_of(env, "poissy"), key, range_key="24h", lang="fr", now=env.scenario.now
    )
    rows = _cells(section)
    assert len(rows) == radio.LATEST_UPLINKS
    assert [row[5] for row in rows[:3]] == ["99", "98", "97"]
    assert rows[0][1:5] == ["gw-poissy-gare", "-71", "9,5", "2"]
    battery = section.children[1]
    assert battery.children.startswith("Batterie : 83 %")


def test_a_device_without_lorawan_rows_shows_nothing_and_rights_hold(env: DashboardEnv) -> None:
    key = {"insee": POISSY, "device_id": "not-lorawan", "family": "air_quality"}
    section = radio.radio_section(
        data_of(env, "poissy"), key, range_key="24h", lang="en", now=env.scenario.now
    )
    assert not getattr(section, "children", None)
    with pytest.raises(Forbidden):
        radio.radio_section(
            data_of(env, "poissy"),
            {"insee": MONTROUGE, "device_id": DEVICE, "family": "air_quality"},
            range_key="24h",
            lang="fr",
            now=env.scenario.now,
        )
