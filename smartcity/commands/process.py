"""``smartcity process``: run the processing jobs (aggregates, indices, anomalies) on a schedule."""

from __future__ import annotations

import argparse
import logging
import sys

from processing.memory import tune_for_service
from processing.runner import Runner, RunReport
from processing.threads import use_threads
from sensors.families import Family
from smartcity.commands.stopping import stop_on_signals
from smartcity.settings import Settings
from storage import StoreError, open_store

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``process`` sub-command."""
    parser = subparsers.add_parser(
        "process",
        help="compute aggregates, indices and anomalies from the stored readings, on a schedule",
        description=(
            "Every processing.interval_s seconds (default 60), read the readings that arrived "
            "since the last run, recompute every window they touched (late readings included) "
            "and write aggregates, indices and anomalies back to the store. Stops cleanly on "
            "SIGTERM or Ctrl-C."
        ),
    )
    parser.add_argument("--once", action="store_true", help="run one pass and exit")
    parser.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds between runs (default: processing.interval_s)",
    )
    add_job_options(parser)
    parser.set_defaults(func=run)


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``process`` and ``backfill``."""
    parser.add_argument(
        "--family",
        action="append",
        choices=[f.value for f in Family],
        help="only this family (repeatable; default: all five)",
    )
    parser.add_argument("--no-anomalies", action="store_true", help="skip the anomaly pass")


def build_runner(args: argparse.Namespace, settings: Settings) -> Runner:
    """The runner the settings and options describe (opens the store), in a process tuned for
    it: the allocator and numpy settings of a processing service, and its thread count."""
    config = settings.processing
    tune_for_service()
    use_threads(config.threads)
    return Runner.from_settings(
        open_store(settings.store),
        config,
        families=args.family,
        anomalies=not args.no_anomalies,
    )


def print_report(report: RunReport) -> None:
    """One line per job: windows, rows read and written, time, error."""
    for job in report.jobs:
        state = f"FAILED: {job.error}" if job.error else "ok"
        print(
            f"{job.job:28} {job.windows:8d} windows {job.rows_read:10d} rows read "
            f"{job.rows_written:8d} written {job.seconds:7.2f} s  {state}"
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the sub-command."""
    try:
        runner = build_runner(args, settings)
    except StoreError as exc:
        print(f"smartcity process: {exc}", file=sys.stderr)
        return 1
    try:
        if args.once:
            report = runner.run_once()
            print_report(report)
            return 1 if report.failed else 0
        stop = stop_on_signals(log, "stopping after the current run")
        runner.run_forever(args.interval or settings.processing.interval_s, stop=stop.is_set)
        return 0
    finally:
        runner.store.close()
