"""Messages reach a real webhook receiver and a real SMTP server once, signed, with the right
content, through failures and restarts."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from alerts.messages import format_number
from alerts.signing import SignatureError, sign, verify
from tests.alerts_fixtures import (
    SECRET,
    SECRET_ENV,
    AlertWorld,
    FakeClock,
    WebhookReceiver,
    commune_aggregate,
    make_world,
    receiver,  # noqa: F401  (fixture)
    smtp_sink,  # noqa: F401  (fixture)
    start_smtp,
    verify_request,
    webhook_delivery,
)

POISSY = "78498"
PM10_RULE: dict[str, Any] = {
    "name": "pm10-eleve",
    "title": "Particules PM10 élevées",
    "communes": [POISSY],
    "family": "air_quality",
    "condition": "above",
    "measurement": "air_quality_15m_commune",
    "field": "pm10_mean",
    "raise": 50,
    "clear": 40,
    "for": "30m",
}


@pytest.fixture
def world(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[AlertWorld]:  # noqa: F811
    made = make_world(tmp_path, [PM10_RULE], {POISSY: webhook_delivery(receiver.url)})
    yield made
    made.close()


def _pollute(world: AlertWorld, value: float) -> None:
    """The commune's 15-minute PM10 mean for the window that just ended is ``value``."""
    commune_aggregate(world.store, POISSY, [world.clock.now - timedelta(minutes=15)], [value])


def test_firing_and_resolved_messages_arrive_once_signed_in_french(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    _pollute(world, 62.25)
    evaluator.evaluate()  # pending: the condition must hold 30 minutes
    evaluator.deliver()
    assert receiver.accepted() == []

    world.clock.advance(minutes=30)
    _pollute(world, 63.5)
    evaluator.evaluate()
    evaluator.deliver()
    evaluator.deliver()  # nothing left to send: no duplicate
    [firing] = receiver.accepted()
    verify_request(firing, now=world.clock.now)
    body = firing.json
    assert firing.headers["Idempotency-Key"] == body["id"]
    assert body["type"] == "alert.firing"
    assert body["to"] == ["astreinte@ville-poissy.example"]
    assert body["subject"].startswith("[Poissy]")
    for text in (body["text"], body["html"]):
        assert "Poissy" in text
        assert "63,5" in text  # the value, with a French decimal comma
        assert "µg/m³" in text
        assert "50" in text  # the threshold
        assert f"https://tableaux.example.fr/commune/{POISSY}" in text
        assert "déclenchée" in text
    paris_time = world.clock.now.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).strftime("%H:%M")
    assert paris_time in body["text"]  # Europe/Paris time, not UTC
    assert body["alert"]["commune"] == {"insee": POISSY, "name": "Poissy"}
    assert body["alert"]["items"][0]["value"] == 63.5

    # Back under the raise level but above the clear level: still firing (hysteresis).
    world.clock.advance(minutes=15)
    _pollute(world, 45.0)
    evaluator.evaluate()
    evaluator.deliver()
    assert len(receiver.accepted()) == 1

    world.clock.advance(minutes=15)
    _pollute(world, 31.0)
    evaluator.evaluate()
    evaluator.deliver()
    firing_again, resolved = receiver.accepted()
    assert firing_again is firing
    verify_request(resolved, now=world.clock.now)
    assert resolved.json["type"] == "alert.resolved"
    assert "terminée" in resolved.json["text"]
    assert "31" in resolved.json["text"]
    assert resolved.json["id"] != body["id"]

    history = world.store.read(
        "alert_events", start=world.clock.now - timedelta(days=1), end=world.clock.now + timedelta(seconds=1)
    )
    assert history["state"].to_list() == ["pending", "firing", "resolved"]
    assert set(history["rule"].to_list()) == {"pm10-eleve"}
    assert set(history["insee"].to_list()) == {POISSY}


def test_a_webhook_failing_twice_gets_the_message_exactly_once_with_one_idempotency_key(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    world.rules = world.rules.model_copy(
        update={"rules": [world.rules.rules[0].model_copy(update={"hold_for": timedelta(0)})]}
    )
    receiver.statuses = [500, 500]
    evaluator = world.evaluator()
    _pollute(world, 80.0)
    evaluator.evaluate()
    for _ in range(6):  # each retry waits its back-off; move the clock past it
        evaluator.deliver()
        world.clock.advance(hours=1)
    requests = receiver.received()
    assert [r.status for r in requests] == [500, 500, 200]
    assert len(receiver.accepted()) == 1
    assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    assert len({r.body for r in requests}) == 1  # same message, re-signed at each attempt
    outcomes = [record["outcome"] for record in world.audit()]
    assert outcomes == ["retry", "retry", "delivered"]
    assert world.audit()[0]["status"] == 500
    assert evaluator.outbox.pending() == []


def test_backoff_waits_before_retrying(world: AlertWorld, receiver: WebhookReceiver) -> None:  # noqa: F811
    receiver.statuses = [503]
    evaluator = world.evaluator()
    _pollute(world, 80.0)
    evaluator.evaluate()
    world.clock.advance(minutes=30)
    _pollute(world, 80.0)
    evaluator.evaluate()
    evaluator.deliver()
    evaluator.deliver()  # too early for a retry
    assert [r.status for r in receiver.received()] == [503]
    world.clock.advance(seconds=11)  # the first back-off is 8 to 10 s (10 s with jitter)
    evaluator.deliver()
    assert [r.status for r in receiver.received()] == [503, 200]


def test_a_webhook_down_across_a_restart_still_gets_the_message(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    receiver.stop()
    first = world.evaluator()
    _pollute(world, 90.0)
    first.evaluate()
    world.clock.advance(minutes=30)
    _pollute(world, 91.0)
    first.evaluate()
    first.deliver()
    assert [r["outcome"] for r in world.audit()] == ["retry"]
    first.outbox.close()
    del first  # the evaluator process ends

    receiver.start()
    world.clock.advance(hours=1)
    second = world.evaluator()
    second.evaluate()  # still firing: no new message
    second.deliver()
    [delivered] = receiver.accepted()
    assert delivered.json["type"] == "alert.firing"
    verify_request(delivered, now=world.clock.now)
    assert [r["outcome"] for r in world.audit()] == ["retry", "delivered"]


def test_a_receiver_refusing_the_message_keeps_it_in_failed(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    receiver.statuses = [422]
    evaluator = world.evaluator()
    [envelope] = evaluator.send_test("pm10-eleve")
    evaluator.deliver()
    world.clock.advance(hours=2)
    evaluator.deliver()
    assert [r.status for r in receiver.received()] == [422]  # not retried
    assert [e.id for e in evaluator.outbox.failed()] == [envelope.id]
    assert world.audit()[-1]["outcome"] == "failed"


def test_a_missing_secret_keeps_the_message_until_it_is_set(
    world: AlertWorld,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    evaluator = world.evaluator()
    evaluator.send_test("pm10-eleve")
    del os.environ[SECRET_ENV]
    evaluator.deliver()
    assert receiver.accepted() == []
    assert SECRET_ENV in world.audit()[0]["error"]
    os.environ[SECRET_ENV] = SECRET
    world.clock.advance(hours=1)
    evaluator.deliver()
    [request] = receiver.accepted()
    assert request.json["type"] == "alert.test"
    assert "essai" in request.json["text"]


def test_signature_verification_refuses_tampering_and_replay() -> None:
    body = b'{"id":"abc"}'
    header = sign(SECRET, 1_700_000_000, body)
    assert verify(SECRET, header, body, now=1_700_000_010) == 1_700_000_000
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, header, body + b" ", now=1_700_000_010)
    with pytest.raises(SignatureError, match="does not match"):
        verify("another secret", header, body, now=1_700_000_010)
    with pytest.raises(SignatureError, match="more than 300s"):
        verify(SECRET, header, body, now=1_700_000_000 + 301)
    with pytest.raises(SignatureError, match="missing"):
        verify(SECRET, None, body, now=1_700_000_000)


def test_english_messages_for_a_commune_that_asks_for_them(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    delivery = {POISSY: {**webhook_delivery(receiver.url), "language": "en"}}
    world = make_world(tmp_path, [{**PM10_RULE, "for": "0s"}], delivery)
    try:
        evaluator = world.evaluator()
        _pollute(world, 1234.5)
        evaluator.evaluate()
        evaluator.deliver()
        [request] = receiver.accepted()
        assert "1,234.5" in request.json["text"]
        assert "is firing" in request.json["text"]
        assert format_number(1234.5, "fr") == "1\u202f234,5"
    finally:
        world.close()


# -- SMTP -----------------------------------------------------------------------------------


def _smtp_delivery(port: int, **extra: Any) -> dict[str, Any]:
    return {
        "recipients": ["mairie@chevreuse.example", "astreinte@chevreuse.example"],
        "smtp": {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from": "alertes@chevreuse.example",
            **extra,
        },
    }


def test_smtp_delivers_firing_and_resolved_emails_once(tmp_path: Path, smtp_sink: Any) -> None:  # noqa: F811
    world = make_world(
        tmp_path,
        [{**PM10_RULE, "communes": ["78160"], "for": "0s"}],
        {"78160": _smtp_delivery(smtp_sink.port)},
    )
    try:
        evaluator = world.evaluator()
        commune_aggregate(world.store, "78160", [world.clock.now - timedelta(minutes=15)], [55.5])
        evaluator.evaluate()
        evaluator.deliver()
        evaluator.deliver()
        [email] = smtp_sink.messages
        assert email["Subject"].startswith("[Chevreuse]")
        assert email["From"] == "alertes@chevreuse.example"
        assert smtp_sink.envelopes[0][1] == ["mairie@chevreuse.example", "astreinte@chevreuse.example"]
        plain = email.get_body(preferencelist=("plain",)).get_content()
        html = email.get_body(preferencelist=("html",)).get_content()
        for text in (plain, html):
            assert "55,5" in text
            assert "µg/m³" in text
            assert "Chevreuse" in text
            assert "https://tableaux.example.fr/commune/78160" in text
        assert email["Message-ID"].startswith("<")

        world.clock.advance(minutes=15)
        commune_aggregate(world.store, "78160", [world.clock.now - timedelta(minutes=15)], [12.0])
        evaluator.evaluate()
        evaluator.deliver()
        assert len(smtp_sink.messages) == 2
        assert "Fin d'alerte" in smtp_sink.messages[1]["Subject"]
    finally:
        world.close()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_smtp_starttls_and_authentication(tmp_path: Path) -> None:
    import ssl

    from aiosmtpd.smtp import AuthResult

    cert, key = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.login == b"alertes" and auth_data.password == b"mot-de-passe")

    sink, controller = start_smtp(
        tls_context=context, require_starttls=True, authenticator=authenticator, auth_require_tls=True
    )
    os.environ["SMARTCITY_TEST_SMTP_PASSWORD"] = "mot-de-passe"
    delivery = _smtp_delivery(
        sink.port,
        security="starttls",
        username="alertes",
        password_env="SMARTCITY_TEST_SMTP_PASSWORD",
        ca_file=str(cert),
    )
    world = make_world(
        tmp_path, [{**PM10_RULE, "communes": ["78160"]}], {"78160": delivery}, clock=FakeClock()
    )
    try:
        evaluator = world.evaluator()
        evaluator.send_test("pm10-eleve")
        evaluator.deliver()
        assert logins == [(b"alertes", b"mot-de-passe")]
        [email] = sink.messages
        assert "Message d'essai" in email["Subject"]
        assert world.audit()[0]["outcome"] == "delivered"
    finally:
        controller.stop()
        world.close()


def test_the_documented_receiver_recipe_verifies_our_signatures(repo_root: Path) -> None:
    import re
    import time

    doc = (repo_root / "docs" / "alerts.md").read_text()
    [snippet] = [block for block in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verify" in block]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    body = b'{"id":"abc","subject":"[Poissy] \xc3\xa9"}'
    header = sign(SECRET, int(time.time()), body)
    namespace["verify"](SECRET, header, body)
    with pytest.raises(ValueError, match="bad signature"):
        namespace["verify"](SECRET, header, body.replace(b"abc", b"abd"))
    with pytest.raises(ValueError, match="stale"):
        namespace["verify"](SECRET, sign(SECRET, int(time.time()) - 3600, body), body)


def test_the_reference_receiver_checks_signatures_and_drops_duplicates(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from alerts.receiver import SignedWebhookReceiver

    received: list[dict[str, Any]] = []
    server = SignedWebhookReceiver([SECRET], received.append)
    server.start()
    url = f"http://127.0.0.1:{server.port}/hooks"
    world = make_world(
        tmp_path, [PM10_RULE], {POISSY: webhook_delivery(url)}, clock=FakeClock(datetime.now(UTC))
    )
    try:
        evaluator = world.evaluator()
        [envelope] = evaluator.send_test("pm10-eleve")
        # The same message queued again, as after an answer lost on the way back.
        evaluator.outbox.put(dataclasses.replace(envelope, created_at=envelope.created_at + 1))
        evaluator.deliver()
        assert [m["id"] for m in received] == [envelope.id]
        assert [r["outcome"] for r in world.audit()] == ["delivered", "delivered"]

        os.environ[SECRET_ENV] = "not the receiver's secret"
        evaluator.send_test("pm10-eleve", "78498")
        world.clock.advance(seconds=1)
        evaluator.send_test("pm10-eleve")
        evaluator.deliver()
        assert world.audit()[-1]["status"] == 401
        assert world.audit()[-1]["outcome"] == "retry"  # kept: the secret can be fixed
        assert len(received) == 1
    finally:
        os.environ[SECRET_ENV] = SECRET
        server.stop()
        world.close()


def test_a_receiver_slower_than_the_timeout_is_retried_with_the_same_key(
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    import threading

    delivery = {
        POISSY: {
            **webhook_delivery(receiver.url),
            "webhook": {"url": receiver.url, "secret_env": SECRET_ENV, "timeout_s": 0.3},
        }
    }
    world = make_world(tmp_path, [PM10_RULE], delivery)
    receiver.hold = threading.Event()
    try:
        evaluator = world.evaluator()
        evaluator.send_test("pm10-eleve")
        evaluator.deliver()
        assert world.audit()[0]["outcome"] == "retry"
        assert world.audit()[0]["error"] == "timed out"
        receiver.hold.set()
        for _ in range(5):  # a loaded machine may need more than 0.3 s even for a prompt answer
            world.clock.advance(hours=1)
            if evaluator.deliver():
                break
        assert world.audit()[-1]["outcome"] == "delivered"
        requests = receiver.received()
        assert len(requests) == len(world.audit()) >= 2
        assert len({r.headers["Idempotency-Key"] for r in requests}) == 1
    finally:
        receiver.hold.set()
        world.close()
