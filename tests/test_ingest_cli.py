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
