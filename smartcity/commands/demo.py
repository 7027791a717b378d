"""``smartcity demo``: the whole platform in one process, with nothing to install."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from smartcity.commands.simulate import parse_duration, positive_int
from smartcity.settings import Settings


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
        "--data-dir",
        type=Path,
        default=Path("var/demo"),
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


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run until Ctrl-C or SIGTERM; exit 0 after a clean stop.

    gunicorn serves the dashboards, with one worker: the DuckDB store belongs to one process, so
    the worker runs the whole platform (``Demo``) in threads beside the dashboards.
    """
    from dashboards.server import DashboardServer, gunicorn_options
    from smartcity.demo import Demo, DemoOptions

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
        _print_banner(info, options)
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
    }
    try:
        DashboardServer(load, server_options, on_worker_exit=stopped).run()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _print_banner(info: Any, options: Any) -> None:
    resumed = (
        f"continued from the stored data, last reading {info.resumed_from.astimezone():%Y-%m-%d %H:%M}"
        if info.resumed_from
        else "a new store"
    )
    print(
        f"""
smartcity demo is running.
  dashboards:  {info.url}/   sign in as {info.user!r} with password {info.password!r}
  commune:     {info.url}/commune/{info.incident_commune}
  MQTT broker: {info.broker} (MQTT 3.1.1, embedded); {info.devices} simulated devices
  incident:    {info.incident}
  data:        {options.data_dir}/ ({resumed}; delete it to start afresh)
Alert messages are printed below as the commune's mailbox receives them. Ctrl-C stops.
""",
        flush=True,
    )
