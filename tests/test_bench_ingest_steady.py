"""The steady ingest benchmark, run short against real servers: its publisher holds the asked
rate and every reading it sends reaches the store with a measured latency; a run whose
publisher cannot hold the rate is refused rather than reported."""

from __future__ import annotations

import json
import threading
from collections import Counter

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bench.ingest_common import wait_for
from bench.ingest_steady import main, run, templates
from bench.paced_publisher import PacedPublisher
from tests.servers import Mosquitto

LOADED_MACHINE_BEHIND_S = 5.0
"""How far behind its schedule the publisher may fall here: the suite shares two cores with it
(the benchmark itself refuses a run one second behind)."""


def test_a_short_steady_run_holds_its_rate_and_measures_latency() -> None:
    result = run(400, 12, publishers=2, warmup_s=2)

    report = result.publisher
    assert report.shortfall(max_behind_s=LOADED_MACHINE_BEHIND_S) is None, report.summary()
    assert report.acked == report.sent >= 0.99 * 400 * 12
    assert report.cpu_s > 0
    assert result.ingest_exit_code == 0
    # Air-quality readings seen in influxd after the warm-up, each after it was published.
    assert result.latencies.size > 0
    assert (result.latencies > 0).all()
    assert result.memory


def test_the_publisher_stamps_each_reading_with_its_send_time_once_per_device_instant(
    mosquitto: Mosquitto,
) -> None:
    devices = templates()
    received: list[tuple[str, dict[str, object]]] = []
    subscribed = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="steady-check", protocol=mqtt.MQTTv311)
    client.on_message = lambda _c, _u, message: received.append((message.topic, json.loads(message.payload)))
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        client.subscribe("smartcity/#", qos=1)
        assert subscribed.wait(10)
        publisher = PacedPublisher(mosquitto.port, devices, 1500, 2, processes=3)
        publisher.start()
        report = None
        while report is None:
            report = publisher.join(5)
        acked = report.acked
        wait_for(lambda: len(received) >= acked, timeout=30, what=f"the {acked} readings received")
    finally:
        client.disconnect()
        client.loop_stop()

    assert report.shortfall(max_behind_s=LOADED_MACHINE_BEHIND_S) is None, report.summary()
    templates_by_topic = dict(devices)
    assert Counter(topic for topic, _ in received) == report.sent_by_device
    keys = [(topic, payload["ts"]) for topic, payload in received]
    assert len(set(keys)) == len(keys)  # never two readings of one device at one instant
    assert {topic for topic, _ in received} == set(templates_by_topic)
    for topic, payload in received[:50]:
        fields = json.loads(templates_by_topic[topic].replace(b"0" * 13, b"0", 1))
        assert {**payload, "ts": 0} == {**fields, "ts": 0}
        assert isinstance(payload["ts"], int) and payload["ts"] > 1_700_000_000_000


def test_a_publisher_that_cannot_hold_the_rate_is_refused(mosquitto: Mosquitto) -> None:
    publisher = PacedPublisher(mosquitto.port, templates(), 5_000_000, 2, processes=1)
    publisher.start()
    report = None
    while report is None:
        report = publisher.join(5)

    reason = report.shortfall()
    assert reason is not None and "behind schedule" in reason
    assert report.sent < 0.99 * 5_000_000 * 2


def test_the_bench_exits_non_zero_without_figures_when_its_publisher_falls_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["--rate", "3000000", "--minutes", "0.05", "--publishers", "1"])

    out = capsys.readouterr().out
    assert code == 2
    assert "INVALID RUN" in out
    assert "publish -> queryable" not in out
    assert "ingest RSS" not in out
