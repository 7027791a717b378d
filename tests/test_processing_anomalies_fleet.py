"""The anomaly pass against the fleet simulator's ground truth (issue 5's acceptance figures).

At least 95 % of the injected spikes, stuck periods and offline periods are found, and clean
data (faults off) raises at most one false alarm per device-day.
"""

from __future__ import annotations

import pytest

from bench.anomaly_eval import Evaluation, evaluate, evaluation_fleet
from simulator.faults import FaultRates

# More faults than the demo's defaults, so that a couple of days of 135 devices (every family,
# three per commune) inject hundreds of them and 95 % means something.
FAULTY = FaultRates(
    spike=3.0,
    stuck=1.5,
    offline=1.0,
    drift=0.3,
    out_of_bounds=0.5,
    reset=0.2,
    dropout=0.002,
    late=0.002,
    out_of_order=0.002,
    duplicate=0.002,
)


@pytest.fixture(scope="module")
def faulty() -> Evaluation:
    return evaluate(evaluation_fleet(days=2, faults=FAULTY, seed=11))


@pytest.fixture(scope="module")
def clean() -> Evaluation:
    return evaluate(evaluation_fleet(days=3, faults=FaultRates.none(), seed=12))


@pytest.mark.parametrize("kind", ["spike", "stuck", "offline"])
def test_at_least_95_percent_of_injected_faults_are_found(faulty: Evaluation, kind: str) -> None:
    score = faulty.scores[kind]
    assert score.injected >= 50, f"too few {kind} faults injected to measure recall"
    assert score.recall is not None and score.recall >= 0.95, (
        f"{kind}: found {score.found} of {score.injected}"
    )


def test_out_of_bounds_refused_by_ingest_are_all_reported(faulty: Evaluation) -> None:
    score = faulty.scores["out_of_bounds"]
    assert score.injected > 0
    assert score.found == score.injected
    assert score.precision == 1.0


def test_detections_on_faulty_data_are_mostly_real(faulty: Evaluation) -> None:
    for kind in ("spike", "stuck", "offline"):
        precision = faulty.scores[kind].precision
        assert precision is not None and precision >= 0.9, f"{kind}: precision {precision}"


def test_at_most_one_false_alarm_per_device_day_on_clean_data(clean: Evaluation) -> None:
    assert clean.device_days >= 3 * 100
    assert clean.false_alarms_per_device_day <= 1.0, (
        f"{clean.false_alarms} false alarms over {clean.device_days:.0f} device-days: "
        + ", ".join(f"{k}={s.detections}" for k, s in clean.scores.items())
    )
    # Nothing was injected, so nothing a detector reports can be right.
    assert clean.false_alarms == sum(score.detections for score in clean.scores.values())
