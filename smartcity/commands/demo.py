"""``smartcity demo``: the whole platform in one process, with nothing to install."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from dashboards.i18n import PARIS
from smartcity.commands.simulate import parse_duration, positive_int
from smartcity.settings import Settings

DEFAULT_DATA_DIR = Path("var/demo")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``demo`` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="run the whole platform in one process on a simulated fleet (Ctrl-C stops)",
        description="Embedded MQTT broker, embedded DuckDB store, the simulated fleet of every commune "
        "of the registry (with faults), ingest, processing, alerts (to a local mailbox that prints "
        "the messages) and the dashboards. Prints where to point the browser and a sign-in. "
        "Ctrl-C stops; running it again continues from the stored data.",
    )
    parser.add_argument(
        "action",
        nargs="?",
        choices=["add-token"],
        help="add-token: print a new API token of the demo user (for notebooks) and exit",
    )
    parser.add_argument(
        "--password",
        help="set the demo user's password (kept across restarts; by default made on the first run "
        "and printed once)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="where the demo keeps its data (default: var/demo)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8050, help="port of the dashboards; 0 picks a free one (default: 8050)"
    )
    parser.add_argument(
        "--broker-port", type=int, default=0, help="port of the embedded MQTT broker (default: a free one)"
    )
    parser.add_argument(
        "--history",
        type=parse_duration,
        default=6 * 3600.0,
        metavar="DURATION",
        help="on a first run, how far back the fleet starts (default: 6h)",
    )
    parser.add_argument(
        "--devices-per-family",
        type=positive_int,
        default=2,
        metavar="N",
        help="devices of each family in each commune (default: 2)",
    )
    parser.add_argument(
        "--period",
        type=parse_duration,
        default=60.0,
        metavar="DURATION",
        help="time between readings (default: 60s)",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of the fleet (default: 42)")
    parser.add_argument(
        "--faults",
        default="default",
        metavar="SPEC",
        help="faults to inject, as for simulate (default: default)",
    )
    parser.add_argument(
        "--interval",
        type=parse_duration,
        default=15.0,
        metavar="DURATION",
        help="how often processing and alerts run (default: 15s)",
    )
    parser.set_defaults(func=run)


ACCESS_LOG = "access.log"
"""The dashboards' web access log, in the demo's data directory, out of the console."""


class ParisFormatter(logging.Formatter):
    """Log times in Europe/Paris, as the dashboards and the alert messages give them."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        moment = datetime.fromtimestamp(record.created, PARIS)
        return moment.strftime(datefmt or "%Y-%m-%d %H:%M:%S %Z")


def configure_logging(data_dir: Path) -> Path:
    """The console shows the demo's own events in Paris time; web requests go to their own file
    (gunicorn's access log, set where the server is started)."""
    formatter = ParisFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
    data_dir.mkdir(parents=True, exist_ok=True)
    # One line per webhook POST to the demo's mailbox repeats the outbox's own delivery line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return data_dir / ACCESS_LOG


def run_add_token(args: argparse.Namespace) -> int:
    """Print a new API token of the demo user, alone on stdout (``export T=$(smartcity demo add-token)``)."""
    from smartcity.demo import demo_token

    try:
        print(demo_token(args.data_dir / "users.toml"))
    except ValueError as exc:
        print(f"smartcity demo add-token: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run until Ctrl-C or SIGTERM; exit 0 after a clean stop.

    gunicorn serves the dashboards, with one worker: the DuckDB store belongs to one process, so
    the worker runs the whole platform (``Demo``) in threads beside the dashboards.
    """
    from dashboards.server import DashboardServer, gunicorn_options
    from smartcity.demo import Demo, DemoOptions

    if args.action == "add-token":
        return run_add_token(args)
    access_log = configure_logging(args.data_dir)

    options = DemoOptions(
        data_dir=args.data_dir,
        host=args.host,
        broker_port=args.broker_port,
        dashboard_port=args.port,
        history=timedelta(seconds=args.history),
        period_s=args.period,
        devices_per_family=args.devices_per_family,
        seed=args.seed,
        faults=args.faults,
        interval_s=args.interval,
        password=args.password,
    )
    demo = Demo(settings, options, stop_event=threading.Event())

    def bound(_arbiter: object, worker: Any) -> None:
        demo.dashboard_port = worker.sockets[0].getsockname()[1]

    def load() -> Any:
        print("smartcity demo: starting (the fleet's history goes through MQTT first)...", flush=True)
        try:
            info = demo.start()
        except (OSError, ValueError, TimeoutError) as exc:
            print(f"smartcity demo: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        _print_banner(info, options, access_log)
        return demo.wsgi_app

    def stopped() -> None:
        print("smartcity demo: stopping...", flush=True)
        demo.stop()
        print("smartcity demo: stopped.", flush=True)
        sys.stderr.flush()
        # The worker ends here. A thread still busy past its join (a long processing run) must
        # not run on into the interpreter's shutdown, where DuckDB and thread pools abort.
        os._exit(0)

    server_options = {
        **gunicorn_options(settings.dashboard, options.host, options.dashboard_port, workers=1),
        "post_fork": bound,
        # The worker catches up with the fleet's history before it serves: minutes, not seconds.
        "timeout": 900,
        "graceful_timeout": 120,
        "loglevel": "warning",
        "accesslog": str(access_log),
    }
    try:
        DashboardServer(load, server_options, on_worker_exit=stopped).run()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _print_banner(info: Any, options: Any, access_log: Path) -> None:
    resumed = (
        f"continued from the stored data, last reading {info.resumed_from.astimezone():%Y-%m-%d %H:%M}"
        if info.resumed_from
        else "a new store"
    )
    sign_in = (
        f"sign in as {info.user!r} with password {info.password!r}"
        if info.password
        else f"sign in as {info.user!r} with the password printed at the first run (--password sets one)"
    )
    epci_sign_in = (
        f"sign in as {info.epci_user!r} with password {info.epci_password!r}"
        if info.epci_password
        else f"sign in as {info.epci_user!r} with the password printed at the first run"
    )
    print(
        f"""
smartcity demo is running.
  dashboards:  {info.url}/   {sign_in}
  EPCI user:   {info.url}/epci/{info.epci_siren}   {epci_sign_in} (its member communes only)
  API token:   .venv/bin/smartcity demo add-token{_data_dir_option(options.data_dir)}  (notebooks: README)
  commune:     {info.url}/commune/{info.incident_commune}
  MQTT broker: {info.broker} (MQTT 3.1.1, embedded); {info.devices} simulated devices
  incident:    {info.incident}
  data:        {options.data_dir}/ ({resumed}; delete it to start afresh)
  web log:     {access_log}
Alert messages and the demo's events are printed below (times in Paris time). Ctrl-C stops.
""",
        flush=True,
    )


def _data_dir_option(data_dir: Path) -> str:
    return "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
