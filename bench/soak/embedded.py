"""The embedded platform of ``--store duckdb``: ingest, processing, alerts and the dashboards in
one gunicorn worker over one DuckDB file (DuckDB lets one process own it), as ``smartcity demo``
runs them, but fed by the soak's Mosquitto and fleet. Settings come from the environment the
soak sets; ``SOAK_SIGHTINGS`` is the probe watcher's file.

    python -m bench.soak.embedded
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alerts.service import build_evaluator, run_options
from bench.soak.probes import ProbeWatcher
from dashboards.app import create_app
from dashboards.server import serve
from dashboards.state import StateFile
from ingest.service import Ingestor
from processing.runner import Runner
from sensors.communes import CommuneRegistry
from smartcity.logs import configure_logging
from smartcity.settings import load_settings
from storage.duckdb_store import DuckDBStore


def main() -> int:
    """Serve until SIGTERM; the other parts run in threads of the worker."""
    configure_logging("INFO")
    settings = load_settings()
    registry = CommuneRegistry.load(settings.communes_file)
    stop = threading.Event()
    closers: list[Callable[[], object]] = []

    def app() -> Any:
        store = DuckDBStore.from_settings(settings.store.duckdb)
        ingestor = Ingestor(settings.mqtt, settings.ingest.model_copy(update={"workers": 1}), store, registry)
        ingestor.start()
        runner = Runner.from_settings(store, settings.processing)
        evaluator = build_evaluator(settings.alerts, store, registry)
        watcher = ProbeWatcher(store, Path(os.environ["SOAK_SIGHTINGS"]))
        watcher.start()
        threads = [
            threading.Thread(
                target=runner.run_forever,
                args=(settings.processing.interval_s,),
                kwargs={"stop": stop.is_set},
                daemon=True,
            ),
            threading.Thread(
                target=evaluator.run, args=(stop,), kwargs=run_options(settings.alerts), daemon=True
            ),
        ]
        for thread in threads:
            thread.start()

        def close() -> None:
            stop.set()
            watcher.stop()
            for thread in threads:
                thread.join(60)
            ingestor.stop()
            evaluator.outbox.close()
            store.close()

        closers.append(close)
        return create_app(store, settings.dashboard, registry).server

    def close_all() -> None:
        for close in closers:
            close()

    StateFile(settings.dashboard.state_path)
    serve(
        app,
        settings.dashboard,
        settings.dashboard.host,
        settings.dashboard.port,
        workers=1,
        on_worker_exit=close_all,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
