"""LoRaWAN uplinks of ChirpStack v4 and The Things Stack v3, published to a real Mosquitto and
ingested into each store: readings, radio metadata, the dead-letter, replays."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import polars as pl
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from ingest.batch import REJECTED_MEASUREMENT
from ingest.lorawan import LorawanDecoder, LorawanSettings
from ingest.service import Ingestor
from sensors.communes import CommuneRegistry
from sensors.config import MqttSettings
from sensors.lorawan.radio import RADIO_MEASUREMENT, STATUS_MEASUREMENT
from smartcity.broker_auth import (
    LORAWAN_USER,
    broker_users,
    derive_password,
    gateway_username,
    write_broker_auth,
)
from smartcity.cli import main
from storage.base import Store
from storage.duckdb_store import DuckDBStore
from tests.ingest_fixtures import (
    WIDE_END,
    WIDE_START,
    deadletter_records,
    ingest_settings,
    publish,
    running_ingestor,
)
from tests.lorawan_fixtures import CHIRPSTACK_APP, DATA, DEVICE_MAP, SAMPLE_DAY, SAMPLES, sample, sample_day
from tests.servers import Mosquitto, wait_until
from tests.storage_fixtures import STORE_KINDS, open_test_store, shared_influxd

__all__ = ["shared_influxd"]

UNKNOWN_EUI = "0303030303030303"
BROKER_SECRET = "a-long-operator-secret"


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """Each store in turn: DuckDB in a temporary file, InfluxStore against a real influxd."""
    with open_test_store(request) as opened:
        yield opened


def _messages(events: list[tuple[str, bytes]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "send_ns": list(range(len(events))),
            "topic": [topic for topic, _ in events],
            "payload": [payload for _, payload in events],
            "readings": [1] * len(events),
        },
        schema={"send_ns": pl.Int64, "topic": pl.String, "payload": pl.Binary, "readings": pl.Int64},
    )


def _stream() -> list[tuple[str, bytes]]:
    events = [(topic, sample(name)) for name, topic in SAMPLES.items()]
    unknown = sample("chirpstack_up_decoded", {"0101010101010101": UNKNOWN_EUI, "3ac7e3c4": "3ac7e3c5"})
    # The vendor codec refuses port 11: a codec error, attributed to the device.
    refused = sample(
        "tts_up_raw",
        {'"f_port": 10': '"f_port": 11', '"f_cnt": 4211': '"f_cnt": 4212', "T09:42:07": "T09:52:07"},
    )
    return [
        *events,
        (f"application/{CHIRPSTACK_APP}/device/{UNKNOWN_EUI}/event/up", unknown),
        (SAMPLES["tts_up_raw"], refused),
        # Replays: ChirpStack's same deduplicationId, The Things Stack's same frame.
        (SAMPLES["chirpstack_up_decoded"], sample("chirpstack_up_decoded")),
        (SAMPLES["tts_up_decoded"], sample("tts_up_decoded")),
    ]


def _read(store: Store, measurement: str) -> pl.DataFrame:
    return store.read(measurement, start=WIDE_START, end=WIDE_END).sort("device_id")


def test_uplinks_of_both_network_servers_are_stored_as_contract_readings_with_their_radio_metadata(
    mosquitto: Mosquitto, tmp_path: Path, store: Store
) -> None:
    stream = _stream()
    settings = ingest_settings(tmp_path, lorawan=LorawanSettings(device_map=DEVICE_MAP))
    with running_ingestor(mosquitto.port, settings, store) as ingestor:
        publish(mosquitto.port, _messages(stream))
        wait_until(lambda: ingestor.metrics.acked.value() >= len(stream), timeout=60, what="all acked")
        decoder = ingestor.writer._builder._decoder.reference
        assert isinstance(decoder, LorawanDecoder)
        assert decoder.replays == 2

    air = _read(store, "air_quality")
    assert air["device_id"].to_list() == ["aq-andresy-ecole", "aq-poissy-gare"]
    assert air["insee"].to_list() == ["78015", "78498"]
    andresy, poissy = air.to_dicts()
    # ChirpStack's decoded object, nested keys mapped, humidity % -> 0-1 fraction.
    assert (poissy["pm25"], poissy["pm10"], poissy["no2"]) == (12.5, 21.0, 31.2)
    assert poissy["relativeHumidity"] == pytest.approx(0.54)
    # The Things Stack's decoded_payload, °F converted to °C.
    assert andresy["temperature"] == pytest.approx(18.0)
    assert andresy["pm25"] == 9.2
    # Cayenne LPP (no codec on the server): temperature channel 1, concentration channel 2.
    [building] = _read(store, "building").to_dicts()
    assert (building["device_id"], building["temperature"], building["co2"]) == (
        "ecole-jules-ferry",
        23.0,
        445.0,
    )
    # The vendor's JavaScript codec, run in the sandbox.
    [traffic] = _read(store, "traffic").to_dicts()
    assert (traffic["insee"], traffic["intensity"], traffic["averageVehicleSpeed"]) == ("78172", 47, 82.0)

    radio = _read(store, RADIO_MEASUREMENT)
    # One row per accepted uplink (the codec refusal included: the radio did hear it).
    assert radio.height == 5
    gare = radio.filter(pl.col("device_id") == "aq-poissy-gare").to_dicts()[0]
    assert (gare["rssi"], gare["snr"], gare["gateways"], gare["f_cnt"]) == (-71.0, 9.5, 2, 10)
    assert gare["dev_eui"] == "0101010101010101"
    # The device map names the station's gateway (the best one); the other keeps its EUI.
    assert gare["gateway_id"] == "gw-poissy-gare"
    assert gare["gateway_ids"] == "0016c001f1500812,gw-poissy-gare"
    [status] = _read(store, STATUS_MEASUREMENT).to_dicts()
    assert (status["battery"], status["margin"], status["external_power"]) == (82.68, 7, False)

    records = deadletter_records(settings.deadletter_file)
    assert sorted(record["reason"] for record in records) == ["codec_error", "unknown_device"]
    unknown = next(record for record in records if record["reason"] == "unknown_device")
    assert UNKNOWN_EUI in unknown["detail"] and UNKNOWN_EUI in unknown["payload"]
    codec = next(record for record in records if record["reason"] == "codec_error")
    assert "unknown fPort 11" in codec["detail"]
    rejected = _read(store, REJECTED_MEASUREMENT)
    # The unknown device creates no series; the codec error is the device's.
    assert rejected["reason"].to_list() == ["codec_error"]
    assert rejected["device_id"].to_list() == ["trafic-rue-de-paris"]

    # The same uplinks again, to an ingestor that remembers none of them: the store is unchanged.
    before = {m: _read(store, m) for m in ("air_quality", "traffic", "building", RADIO_MEASUREMENT)}
    settings = ingest_settings(tmp_path / "again", lorawan=LorawanSettings(device_map=DEVICE_MAP))
    with running_ingestor(mosquitto.port, settings, store) as ingestor:
        publish(mosquitto.port, _messages(stream))
        wait_until(lambda: ingestor.metrics.acked.value() >= len(stream), timeout=60, what="all acked")
    for measurement, frame in before.items():
        after = _read(store, measurement)
        assert after.drop("received_at").equals(frame.drop("received_at")), measurement


def test_uplinks_the_things_stack_lost_are_filled_from_its_storage_integration(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DuckDBStore(tmp_path / "store.duckdb")
    # The Storage Integration's answer: a join accept, the uplink that did arrive, one that did not.
    answer = tmp_path / "answer.ndjson"
    answer.write_text((DATA / "tts_storage.ndjson").read_text("utf-8").replace(SAMPLE_DAY, sample_day()))
    monkeypatch.setenv("SMARTCITY_MQTT__PORT", str(mosquitto.port))
    settings = ingest_settings(tmp_path, lorawan=LorawanSettings(device_map=DEVICE_MAP))
    try:
        with running_ingestor(mosquitto.port, settings, store) as ingestor:
            publish(mosquitto.port, _messages([(SAMPLES["tts_up_raw"], sample("tts_up_raw"))]))
            wait_until(lambda: ingestor.metrics.acked.value() == 1, timeout=60, what="the live uplink")
            assert main(["lorawan", "replay-storage", str(answer)]) == 0
            wait_until(lambda: ingestor.metrics.acked.value() == 3, timeout=60, what="the stored uplinks")
        traffic = _read(store, "traffic").sort("time")
        assert traffic["intensity"].to_list() == [47, 35]
        assert _read(store, RADIO_MEASUREMENT)["f_cnt"].sort().to_list() == [4211, 4213]
        assert deadletter_records(settings.deadletter_file) == []
    finally:
        store.close()


def test_only_the_network_server_account_may_publish_uplinks_on_a_secured_broker(tmp_path: Path) -> None:
    registry = CommuneRegistry.load()
    users = broker_users(registry, secret=BROKER_SECRET, ingest_password="ingest-pass")
    passwords, acl = write_broker_auth(users, tmp_path / "auth")
    broker = Mosquitto(tmp_path / "broker", extra_config=f"password_file {passwords}\nacl_file {acl}\n")
    broker.start()
    store = DuckDBStore(tmp_path / "store.duckdb")
    settings = ingest_settings(tmp_path, lorawan=LorawanSettings(device_map=DEVICE_MAP))
    mqtt_settings = MqttSettings(port=broker.port, username="ingest", password="ingest-pass")
    ingestor = Ingestor(mqtt_settings, settings, store, registry)
    ingestor.start()
    try:
        assert ingestor.consumer.wait_subscribed(15), ingestor.consumer.subscribe_error
        topic, payload = SAMPLES["chirpstack_up_decoded"], sample("chirpstack_up_decoded")
        gateway = gateway_username("78498")
        forged = _publish_as(broker.port, gateway, derive_password(BROKER_SECRET, gateway), topic, payload)
        assert forged.is_failure, "a commune's gateway must not publish LoRaWAN uplinks"
        sent = _publish_as(
            broker.port, LORAWAN_USER, derive_password(BROKER_SECRET, LORAWAN_USER), topic, payload
        )
        assert not sent.is_failure
        wait_until(lambda: ingestor.metrics.acked.value() == 1, timeout=60, what="the uplink stored")
    finally:
        assert ingestor.stop()
        broker.kill()
    assert _read(store, "air_quality")["device_id"].to_list() == ["aq-poissy-gare"]
    store.close()


def _publish_as(port: int, username: str, password: str, topic: str, payload: bytes) -> ReasonCode:
    """Publish one QoS 1 message as ``username``; the broker's PUBACK reason."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=f"test-{username}")
    client.username_pw_set(username, password)
    acks: dict[int, ReasonCode] = {}
    client.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, rc)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in acks, timeout=10, what=f"PUBACK for {username}")
        return acks[info.mid]
    finally:
        client.loop_stop()
        client.disconnect()
