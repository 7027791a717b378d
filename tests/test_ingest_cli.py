"""`smartcity ingest` options and settings: wrong values are refused with a clear message."""

from __future__ import annotations

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
