"""Public agents sign in through a real OpenID Connect provider behaving as ProConnect, in Chromium.

The provider (tests/oidc_fixtures.py) answers userinfo as a signed JWT, puts the asked ``acr``
in the ID token and checks PKCE; the dashboards map each agent to communes by the settings.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from dashboards.agents import OidcSettings, agent_communes
from tests.dashboard_fixtures import MONTROUGE, POISSY, DashboardEnv, make_env, served_in_thread
from tests.oidc_fixtures import CLIENT_ID, CLIENT_SECRET, Provider, _challenge, proconnect_like_provider
from tests.test_dashboard_browser import browser, page

pytestmark = pytest.mark.slow
__all__ = ["browser", "page"]

POISSY_TOWN_HALL = "21780498300019"
JEANNE = (
    "jeanne",
    {"email": "jeanne.martin@ville-poissy.fr", "siret": POISSY_TOWN_HALL, "usual_name": "Martin"},
)
PAUL = ("paul", {"email": "paul.durand@montrouge.fr", "siret": "21920049500011", "usual_name": "Durand"})
STRANGER = ("inconnu", {"email": "a.b@ministere.gouv.fr", "siret": "13002526500013", "usual_name": "B"})


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    # Local tests speak plain HTTP to the provider; ProConnect itself is HTTPS only.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
        with proconnect_like_provider([JEANNE, PAUL, STRANGER]) as running:
            yield running


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, provider: Provider
) -> Iterator[tuple[DashboardEnv, str]]:
    assert os.environ.get("AUTHLIB_INSECURE_TRANSPORT") == "1"
    oidc = {
        "issuer": provider.issuer,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "agents_by_siret": {POISSY_TOWN_HALL: [POISSY]},
        "agents_by_email": {"@montrouge.fr": [MONTROUGE]},
    }
    env = make_env(tmp_path_factory.mktemp("agents"), refresh_s=600, oidc=oidc)
    with served_in_thread(env.app.server) as base:
        yield env, base
    env.store.close()


def sign_in_as(page: Page, base: str, sub: str) -> None:
    page.goto(f"{base}/")
    # Keyboard only: from the password field, past the password form's button, to ProConnect's.
    page.get_by_label("Mot de passe").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="S’identifier avec ProConnect")).to_be_focused()
    page.keyboard.press("Enter")
    page.get_by_role("button", name=sub, exact=True).click()


def test_an_agent_signs_in_sees_the_communes_of_the_siret_and_signs_out_of_both(
    page: Page, served: tuple[DashboardEnv, str], provider: Provider
) -> None:
    _, base = served
    page.goto(f"{base}/")
    expect(page.get_by_role("link", name="S’identifier avec ProConnect")).to_be_visible()
    expect(page.get_by_role("link", name="Qu’est-ce que ProConnect ?")).to_be_visible()
    sign_in_as(page, base, "jeanne")
    expect(page).to_have_url(f"{base}/")
    table = page.locator("#overview-table")
    expect(table).to_contain_text("Poissy (78498)")
    expect(table).not_to_contain_text("Montrouge")
    expect(page.locator(".user")).to_contain_text("jeanne.martin@ville-poissy.fr")

    asked = provider.seen.authorizations[-1]
    assert asked["code_challenge_method"] == "S256" and asked["acr_values"] == "eidas1"
    assert {"openid", "email", "siret", "usual_name", "given_name"} <= set(asked["scope"].split())
    assert len(asked["state"]) >= 32 and len(asked["nonce"]) >= 32  # ProConnect's minimum
    token_request = provider.seen.token_requests[-1]
    assert _challenge(token_request["code_verifier"]) == asked["code_challenge"]
    assert token_request["client_secret"] == CLIENT_SECRET

    page.locator("#sign-out").click()
    expect(page.get_by_role("button", name="End session")).to_be_visible()
    ended = provider.seen.sign_outs[-1]
    assert ended["id_token_hint"].count(".") == 2
    assert ended["post_logout_redirect_uri"] == f"{base}/oidc/signed-out" and len(ended["state"]) >= 32
    page.get_by_role("button", name="End session").click()
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")


def test_an_agent_is_let_in_by_the_domain_of_the_address(
    page: Page, served: tuple[DashboardEnv, str]
) -> None:
    _, base = served
    sign_in_as(page, base, "paul")
    table = page.locator("#overview-table")
    expect(table).to_contain_text("Montrouge")
    expect(table).not_to_contain_text("Poissy")


def test_an_unknown_agent_gets_a_clear_french_page_and_no_session(
    page: Page, served: tuple[DashboardEnv, str]
) -> None:
    _, base = served
    sign_in_as(page, base, "inconnu")
    expect(page.get_by_role("heading", name="Accès non autorisé")).to_be_visible()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("n’a pas accès à ces tableaux de bord")
    expect(alert).to_contain_text("13002526500013")
    page.get_by_role("link", name="Retour à la page de connexion").click()
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")


@pytest.mark.parametrize(
    "fault",
    [
        {"sign_userinfo": False},  # userinfo as plain JSON, not a signed JWT
        {"acr": "eidas0"},  # an ID token below the asked assurance level
    ],
)
def test_an_untrustworthy_answer_of_the_provider_is_refused(
    page: Page, served: tuple[DashboardEnv, str], provider: Provider, fault: dict[str, object]
) -> None:
    _, base = served
    with pytest.MonkeyPatch.context() as patch:
        for name, value in fault.items():
            patch.setattr(provider, name, value)
        sign_in_as(page, base, "jeanne")
        expect(page.get_by_role("heading", name="Connexion impossible")).to_be_visible()
        page.goto(f"{base}/")
        expect(page).to_have_url(f"{base}/login?next=/")


@pytest.mark.parametrize(
    ("email", "siret", "communes"),
    [
        ("Jeanne.Martin@Ville-Poissy.fr", "", {POISSY}),
        ("x@montrouge.fr", POISSY_TOWN_HALL, {POISSY, MONTROUGE}),
        ("chef@prefecture.gouv.fr", "", {"*"}),
        ("x@elsewhere.fr", "13002526500013", set()),
        ("x@elsewhere.fr", "", set()),
    ],
)
def test_agents_rights_come_from_the_address_its_domain_and_the_siret(
    email: str, siret: str, communes: set[str]
) -> None:
    settings = OidcSettings(
        issuer="https://proconnect.example/api/v2",
        client_id="id",
        client_secret="secret",
        agents_by_email={
            "jeanne.martin@ville-poissy.fr": [POISSY],
            "@montrouge.fr": [MONTROUGE],
            "chef@prefecture.gouv.fr": ["*", POISSY],
        },
        agents_by_siret={POISSY_TOWN_HALL: [POISSY]},
    )
    assert agent_communes(settings, email, siret) == communes


def test_a_siret_rule_needs_fourteen_digits() -> None:
    with pytest.raises(ValueError, match="a SIRET has 14 digits: 2178049"):
        OidcSettings(
            issuer="https://p", client_id="i", client_secret="s", agents_by_siret={"2178049": [POISSY]}
        )


def test_the_provider_must_be_reached_over_https() -> None:
    with pytest.raises(ValueError, match="the issuer must be an https:// URL"):
        OidcSettings(issuer="http://proconnect.example/api/v2", client_id="i", client_secret="s")


def test_a_provider_that_does_not_answer_and_a_callback_without_sign_in_are_explained(
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    oidc = {"issuer": f"http://127.0.0.1:{closed}", "client_id": "i", "client_secret": "s"}
    env = make_env(tmp_path, oidc=oidc)
    try:
        client = env.app.server.test_client()
        down = client.get("/oidc/login?next=/")
        assert down.status_code == 503
        assert "ProConnect ne répond pas pour le moment" in down.get_data(as_text=True)
        # A callback nobody started (a replayed or forged link) opens no session.
        forged = client.get("/oidc/callback?code=stolen&state=" + "x" * 43)
        assert forged.status_code == 400
        assert "La connexion avec ProConnect n’a pas abouti" in forged.get_data(as_text=True)
        assert client.get("/", follow_redirects=False).headers["Location"] == "/login?next=/"
    finally:
        env.store.close()
