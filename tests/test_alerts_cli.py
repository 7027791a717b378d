"""`smartcity alerts`, `alerts check FILE` and `alerts test --rule X` as an operator runs them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smartcity.cli import main
from storage.duckdb_store import DuckDBStore
from tests.alerts_fixtures import (
    SECRET,
    SECRET_ENV,
    WebhookReceiver,
    commune_aggregate,
    receiver,  # noqa: F401  (fixture)
    verify_request,
)

RULES = """
[delivery."78498"]
recipients = ["astreinte@ville-poissy.example"]
[delivery."78498".webhook]
url = "{url}"
secret_env = "{secret_env}"

[[rules]]
name = "pm10-eleve"
communes = ["78498"]
family = "air_quality"
condition = "above"
measurement = "air_quality_15m_commune"
field = "pm10_mean"
raise = 50
clear = 40
"""


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver) -> Path:  # noqa: F811
    rules = tmp_path / "alerts.toml"
    rules.write_text(RULES.format(url=receiver.url, secret_env=SECRET_ENV))
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.setenv("SMARTCITY_STORE__BACKEND", "duckdb")
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(tmp_path / "store.duckdb"))
    monkeypatch.setenv("SMARTCITY_ALERTS__RULES_FILE", str(rules))
    monkeypatch.setenv("SMARTCITY_ALERTS__OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("SMARTCITY_ALERTS__STATE_FILE", str(tmp_path / "state.json"))
    monkeypatch.setenv("SMARTCITY_ALERTS__AUDIT_FILE", str(tmp_path / "audit.jsonl"))
    monkeypatch.setenv("SMARTCITY_ALERTS__DASHBOARD_URL", "https://dash.example")
    return rules


def test_check_accepts_the_example_and_explains_a_broken_file(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["alerts", "check", str(repo_root / "examples" / "alerts.toml")]) == 0
    assert "valid: 7 rule(s) covering 9 commune(s)" in capsys.readouterr().out
    broken = tmp_path / "broken.toml"
    broken.write_text(
        RULES.format(url="ftp://x", secret_env="S").replace(
            'communes = ["78498"]', 'communes = ["78498", "00000"]'
        )
    )
    assert main(["alerts", "check", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "key 'webhook.url': value 'ftp://x': expected an http:// or https:// URL" in err
    assert "rule 'pm10-eleve' (rules[0]): key 'communes'" in err
    assert "'00000'" in err


def test_test_sends_a_signed_test_message_through_the_rule_channel(
    configured: Path,
    receiver: WebhookReceiver,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["alerts", "test", "--rule", "pm10-eleve"]) == 0
    [request] = receiver.accepted()
    verify_request(request, now=datetime.now(UTC))
    assert request.json["type"] == "alert.test"
    assert "https://dash.example/commune/78498" in request.json["text"]
    assert "delivered" in capsys.readouterr().out
    assert main(["alerts", "test", "--rule", "nope"]) == 2
    assert "no rule named 'nope'" in capsys.readouterr().err


def test_test_reports_a_receiver_that_is_down(
    configured: Path,
    receiver: WebhookReceiver,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    receiver.stop()
    assert main(["alerts", "test", "--rule", "pm10-eleve"]) == 1
    assert "kept in the outbox for retries" in capsys.readouterr().out


def test_once_evaluates_the_store_and_delivers(
    configured: Path,
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = DuckDBStore(tmp_path / "store.duckdb")
    commune_aggregate(store, "78498", [datetime.now(UTC) - timedelta(minutes=15)], [77.0])
    store.close()
    assert main(["alerts", "--once"]) == 0
    assert "1 delivered" in capsys.readouterr().out
    [request] = receiver.accepted()
    assert request.json["type"] == "alert.firing"
    assert "77" in request.json["text"]
    assert main(["alerts", "--once"]) == 0  # still firing: nothing new
    assert len(receiver.accepted()) == 1


def test_no_rules_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SMARTCITY_ALERTS__RULES_FILE", raising=False)
    assert main(["alerts", "--once"]) == 2
    assert "no rules file" in capsys.readouterr().err


def test_receive_prints_the_messages_it_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import signal
    import socket
    import subprocess
    import sys

    from tests.servers import free_port, wait_until

    port = free_port()
    env = {**os.environ, SECRET_ENV: SECRET}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartcity.cli",
            "alerts",
            "receive",
            "--port",
            str(port),
            "--secret-env",
            SECRET_ENV,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=30, what="smartcity alerts receive to listen")
        rules = tmp_path / "alerts.toml"
        rules.write_text(RULES.format(url=f"http://127.0.0.1:{port}/hooks/78498", secret_env=SECRET_ENV))
        monkeypatch.setenv(SECRET_ENV, SECRET)
        monkeypatch.setenv("SMARTCITY_ALERTS__OUTBOX_DIR", str(tmp_path / "outbox"))
        monkeypatch.setenv("SMARTCITY_ALERTS__AUDIT_FILE", str(tmp_path / "audit.jsonl"))
        assert main(["alerts", "test", "--rule", "pm10-eleve", "--rules", str(rules)]) == 0
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "=== alert.test to astreinte@ville-poissy.example" in output
    assert "Subject: [Poissy] Message d'essai" in output


def test_the_evaluator_runs_until_sigterm_and_exits_cleanly(
    configured: Path,
    tmp_path: Path,
    receiver: WebhookReceiver,  # noqa: F811
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from tests.servers import wait_until

    store = DuckDBStore(tmp_path / "store.duckdb")
    commune_aggregate(store, "78498", [datetime.now(UTC) - timedelta(minutes=15)], [66.0])
    store.close()
    env = {**os.environ, "SMARTCITY_ALERTS__DELIVERY_INTERVAL_S": "0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "smartcity.cli", "alerts"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: len(receiver.accepted()) == 1, timeout=60, what="the evaluator's firing message")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output.decode()
    assert receiver.accepted()[0].json["type"] == "alert.firing"
