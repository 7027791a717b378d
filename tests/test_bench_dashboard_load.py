"""The dashboard load bench builds its requests from the app's callback map: the real app answers
each of them 200, so the bench cannot drift from the pages unseen."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from bench.dash_client import CALLBACK, DEPENDENCIES, LAYOUT, Callback, CallbackFailed, DashPage, callbacks_of
from tests.dashboard_fixtures import MONTROUGE, POISSY, DashboardEnv, make_env, served_in_thread
from tests.test_dashboard_callbacks import sign_in

ROOT = Path(__file__).resolve().parent.parent
PANELS = ["commune-atmo.figure", "commune-chart.figure", "commune-status.children"]
"""The commune page's callbacks that read the store, by their first output."""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardEnv]:
    # A refresh every 2 s, so that a short run takes several steps at the page's own pace.
    built = make_env(tmp_path_factory.mktemp("dash"), refresh_s=2)
    yield built
    built.store.close()


def signed_in(env: DashboardEnv, name: str) -> FlaskClient:
    client: FlaskClient = env.app.server.test_client()
    assert sign_in(client, name, env.accounts[name].password).status_code == 302
    return client


class Recorder:
    """Sends the page's callbacks through a Flask client; keeps what was sent and answered."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client
        self.sent: list[tuple[str, list[str], dict[str, Any]]] = []

    def __call__(self, callback: Callback, body: dict[str, Any]) -> Any:
        answer = self.client.post(CALLBACK, json=body)
        if answer.status_code != 200:
            raise CallbackFailed(f"{callback.output}: {answer.status_code} {answer.text}")
        self.sent.append((callback.name, body["changedPropIds"], answer.json or {}))
        return answer.json

    def names(self) -> list[str]:
        return [name for name, _, _ in self.sent]


def open_page(client: FlaskClient, path: str) -> tuple[DashPage, Recorder]:
    assert client.get(path).status_code == 200
    layout = client.get(LAYOUT).json
    dependencies = client.get(DEPENDENCIES).json
    assert isinstance(dependencies, list)
    recorder = Recorder(client)
    page = DashPage(callbacks_of(dependencies), recorder)
    page.load(layout, path)
    return page, recorder


def test_loading_a_commune_page_fires_what_the_browser_fires(env: DashboardEnv) -> None:
    page, sent = open_page(signed_in(env, "poissy"), f"/commune/{POISSY}")
    # As recorded from Chromium: the page router, the range key, then the three panels.
    assert sent.names()[:2] == ["_pages_content.children", "commune-range-key.data"]
    assert sorted(sent.names()[2:]) == [
        "commune-atmo.figure",
        "commune-chart.figure",
        "commune-status.children",
    ]
    assert all(changed == ["commune-range-key.data"] for _, changed, _ in sent.sent[2:])
    assert page.components["commune-insee"].props["data"] == POISSY


def test_tab_period_and_refresh_are_answered_with_the_new_choice(env: DashboardEnv) -> None:
    page, sent = open_page(signed_in(env, "poissy"), f"/commune/{POISSY}")
    tabs = page.find(lambda c: c.props.get("role") == "tab")
    assert len(tabs) == 5
    sent.sent.clear()
    page.click(tabs[1])
    # The tab's store, the new family's fields, then one chart drawn with both.
    assert sent.names() == ["commune-family.data", "commune-field-picker.children", "commune-chart.figure"]
    assert page.components["commune-family"].props["data"] == "traffic"
    chart = sent.sent[-1][2]["response"]["commune-chart"]["figure"]
    assert chart["data"], "the traffic chart has data"
    periods = page.find(
        lambda c: isinstance(c.component_id, dict) and c.component_id["choice"] == "commune-range"
    )
    sent.sent.clear()
    page.click(next(k for k in periods if '"7d"' in k))
    assert page.components["commune-range-key"].props["data"] == "7d"
    assert sorted(sent.names()[2:]) == [
        "commune-atmo.figure",
        "commune-chart.figure",
        "commune-status.children",
    ]
    sent.sent.clear()
    page.tick()
    assert all(changed == ["commune-tick.n_intervals"] for _, changed, _ in sent.sent)
    assert len(sent.sent) == 3


def test_a_refused_callback_fails_the_session(env: DashboardEnv) -> None:
    client = signed_in(env, "poissy")
    page, _ = open_page(client, f"/commune/{POISSY}")
    # Another commune's page state, forged into the tab: the app refuses, the page says so.
    page.components["commune-insee"].props["data"] = ["forged", MONTROUGE]
    with pytest.raises(CallbackFailed, match="400"):
        page.tick()


@pytest.mark.slow
def test_a_short_locust_run_against_the_app_has_no_error(env: DashboardEnv, tmp_path: Path) -> None:
    account = env.accounts["admin"]
    figures = tmp_path / "load.json"
    with served_in_thread(env.app.server) as base:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.dashboard_load",
                *("--url", base, "--user", account.name, "--password", account.password),
                *("--communes", f"{POISSY},{MONTROUGE}", "--users", "2", "--duration", "8"),
                *("--json", str(figures)),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
    # 1 is a missed latency target on a busy machine; 2 (an error) is what must never happen.
    assert run.returncode in (0, 1), run.stdout + run.stderr
    stats = json.loads(figures.read_text())
    assert stats["errors"] == 0 and stats["callbacks"] > 0
    kinds = set(stats["per_request"])
    assert {
        "callback commune-family.data",
        "callback commune-range.data",
        "callback commune-chart.figure",
    } <= kinds
    assert "p95" in run.stdout and "per 1,000 callbacks" not in run.stdout  # no server pid: no CPU claimed
