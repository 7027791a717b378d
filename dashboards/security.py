"""What the server adds to every answer and request for a security review: headers, proxies, cookies.

- Security headers on every answer: a Content-Security-Policy that lets the pages load only
  from the dashboards' own origin (Dash's inline scripts by their hashes; allowances: Plotly's
  inline styles, and eval for its WebGL traces), ``nosniff``, no referrer to other sites, no
  framing by other sites.
- Client address and scheme from a trusted reverse proxy's ``X-Forwarded-For`` and
  ``X-Forwarded-Proto`` (werkzeug's ``ProxyFix``), only when ``trusted_proxies`` says how many.
- The session cookie is ``Secure`` whenever the request came over HTTPS.
- A forged Dash callback that does not match the app's callback map (outputs, inputs, the
  types of their values) is a 400 saying what is wrong, not a 500 (``callback_check``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import dash
import flask
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from dashboards.callback_check import CallbackRefused, CallbackSpec, callback_spec, check_request
from dashboards.config import DashboardSettings

CALLBACK_PATH = "/_dash-update-component"


def content_security_policy(script_hashes: list[str], form_targets: list[str] | None = None) -> str:
    """The CSP of every answer: own origin only; ``script_hashes`` are Dash's inline scripts.

    ``form_targets`` are the other origins a form may lead to: the OpenID provider, where
    sign-out redirects to end the provider's session too.
    """
    directives = {
        "default-src": ["'self'"],
        # 'unsafe-eval' only for Plotly's WebGL traces (Scattergl): regl compiles its shader
        # glue with Function(). No inline script runs but Dash's own, by hash.
        "script-src": ["'self'", "'unsafe-eval'", *script_hashes],
        # Plotly.js styles its charts with inline style elements and attributes.
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "worker-src": ["'self'", "blob:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'", *(form_targets or [])],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


class _SecureWhenHttps(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, ``Secure`` when the request itself was HTTPS."""

    def get_cookie_secure(self, app: flask.Flask) -> bool:
        return bool(super().get_cookie_secure(app)) or (
            flask.has_request_context() and flask.request.is_secure
        )


def install_security(app: dash.Dash, settings: DashboardSettings) -> None:
    """Headers, proxy trust, cookie flags and the check of callback requests on ``app``'s Flask server.

    The CSP carries the hashes of Dash's inline scripts, computed as Dash adds them.
    """
    server: flask.Flask = app.server
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    server.session_interface = _SecureWhenHttps()
    policies: dict[tuple[str, ...], str] = {}
    provider = urlsplit(settings.oidc.issuer) if settings.oidc else None
    form_targets = [f"{provider.scheme}://{provider.netloc}"] if provider else []

    @server.after_request
    def security_headers(response: Response) -> Response:
        # Dash adds inline scripts (the pages' clientside callbacks) at its first request: hashed
        # then, and again whenever their list changes.
        hashes = tuple(app.csp_hashes())
        policy = policies.get(hashes) or policies.setdefault(
            hashes, content_security_policy(list(hashes), form_targets)
        )
        headers = response.headers
        headers.setdefault("Content-Security-Policy", policy)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if flask.request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    specs: dict[str, CallbackSpec] = {}

    def spec_of(output: str) -> CallbackSpec | None:
        # The map only grows (Dash adds its page router at the first request): cache what is found.
        if output not in specs:
            entry = app.callback_map.get(output)
            if entry is None:
                return None
            specs[output] = callback_spec(entry)
        return specs[output]

    @server.before_request
    def checked_callback() -> Response | None:
        # Dash trusts the body; a forged one would fail inside it with a 500 (or reach a callback
        # with arguments it was not written for). Checked against the callback map first.
        request = flask.request
        if request.path != CALLBACK_PATH or request.method != "POST":
            return None
        try:
            check_request(request.get_json(silent=True), spec_of)
        except CallbackRefused as refused:
            return flask.Response(f"{refused}\n", status=400, mimetype="text/plain")
        return None
