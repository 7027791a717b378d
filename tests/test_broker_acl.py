"""Generated Mosquitto credentials and ACLs, enforced by a real Mosquitto."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from sensors.communes import CommuneRegistry
from sensors.topics import reading_topic
from smartcity.broker_auth import broker_users, derive_password, gateway_username, write_broker_auth
from smartcity.cli import main
from tests.servers import Mosquitto, wait_until

SECRET = "a-long-operator-secret"


def _connect(port: int, username: str, password: str) -> tuple[mqtt.Client, list[ReasonCode]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, client_id=username)
    client.username_pw_set(username, password)
    connack: list[ReasonCode] = []
    client.on_connect = lambda c, u, f, rc, p: connack.append(rc)
    client.connect("127.0.0.1", port)
    client.loop_start()
    wait_until(lambda: bool(connack), timeout=10, what=f"CONNACK for {username}")
    return client, connack


@pytest.fixture
def secured_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    registry = CommuneRegistry.load()
    users = broker_users(registry, secret=SECRET, ingest_password="ingest-pass")
    passwords, acl = write_broker_auth(users, tmp_path / "auth")
    broker = Mosquitto(tmp_path / "broker", extra_config=f"password_file {passwords}\nacl_file {acl}\n")
    broker.start()
    yield broker
    broker.kill()


def test_a_gateway_publishes_only_under_its_own_commune(secured_broker: Mosquitto) -> None:
    received: list[str] = []
    lock = threading.Lock()
    ingest, ingest_ack = _connect(secured_broker.port, "ingest", "ingest-pass")
    assert not ingest_ack[0].is_failure

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with lock:
            received.append(msg.topic)

    ingest.on_message = on_message
    subscribed = threading.Event()
    ingest.on_subscribe = lambda *a: subscribed.set()
    ingest.subscribe("smartcity/v1/#", qos=1)
    assert subscribed.wait(10)

    user = gateway_username("78498")
    gateway, gateway_ack = _connect(secured_broker.port, user, derive_password(SECRET, user))
    assert not gateway_ack[0].is_failure
    acks: dict[int, ReasonCode] = {}
    gateway.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, rc)
    foreign = gateway.publish(reading_topic("92049", "air_quality", "aq-1"), b'{"ts":0}', qos=1)
    own = gateway.publish(reading_topic("78498", "air_quality", "aq-1"), b'{"ts":0}', qos=1)
    wait_until(lambda: own.mid in acks and foreign.mid in acks, timeout=10, what="PUBACKs")

    assert acks[foreign.mid].is_failure, "a Poissy gateway must not publish for Montrouge"
    assert not acks[own.mid].is_failure
    wait_until(lambda: bool(received), timeout=10, what="the gateway's own reading")
    assert received == [reading_topic("78498", "air_quality", "aq-1")]
    for client in (gateway, ingest):
        client.loop_stop()
        client.disconnect()


def test_a_wrong_gateway_password_is_refused(secured_broker: Mosquitto) -> None:
    client, connack = _connect(secured_broker.port, gateway_username("78498"), "not-the-password")
    assert connack[0].is_failure
    client.loop_stop()


def test_broker_config_command_writes_one_user_per_commune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMARTCITY_BROKER_SECRET", SECRET)
    monkeypatch.setenv("SMARTCITY_INGEST_MQTT_PASSWORD", "ingest-pass")
    assert main(["broker", "config", "--out", str(tmp_path)]) == 0
    users = [line.split(":")[0] for line in (tmp_path / "passwords").read_text().splitlines()]
    expected = {gateway_username(c.insee) for c in CommuneRegistry.load()}
    assert expected <= set(users)
    assert "ingest" in users


def test_broker_config_refuses_a_short_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMARTCITY_BROKER_SECRET", "short")
    monkeypatch.setenv("SMARTCITY_INGEST_MQTT_PASSWORD", "ingest-pass")
    assert main(["broker", "config", "--out", str(tmp_path)]) == 2
    assert "at least 12 characters" in capsys.readouterr().err


def test_broker_config_hands_the_files_to_the_brokers_user_and_no_one_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mosquitto reads its auth files after dropping root: they must be its own, private."""
    monkeypatch.setenv("SMARTCITY_BROKER_SECRET", SECRET)
    monkeypatch.setenv("SMARTCITY_INGEST_MQTT_PASSWORD", "ingest-pass")
    assert main(["broker", "config", "--out", str(tmp_path), "--owner", "1883:1884"]) == 0
    for name in ("passwords", "acl"):
        info = (tmp_path / name).stat()
        assert (info.st_uid, info.st_gid) == (1883, 1884)
        assert info.st_mode & 0o077 == 0, f"{name} is readable by others"


def test_broker_config_refuses_an_owner_that_is_not_numbers(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["broker", "config", "--out", str(tmp_path), "--owner", "mosquitto"])
