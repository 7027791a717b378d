"""Scoring the anomaly detectors against the fleet simulator's ground truth.

A detected anomaly matches an injected fault when they share family, device, kind and field
(offline faults are about the whole device) and their time spans overlap, give or take a few
reporting periods: an offline anomaly runs from the last reading before the silence to the
first after it, one period on each side of the readings the simulator removed.

Out-of-bounds values never reach the frames (the decoder refuses them, as in production), so the
evaluation hands the detectors the ``rejected_readings`` rows ingest would have written for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from processing.anomalies import detect_anomalies
from processing.anomalies.frame import ANOMALY_SCHEMA, KINDS
from simulator.faults import FaultRates
from simulator.fleet import Fleet, FleetConfig, generate_fleet

EVALUATION_START = datetime(2026, 3, 2, tzinfo=UTC)
"""A Monday: the evaluation covers work days, and a weekend when it runs a week."""


@dataclass(frozen=True, slots=True)
class KindScore:
    """How one kind of anomaly fared."""

    kind: str
    injected: int
    found: int
    """Injected faults that a detection matches."""
    detections: int
    correct: int
    """Detections that match an injected fault."""

    @property
    def recall(self) -> float | None:
        """Share of the injected faults found; None when none was injected."""
        return self.found / self.injected if self.injected else None

    @property
    def precision(self) -> float | None:
        """Share of the detections that are injected faults; None when nothing was detected."""
        return self.correct / self.detections if self.detections else None


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Scores per kind, and the false alarms of the whole run."""

    scores: dict[str, KindScore]
    device_days: float
    false_alarms: int
    """Detections that match no injected fault of their kind."""

    @property
    def false_alarms_per_device_day(self) -> float:
        """False alarms per device and day of data."""
        return self.false_alarms / self.device_days if self.device_days else 0.0


def evaluation_fleet(
    *,
    days: float = 3.0,
    faults: FaultRates | None = None,
    devices_per_family: int = 3,
    period_s: float = 60.0,
    seed: int = 7,
    families: list[str] | None = None,
) -> Fleet:
    """A small simulated fleet to evaluate on: every commune, ``devices_per_family`` each (three,
    so that a commune's median can tell which device drifts)."""
    config = FleetConfig(
        families=families,
        devices_per_family=devices_per_family,
        period_s=period_s,
        seed=seed,
        faults=faults if faults is not None else FaultRates.default(),
    )
    return generate_fleet(config, EVALUATION_START, timedelta(days=days))


def rejected_from_truth(truth: pl.DataFrame) -> pl.DataFrame:
    """The ``rejected_readings`` rows ingest writes for the out-of-bounds values injected."""
    return truth.filter(pl.col("kind") == "out_of_bounds").select(
        pl.col("start").alias("time"),
        "insee",
        "family",
        "device_id",
        pl.lit("out_of_bounds").alias("reason"),
        "field",
        "value",
        pl.lit("injected by the simulator").alias("detail"),
    )


def detect_fleet(fleet: Fleet, **options: Any) -> pl.DataFrame:
    """Every family of ``fleet`` through :func:`detect_anomalies`, with its rejected rows."""
    rejected = rejected_from_truth(fleet.ground_truth)
    found = [
        detect_anomalies(frame, family, rejected=rejected, now=fleet.end, **options)
        for family, frame in fleet.frames.items()
    ]
    return pl.concat(found) if found else pl.DataFrame(schema=ANOMALY_SCHEMA)


def match(detected: pl.DataFrame, truth: pl.DataFrame, tolerance: timedelta) -> pl.DataFrame:
    """Pairs (detection index ``_d``, truth index ``_t``) of the same device, kind and field
    whose spans overlap within ``tolerance``."""
    tol = pl.duration(microseconds=tolerance // timedelta(microseconds=1))
    det = detected.with_row_index("_d").select(
        "_d",
        "family",
        "device_id",
        "kind",
        "field",
        pl.col("time").alias("d_start"),
        pl.col("end_ns").fill_null(2**62).cast(ANOMALY_SCHEMA["time"]).alias("d_end"),
    )
    tru = truth.with_row_index("_t").select("_t", "family", "device_id", "kind", "field", "start", "end")
    return (
        det.join(tru, on=["family", "device_id", "kind", "field"])
        .filter((pl.col("d_start") <= pl.col("end") + tol) & (pl.col("d_end") >= pl.col("start") - tol))
        .select("_d", "_t")
    )


def evaluate(fleet: Fleet, **options: Any) -> Evaluation:
    """Run the detectors on ``fleet`` and score them against its ground truth."""
    detected = detect_fleet(fleet, **options)
    truth = fleet.ground_truth.filter(pl.col("kind").is_in(list(KINDS)))
    tolerance = timedelta(seconds=3 * fleet.config.period_s)
    pairs = match(detected, truth, tolerance)
    matched_d = set(pairs["_d"].to_list())
    matched_t = set(pairs["_t"].to_list())
    kinds_d = detected["kind"].to_list()
    kinds_t = truth["kind"].to_list()
    scores = {
        kind: KindScore(
            kind=kind,
            injected=kinds_t.count(kind),
            found=sum(1 for i, k in enumerate(kinds_t) if k == kind and i in matched_t),
            detections=kinds_d.count(kind),
            correct=sum(1 for i, k in enumerate(kinds_d) if k == kind and i in matched_d),
        )
        for kind in KINDS
    }
    days = (fleet.end - fleet.start) / timedelta(days=1)
    return Evaluation(
        scores=scores,
        device_days=fleet.devices.height * days,
        false_alarms=detected.height - len(matched_d),
    )


def format_table(faulty: Evaluation, clean: Evaluation) -> str:
    """A Markdown table of precision and recall per kind, and the false alarms on clean data."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    lines = [
        "| kind | injected | found | recall | detections | precision |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for score in faulty.scores.values():
        lines.append(
            f"| {score.kind} | {score.injected} | {score.found} | {pct(score.recall)} | "
            f"{score.detections} | {pct(score.precision)} |"
        )
    lines.append("")
    lines.append(
        f"With faults: {faulty.false_alarms} false alarms over {faulty.device_days:.0f} device-days "
        f"({faulty.false_alarms_per_device_day:.3f} per device-day)."
    )
    lines.append(
        f"Clean data (faults off): {clean.false_alarms} false alarms over {clean.device_days:.0f} "
        f"device-days ({clean.false_alarms_per_device_day:.3f} per device-day)."
    )
    return "\n".join(lines)
