"""Screenshots of every page, French and English, desktop and phone width, into docs/screenshots.

    .venv/bin/python -m bench.screenshots [--out docs/screenshots]

The pages are served over a DuckDB store filled with the dashboard tests' fabricated data (no
basemap: this machine has no internet), and shot in Debian's Chromium. The tests never write
these files; run this command after changing what a page shows, then look at the images.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.browser_fixtures import DESKTOP, PHONE, chromium, serving, sign_in
from tests.dashboard_fixtures import GPSEO, MONTROUGE, POISSY, DashboardEnv, add_grouped_user, make_env

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
PAGES = {
    "overview": ("/", "#overview-table"),
    "commune": (f"/commune/{POISSY}", "#commune-chart-alt .chart-summary"),
    "device": (f"/device/{POISSY}/air-{POISSY}-0", "#device-chart-alt .chart-summary"),
    "alerts": ("/alerts", "#alerts-list"),
    "statement": ("/accessibilite", "h2"),
    "forbidden": (f"/commune/{MONTROUGE}", "#forbidden"),
}
"""Name, path and what shows the page is drawn; the sign-in form is shot before signing in."""
EPCI_PAGES = {
    "epci_index": ("/epci", "#epci-index"),
    "epci": (f"/epci/{GPSEO}", "#epci-table"),
}
"""The intercommunality pages, shot as a user granted the CU Grand Paris Seine et Oise."""
SIZES: dict[str, ViewportSize] = {"desktop": DESKTOP, "phone": PHONE}
TIMEOUT_MS = 120_000


def shoot(browser: Browser, base: str, env: DashboardEnv, out: Path) -> list[Path]:
    """Every page in both languages and both sizes; the paths written."""
    written = []
    for lang in ("fr", "en"):
        for size, viewport in SIZES.items():
            for user, pages in (("poissy", PAGES), ("gpseo", EPCI_PAGES)):
                context = browser.new_context(viewport=viewport, locale="fr-FR")
                context.set_default_timeout(TIMEOUT_MS)
                page = context.new_page()
                page.goto(f"{base}/login?lang={lang}")
                expect(page.locator("#user")).to_be_visible()
                if user == "poissy":
                    written.append(save(page, out, "signin", lang, size))
                account = env.accounts[user]
                sign_in(page, base, account.name, account.password)
                for name, (path, ready) in pages.items():
                    page.goto(f"{base}{path}")
                    expect(page.locator(ready).first).to_be_visible()
                    if name == "overview":
                        expect(page.locator("#overview-map .maplibregl-canvas")).to_be_visible()
                    written.append(save(page, out, name, lang, size))
                context.close()
    return written


def save(page: Page, out: Path, name: str, lang: str, size: str) -> Path:
    """A full-page screenshot named ``<page>_<lang>_<size>.png``."""
    path = out / f"{name}_{lang}_{size}.png"
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(path), full_page=True)
    return path


def main() -> None:
    """Regenerate the screenshots."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the PNG files")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    expect.set_options(timeout=TIMEOUT_MS)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as directory:
        env = make_env(Path(directory), refresh_s=3600)
        env.accounts["gpseo"] = add_grouped_user(Path(env.settings.users_file), "gpseo", epci=[GPSEO])
        try:
            with serving(env) as base, chromium() as browser:
                for path in shoot(browser, base, env, args.out):
                    print(path)
        finally:
            env.store.close()


if __name__ == "__main__":
    main()
