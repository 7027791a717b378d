"""`smartcity ingest` options and settings: wrong values are refused with a clear message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.config import IngestSettings
from ingest.metrics import Counter, Histogram, IngestMetrics
from smartcity.cli import main


def test_wrong_option_values_stop_the_command_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", "--batch-size", "0"]) == 2
    assert "batch_size" in capsys.readouterr().err


def test_a_shared_group_cannot_smuggle_a_topic_level() -> None:
    with pytest.raises(ValidationError, match="shared_group"):
        IngestSettings(shared_group="a/b")


def test_the_topic_is_given_plain_and_the_group_apart() -> None:
    with pytest.raises(ValidationError, match="shared_group"):
        IngestSettings(topic="$share/g/smartcity/v1/+/+/+")
    settings = IngestSettings(shared_group="ingest")
    assert settings.subscription == "$share/ingest/smartcity/v1/+/+/+"


def test_replicas_sharing_settings_each_get_their_own_session_spool_and_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docker compose --scale gives every replica the same environment and a distinct host name."""
    shared = {
        "client_id": "smartcity-ingest-{hostname}",
        "spool_dir": "/var/lib/smartcity/spool/{hostname}",
        "deadletter_file": "/var/lib/smartcity/deadletter-{hostname}.jsonl",
    }
    replicas = []
    for host in ("c0ffee", "beef42"):
        monkeypatch.setattr("socket.gethostname", lambda host=host: host)
        replicas.append(IngestSettings(**shared))
    assert [r.client_id for r in replicas] == ["smartcity-ingest-c0ffee", "smartcity-ingest-beef42"]
    assert replicas[0].spool_dir != replicas[1].spool_dir
    assert replicas[0].deadletter_file != replicas[1].deadletter_file


def test_metrics_render_in_the_prometheus_text_format() -> None:
    counter = Counter("x_total", "Things.", ["reason"])
    counter.inc(2, 'say "hi"\n')
    assert 'x_total{reason="say \\"hi\\"\\n"} 2' in counter.render()
    histogram = Histogram("lag_seconds", "Lag.", [0.5, 1.0])
    for value in (0.2, 0.7, 0.9, 3.0):
        histogram.observe(value)
    lines = histogram.render()
    assert 'lag_seconds_bucket{le="0.5"} 1' in lines
    assert 'lag_seconds_bucket{le="1"} 3' in lines
    assert 'lag_seconds_bucket{le="+Inf"} 4' in lines
    assert "lag_seconds_count 4" in lines
    assert histogram.quantile(0.5) == 1.0
    page = IngestMetrics().render()
    assert "# TYPE smartcity_ingest_messages_total counter" in page
    assert "# TYPE smartcity_ingest_spool_bytes gauge" in page


def test_workers_default_to_the_cores_on_mosquitto_and_to_one_on_the_embedded_broker() -> None:
    from smartcity.commands.ingest import worker_count
    from smartcity.settings import Settings

    mosquitto = Settings()
    embedded = mosquitto.model_copy(update={"mqtt": mosquitto.mqtt.model_copy(update={"protocol": "3.1.1"})})
    assert worker_count(mosquitto) == len(os.sched_getaffinity(0))
    assert worker_count(embedded) == 1
    chosen = mosquitto.model_copy(update={"ingest": mosquitto.ingest.model_copy(update={"workers": 3})})
    assert worker_count(chosen) == 3


def test_each_worker_gets_its_own_session_spool_dead_letter_and_metrics_port() -> None:
    from smartcity.commands.ingest import worker_settings
    from smartcity.settings import Settings

    base = Settings()
    base = base.model_copy(
        update={
            "ingest": base.ingest.model_copy(
                update={
                    "client_id": "ingest",
                    "spool_dir": Path("/var/spool/ingest"),
                    "deadletter_file": Path("/var/dl.jsonl"),
                    "metrics_port": 9108,
                }
            )
        }
    )
    workers = [worker_settings(base, index).ingest for index in range(3)]
    assert [w.client_id for w in workers] == ["ingest", "ingest-1", "ingest-2"]
    assert [str(w.spool_dir) for w in workers] == [
        "/var/spool/ingest",
        "/var/spool/ingest-1",
        "/var/spool/ingest-2",
    ]
    assert [w.deadletter_file.name for w in workers] == ["dl.jsonl", "dl-1.jsonl", "dl-2.jsonl"]
    assert [w.metrics_port for w in workers] == [9108, 9109, 9110]
    assert {w.subscription for w in workers} == {"$share/smartcity-ingest/smartcity/v1/+/+/+"}


def test_the_health_check_needs_a_fixed_metrics_port_and_fails_when_no_worker_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.servers import free_port

    assert main(["ingest", "--workers", "2", "--no-metrics", "--check-health"]) == 2
    assert "metrics_port" in capsys.readouterr().err
    port = free_port()
    assert main(["ingest", "--workers", "2", "--metrics-port", str(port), "--check-health"]) == 1
    out = capsys.readouterr().out
    assert f"worker 0 (port {port}): no answer" in out
    assert f"worker 1 (port {port + 1}): no answer" in out


def _port_held_by_a_closed_connection() -> int:
    """A port whose only socket is an outgoing connection's TIME_WAIT (the client closed first),
    as a metrics scrape or any connection of the machine may leave for a minute."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        port: int = client.getsockname()[1]
        accepted, _ = listener.accept()
        client.close()
        accepted.close()
    return port


def test_a_metrics_port_held_by_a_closed_connection_is_named_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker that cannot listen on its metrics port exits (the supervisor starts it again): the
    operator must learn which port and why, not only "Address already in use"."""
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(tmp_path / "store.duckdb"))
    port = _port_held_by_a_closed_connection()
    code = main(
        [
            "ingest",
            "--workers",
            "1",
            "--metrics-port",
            str(port),
            "--spool-dir",
            str(tmp_path / "spool"),
            "--deadletter-file",
            str(tmp_path / "deadletter.jsonl"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert f"127.0.0.1:{port}" in err
    assert "TIME_WAIT" in err
    assert "range for outgoing connections" in err
