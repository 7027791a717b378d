"""The Dash application: pages, sign-in and the query API on one Flask server."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote

import dash
import flask
from dash import dcc, html
from dash.development.base_component import Component

from dashboards import api, oidc, tokens
from dashboards.access import AccessError, Clock, utc_now
from dashboards.auth import (
    AppContext,
    app_context,
    current_data,
    current_language,
    current_user,
    install,
    signout_token,
)
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, t
from dashboards.pages import accessibility, alerts, commune, device, epci, overview
from dashboards.pages.common import aria
from dashboards.security import install_security
from dashboards.signin_limits import SignInLimiter
from dashboards.state import SessionStore, SQLiteStorage, StateFile
from dashboards.users import UserDirectory
from sensors.communes import CommuneRegistry
from storage.base import Store

ASSETS = Path(__file__).parent / "assets"


class SmartcityDash(dash.Dash):
    """Dash whose page says its language (``<html lang>``), for screen readers and translators."""

    def interpolate_index(self, **kwargs: Any) -> Any:  # type: ignore[override]
        lang = current_language()
        page: str = super().interpolate_index(**kwargs)  # type: ignore[no-untyped-call]
        return page.replace("<html>", f'<html lang="{lang}">', 1)


def overview_title(**_: str) -> str:
    """The overview's browser title, in the user's language."""
    return page_title(t(current_language(), "overview.title"))


def commune_title(insee: str = "", **_: str) -> str:
    """A commune page's browser title: the commune's name, as in the page heading."""
    lang = current_language()
    commune = app_context().registry.get(insee)
    if commune is None:
        return page_title(t(lang, "common.unknown"))
    return page_title(t(lang, "commune.title", name=commune.name, insee=insee))


def device_title(insee: str = "", device_id: str = "", **_: str) -> str:
    """A device page's browser title: the device and its commune."""
    lang = current_language()
    commune = app_context().registry.get(insee)
    name = commune.name if commune else insee
    # Dash hands over the path as the browser sent it: percent-encoded (links.device_href).
    return page_title(t(lang, "device.title", device=unquote(device_id), name=name))


def accessibility_title(**_: str) -> str:
    """The accessibility statement's browser title."""
    return page_title(t(current_language(), "a11y.title"))


def alerts_title(**_: str) -> str:
    """The alerts page's browser title."""
    return page_title(t(current_language(), "alert_desk.title"))


def epci_index_title(**_: str) -> str:
    """The intercommunalities list's browser title."""
    return page_title(t(current_language(), "epci.index_title"))


def epci_title(siren: str = "", **_: str) -> str:
    """An EPCI page's browser title: its name, as in the heading (never one the user may not see)."""
    lang = current_language()
    try:
        found, _communes = current_data().epci(siren)
    except (AccessError, PermissionError):
        return page_title(t(lang, "epci.unknown"))
    return page_title(epci.title(found, lang))


def page_title(what: str) -> str:
    """A browser title: where the user is first, then the application."""
    return f"{what} — Smartcity"


def create_app(
    store: Store, settings: DashboardSettings, registry: CommuneRegistry, clock: Clock = utc_now
) -> dash.Dash:
    """The dashboards over ``store``, signing in the users of ``settings.users_file``.

    The pages read the time from ``clock``: the real one, or, over a store filled for a fixed
    moment (tests, screenshots), that moment, so "today" is the data's day however long they run.

    Several apps may live in one process (tests): callbacks are attached to this app, not to
    Dash's global list, and each request finds its store through its own Flask app.
    """
    server = flask.Flask(__name__)
    state = StateFile(settings.state_path)
    context = AppContext(
        store=store,
        settings=settings,
        registry=registry,
        users=UserDirectory(Path(settings.users_file)),
        limiter=SignInLimiter.from_settings(SQLiteStorage(state), settings),
        sessions=SessionStore(state, idle_s=settings.session_idle_s, max_age_s=settings.session_max_age_s),
        clock=clock,
    )
    install(server, context)
    tokens.install(server, tokens.open_tokens(settings))
    oidc.install(server, settings.oidc)
    server.register_blueprint(api.api)
    app = SmartcityDash(
        __name__,
        server=server,  # type: ignore[arg-type]
        use_pages=True,
        pages_folder="",
        assets_folder=str(ASSETS),
        title="Smartcity",
        update_title=None,  # type: ignore[arg-type]
        suppress_callback_exceptions=True,
        serve_locally=True,
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.overview", path=overview.PATH, layout=overview.layout, title=overview_title
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.commune",
        path_template=commune.PATH_TEMPLATE,
        layout=commune.layout,
        title=commune_title,
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.device",
        path_template=device.PATH_TEMPLATE,
        layout=device.layout,
        title=device_title,
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.accessibility",
        path=accessibility.PATH,
        layout=accessibility.layout,
        title=accessibility_title,
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.alerts", path=alerts.PATH, layout=alerts.layout, title=alerts_title
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.epci_index", path=epci.INDEX_PATH, layout=epci.index_layout, title=epci_index_title
    )
    dash.register_page(  # type: ignore[no-untyped-call]
        "dashboards.pages.epci", path_template=epci.PATH_TEMPLATE, layout=epci.layout, title=epci_title
    )
    app.layout = shell
    for page in (overview, commune, device, alerts, epci):
        page.register_callbacks(app)
    install_security(app, settings)
    set_up_before_serving(app)
    return app


def set_up_before_serving(app: dash.Dash) -> None:
    """Run Dash's first-request set-up now (its assets, scripts, and the pages' router callback).

    Dash runs it as ``before_request`` hooks that mark themselves done before they are: the first
    concurrent requests of a threaded worker raced it (a 500 on ``/login``, callbacks not found).
    """
    with app.server.test_request_context("/"):
        for hook in list(app.server.before_request_funcs.get(None, [])):
            if getattr(hook, "__name__", "") in {"_setup_server", "router_sync"}:
                hook()


def shell() -> Component:
    """Header (skip link, navigation, language, user) around the current page."""
    lang = current_language()
    user = current_user()
    other: Language = "en" if lang == "fr" else "fr"
    return html.Div(
        [
            html.A(t(lang, "app.skip"), href="#content", className="skip-link"),
            html.Header(
                [
                    html.Nav(
                        [
                            dcc.Link(t(lang, "app.title"), href="/", className="brand"),
                            dcc.Link(t(lang, "nav.overview"), href="/"),
                            dcc.Link(t(lang, "alert_desk.nav"), href=alerts.PATH),
                            dcc.Link(t(lang, "epci.nav"), href=epci.INDEX_PATH),
                        ],
                        **aria(label=t(lang, "a11y.main_nav")),
                    ),
                    html.Div(
                        [
                            # A full page load, so every component is rebuilt in the new language.
                            html.A(
                                t(lang, "app.switch_language"),
                                href=f"?lang={other}",
                                lang=other,
                                id="language-switch",
                                **aria(label=f"{t(lang, 'app.language')} : {t(lang, 'app.switch_language')}"),
                            ),
                            html.Span(
                                t(lang, "app.signed_in_as", user=user.name) if user else "", className="user"
                            ),
                            # A POST with a CSRF token: a link or an image elsewhere cannot sign out.
                            html.Form(
                                [
                                    dcc.Input(type="hidden", name="csrf", value=signout_token()),
                                    html.Button(t(lang, "app.sign_out"), type="submit", id="sign-out"),
                                ],
                                method="post",
                                action="/logout",
                                className="signout",
                            ),
                        ],
                        className="session",
                    ),
                ],
                className="topbar",
            ),
            dash.page_container,
            # Not a <footer>: Dash's page already has one (its scripts), and a page has one contentinfo.
            html.Nav(
                dcc.Link(t(lang, "a11y.footer"), href=accessibility.PATH, id="accessibility-link"),
                className="footer",
                **aria(label=t(lang, "a11y.title")),
            ),
        ],
        lang=lang,
    )
