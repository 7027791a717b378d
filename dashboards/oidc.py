"""OpenID Connect sign-in of public agents, compatible with ProConnect, through authlib.

The flow is ProConnect's (docs: proconnect-gouv, "Implémentation technique"): authorization code
with ``state``, ``nonce`` and a PKCE S256 challenge, ``acr_values`` asked and the ID token's
``acr`` checked, the ID token verified with the provider's JWKS, then userinfo, which ProConnect
answers as a JWT (``application/jwt``) signed with the same keys and verified the same way. The
agent's e-mail and SIRET are mapped to communes by ``dashboards.agents``; an agent no rule names
gets a clear page and no session. Sign-out ends the provider's session too (``id_token_hint``).

Routes: ``/oidc/login`` (the button), ``/oidc/callback`` (``redirect_uri``), ``/oidc/signed-out``
(``post_logout_redirect_uri``).
"""

from __future__ import annotations

import html
import logging
import secrets
from typing import Any

import flask
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry
from requests import RequestException
from werkzeug.wrappers import Response

from dashboards.agents import SESSION_AGENT, OidcSettings, agent_user
from dashboards.auth import _safe_next, app_context, current_language
from dashboards.i18n import Language, t

log = logging.getLogger("smartcity.dashboard.oidc")

EXTENSION = "smartcity.oidc"
SESSION_ID_TOKEN = "oidc_id_token"
SESSION_NEXT = "oidc_next"
JWT_MEDIA_TYPE = "application/jwt"


class SignInFailed(Exception):
    """The provider's answer could not be trusted; the message is for the operator's log."""


def _random() -> str:
    # ProConnect wants state and nonce of at least 32 characters; authlib's defaults are shorter.
    return secrets.token_urlsafe(32)


def _client() -> Any:
    return flask.current_app.extensions[EXTENSION]


def _settings() -> OidcSettings | None:
    return app_context().settings.oidc


def install(server: flask.Flask, settings: OidcSettings | None) -> None:
    """Add the agents' sign-in routes when a provider is configured."""
    if settings is None:
        return
    oauth = OAuth(server)
    client_kwargs = {"scope": settings.scopes, "token_endpoint_auth_method": "client_secret_post"}
    if settings.pkce:
        client_kwargs["code_challenge_method"] = "S256"
    server.extensions[EXTENSION] = oauth.register(
        name="agents",
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        server_metadata_url=settings.issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs=client_kwargs,
    )

    @server.get("/oidc/login")
    def agent_login() -> Response:
        flask.session[SESSION_NEXT] = _safe_next(flask.request.args.get("next"))
        extra = {"acr_values": settings.acr_values} if settings.acr_values else {}
        redirect_uri = settings.redirect_uri or flask.url_for("agent_callback", _external=True)
        try:
            response: Response = _client().authorize_redirect(
                redirect_uri, state=_random(), nonce=_random(), **extra
            )
        except RequestException as exc:
            log.warning("the OpenID provider did not answer: %s", exc)
            lang = current_language()
            message = t(lang, "agents.unavailable", provider=settings.label)
            return _page(lang, "agents.failed_title", message, 503)
        return response

    @server.get("/oidc/callback")
    def agent_callback() -> Response:
        lang = current_language()
        try:
            token, claims = _verified_identity(settings)
        except (SignInFailed, AuthlibBaseError, JoseError, RequestException, ValueError, KeyError) as exc:
            log.warning("agent sign-in failed: %s", exc)
            return _page(lang, "agents.failed_title", t(lang, "agents.failed", provider=settings.label), 400)
        email, siret = str(claims.get("email", "")), str(claims.get("siret", ""))
        user = agent_user(settings, email, siret)
        if user is None:
            # The SIRET names an organisation, not a person: it is what the operator needs to act.
            log.warning("agent sign-in refused: no rule for SIRET %s", siret or "(none)")
            message = t(lang, "agents.refused", provider=settings.label, email=email, siret=siret or "—")
            return _page(lang, "agents.refused_title", message, 403)
        next_url = _safe_next(flask.session.get(SESSION_NEXT))
        flask.session.clear()
        flask.session.permanent = True
        flask.session[SESSION_AGENT] = {"email": email, "siret": siret}
        flask.session[SESSION_ID_TOKEN] = token["id_token"]
        flask.session["lang"] = lang
        log.info("agent signed in (SIRET %s, communes %s)", siret, ",".join(sorted(user.communes)))
        return flask.redirect(next_url)

    @server.get("/oidc/signed-out")
    def agent_signed_out() -> Response:
        try:
            _client().validate_logout_response()
        except AuthlibBaseError as exc:
            # The local session is already gone; a stale or forged state changes nothing.
            log.info("sign-out return without a known state: %s", exc)
        return flask.redirect("/login")


def _verified_identity(settings: OidcSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token answer and the agent's claims, every signature and binding checked."""
    client = _client()
    acr = settings.acr_values.split() if settings.acr_values else []
    metadata = client.load_server_metadata()
    options: dict[str, Any] = {"iss": {"essential": True, "values": [metadata["issuer"]]}}
    if acr:
        options["acr"] = {"essential": True, "values": acr}
    token: dict[str, Any] = client.authorize_access_token(claims_options=options)
    id_claims = token.get("userinfo")
    if not id_claims:
        raise SignInFailed("the token answer carries no ID token")
    answer = client.get(metadata["userinfo_endpoint"], token=token)
    answer.raise_for_status()
    media_type = answer.headers.get("Content-Type", "").split(";")[0].strip()
    if media_type == JWT_MEDIA_TYPE:
        claims = _verified_userinfo(client, answer.text, metadata, settings.client_id)
    elif settings.signed_userinfo:
        raise SignInFailed(f"userinfo answered {media_type or 'no type'}, not a signed {JWT_MEDIA_TYPE}")
    else:
        claims = dict(answer.json())
    if claims.get("sub") != id_claims.get("sub"):
        raise SignInFailed("userinfo is about another subject than the ID token")
    return token, claims


def _verified_userinfo(client: Any, text: str, metadata: dict[str, Any], client_id: str) -> dict[str, Any]:
    algorithms = metadata.get("userinfo_signing_alg_values_supported") or metadata.get(
        "id_token_signing_alg_values_supported"
    )
    registry = JWSRegistry(algorithms=algorithms)
    try:
        decoded = jwt.decode(text, KeySet.import_key_set(client.fetch_jwk_set()), registry=registry)
    except JoseError:
        # The provider may have rotated its keys since they were fetched.
        decoded = jwt.decode(text, KeySet.import_key_set(client.fetch_jwk_set(force=True)), registry=registry)
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": metadata["issuer"]},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
    ).validate(decoded.claims)
    return dict(decoded.claims)


def _page(lang: Language, title_key: str, message: str, status: int) -> flask.Response:
    title = html.escape(t(lang, title_key))
    page = f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{title} — Smartcity</title>
<link rel="stylesheet" href="/assets/style.css"></head>
<body class="signin"><main id="content">
<h1>{html.escape(t(lang, "app.title"))}</h1>
<h2>{title}</h2>
<p role="alert">{html.escape(message)}</p>
<p><a href="/login">{html.escape(t(lang, "agents.back"))}</a></p>
</main></body></html>"""
    response = flask.make_response(page, status)
    response.headers["Cache-Control"] = "no-store"
    return response


def agent_signin(lang: Language, next_url: str) -> str:
    """The sign-in page's provider button (ProConnect's wording), or nothing when none is configured."""
    settings = _settings()
    if settings is None:
        return ""
    href = html.escape(f"/oidc/login?next={next_url}")
    what = html.escape(t(lang, "agents.what", provider=settings.label))
    button = html.escape(t(lang, "agents.button", provider=settings.label))
    about = (
        f'<p><a href="https://www.proconnect.gouv.fr/" rel="noopener">{what}</a></p>'
        if settings.label == "ProConnect"
        else ""
    )
    return f"""<link rel="stylesheet" href="/assets/agents.css"><div class="agent-signin">
<p class="separator">{html.escape(t(lang, "agents.or"))}</p>
<a class="proconnect-button" href="{href}">{button}</a>
{about}
</div>"""


def id_token_hint() -> str | None:
    """The ID token of an agent's session, kept to end the provider's session at sign-out."""
    hint = flask.session.get(SESSION_ID_TOKEN)
    return hint if isinstance(hint, str) else None


def end_provider_session(hint: str | None) -> Response | None:
    """A redirect that ends the agent's session at the provider too; None for other sessions."""
    settings = _settings()
    if settings is None or hint is None:
        return None
    back = settings.post_logout_redirect_uri or flask.url_for("agent_signed_out", _external=True)
    response: Response = _client().logout_redirect(
        post_logout_redirect_uri=back, id_token_hint=hint, state=_random()
    )
    return response
