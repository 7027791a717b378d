"""Sign-in on the Flask server behind Dash: sessions, CSRF-safe form, rate limiting, tokens.

Every request but the sign-in page, static assets and the API (which has its own bearer
tokens) needs a signed-in session. Sessions are Flask's signed cookies, expired server-side by
their signature's timestamp (``PERMANENT_SESSION_LIFETIME``); the user is looked up again in the
users file on every request, so a removed user is out at once.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import flask
from werkzeug.wrappers import Response

from dashboards.access import CommuneData
from dashboards.agents import signed_in_agent
from dashboards.config import DashboardSettings
from dashboards.i18n import Language, language, t
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


@dataclass
class SignInLimiter:
    """Refuses sign-in attempts after too many failures per user name and per client address."""

    max_failures: int
    window_s: float
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, user: str, address: str, now: float | None = None) -> float:
        """Seconds before another attempt is allowed for this user or address (0: allowed now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [
                failures[0] + self.window_s - now
                for key in (f"user:{user}", f"ip:{address}")
                if len(failures := self._recent(key, now)) >= self.max_failures
            ]
        return max(waits, default=0.0)

    def failed(self, user: str, address: str, now: float | None = None) -> None:
        """Record a failed attempt."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for key in (f"user:{user}", f"ip:{address}"):
                self._recent(key, now).append(now)

    def succeeded(self, user: str) -> None:
        """Forget a user's failures once they sign in (the address keeps its count)."""
        with self._lock:
            self._failures.pop(f"user:{user}", None)


@dataclass(frozen=True)
class AppContext:
    """What the server's requests need: the store, settings, registry, users, limiter."""

    store: Store
    settings: DashboardSettings
    registry: CommuneRegistry
    users: UserDirectory
    limiter: SignInLimiter


def app_context() -> AppContext:
    """The context of the Flask app serving the current request."""
    context: AppContext = flask.current_app.extensions[EXTENSION]
    return context


def current_user() -> User | None:
    """The signed-in user of the current request, or None."""
    name = flask.session.get("user")
    context = app_context()
    return context.users.get(name) if isinstance(name, str) else signed_in_agent(context.settings.oidc)


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
    if path.exists():
        return path.read_text("utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret, "utf-8")
    return secret


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
        # cookie after the switch, and the page comes back in the old language. Sessions then
        # last session_max_age_s from sign-in, whatever the activity.
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
        address = flask.request.remote_addr or "?"
        wait = context.limiter.retry_after(name, address)
        if wait > 0:
            minutes = max(1, round(wait / 60))
            return _signin_page(lang, t(lang, "signin.locked", minutes=minutes), next_url, status=429)
        user = context.users.authenticate(name, form.get("password", ""))
        if user is None:
            context.limiter.failed(name, address)
            return _signin_page(lang, t(lang, "signin.failed"), next_url, status=401)
        context.limiter.succeeded(name)
        flask.session.clear()
        flask.session.permanent = True
        flask.session["user"] = user.name
        flask.session["lang"] = lang
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

    @server.get("/logout")
    def signout() -> Response:
        from dashboards.oidc import end_provider_session, id_token_hint

        lang = current_language()
        hint = id_token_hint()
        flask.session.clear()
        flask.session["lang"] = lang
        return end_provider_session(hint) or flask.redirect("/login")

    @server.get("/lang/<code>")
    def switch_language(code: str) -> Response:
        flask.session["lang"] = language(code, settings.default_language)
        return flask.redirect(_safe_next(flask.request.args.get("next")))
