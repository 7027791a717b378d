"""The analyst's notebook runs from top to bottom against a demo dataset, so it can never rot."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from werkzeug.serving import make_server

from dashboards.app import create_app
from dashboards.config import DashboardSettings
from dashboards.users import ALL_COMMUNES, ApiToken, User, UserDirectory, new_token, token_digest
from processing.runner import Runner
from sensors.communes import CommuneRegistry
from sensors.frames import TAGS
from simulator.faults import FaultRates
from simulator.fleet import FleetConfig, generate_fleet
from storage.duckdb_store import DuckDBStore

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "analysis.ipynb"


def demo_dataset(path: Path) -> None:
    """A week of the nine communes' fleet (one device per family, at the contract's period), processed."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=7)
    config = FleetConfig(devices_per_family=1, period_s=60, seed=7, faults=FaultRates.parse("default"))
    fleet = generate_fleet(config, start, now)
    store = DuckDBStore(path)
    for family, frame in fleet.frames.items():
        store.write(family, frame, tags=list(TAGS))
    report = Runner(store).backfill(start, now)
    assert not report.failed, [job.error for job in report.failed]
    store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """The dashboards' API over the dataset, and a token of an administrator."""
    served = tmp_path / "served.duckdb"
    demo_dataset(served)
    # DuckDB lets one process open a file for writing: the notebook's direct connection reads a copy.
    direct = tmp_path / "direct.duckdb"
    shutil.copy(served, direct)
    token = new_token()
    users = UserDirectory(tmp_path / "users.toml")
    users.upsert(
        User("analyst", frozenset({ALL_COMMUNES}), tokens=(ApiToken("notebook", token_digest(token)),))
    )
    store = DuckDBStore(served)
    app = create_app(store, DashboardSettings(users_file=tmp_path / "users.toml"), CommuneRegistry.load())
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.port}", token, direct
    server.shutdown()
    thread.join(10)
    store.close()


def test_the_analysis_notebook_runs_against_the_demo_dataset(
    api: tuple[str, str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token, direct = api
    monkeypatch.setenv("SMARTCITY_URL", url)
    monkeypatch.setenv("SMARTCITY_TOKEN", token)
    monkeypatch.setenv("SMARTCITY_STORE__DUCKDB__PATH", str(direct))
    notebook = nbformat.read(NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    outputs = [cell.get("outputs", []) for cell in notebook.cells if cell.cell_type == "code"]
    assert all(outputs), "every code cell shows something"
    text = "\n".join(
        str(out.get("data", {}).get("text/plain", "")) + str(out.get("text", ""))
        for cell_outputs in outputs
        for out in cell_outputs
    )
    # The month comparison names the communes; the direct read found hourly rows.
    for name in ("Poissy", "Montrouge", "Boulogne-Billancourt"):
        assert name in text
    assert "hourly rows in the last 7 days" in text and ": 0 hourly rows" not in text
