"""``python -m bench.soak``: the soak run, or ``--knee``; tables printed and written with a plot."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.soak.disk import FAMILY_NAMES
from bench.soak.report import breaks, knee_markdown, markdown, plot
from bench.soak.run import SoakConfig, SoakResult, run_soak
from bench.soak.territory import available
from smartcity.settings import load_settings


def families(text: str) -> tuple[str, ...]:
    """``--families``: comma-separated family names, known ones only, in contract order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in FAMILY_NAMES]
    known = "known: " + ", ".join(FAMILY_NAMES)
    if not names:
        raise argparse.ArgumentTypeError(f"no family given; {known}")
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))}; {known}"
        )
    return tuple(name for name in FAMILY_NAMES if name in names)


def communes(text: str) -> int:
    """``--communes``: a count the soak's départements hold."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of communes") from None
    if not 1 <= count <= available():
        raise argparse.ArgumentTypeError(f"{count}: give 1 to {available()} (the communes of 78 and 92)")
    return count


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--store", choices=["influxdb", "duckdb"], default="influxdb")
    parser.add_argument(
        "--families",
        type=families,
        default=SoakConfig.families,
        help="comma-separated families the fleet is made of, in equal numbers "
        f"(default: all five, {','.join(FAMILY_NAMES)}); the probes run whatever this says",
    )
    parser.add_argument("--devices", type=int, default=SoakConfig.devices, help="fleet size (default 4000)")
    parser.add_argument(
        "--communes",
        type=communes,
        help=f"spread the fleet over this many communes of Yvelines and Hauts-de-Seine (at most "
        f"{available()}; the registry's nine first), as a fleet of that size would be (default: "
        "the registry's nine)",
    )
    parser.add_argument(
        "--minutes", type=float, default=SoakConfig.minutes, help="wall minutes of load (default 60)"
    )
    parser.add_argument(
        "--speedup",
        type=float,
        default=SoakConfig.speedup,
        help="simulated s per wall s (default 24: a day in an hour)",
    )
    parser.add_argument(
        "--users", type=int, default=SoakConfig.users, help="dashboard staff sessions (default 50)"
    )
    parser.add_argument(
        "--ingest-workers",
        type=int,
        help="ingest.workers (default: smartcity ingest's own rule, one per core on Mosquitto)",
    )
    parser.add_argument(
        "--process-interval", type=float, help="processing.interval_s (default: the platform's, 60)"
    )
    parser.add_argument(
        "--alerts-interval", type=float, help="alerts.interval_s (default: the platform's, 60)"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("var/soak"), help="results directory (default var/soak)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the servers' data under the results directory"
    )
    parser.add_argument(
        "--knee", action="store_true", help="step the fleet at real time until something breaks"
    )
    parser.add_argument("--start-devices", type=int, default=5000, help="first knee step (default 5000)")
    parser.add_argument("--max-devices", type=int, default=160_000, help="last knee step (default 160000)")
    parser.add_argument(
        "--step-minutes", type=float, default=10.0, help="wall minutes per knee step (default 10)"
    )
    args = parser.parse_args(argv)
    if args.ingest_workers is not None and args.ingest_workers < 1:
        parser.error(f"--ingest-workers {args.ingest_workers}: give 1 or more")
    span_s = args.minutes * 60 * args.speedup
    horizon_s = load_settings().processing.horizon_s
    if not args.knee and span_s > horizon_s:
        # The fleet replays the past up to now: what is older than the horizon is never processed.
        parser.error(
            f"--minutes {args.minutes:g} at --speedup {args.speedup:g} replays {span_s / 3600:g} "
            f"simulated hours, past processing's horizon of {horizon_s / 3600:g} h "
            "(processing.horizon_s): the oldest readings would never reach the aggregates. "
            "Shorten the run, lower the speed-up, or raise SMARTCITY_PROCESSING__HORIZON_S"
        )
    return args


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM unwinds like Ctrl-C, so every server and service the run started is stopped.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run, print, write; exit 1 when a run lost readings or logged errors (the knee: never)."""
    signal.signal(signal.SIGTERM, _interrupt)
    args = parse(argv)
    command = "python -m bench.soak " + shlex.join(sys.argv[1:] if argv is None else argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    only = "" if args.families == SoakConfig.families else "-" + "+".join(args.families)
    results = args.results / f"{stamp}-{args.store}{only}{'-knee' if args.knee else ''}"
    results.mkdir(parents=True, exist_ok=True)
    config = SoakConfig(
        store=args.store,
        devices=args.devices,
        families=args.families,
        minutes=args.minutes,
        speedup=args.speedup,
        users=args.users,
        process_interval_s=args.process_interval,
        alerts_interval_s=args.alerts_interval,
        communes=args.communes,
        ingest_workers=args.ingest_workers,
    )
    if args.knee:
        steps: list[tuple[int, SoakResult]] = []
        devices = args.start_devices
        while devices <= args.max_devices:
            step = replace(
                config,
                devices=devices,
                minutes=args.step_minutes,
                speedup=1.0,
                workdir=results / f"data-{devices}" if args.keep else None,
            )
            result = run_soak(step)
            steps.append((devices, result))
            write(result, results / f"step-{devices}", command)
            text = knee_markdown(steps, command)
            (results / "knee.md").write_text(text)
            print(text, flush=True)
            if breaks(result):
                break
            devices *= 2
        return 0
    result = run_soak(replace(config, workdir=results / "data" if args.keep else None))
    write(result, results, command)
    return 1 if result.lost or sum(result.log_errors.values()) else 0


def write(result: SoakResult, directory: Path, command: str) -> str:
    """soak.md, soak.png and the probe latencies (parquet) in ``directory``; print the tables."""
    directory.mkdir(parents=True, exist_ok=True)
    plot(result, directory / "soak.png")
    result.latencies.write_parquet(directory / "latencies.parquet")
    text = markdown(result, command, "soak.png")
    (directory / "soak.md").write_text(text)
    print(text, flush=True)
    print(f"written to {directory}", flush=True)
    return text


if __name__ == "__main__":
    sys.exit(main())
