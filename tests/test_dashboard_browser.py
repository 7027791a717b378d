"""The pages in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The app is served by werkzeug in a thread over a DuckDB store filled by the test. Accessibility
is checked with axe-core (axe-playwright-python) on every page in both languages, and the main
journeys are walked with the keyboard alone. Screenshots are not taken here: ``python -m
bench.screenshots`` regenerates docs/screenshots, so the tests leave the working tree alone.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from dashboards.i18n import PARIS
from dashboards.views import atmo_text, paris_day_start
from storage.base import TIME
from tests.browser_fixtures import DESKTOP, PHONE, chromium, serving, sign_in
from tests.dashboard_fixtures import GPSEO, MONTROUGE, POISSY, DashboardEnv, add_grouped_user, make_env

# A real browser against a real server: a few minutes, so marked slow (CI still runs it).
pytestmark = pytest.mark.slow

TIMEOUT_MS = 60_000  # the machine running CI may be loaded: conditions, not sleeps
expect.set_options(timeout=TIMEOUT_MS)
LOCALES = Path(__file__).resolve().parent.parent / "dashboards" / "locales"
DEVICE = f"air-{POISSY}-0"
PAGES = {
    "overview": "/",
    "commune": f"/commune/{POISSY}",
    "device": f"/device/{POISSY}/{DEVICE}",
    "statement": "/accessibilite",
    "forbidden": f"/commune/{MONTROUGE}",
    "epci_index": "/epci",
    "epci": f"/epci/{GPSEO}",
}
"""Every page a signed-in user can open (the sign-in form is checked on its own)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DashboardEnv, str]]:
    env = make_env(tmp_path_factory.mktemp("browser"), refresh_s=600)
    env.accounts["gpseo"] = add_grouped_user(Path(env.settings.users_file), "gpseo", epci=[GPSEO])
    with serving(env) as base:
        yield env, base
    env.store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        with chromium() as launched:
            yield launched
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, locale="fr-FR", accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    yield opened
    context.close()


def open_page(page: Page, base: str, name: str) -> None:
    """Go to one of ``PAGES`` and wait until its content is drawn."""
    page.goto(f"{base}{PAGES[name]}")
    ready = {
        "overview": "#overview-table",
        "commune": "#commune-devices",
        "device": "#device-anomaly-table",
        "statement": "h2",
        "forbidden": "#forbidden",
        "epci_index": "#epci-index",
        "epci": "#epci-table",
    }[name]
    expect(page.locator(ready).first).to_be_visible()
    if name in ("commune", "device", "epci"):
        expect(page.locator(".chart-summary").first).to_be_visible()


def switch_language(page: Page, base: str, lang: str) -> None:
    page.goto(f"{base}/?lang={lang}")
    expect(page.locator("html")).to_have_attribute("lang", lang)


def test_sign_in_page_refuses_a_wrong_password(page: Page, served: tuple[DashboardEnv, str]) -> None:
    _, base = served
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")
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
    # A MapLibre map (no tiles: basemap "none" in the tests), with its text alternative.
    expect(page.locator("#overview-map .maplibregl-canvas")).to_be_visible()
    expect(page.locator("#overview-map-alt")).to_contain_text("Poissy — ")
    # MapLibre names its canvas in English ("Map") whatever the page's language.
    expect(page.locator("#overview-map .maplibregl-canvas")).to_have_attribute("aria-label", "Carte")


def test_admin_overview_and_commune_page_with_stored_data(
    page: Page, served: tuple[DashboardEnv, str]
) -> None:
    env, base = served
    account = env.accounts["admin"]
    sign_in(page, base, account.name, account.password)
    expect(page.locator("#overview-table")).to_contain_text("Montrouge (92049)")
    page.get_by_role("link", name="Poissy (78498)").click()
    expect(page).to_have_url(f"{base}/commune/{POISSY}")
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    # The chart draws the stored aggregates: plotly renders its traces into the SVG/WebGL layers.
    expect(page.locator("#commune-chart .legendtext").first).to_be_visible()
    expect(page.locator("#commune-chart-box")).to_contain_text("moyenne")
    devices = page.locator("#commune-devices")
    expect(devices).to_contain_text(f"air-{POISSY}-0")
    expect(devices).to_contain_text("en ligne")
    expect(page.locator("#commune-alerts")).to_contain_text("pm25-high")
    expect(page.locator("#commune-anomalies")).to_contain_text("pic")
    with page.expect_download() as downloading:
        page.get_by_role("button", name="Exporter en CSV").click()
    raw = Path(downloading.value.path()).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: French Excel reads the accents
    exported = pl.read_csv(raw, separator=";", decimal_comma=True, schema_overrides={"insee": pl.String})
    assert exported.columns[1:3] == ["insee", "pm25_mean"]
    assert exported.height > 0 and set(exported.get_column("insee")) == {POISSY}
    # Switch the range with the keyboard: focus the "7 derniers jours" radio and select it.
    page.get_by_role("radio", name="7 derniers jours").focus()
    page.keyboard.press("Space")
    expect(page.locator("#commune-chart-box")).to_contain_text("par 15 minutes")
    page.get_by_role("link", name=f"air-{POISSY}-0").first.click()
    expect(page.locator("#device-chart-box")).to_contain_text("mesures brutes")
    expect(page.locator("#device-chart .legendtext", has_text="Anomalies")).to_be_visible()


def test_switching_language(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, target=f"/commune/{POISSY}")
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    page.locator("#language-switch").click()
    expect(page.locator("#commune-devices")).to_contain_text("Device status")
    expect(page.get_by_role("radio", name="Last 7 days")).to_be_visible()
    expect(page.locator("#commune-chart-box")).to_contain_text("mean")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.locator("#language-switch").click()
    expect(page.locator("#commune-devices")).to_contain_text("État des capteurs")
    expect(page.locator("html")).to_have_attribute("lang", "fr")


def test_expired_session_sends_back_to_sign_in(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password, target=f"/commune/{POISSY}")
    expect(page.locator("#commune-devices")).to_contain_text(f"air-{POISSY}-0")
    page.context.clear_cookies()  # as when the session has expired
    page.get_by_role("radio", name="3 dernières heures").click()
    expect(page).to_have_url(f"{base}/login?next=%2Fcommune%2F{POISSY}")
    page.get_by_label("Identifiant").fill(account.name)
    page.get_by_label("Mot de passe").fill(account.password)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/commune/{POISSY}")  # back where the user was
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    page.get_by_role("button", name="Se déconnecter").click()
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
    # The device page of a Montrouge device is refused the same way.
    page.goto(f"{base}/device/{MONTROUGE}/air-{MONTROUGE}-0")
    expect(page.locator("#forbidden")).to_contain_text("Accès refusé")


@pytest.mark.parametrize(
    ("lang", "titles"),
    [
        (
            "fr",
            {
                "overview": "Vue d’ensemble des communes — Smartcity",
                "commune": "Poissy (78498) — Smartcity",
                "device": f"Capteur {DEVICE} — Poissy — Smartcity",
                "statement": "Déclaration d’accessibilité — Smartcity",
                "epci": "Intercommunalité : CU Grand Paris Seine et Oise — Smartcity",
            },
        ),
        (
            "en",
            {
                "overview": "Communes overview — Smartcity",
                "commune": "Poissy (78498) — Smartcity",
                "device": f"Device {DEVICE} — Poissy — Smartcity",
                "statement": "Accessibility statement — Smartcity",
                "epci": "Intercommunality: CU Grand Paris Seine et Oise — Smartcity",
            },
        ),
    ],
)
def test_every_page_says_its_language_and_where_the_user_is(
    page: Page, served: tuple[DashboardEnv, str], lang: str, titles: dict[str, str]
) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password)
    switch_language(page, base, lang)
    for name, title in titles.items():
        open_page(page, base, name)
        expect(page.locator("html")).to_have_attribute("lang", lang)
        expect(page).to_have_title(title)
    # Titles follow in-app navigation too, not only full page loads.
    open_page(page, base, "overview")
    page.get_by_role("link", name="Poissy (78498)").click()
    expect(page).to_have_title(titles["commune"])


def axe_problems(page: Page) -> list[str]:
    """The serious and critical axe-core violations on the page, one line each."""
    results = Axe().run(page)
    return [
        f"{v['impact']} {v['id']}: {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_no_serious_or_critical_axe_violation_on_any_page(
    page: Page, served: tuple[DashboardEnv, str], lang: str
) -> None:
    env, base = served
    problems: dict[str, list[str]] = {}
    page.goto(f"{base}/login?lang={lang}")
    expect(page.locator("#user")).to_be_visible()
    problems["signin"] = axe_problems(page)
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password)
    for name in PAGES:
        open_page(page, base, name)
        problems[name] = axe_problems(page)
        if name == "commune":
            # The open "see the data" table and another tab's content are checked too.
            page.locator("#commune-chart-alt summary").click()
            page.get_by_role("tab", name="Trafic" if lang == "fr" else "Traffic").click()
            expect(page.locator("#commune-chart-alt table")).to_be_visible()
            problems["commune, data shown"] = axe_problems(page)
    assert not any(problems.values()), {name: found for name, found in problems.items() if found}


def focused(page: Page) -> dict[str, Any]:
    """The focused element: its text, role, id and whether its focus ring is visible."""
    result: dict[str, Any] = page.evaluate(
        """() => {
            const e = document.activeElement;
            const style = getComputedStyle(e);
            return {text: (e.innerText || e.value || '').trim(), role: e.getAttribute('role'),
                    id: e.id, outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2};
        }"""
    )
    return result


def tab_to(page: Page, text: str, limit: int = 80) -> dict[str, Any]:
    """Press Tab until the focused element's text is ``text``; every stop must show its focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        now = focused(page)
        assert now["outline"], f"focus not visible on {now}"
        if now["text"] == text:
            return now
    raise AssertionError(f"{text!r} not reached with {limit} presses of Tab")


def test_main_journey_with_the_keyboard_alone(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    page.goto(f"{base}/")
    expect(page.locator("#user")).to_be_focused()  # the form puts the focus there: wait for it
    page.keyboard.type(account.name)
    page.keyboard.press("Tab")
    page.keyboard.type(account.password)
    page.keyboard.press("Enter")
    expect(page.locator("#overview-table")).to_be_visible()
    # The skip link comes first and leads to the content.
    assert tab_to(page, "Aller au contenu", limit=1)
    tab_to(page, "Poissy (78498)")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Poissy (78498)")).to_be_visible()
    expect(page.locator("#commune-chart-box .chart-summary")).to_be_visible()
    # The family tabs: one Tab stop, arrows move and select, as ARIA tabs do.
    tab = tab_to(page, "Qualité de l’air")
    assert tab["role"] == "tab"
    page.keyboard.press("ArrowRight")
    traffic = page.get_by_role("tab", name="Trafic")
    expect(traffic).to_be_focused()
    expect(traffic).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Qualité de l’air")).to_have_attribute("aria-selected", "false")
    expect(page.get_by_role("radio", name="Débit (véhicules)")).to_be_visible()
    expect(page.locator("#commune-chart-label")).to_contain_text("Débit (véhicules)")
    page.keyboard.press("End")
    expect(page.get_by_role("tab", name="Réseau")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Home")
    expect(page.get_by_role("tab", name="Qualité de l’air")).to_have_attribute("aria-selected", "true")
    expect(page.locator("#commune-chart-label")).to_contain_text("PM2,5")
    # Another field, by arrows in the field radio group.
    tab_to(page, "PM2,5")
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("radio", name="PM10")).to_have_attribute("aria-checked", "true")
    expect(page.locator("#commune-chart-label")).to_contain_text("PM10")
    # The data table of the chart opens with the keyboard.
    tab_to(page, "Voir les données")
    page.keyboard.press("Enter")
    expect(page.locator("#commune-chart-alt table")).to_be_visible()
    # Export with the keyboard.
    tab_to(page, "Exporter en CSV")
    with page.expect_download() as downloading:
        page.keyboard.press("Enter")
    assert downloading.value.suggested_filename.startswith(f"{POISSY}_air_quality_pm10_")
    # A device, then the accessibility statement.
    tab_to(page, DEVICE)
    page.keyboard.press("Enter")
    expect(page.locator("#device-chart-box .chart-summary")).to_be_visible()
    tab_to(page, "Accessibilité : partiellement conforme", limit=200)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Déclaration d’accessibilité")).to_be_visible()


def test_range_radios_and_date_inputs_show_their_focus(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password)
    open_page(page, base, "commune")
    seven_days = page.get_by_role("radio", name="7 derniers jours")
    seven_days.focus()
    assert focused(page)["outline"]
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("radio", name="30 derniers jours")).to_have_attribute("aria-checked", "true")
    page.get_by_label("Du (JJ/MM/AAAA)").focus()
    assert focused(page)["outline"], "the date input hides its focus"
    # Chosen dates, typed in French: whole Paris days.
    today = env.scenario.now.astimezone(PARIS).date()
    first, last = today - timedelta(days=3), today - timedelta(days=1)
    page.get_by_role("radio", name="Dates choisies").click()
    page.get_by_label("Du (JJ/MM/AAAA)").fill(first.strftime("%d/%m/%Y"))
    page.keyboard.press("Enter")  # the first day alone: nothing changes yet
    page.get_by_label("Au (JJ/MM/AAAA)").fill("pas une date")
    page.keyboard.press("Enter")
    expect(page.locator("#commune-range-error")).to_contain_text("« pas une date » n’est pas une date")
    page.get_by_label("Au (JJ/MM/AAAA)").fill(last.isoformat())  # ISO 8601 is understood too
    page.keyboard.press("Enter")
    expect(page.locator("#commune-range-error")).to_be_empty()
    # The data ends with the last chosen day (the fixtures' data starts at a whole hour of the first).
    expect(page.locator("#commune-chart-alt .chart-summary")).to_contain_text(f"au {last:%d/%m/%Y} 23:45")


def test_charts_have_a_text_alternative_with_their_data(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password)
    open_page(page, base, "commune")
    box = page.locator("#commune-chart-box")
    expect(box).to_have_attribute("role", "figure")
    summary = page.locator("#commune-chart-alt .chart-summary")
    expect(summary).to_contain_text("moyenne")
    expect(summary).to_contain_text(re.compile(r"maximum \d+,\d"))  # decimal comma
    page.locator("#commune-chart-alt summary").click()
    rows = page.locator("#commune-chart-alt tbody tr")
    expect(rows.first).to_be_visible()
    assert rows.count() > 10
    expect(page.locator("#commune-chart-alt thead")).to_contain_text("heure de Paris")
    expect(page.locator("#commune-atmo-alt .chart-summary")).to_contain_text("/")
    # Plotly's tools: only those a keyboard can use are left, with French names.
    page.locator("#commune-chart").hover()
    buttons = page.locator("#commune-chart .modebar-btn")
    assert buttons.count() <= 2
    expect(
        page.locator('#commune-chart .modebar-btn[data-title="Télécharger le graphique en fichier PNG"]')
    ).to_have_count(1)


def english_words() -> set[str]:
    """Words of the English catalogue that the French catalogue never uses."""

    def words(lang: str) -> set[str]:
        catalog = tomllib.loads((LOCALES / f"{lang}.toml").read_text("utf-8"))
        found: set[str] = set()

        def walk(node: dict[str, Any]) -> None:
            for value in node.values():
                if isinstance(value, dict):
                    walk(value)
                else:
                    found.update(
                        w.lower() for w in re.findall(r"[A-Za-z]{3,}", re.sub(r"\{\w+\}", "", str(value)))
                    )

        walk(catalog)
        return found

    return words("en") - words("fr")


PAGE_TEXT = """() => {
    const parts = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
        const parent = walker.currentNode.parentElement;
        if (parent && !parent.closest('script, style, noscript')) parts.push(walker.currentNode.textContent);
    }
    for (const e of document.querySelectorAll('[aria-label], [title], [data-title], [placeholder], [alt]')) {
        for (const name of ['aria-label', 'title', 'data-title', 'placeholder', 'alt']) {
            if (e.hasAttribute(name)) parts.push(e.getAttribute(name));
        }
    }
    parts.push(document.title);
    return parts.join(' ');
}"""


def test_french_pages_have_no_english_words(page: Page, served: tuple[DashboardEnv, str]) -> None:
    env, base = served
    english = english_words()
    assert {"device", "status", "warning", "vehicles"} <= english  # the scan can find what it must
    found: dict[str, set[str]] = {}

    def scan(name: str) -> None:
        text = page.evaluate(PAGE_TEXT)
        words = {w.lower() for w in re.findall(r"[A-Za-z]{3,}", text)}
        if words & english:
            found[name] = words & english

    page.goto(f"{base}/login")
    expect(page.locator("#user")).to_be_visible()
    scan("signin")
    account = env.accounts["poissy"]
    sign_in(page, base, account.name, account.password)
    for name in PAGES:
        open_page(page, base, name)
        page.mouse.move(400, 500)  # shows Plotly's tools, when there is a chart there
        scan(name)
    open_page(page, base, "commune")
    for family in ("Trafic", "Bâtiments", "Caméras", "Réseau"):
        page.get_by_role("tab", name=family).click()
        expect(page.locator("#commune-chart-label")).not_to_contain_text("PM2,5")
        page.locator("#commune-chart").hover()  # Plotly's tools and tooltips
        scan(f"commune, {family}")
    assert not found, found


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_phone_width_needs_no_horizontal_scroll(
    browser: Browser, served: tuple[DashboardEnv, str], lang: str
) -> None:
    env, base = served
    context = browser.new_context(viewport=PHONE, locale="fr-FR", device_scale_factor=1)
    context.set_default_timeout(TIMEOUT_MS)
    phone = context.new_page()
    try:
        account = env.accounts["poissy"]
        sign_in(phone, base, account.name, account.password)
        switch_language(phone, base, lang)
        for name in PAGES:
            open_page(phone, base, name)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name} is {width} px wide at {PHONE['width']} px"
        open_page(phone, base, "commune")
        # The chart's title wraps in HTML instead of being cut off by the SVG.
        label = phone.locator("#commune-chart-label")
        box = label.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    finally:
        context.close()


def test_an_epci_user_compares_its_member_communes_with_the_keyboard(
    page: Page, served: tuple[DashboardEnv, str]
) -> None:
    env, base = served
    account = env.accounts["gpseo"]
    sign_in(page, base, account.name, account.password)
    # The overview lists the served members; the nav leads to the intercommunality, by keyboard.
    expect(page.locator("#overview-table")).to_contain_text("Conflans-Sainte-Honorine (78172)")
    expect(page.locator("#overview-table")).not_to_contain_text("Montrouge")
    tab_to(page, "Intercommunalités")
    page.keyboard.press("Enter")
    expect(page.locator("#epci-index")).to_contain_text("CU Grand Paris Seine et Oise")
    tab_to(page, "CU Grand Paris Seine et Oise")
    page.keyboard.press("Enter")
    table = page.locator("#epci-table")
    for name in ("Poissy (78498)", "Conflans-Sainte-Honorine (78172)", "Achères (78005)", "Andrésy (78015)"):
        expect(table).to_contain_text(name)
    expect(table).not_to_contain_text("Montrouge")
    # The chart says in words what it draws: each commune and its ATMO class.
    today = env.scenario.atmo.filter(
        (pl.col("insee") == POISSY) & (pl.col(TIME) == paris_day_start(env.scenario.now).astimezone(UTC))
    )
    expect(page.locator("#epci-atmo-alt")).to_contain_text(
        f"Poissy : {atmo_text(today['index'].item(), 'fr')}"
    )
    # Another EPCI is refused, and its communes never shown.
    page.goto(f"{base}/epci/200054781")
    expect(page.locator("#forbidden")).to_contain_text("Accès refusé")
    expect(page.locator("body")).not_to_contain_text("Montrouge")
