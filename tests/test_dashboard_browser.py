"""The pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The app is served by werkzeug in a thread over a DuckDB store filled by the test; screenshots
of each page are kept under ``docs/screenshots/``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path

import polars as pl
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from dashboards.views import atmo_text, paris_day_start
from storage.base import TIME
from tests.dashboard_fixtures import MONTROUGE, POISSY, DashboardEnv, make_env, served_in_thread

# A real browser against a real server: about a minute, so marked slow (CI still runs it).
pytestmark = pytest.mark.slow

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
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardEnv, str]]:
    env = make_env(tmp_path_factory.mktemp("browser"), refresh_s=600)
    with served_in_thread(env.app.server) as base:
        yield env, base
    env.store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            "Debian's chromium is needed for the browser tests: apt-get install -y chromium", pytrace=False
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="fr-FR")
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, base: str, user: str, password: str, target: str = "/") -> None:
    page.goto(f"{base}{target}")
    expect(page.get_by_label("Identifiant")).to_be_visible()
    page.get_by_label("Identifiant").fill(user)
    page.get_by_label("Mot de passe").fill(password)
    page.keyboard.press("Enter")  # keyboard only


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_sign_in_page_refuses_a_wrong_password(page: Page, served: tuple[DashboardEnv, str]) -> None:
    _, base = served
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")
    shot(page, "signin")
    page.get_by_label("Identifiant").fill("poissy")
    page.get_by_label("Mot de passe").fill("not the password")
    page.get_by_role("button", name="Se connecter").click()
    expect(page.get_by_role("alert")).to_contain_text("incorrect")


def test_overview_shows_the_users_communes_with_their_atmo_class(
    page: Page, served: tuple[DashboardEnv, str]
) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password)
    table = page.locator("#overview-table")
    expect(table).to_contain_text("Poissy (78498)")
    today = env.scenario.atmo.filter(
        (pl.col("insee") == POISSY) & (pl.col(TIME) == paris_day_start(env.scenario.now).astimezone(UTC))
    )
    expect(table).to_contain_text(atmo_text(today.get_column("index").item(), "fr"))
    expect(table).not_to_contain_text("Montrouge")
    expect(page.locator("#overview-map .main-svg").first).to_be_visible()
    shot(page, "overview")


def test_admin_overview_and_commune_page_with_stored_data(
    page: Page, served: tuple[DashboardEnv, str]
) -> None:
    env, base = served
    account = env.accounts["admin"]
    sign_in(page, base, account.name, account.password)
    expect(page.locator("#overview-table")).to_contain_text("Montrouge (92049)")
    expect(page.locator("#overview-map .main-svg").first).to_be_visible()
    shot(page, "overview_admin")
    page.get_by_role("link", name="Poissy (78498)").click()
    expect(page).to_have_url(f"{base}/commune/{POISSY}")
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    # The chart draws the stored aggregates: plotly renders its traces into the SVG/WebGL layers.
    expect(page.locator("#commune-chart .legendtext").first).to_be_visible()
    expect(page.locator("#commune-chart")).to_contain_text("moyenne")
    devices = page.locator("#commune-devices")
    expect(devices).to_contain_text(f"air-{POISSY}-0")
    expect(devices).to_contain_text("en ligne")
    expect(page.locator("#commune-alerts")).to_contain_text("pm25-high")
    expect(page.locator("#commune-anomalies")).to_contain_text("pic")
    shot(page, "commune")
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Exporter en CSV").click()
    exported = pl.read_csv(downloading.value.path(), schema_overrides={"insee": pl.String})
    assert exported.columns[:3] == [TIME, "insee", "pm25_mean"]
    assert exported.height > 0 and set(exported.get_column("insee")) == {POISSY}
    # Switch the range with the keyboard: focus the "7 derniers jours" radio and select it.
    page.get_by_label("7 derniers jours").focus()
    page.keyboard.press("Space")
    expect(page.locator("#commune-chart")).to_contain_text("par 15 minutes")
    page.get_by_role("link", name=f"air-{POISSY}-0").first.click()
    expect(page.locator("#device-chart")).to_contain_text("mesures brutes")
    expect(page.locator("#device-chart .legendtext", has_text="Anomalies")).to_be_visible()
    shot(page, "device")


def test_switching_language(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, target=f"/commune/{POISSY}")
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    page.locator("#language-switch").click()
    expect(page.locator("#commune-devices")).to_contain_text("Device status")
    expect(page.get_by_text("Last 7 days")).to_be_visible()
    expect(page.locator("#commune-chart")).to_contain_text("mean")
    shot(page, "commune_en")
    page.locator("#language-switch").click()
    expect(page.locator("#commune-devices")).to_contain_text("État des capteurs")


def test_expired_session_sends_back_to_sign_in(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, target=f"/commune/{POISSY}")
    expect(page.locator("#commune-devices")).to_contain_text(f"air-{POISSY}-0")
    page.context.clear_cookies()  # as when the session has expired
    page.get_by_label("3 dernières heures").click()
    expect(page).to_have_url(f"{base}/login?next=%2Fcommune%2F{POISSY}")
    page.get_by_label("Identifiant").fill(account.name)
    page.get_by_label("Mot de passe").fill(account.password)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/commune/{POISSY}")  # back where the user was
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    page.get_by_role("link", name="Se déconnecter").click()
    expect(page.get_by_label("Identifiant")).to_be_visible()
    page.goto(f"{base}/commune/{POISSY}")
    expect(page).to_have_url(f"{base}/login?next=/commune/{POISSY}")


def test_forbidden_commune_is_refused(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, target=f"/commune/{MONTROUGE}")
    refusal = page.locator("#forbidden")
    expect(refusal).to_contain_text("Accès refusé")
    expect(refusal).to_contain_text(MONTROUGE)
    expect(page.locator("#commune-chart")).to_have_count(0)
    shot(page, "forbidden")
    # The device page of a Montrouge device is refused the same way.
    page.goto(f"{base}/device/{MONTROUGE}/air-{MONTROUGE}-0")
    expect(page.locator("#forbidden")).to_contain_text("Accès refusé")
