"""Benchmark of one alert evaluation on a large fleet (alerts/engine.py).

The nine communes with D devices per family (default 400, so 18,000 devices), in an embedded
DuckDB store: each device's last reading, and every commune's 15-minute aggregates. A
network switch in each commune and the devices numbered like it go silent (a tenth of the
fleet), so the offline rules fire, are grouped per commune, suppressed behind their switch
through the topology, rendered in French and queued in the outbox. The rules are those of
examples/alerts.toml that read these measurements.

The baseline, in the same run, is the bare store reads an evaluation cannot avoid (series() of
each family, the aggregates read): the ratio says what the alerting itself costs on top.

    .venv/bin/python -m bench.alerts_evaluate            # 400 devices per family and commune
    .venv/bin/python -m bench.alerts_evaluate --quick    # 40
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from alerts.engine import Evaluator
from alerts.outbox import Outbox
from alerts.rules import parse_rules
from alerts.topology import Topology
from sensors.communes import CommuneRegistry
from sensors.families import Family
from simulator.fleet import DEVICE_PREFIXES
from storage.base import TIME_DTYPE
from storage.duckdb_store import DuckDBStore

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
SWITCHES = 10  # network switches per commune; devices numbered n are behind switch n % SWITCHES

RULES = {
    "defaults": {"cooldown": "30m"},
    "delivery": {
        "*": {
            "recipients": ["astreinte@agglo.example"],
            "webhook": {"url": "http://127.0.0.1:9/x", "secret_env": "BENCH_SECRET"},
        }
    },
    "rules": [
        {"name": "pm10", "communes": "*", "family": "air_quality", "condition": "above",
         "measurement": "air_quality_15m_commune", "field": "pm10_mean", "raise": 50, "clear": 40},
        {"name": "reseau", "communes": "*", "family": "network", "condition": "offline", "silence": "5m"},
        {"name": "capteurs", "communes": "*", "family": ["air_quality", "traffic", "building", "camera"],
         "condition": "offline", "silence": "10m"},
    ],
}  # fmt: skip


def _device(family: Family, insee: str, number: int) -> str:
    return f"{DEVICE_PREFIXES[family]}-{insee}-{number:04d}"


def build(store: DuckDBStore, registry: CommuneRegistry, per_family: int) -> str:
    """Write the fleet's last readings and aggregates; return the topology CSV."""
    topology = ["device_id,parent"]
    for family in Family:
        rows: dict[str, list[object]] = {"time": [], "insee": [], "device_id": [], "value": []}
        for commune in registry:
            for number in range(per_family):
                silent = number % SWITCHES == 0  # behind (or being) switch 0: down since 20 min
                rows["time"].append(NOW - timedelta(minutes=20 if silent else 1))
                rows["insee"].append(commune.insee)
                rows["device_id"].append(_device(family, commune.insee, number))
                rows["value"].append(1.0)
                if family is not Family.NETWORK:
                    parent = _device(Family.NETWORK, commune.insee, number % SWITCHES)
                    topology.append(f"{_device(family, commune.insee, number)},{parent}")
        field = {"air_quality": "pm10", "traffic": "intensity", "building": "temperature"}.get(
            family.value, "latency"
        )
        frame = pl.DataFrame(rows).rename({"value": field}).with_columns(pl.col("time").cast(TIME_DTYPE))
        store.write(family.value, frame, tags=["insee", "device_id"])
    aggregates = pl.DataFrame(
        {
            "time": [NOW - timedelta(minutes=15)] * len(registry),
            "insee": registry.codes,
            "pm10_mean": [30.0 + 5 * i for i in range(len(registry))],
        }
    ).with_columns(pl.col("time").cast(TIME_DTYPE))
    store.write("air_quality_15m_commune", aggregates, tags=["insee"])
    return "\n".join(topology) + "\n"


def baseline(store: DuckDBStore, registry: CommuneRegistry) -> None:
    """The reads an evaluation needs, and nothing else."""
    for family in Family:
        store.series(family.value, where={"insee": registry.codes})
    store.read(
        "air_quality_15m_commune", start=NOW - timedelta(minutes=45), end=NOW, where={"insee": registry.codes}
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="40 devices per family and commune")
    parser.add_argument("--devices", type=int, help="devices per family and commune (default 400)")
    args = parser.parse_args()
    per_family = args.devices or (40 if args.quick else 400)
    os.environ["BENCH_SECRET"] = "bench"
    registry = CommuneRegistry.load()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        store = DuckDBStore(tmp / "store.duckdb")
        topology_path = tmp / "devices.csv"
        topology_path.write_text(build(store, registry, per_family))
        devices = per_family * len(Family) * len(registry)
        rules = parse_rules(RULES, registry)
        outbox = Outbox(tmp / "outbox", tmp / "audit.jsonl")
        evaluator = Evaluator(
            rules,
            store,
            registry,
            outbox,
            state_file=tmp / "state.json",
            dashboard_url="http://127.0.0.1:8050",
            topology=Topology.load(topology_path),
            clock=lambda: NOW,
        )
        started = time.perf_counter()
        baseline(store, registry)
        base_s = time.perf_counter() - started

        started = time.perf_counter()
        report = evaluator.evaluate()
        first_s = time.perf_counter() - started
        started = time.perf_counter()
        evaluator.evaluate()  # nothing changes: the steady state of a running evaluator
        steady_s = time.perf_counter() - started
        started = time.perf_counter()
        baseline(store, registry)
        base_s = min(base_s, time.perf_counter() - started)

        firing = sum(1 for t in report.transitions if t.after == "firing")
        suppressed = sum(1 for t in report.transitions if t.record.suppressed_by)
        print(f"fleet: {devices} devices in {len(registry)} communes ({per_family} per family and commune)")
        print(f"first evaluation: {first_s * 1000:.0f} ms: {firing} alerts firing ({suppressed} suppressed "
              f"behind their switch), {len(report.messages)} messages queued")  # fmt: skip
        print(f"steady evaluation (nothing changes): {steady_s * 1000:.0f} ms")
        print(f"baseline, the bare store reads: {base_s * 1000:.0f} ms")
        print(f"ratio first/baseline: {first_s / base_s:.1f}x; steady/baseline: {steady_s / base_s:.1f}x")
        outbox.close()
        store.close()


if __name__ == "__main__":
    main()
