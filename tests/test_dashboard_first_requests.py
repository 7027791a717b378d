"""A dashboard worker is ready before its first request: concurrent first requests all answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.dashboard_fixtures import make_env, served_in_thread


def test_dash_is_set_up_and_the_page_router_registered_before_any_request(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    # Dash would do both on the first request, in whichever thread of the worker got it.
    assert all(env.app._got_first_request.values())
    assert any("_pages_content.children" in key for key in env.app.callback_map)
    env.store.close()


def test_concurrent_first_requests_of_a_fresh_app_all_answer(tmp_path: Path) -> None:
    env = make_env(tmp_path)
    with served_in_thread(env.app.server) as url, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: httpx.get(f"{url}/login", timeout=30).status_code, range(32)))
    assert answers == [200] * 32
    env.store.close()
