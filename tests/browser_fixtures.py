"""A dashboards server in a thread and Debian's Chromium driven by Playwright.

Shared by the browser tests and ``bench.screenshots`` (which regenerates docs/screenshots).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright
from werkzeug.serving import make_server

from tests.dashboard_fixtures import DashboardEnv

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 1000}
PHONE: ViewportSize = {"width": 390, "height": 844}


@contextmanager
def serving(env: DashboardEnv) -> Iterator[str]:
    """The app of ``env`` served by werkzeug in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, env.app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless; a clear error when it is not installed."""
    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("Debian's chromium is needed: apt-get install -y chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def sign_in(page: Page, base: str, user: str, password: str, target: str = "/") -> None:
    """Sign in through the form, with the keyboard only, landing on ``target``."""
    page.goto(f"{base}{target}")
    field = page.locator("#user")
    expect(field).to_be_visible()
    field.fill(user)
    page.locator("#password").fill(password)
    page.keyboard.press("Enter")
    page.wait_for_url(lambda url: "/login" not in url)
