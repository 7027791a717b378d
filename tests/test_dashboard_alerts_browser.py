"""Staff act on alerts in a real Chromium: list, filter, acknowledge, silence, end a silence.

What the page does must reach the store as the alert evaluator reads it (``alerts.actions``).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from alerts import actions
from dashboards.access import utc_now
from dashboards.i18n import PARIS
from tests.browser_fixtures import sign_in
from tests.dashboard_fixtures import MONTROUGE, POISSY, DashboardEnv
from tests.test_dashboard_browser import browser, page, served  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

SHOTS = Path(os.environ.get("SMARTCITY_TEST_SHOTS", "/tmp/smartcity-shots"))


def look(page: Page, name: str) -> None:  # noqa: F811
    """A screenshot to look at, outside the working tree (docs/screenshots has its own command)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _choose(page: Page, dropdown_id: str, option: str) -> None:  # noqa: F811
    """Pick the option of a Dash dropdown whose text contains ``option``."""
    page.locator(f"#{dropdown_id}").click()
    page.get_by_role("option", name=re.compile(re.escape(option))).first.click()
    page.keyboard.press("Escape")


def test_staff_acknowledge_and_silence_from_the_alerts_page(
    page: Page,  # noqa: F811
    served: tuple[DashboardEnv, str],  # noqa: F811
) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, "/alerts")
    listing = page.locator("#alerts-list")
    expect(listing).to_contain_text("pm25-high")
    expect(listing).to_contain_text("Poissy")
    expect(listing).not_to_contain_text("Montrouge")  # rights hold on the list
    expect(listing).to_contain_text("non acquittée")
    expect(page).to_have_title("Alertes de vos communes — Smartcity")
    look(page, "alerts-fr")

    _choose(page, "alerts-ack-target", "pm25")
    page.get_by_label("Commentaire (facultatif)").fill("Équipe technique sur place")
    page.get_by_role("button", name="Acquitter").press("Enter")
    expect(page.locator("#alerts-ack-result")).to_contain_text("Alerte acquittée")
    expect(listing).to_contain_text("acquittée par poissy")
    expect(listing).to_contain_text("« Équipe technique sur place »")

    until = page.get_by_label("Jusqu’au (JJ/MM/AAAA HH:MM, heure de Paris)")
    expect(until).to_have_value(re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}$"))  # as French writes it
    page.get_by_role("button", name="Mettre en silence").press("Enter")  # no reason: refused, in French
    expect(page.locator("#alerts-silence-result")).to_contain_text("le motif est obligatoire")
    page.get_by_label("Motif (obligatoire)").fill("Remplacement du capteur de la place")
    until.fill("demain")
    page.get_by_role("button", name="Mettre en silence").press("Enter")
    expect(page.locator("#alerts-silence-result")).to_contain_text("par exemple 06/12/2026 18:30")
    tomorrow = (utc_now() + timedelta(days=1)).astimezone(PARIS)
    end = tomorrow.replace(hour=18, minute=30, second=0, microsecond=0)
    until.fill(end.strftime("%d/%m/%Y %H:%M"))
    page.get_by_role("button", name="Mettre en silence").press("Enter")
    expect(page.locator("#alerts-silence-result")).to_contain_text("Silence enregistré")
    expect(page.locator("#alerts-silence-list")).to_contain_text("Remplacement du capteur de la place")
    expect(listing).to_contain_text("en silence jusqu’au")
    look(page, "alerts-acted-fr")

    now = utc_now()
    log = actions.read(env.store, now)
    ack = next(a for a in log.actions if a.kind == "acknowledge")
    assert (ack.insee, ack.rule, ack.user, ack.comment) == (
        POISSY,
        "pm25-high",
        "poissy",
        "Équipe technique sur place",
    )
    quiet = log.silence_of(POISSY, None, now)
    assert quiet is not None and quiet.user == "poissy"
    assert quiet.until == end

    _choose(page, "alerts-unsilence-target", "Poissy")
    page.get_by_role("button", name="Lever le silence").press("Enter")
    expect(page.locator("#alerts-unsilence-result")).to_contain_text("Silence levé")
    expect(page.locator("#alerts-silence-list")).not_to_contain_text("Remplacement")
    assert actions.read(env.store, utc_now()).silence_of(POISSY, None, utc_now()) is None


def test_admin_filters_alerts_by_commune_and_state_in_english(
    page: Page,  # noqa: F811
    served: tuple[DashboardEnv, str],  # noqa: F811
) -> None:
    env, base = served
    account = env.accounts["admin"]
    sign_in(page, base, account.name, account.password, "/alerts")
    expect(page.locator("#alerts-list")).to_be_visible()
    page.goto(f"{base}/alerts?lang=en")
    listing = page.locator("#alerts-list")
    expect(listing).to_contain_text("Montrouge")
    expect(listing).not_to_contain_text("reseau-coupe")  # resolved: not shown among open alerts
    page.get_by_label("All", exact=True).check()
    expect(listing).to_contain_text("reseau-coupe")
    _choose(page, "alerts-commune", "Montrouge")
    expect(listing).to_contain_text("Montrouge")
    expect(listing).not_to_contain_text("Poissy")
    look(page, "alerts-en")
    assert MONTROUGE in page.locator("#alerts-list a").first.get_attribute("href")  # type: ignore[operator]
    page.get_by_label("warning", exact=True).uncheck()  # every stored alert is a warning
    expect(page.locator("#alerts-list caption")).to_have_text("Alerts (0)")
