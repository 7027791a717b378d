"""The device page tells a device's status and details, and every page agrees on "online"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import polars as pl
import pytest

from dashboards.pages import commune, device
from dashboards.views import overview_rows
from tests.dashboard_fixtures import POISSY, DashboardEnv, alert_frame, anomaly_frame, make_env
from tests.test_dashboard_callbacks import data_of, texts

DEVICE = f"air-{POISSY}-1"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    directory = tmp_path_factory.mktemp("device")
    topology = directory / "devices.csv"
    topology.write_text(f"device_id,parent\nnet-{POISSY}-01,\n{DEVICE},net-{POISSY}-01\n")
    built = make_env(directory, topology_file=topology)
    yield built
    built.store.close()


def _status_of(env: DashboardEnv, device_id: str) -> str:
    """The status cell of a device in the commune page's device table."""
    tables = commune.status_panel(
        data_of(env, "poissy"), POISSY, "24h", lang="fr", settings=env.settings, now=env.scenario.now
    )
    body = tables[0].children[2]  # caption, head, body
    for line in body.children:
        cells = [c.children for c in line.children]
        if device_id in texts(cells[0]):
            return texts(cells[-1])
    raise AssertionError(f"{device_id} not in the device table")


def test_device_summary_shows_status_details_and_last_readings(env: DashboardEnv) -> None:
    key = {"insee": POISSY, "device_id": DEVICE, "family": "air_quality"}
    summary = texts(
        device.device_summary(
            data_of(env, "poissy"), key, lang="fr", settings=env.settings, now=env.scenario.now
        )
    )
    assert "en ligne" in summary
    assert "Qualité de l’air" in summary
    assert f"net-{POISSY}-01" in summary and f"/device/{POISSY}/net-{POISSY}-01" in summary  # parent, linked
    assert "60\\u00a0s" in summary or "60\u00a0s" in summary  # expected period
    assert "Dernières mesures (5, heure de Paris)" in summary
    assert "µg/m³" in summary and "ppm" in summary  # readings carry their units


def test_device_panel_lists_anomalies_with_start_and_end_and_the_devices_alerts(env: DashboardEnv) -> None:
    now = env.scenario.now
    scope = f"{POISSY}/{DEVICE}"
    env.store.write(
        "alert_events",
        alert_frame(
            [(POISSY, "capteurs-hors-ligne", scope, "firing", now - timedelta(minutes=5), "hors ligne")]
        ),
        tags=["insee", "rule", "scope"],
    )
    key = {"insee": POISSY, "device_id": DEVICE, "family": "air_quality"}
    _, tables = device.device_panel(
        data_of(env, "poissy"), key, "pm25", range_key="24h", lang="fr", settings=env.settings, now=now
    )
    shown = texts(tables)
    assert '"Début"' in shown and '"Fin"' in shown
    assert "Alertes de ce capteur" in shown and "capteurs-hors-ligne" in shown and "non acquittée" in shown


def test_an_offline_anomaly_shows_durations_and_the_whole_device(env: DashboardEnv) -> None:
    now = env.scenario.now
    device_id = f"air-{POISSY}-0"
    anomaly = anomaly_frame(
        [(POISSY, "air_quality", device_id, "", "offline", now - timedelta(minutes=14), 862.0, 60.0)]
    )
    env.store.write("anomalies", anomaly, tags=["insee", "family", "device_id", "field", "kind"])
    tables = commune.status_panel(
        data_of(env, "poissy"), POISSY, "24h", lang="fr", settings=env.settings, now=now
    )
    shown = texts(tables[1])
    assert "tout l’appareil (silence)" in shown
    assert "14,4\u00a0min" in shown and "60\u00a0s" in shown
    assert "862,0" not in shown


def test_the_device_table_agrees_with_anomalies_and_alerts_on_offline(env: DashboardEnv) -> None:
    """A device seen a minute ago is online by its silence alone; an open offline anomaly or a
    firing offline alert about it makes every page say offline, and why."""
    now = env.scenario.now
    quiet, alerted = f"tra-{POISSY}-0", f"tra-{POISSY}-1"
    assert "en ligne" in _status_of(env, quiet)
    env.store.write(
        "anomalies",
        anomaly_frame([(POISSY, "traffic", quiet, "", "offline", now - timedelta(minutes=6), 360.0, 60.0)]),
        tags=["insee", "family", "device_id", "field", "kind"],
    )
    events = alert_frame(
        [(POISSY, "capteurs-hors-ligne", f"{POISSY}/{alerted}", "firing", now, "x")]
    ).with_columns(pl.lit("offline").alias("condition"), pl.lit("").alias("kind"))
    env.store.write("alert_events", events, tags=["insee", "rule", "scope"])
    assert "hors ligne (anomalie hors ligne)" in _status_of(env, quiet)
    assert "hors ligne (alerte hors ligne)" in _status_of(env, alerted)
    row = overview_rows(data_of(env, "poissy"), now, env.settings.online_after_periods).row(0, named=True)
    assert row["devices_total"] - row["devices_online"] >= 2
