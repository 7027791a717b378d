"""What a minute's processing run writes at real time: rows and field values per measurement,
per reading of the fleet.

The soak found influxd's work to be mostly what processing writes (docs/performance.md, "Air
quality again, with its logs"). This bench counts it without a server: a DuckDB store, a fleet
of every family (or those given) reporting once a minute, and a runner on a hand-moved clock.
Devices report all through the minute and a run falls at one moment of it, so each minute's
readings reach the store in two parts, one before the run and one after (the devices of the
first ``--split`` share of each commune's list first). After a warm-up of ``--warmup``
minutes, ``--minutes`` runs are counted: rows and non-null field values written to each
measurement, per new reading.

Counts, not times: they do not depend on the machine, so two checkouts compare exactly.

    .venv/bin/python -m bench.processing_writes                  # this checkout
    cd /path/to/other/checkout && PYTHONPATH=. /path/to/this/.venv/bin/python -m bench.processing_writes
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from bench.processing_runner import TAGS, _Clock
from processing.runner import Runner
from sensors.families import FAMILIES
from simulator.fleet import FleetConfig, generate_fleet
from storage.base import Write, WriteReport
from storage.duckdb_store import DuckDBStore

START = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)


class CountingStore(DuckDBStore):
    """A DuckDB store that counts the rows and field values written to each measurement."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.rows: Counter[str] = Counter()
        self.values: Counter[str] = Counter()

    def write_many(self, writes: Sequence[Write]) -> list[WriteReport]:
        """Count, then write."""
        for write in writes:
            fields = [c for c in write.frame.columns if c not in {*write.tags, "time"}]
            self.rows[write.measurement] += write.frame.height
            self.values[write.measurement] += sum(
                write.frame.height - write.frame[c].null_count() for c in fields
            )
        return super().write_many(writes)


def _arrived(frame: pl.DataFrame, at: datetime) -> pl.DataFrame:
    return frame.with_columns(received_at=pl.lit(int(at.timestamp() * 1e9), dtype=pl.Int64))


def _minute(frame: pl.DataFrame, begun: datetime, split: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The readings of the minute starting at ``begun``: those of the devices that report
    before the run's moment in the minute (the first ``split`` of each commune's list), and
    the rest, which arrive after that run."""
    part = frame.filter(pl.col("time").is_between(begun, begun + timedelta(minutes=1), closed="left"))
    ids = pl.col("device_id")
    rank = ids.rank("dense").over("insee") / ids.n_unique().over("insee")
    return part.filter(rank <= split), part.filter(rank > split)


def measure(families: list[str], devices: int, warmup: int, minutes: int, split: float) -> None:
    """Print what the counted runs wrote, per measurement and in all."""
    fleet = generate_fleet(
        FleetConfig(families=families, devices_per_family=devices, period_s=60.0),
        START,
        START + timedelta(minutes=warmup + minutes + 1),
    )
    with tempfile.TemporaryDirectory() as folder:
        store = CountingStore(Path(folder) / "writes.duckdb")
        clock = _Clock(START)
        runner = Runner(store, families=families, anomalies=False, clock=clock)
        readings = 0
        for minute in range(warmup + minutes):
            begun = START + timedelta(minutes=minute)
            if minute == warmup:
                store.rows.clear()
                store.values.clear()
            for family, frame in fleet.frames.items():
                _, late = _minute(frame, begun - timedelta(minutes=1), split)
                early, _ = _minute(frame, begun, split)
                arrived = pl.concat([_arrived(late, begun), _arrived(early, begun + timedelta(seconds=30))])
                store.write(family, arrived, tags=TAGS)
                readings += arrived.height if minute >= warmup else 0
            clock.now = begun + timedelta(seconds=40)
            report = runner.run_once()
            if report.failed:
                raise RuntimeError(f"jobs failed: {[(job.job, job.error) for job in report.failed]}")
        store.close()
    _print(store, readings, fleet.devices.height, minutes)


def _print(store: CountingStore, readings: int, fleet: int, minutes: int) -> None:
    # Processing's results only: not the raw readings the bench wrote, nor the watermarks.
    results = sorted(name for name in store.rows if name not in FAMILY_NAMES and not name.startswith("_"))
    print(f"{fleet} devices, {minutes} runs counted, {readings} readings arrived in them")
    print(f"{'measurement':28} {'rows':>9} {'rows/reading':>13} {'values':>11} {'values/reading':>15}")
    for name in results:
        rows, values = store.rows[name], store.values[name]
        print(f"{name:28} {rows:9d} {rows / readings:13.2f} {values:11d} {values / readings:15.1f}")
    rows = sum(store.rows[name] for name in results)
    values = sum(store.values[name] for name in results)
    print(f"{'all results':28} {rows:9d} {rows / readings:13.2f} {values:11d} {values / readings:15.1f}")


FAMILY_NAMES = [family.value for family in FAMILIES]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the options and measure."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", default=list(FAMILY_NAMES), choices=FAMILY_NAMES)
    parser.add_argument("--devices", type=int, default=20, help="devices per family and commune (default 20)")
    parser.add_argument("--warmup", type=int, default=20, help="minutes before counting (default 20)")
    parser.add_argument("--minutes", type=int, default=30, help="runs counted (default 30)")
    parser.add_argument(
        "--split", type=float, default=0.5, help="share of each minute's devices that report before the run"
    )
    args = parser.parse_args(argv)
    measure(args.families, args.devices, args.warmup, args.minutes, args.split)


if __name__ == "__main__":
    main()
