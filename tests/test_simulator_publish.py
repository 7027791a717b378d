"""``smartcity simulate`` against a real Mosquitto: everything published arrives and decodes."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from sensors.communes import CommuneRegistry
from sensors.families import FAMILIES, Family
from sensors.readings import Decoded
from simulator.faults import FaultKind, FaultRates, read_ground_truth
from simulator.fleet import Fleet, FleetConfig, generate_fleet
from simulator.publisher import (
    PublishError,
    PublishOptions,
    PublishReport,
    build_messages,
    publish_fleet,
    publish_messages,
)
from smartcity.cli import main
from tests.servers import Mosquitto, free_port
from tests.simulator_fixtures import subscriber

START = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
FAULTS = "default,malformed=0.01,duplicate=0.01,out_of_bounds=20,late=0.01"


def decoded_frame(decoded: list[Decoded], family: Family) -> pl.DataFrame:
    """The decoded readings of one family, one row per reading, like a fleet frame."""
    spec = FAMILIES[family]
    rows = [
        {"time": r.time_ns, "insee": r.insee, "device_id": r.device_id, **r.fields}
        for d in decoded
        for r in d.readings
        if r.family == family.value
    ]
    schema: dict[str, pl.DataType] = {"time": pl.Int64(), "insee": pl.String(), "device_id": pl.String()}
    kinds = {"float": pl.Float64(), "int": pl.Int64(), "bool": pl.Boolean(), "enum": pl.String()}
    schema |= {f.name: kinds[f.kind] for f in spec.fields}
    return pl.DataFrame(rows, schema=schema, orient="row").with_columns(
        pl.col("time").cast(pl.Datetime("ns", "UTC"))
    )


def test_simulate_publishes_every_family_of_every_commune(mosquitto: Mosquitto, tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.csv"
    args = [
        "simulate",
        "--port",
        str(mosquitto.port),
        "--start",
        START.isoformat(),
        "--duration",
        "30m",
        "--as-fast-as-possible",
        "--seed",
        "9",
        "--faults",
        FAULTS,
        "--batch-size",
        "4",
        "--ground-truth",
        str(truth_path),
    ]
    with subscriber(mosquitto.port) as received:
        assert main(args) == 0
        # What was published is what the same options generate: regenerate it to compare.
        fleet = generate_fleet(
            FleetConfig(seed=9, faults=FaultRates.parse(FAULTS)), START, timedelta(minutes=30)
        )
        messages = build_messages(fleet, PublishOptions(batch_size=4, batch_share=0.25))
        received.wait_for(messages.height)

    registry = CommuneRegistry.load()
    arrived = {(d.insee, d.family) for d in received.decoded if d.readings}
    assert arrived == {(code, family.value) for code in registry.codes for family in Family}
    assert any(payload.startswith(b"[") for _, payload in received.raw), "no batch was published"

    truth = read_ground_truth(truth_path)
    assert truth.equals(fleet.ground_truth)
    for family in Family:
        got = (
            decoded_frame(received.decoded, family)
            .unique(["device_id", "time"])
            .sort("time", "insee", "device_id")
        )
        expected = fleet.frames[family.value].drop("received_at")
        assert got.equals(expected), family

    readings = sum(len(d.readings) for d in received.decoded)
    count = dict(truth.group_by("kind").len().iter_rows())
    assert readings == fleet.rows + count.get(FaultKind.DUPLICATE.value, 0)
    errors = [e for d in received.decoded for e in d.errors]
    refused = sum(1 for d in received.decoded if d.refused)
    assert refused == count[FaultKind.MALFORMED.value]
    assert sum(e.reason == "out_of_bounds" for e in errors) == count[FaultKind.OUT_OF_BOUNDS.value]
    assert {e.reason for e in errors} <= {"out_of_bounds", "malformed_json", "not_utf8"}


def small_fleet() -> Fleet:
    return generate_fleet(
        FleetConfig(communes=["78498", "92049"], families=["traffic", "camera"], seed=4),
        START,
        timedelta(minutes=40),
    )


def test_back_pressure_loses_nothing_with_a_tiny_in_flight_window(mosquitto: Mosquitto) -> None:
    fleet = small_fleet()
    options = PublishOptions(port=mosquitto.port, max_inflight=1, max_queued=2)
    with subscriber(mosquitto.port) as received:
        report = publish_fleet(fleet, options)
        received.wait_for(report.published)
    assert report.messages == report.published == report.acknowledged == fleet.rows
    assert report.waits > 0, "the queue never filled: back-pressure was not exercised"
    topics = [topic for topic, _ in received.raw]
    assert len(topics) == fleet.rows


def test_speedup_paces_publishing_in_simulated_time(mosquitto: Mosquitto) -> None:
    fleet = generate_fleet(
        FleetConfig(communes=["78498"], families=["traffic"]), START, timedelta(minutes=20)
    )
    received = fleet.frames["traffic"]["received_at"].to_numpy()
    span_s = float(received.max() - received.min()) / 1e9
    started = time.monotonic()
    report = publish_fleet(fleet, PublishOptions(port=mosquitto.port, speedup=600))
    elapsed = time.monotonic() - started
    assert report.acknowledged == fleet.rows
    assert elapsed >= 0.9 * span_s / 600  # 19 simulated minutes at 600x: about 2 seconds


def test_simulate_reports_an_unreachable_broker(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--port", str(free_port()), "--duration", "5m", "--as-fast-as-possible"])
    assert code == 1
    assert "cannot connect to the MQTT broker" in capsys.readouterr().err
    with pytest.raises(PublishError, match="cannot connect"):
        publish_fleet(small_fleet(), PublishOptions(port=free_port()))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--faults", "spikes=1"], "unknown fault kind 'spikes'"),
        (["--families", "weather"], "unknown family 'weather'"),
        (["--communes", "99999"], "not in the registry: 99999"),
        (["--embedded-broker", "--protocol", "5"], "amqtt only speaks MQTT 3.1.1"),
        (["--batch-share", "2", "--batch-size", "3"], "--batch-share 2.0 must be between 0 and 1"),
    ],
)
def test_simulate_refuses_bad_options_clearly(
    option: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--duration", "5m", *option]) == 2
    assert message in capsys.readouterr().err


def test_simulate_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--host", "--port", "--username", "--password", "--communes", "--families", "--devices-per-family",
        "--period", "--start", "--duration", "--speedup", "--as-fast-as-possible", "--seed", "--faults",
        "--ground-truth", "--embedded-broker", "--max-inflight", "--max-queued", "--batch-size",
    ):  # fmt: skip
        assert option in text


def test_publishing_survives_a_broker_restart(mosquitto: Mosquitto) -> None:
    fleet = generate_fleet(FleetConfig(communes=["78498", "78005"], seed=12), START, timedelta(minutes=40))
    messages = build_messages(fleet)
    restarted = threading.Event()

    def restart_once(report: PublishReport) -> None:
        # Mid-stream, the broker goes away and comes back on the same port.
        if not restarted.is_set() and report.published > 0:
            restarted.set()
            mosquitto.stop()
            mosquitto.start()

    options = PublishOptions(port=mosquitto.port, speedup=800, max_queued=50)
    report = publish_messages(messages, options, on_progress=restart_once, progress_every_s=0.2)
    assert restarted.is_set()
    assert report.published == report.acknowledged == messages.height
