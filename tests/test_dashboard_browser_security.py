"""In a real Chromium: the pages pass their Content-Security-Policy, and nothing leaves for another host.

Every request the pages make is recorded while a user signs in, walks the overview, a commune
page (families, periods) and a device page, and signs out; any host but the dashboards' own
fails the test, as does any CSP violation the browser reports. Plotly's cloud buttons must be
absent from every chart.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.browser_fixtures import sign_in
from tests.dashboard_fixtures import POISSY, DashboardEnv
from tests.test_dashboard_browser import browser, page, served

__all__ = ["browser", "page", "served"]  # fixtures, shared with the pages' browser tests

pytestmark = pytest.mark.slow

RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
    const where = `${event.sourceFile}:${event.lineNumber}:${event.columnNumber}`;
    window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI} at ${where}`);
});
"""


def test_pages_pass_their_csp_and_call_no_other_host(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    own = urlsplit(base).netloc
    requested: list[str] = []
    console: list[str] = []
    page.context.add_init_script(RECORD_VIOLATIONS)
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: console.append(message.text) if _is_csp(message) else None)
    violations: list[str] = []

    def collect() -> None:
        violations.extend(page.evaluate("window.__cspViolations || []"))

    account = env.accounts["admin"]
    sign_in(page, base, account.name, account.password)
    expect(page.locator("#overview-map .main-svg").first).to_be_visible()
    collect()
    page.goto(f"{base}/commune/{POISSY}")
    expect(page.locator("#commune-chart .legendtext").first).to_be_visible()
    for family in ("Trafic", "Bâtiments"):
        page.get_by_role("tab", name=family).click()
    page.get_by_role("radio", name="7 derniers jours").click()
    expect(page.locator("#commune-chart-label")).to_contain_text("Énergie")  # title: HTML above the chart
    page.locator("#commune-chart").hover()
    # Plotly's mode bar: no button that would send the chart to Plotly's cloud.
    titles = page.locator("#commune-chart .modebar-btn").evaluate_all(
        "buttons => buttons.map(b => b.getAttribute('data-title') || '')"
    )
    assert titles and not [t for t in titles if "cloud" in t.lower() or "studio" in t.lower()], titles
    config = page.evaluate("document.querySelector('#commune-chart .js-plotly-plot')._context")
    assert config["showSendToCloud"] is False
    assert config.get("showEditInChartStudio") is not True and config.get("showLink") is not True
    collect()
    page.goto(f"{base}/device/{POISSY}/air-{POISSY}-0")
    expect(page.locator("#device-chart .main-svg").first).to_be_visible()
    collect()
    page.get_by_role("button", name="Se déconnecter").click()
    expect(page.get_by_label("Identifiant")).to_be_visible()
    collect()
    assert not violations and not console, (violations, console)
    foreign = sorted({url for url in requested if urlsplit(url).netloc != own and urlsplit(url).netloc})
    assert not foreign, foreign
    assert len(requested) > 10  # the recording did see the pages' requests


def _is_csp(message: ConsoleMessage) -> bool:
    return "Content Security Policy" in message.text or "Content-Security-Policy" in message.text
