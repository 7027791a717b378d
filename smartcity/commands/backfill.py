"""``smartcity backfill``: recompute the aggregates, indices and anomalies of a period."""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime

from processing.runner import Runner, RunReport
from processing.windows import PARIS_TZ
from sensors.catalogue import indices
from smartcity.commands.process import add_job_options, build_runner, print_report
from smartcity.settings import Settings
from storage import StoreError


def parse_moment(text: str) -> datetime:
    """An ISO 8601 date (Paris midnight) or date-time (Paris time unless it has an offset)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=PARIS_TZ)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date (2026-03-29) or date-time (2026-03-29T08:00, ...T06:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=PARIS_TZ)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``backfill`` sub-command."""
    parser = subparsers.add_parser(
        "backfill",
        help="recompute aggregates, indices and anomalies over a period",
        description=(
            "Recompute every window of [--from, --to) from the raw readings in the store and "
            "rewrite the results, whatever the jobs' watermarks say: after importing old "
            "readings, after a long outage, or after changing a job. Running it twice gives the "
            "same result. Dates without a time mean midnight in Europe/Paris."
        ),
    )
    parser.add_argument(
        "--from", dest="start", required=True, type=parse_moment, metavar="WHEN", help="start (included)"
    )
    parser.add_argument(
        "--to", dest="end", required=True, type=parse_moment, metavar="WHEN", help="end (excluded)"
    )
    parser.add_argument(
        "--job",
        action="append",
        metavar="NAME",
        help=f"only this job (repeatable): aggregates, {', '.join(indices())}, anomalies",
    )
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the jobs as tasks on a Ray cluster, one per commune and day: 'auto' (the "
        "cluster this machine belongs to), HOST:PORT of its head, ray://HOST:10001, or 'local' "
        "(a cluster of this machine alone). Needs smartcity[ray] and the InfluxDB store",
    )
    add_job_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the sub-command."""
    if args.end <= args.start:
        print(
            f"smartcity backfill: --to {args.end.isoformat()} is not after --from {args.start.isoformat()}",
            file=sys.stderr,
        )
        return 2
    if args.ray:
        from processing.distributed import DistributedError, check_store

        try:
            check_store(settings.store)
        except DistributedError as exc:
            print(f"smartcity backfill: {exc}", file=sys.stderr)
            return 2
    try:
        runner = build_runner(args, settings)
    except StoreError as exc:
        print(f"smartcity backfill: {exc}", file=sys.stderr)
        return 1
    try:
        if args.ray:
            report = _on_ray(runner, args, settings)
            if report is None:
                return 1
        else:
            report = runner.backfill(args.start, args.end, jobs=args.job)
    finally:
        runner.store.close()
    print_report(report)
    return 1 if report.failed else 0


def _on_ray(runner: Runner, args: argparse.Namespace, settings: Settings) -> RunReport | None:
    """The backfill as Ray tasks, a progress line on stderr as each finishes (None: no cluster)."""
    from processing import distributed

    def progress(done: int, total: int, task: distributed.Task, report: RunReport) -> None:
        state = (
            f"FAILED: {report.failed[0].error}" if report.failed else f"{report.rows_written} rows written"
        )
        print(f"[{done}/{total}] {task.label}: {state}", file=sys.stderr, flush=True)

    try:
        with distributed.connected(args.ray):
            return distributed.backfill(
                runner, settings.store, args.start, args.end, jobs=args.job, progress=progress
            )
    except (distributed.DistributedError, StoreError) as exc:
        print(f"smartcity backfill: {exc}", file=sys.stderr)
        return None
