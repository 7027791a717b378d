"""Sign-in on the Flask server behind Dash: sessions, CSRF-safe forms, rate limiting.

Every request but the sign-in page, static assets and the API (which has its own bearer
tokens) needs a signed-in session. The session cookie (Flask's, signed) carries only a random
session id, the language and the sign-in form's CSRF token; the session itself lives in the
workers' shared state (``dashboards.state``), so that signing out, idling too long or reaching
the absolute age ends it in every worker. The user is looked up again in the users file on
every request, and a session ends when that user's password or communes change.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import html
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse

import flask
from werkzeug.wrappers import Response

from dashboards.access import Clock, CommuneData, utc_now
from dashboards.agents import signed_in_agent
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, language, t
from dashboards.signin_limits import SignInLimiter
from dashboards.state import SessionStore, digest
from dashboards.users import User, UserDirectory
from sensors.communes import CommuneRegistry
from storage.base import Store

EXTENSION = "smartcity"
PUBLIC_PREFIXES = (
    "/login",
    "/oidc/",
    "/lang/",
    "/assets/",
    "/api/",
    "/_favicon.ico",
    "/favicon.ico",
    "/healthz",
)


@dataclass(frozen=True)
class AppContext:
    """What the server's requests need: the store, settings, registry, users, limiter, sessions
    and the clock the pages read the time from."""

    store: Store
    settings: DashboardSettings
    registry: CommuneRegistry
    users: UserDirectory
    limiter: SignInLimiter
    sessions: SessionStore
    clock: Clock = utc_now


def app_context() -> AppContext:
    """The context of the Flask app serving the current request."""
    context: AppContext = flask.current_app.extensions[EXTENSION]
    return context


def current_time() -> datetime:
    """Now, by the clock of the app serving the current request (UTC)."""
    return app_context().clock()


def rights_fingerprint(user: User) -> str:
    """What a session remembers of its user's password and rights: when it changes, it ends."""
    text = "\n".join((user.name, user.password_hash, *user.grants))
    return hashlib.sha256(text.encode()).hexdigest()


_NOBODY = object()


def current_user() -> User | None:
    """The signed-in user of the current request, or None (also once the session has ended)."""
    cached = flask.g.get("smartcity_user", _NOBODY)
    if cached is not _NOBODY:
        return cached  # type: ignore[no-any-return]
    user = _session_user()
    flask.g.smartcity_user = user
    return user


def _session_user() -> User | None:
    sid, name = flask.session.get("sid"), flask.session.get("user")
    if not isinstance(sid, str) or not isinstance(name, str):
        return None
    context = app_context()
    record = context.sessions.find(sid)
    if record is None:
        return None
    # A public agent (OpenID Connect) is not in the users file: the settings give its rights.
    agent = signed_in_agent(context.settings.oidc)
    user = agent if agent is not None else context.users.get(name)
    if (
        user is None
        or digest(user.name) != record.user_sha256
        or rights_fingerprint(user) != record.fingerprint
    ):
        context.sessions.end(sid)
        return None
    return user


def start_session(user: User) -> None:
    """Sign ``user`` in on this browser: a new session id (never the one the browser came with)."""
    lang = flask.session.get("lang")
    flask.session.clear()
    flask.session.permanent = True
    flask.session["sid"] = app_context().sessions.start(user.name, rights_fingerprint(user))
    flask.session["user"] = user.name
    if lang:
        flask.session["lang"] = lang
    flask.g.smartcity_user = user


def end_session() -> None:
    """Sign out: the session ends in every worker, whoever holds a copy of the cookie."""
    sid = flask.session.get("sid")
    if isinstance(sid, str):
        app_context().sessions.end(sid)
    lang = flask.session.get("lang")
    flask.session.clear()
    if lang:
        flask.session["lang"] = lang
    flask.g.smartcity_user = None


def signout_token() -> str:
    """The CSRF token the sign-out form carries: bound to the session id, so nothing to store."""
    sid = flask.session.get("sid", "")
    key = str(flask.current_app.secret_key).encode()
    return hmac.new(key, f"signout:{sid}".encode(), hashlib.sha256).hexdigest()


def client_address() -> str:
    """The client's address: the peer's, or the one a trusted proxy reports (ProxyFix)."""
    return flask.request.remote_addr or "?"


def current_data() -> CommuneData:
    """The store as the signed-in user may see it; ``PermissionError`` when nobody is signed in."""
    user = current_user()
    if user is None:
        raise PermissionError("not signed in")
    context = app_context()
    return CommuneData(context.store, user, context.registry)


def current_language() -> Language:
    """The language chosen in this session (``?lang=`` switches it), else the default."""
    context = app_context()
    return language(flask.session.get("lang"), context.settings.default_language)


def load_secret_key(settings: DashboardSettings) -> str:
    """The configured secret, else one generated once and kept (owner-only) next to the users file."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.users_file).parent / "dashboard_secret.key"
    if not path.exists():
        _create_secret_file(path)
    secret = path.read_text("utf-8").strip()
    if not secret:
        raise ValueError(f"{path} is empty: delete it (a new secret is made) or set dashboard.secret_key")
    return secret


def _create_secret_file(path: Path) -> None:
    # Every server worker comes here on a first start: the secret is written whole under another
    # name, then linked in place, which fails if a worker got there first. So all of them read
    # the same complete secret, never an empty or a second one (a cookie would then be valid in
    # one worker only).
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
    finally:
        draft.unlink()


def _safe_next(target: str | None) -> str:
    # Only local paths: never redirect a user to another site after sign-in.
    if not target:
        return "/"
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _signin_page(lang: Language, message: str = "", next_url: str = "/", status: int = 200) -> flask.Response:
    from dashboards.oidc import agent_signin

    token = secrets.token_urlsafe(32)
    flask.session["csrf"] = token
    other: Language = "en" if lang == "fr" else "fr"
    alert = f'<p class="form-error" role="alert">{html.escape(message)}</p>' if message else ""
    page = f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{html.escape(t(lang, "signin.title"))} — Smartcity</title>
<link rel="stylesheet" href="/assets/style.css"></head>
<body class="signin"><main id="content">
<h1>{html.escape(t(lang, "app.title"))}</h1>
<form method="post" action="/login" class="signin-form" aria-labelledby="signin-title">
<h2 id="signin-title">{html.escape(t(lang, "signin.title"))}</h2>
{alert}
<input type="hidden" name="csrf" value="{token}">
<input type="hidden" name="next" value="{html.escape(next_url)}">
<label for="user">{html.escape(t(lang, "signin.user"))}</label>
<input id="user" name="user" autocomplete="username" required autofocus>
<label for="password">{html.escape(t(lang, "signin.password"))}</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">{html.escape(t(lang, "signin.submit"))}</button>
</form>
{agent_signin(lang, next_url)}
<p><a href="/lang/{other}?next=/login" lang="{other}">{html.escape(t(lang, "app.switch_language"))}</a></p>
</main></body></html>"""
    response = flask.make_response(page, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def install(server: flask.Flask, context: AppContext) -> None:
    """Add sign-in, sign-out, language routes and the guard on every other request."""
    settings = context.settings
    server.extensions[EXTENSION] = context
    server.secret_key = load_secret_key(settings)
    server.config.update(
        PERMANENT_SESSION_LIFETIME=settings.session_max_age_s,
        # Only send the session cookie when it changes. Re-sent on every answer, a live page's
        # refresh callback in flight while the user switches language answers with the old
        # cookie after the switch, and the page comes back in the old language. Idle and
        # absolute expiry are the server's (dashboards.state), not the cookie's.
        SESSION_REFRESH_EACH_REQUEST=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies,
    )

    @server.before_request
    def guard() -> Response | None:
        path = flask.request.path
        if "lang" in flask.request.args:
            flask.session["lang"] = language(flask.request.args["lang"], settings.default_language)
        if path.startswith(PUBLIC_PREFIXES):
            return None
        if current_user() is None:
            if path.startswith("/_dash-update-component"):
                return flask.Response("not signed in", status=401)
            return flask.redirect(f"/login?next={flask.request.full_path.rstrip('?')}")
        return None

    @server.get("/login")
    def signin_form() -> flask.Response:
        return _signin_page(current_language(), next_url=_safe_next(flask.request.args.get("next")))

    @server.post("/login")
    def signin() -> Response:
        lang = current_language()
        form = flask.request.form
        next_url = _safe_next(form.get("next"))
        expected = flask.session.pop("csrf", None)
        if not expected or not secrets.compare_digest(str(expected), form.get("csrf", "")):
            return _signin_page(lang, t(lang, "signin.csrf"), next_url, status=400)
        name = form.get("user", "").strip()
        address = client_address()
        wait = context.limiter.retry_after(name, address)
        if wait > 0:
            minutes = max(1, round(wait / 60))
            page = _signin_page(lang, t(lang, "signin.locked", minutes=minutes), next_url, status=429)
            page.headers["Retry-After"] = str(max(1, round(wait)))
            return page
        user = context.users.authenticate(name, form.get("password", ""))
        if user is None:
            context.limiter.failed(name, address)
            return _signin_page(lang, t(lang, "signin.failed"), next_url, status=401)
        context.limiter.succeeded(name, address)
        flask.session["lang"] = lang
        start_session(user)
        return flask.redirect(next_url)

    @server.get("/healthz")
    def healthz() -> Response:
        # For health checks (compose, load balancers): says only whether the store answers,
        # nothing about any commune, so it needs no sign-in.
        health = context.store.health()
        status = 200 if health.ok else 503
        return flask.Response(
            f"{'ok' if health.ok else 'store unavailable'}\n", status=status, mimetype="text/plain"
        )

    @server.post("/logout")
    def signout() -> Response:
        from dashboards.oidc import end_provider_session, id_token_hint

        if not secrets.compare_digest(signout_token(), flask.request.form.get("csrf", "")):
            return flask.Response("sign-out refused: missing or wrong CSRF token\n", status=400)
        hint = id_token_hint()
        end_session()
        return end_provider_session(hint) or flask.redirect("/login", code=303)

    @server.get("/lang/<code>")
    def switch_language(code: str) -> Response:
        flask.session["lang"] = language(code, settings.default_language)
        return flask.redirect(_safe_next(flask.request.args.get("next")))
