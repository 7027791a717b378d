"""A real OpenID Connect provider for the agents' sign-in tests, behaving as ProConnect does.

The provider is oidc-provider-mock (a Flask app on authlib's authorization server), served on a
free port. Version 0.3 of it leaves out three things ProConnect does, so they are added on its
own Flask app, with its own signing key: it answers userinfo as a signed JWT
(``application/jwt``, with ``iss`` and ``aud``), it puts the asked ``acr`` in the ID token, and it
refuses a token request whose PKCE ``code_verifier`` does not match the authorization request's
S256 ``code_challenge``. What the provider saw is kept in ``seen`` for the tests to check.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import flask
import oidc_provider_mock
from joserfc import jws, jwt
from joserfc.jwk import RSAKey
from werkzeug.serving import make_server

CLIENT_ID = "smartcity-test"
CLIENT_SECRET = "smartcity-test-secret"


@dataclass
class ProviderLog:
    """What reached the provider: authorization requests, token requests, sign-outs."""

    authorizations: list[dict[str, str]] = field(default_factory=list)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    sign_outs: list[dict[str, str]] = field(default_factory=list)


@dataclass
class Provider:
    """A running provider: its issuer URL, what it saw, and whether userinfo is signed."""

    issuer: str
    seen: ProviderLog
    sign_userinfo: bool = True
    acr: str | None = None
    """When set, the ID token carries this ``acr`` whatever was asked (a provider that cannot meet it)."""


def _challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _signing_key() -> RSAKey:
    stored = flask.g.oidc_provider_mock_storage.jwk
    return RSAKey.import_key(stored.as_dict(is_private=True))


def _sign(claims: dict[str, Any]) -> str:
    key = _signing_key()
    header = {"alg": "RS256"}
    if key.kid:
        header["kid"] = key.kid
    return jwt.encode(header, claims, key)


def _like_proconnect(app: flask.Flask, provider: Provider) -> None:
    asked: dict[str, dict[str, str]] = {}

    @app.before_request
    def check_pkce() -> flask.Response | None:
        request = flask.request
        if request.path != "/oauth2/token" or request.form.get("grant_type") != "authorization_code":
            return None
        provider.seen.token_requests.append(dict(request.form))
        authorization = asked.get(request.form.get("code", ""), {})
        flask.g.asked = authorization
        verifier = request.form.get("code_verifier", "")
        if authorization.get("code_challenge_method") != "S256" or _challenge(verifier) != authorization.get(
            "code_challenge"
        ):
            body = {"error": "invalid_grant", "error_description": "PKCE verification failed"}
            return flask.Response(json.dumps(body), status=400, mimetype="application/json")
        return None

    @app.after_request
    def proconnect_answers(response: flask.Response) -> flask.Response:
        request = flask.request
        if (
            request.path == "/oauth2/authorize"
            and request.method == "POST"
            and response.status_code in (302, 303)
        ):
            code = parse_qs(urlparse(response.headers["Location"]).query).get("code")
            if code:
                asked[code[0]] = dict(request.args)
                provider.seen.authorizations.append(dict(request.args))
        elif request.path == "/oauth2/token" and response.status_code == 200:
            answer = response.get_json()
            acr = provider.acr or flask.g.get("asked", {}).get("acr_values")
            if acr and "id_token" in answer:
                claims = json.loads(jws.extract_compact(answer["id_token"].encode()).payload)
                answer["id_token"] = _sign({**claims, "acr": acr.split()[0]})
                response.set_data(json.dumps(answer))
        elif request.path == "/userinfo" and response.status_code == 200 and provider.sign_userinfo:
            now = int(time.time())
            claims = {
                **response.get_json(),
                "iss": provider.issuer,
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 60,
            }
            response.set_data(_sign(claims))
            response.mimetype = "application/jwt"
        elif request.path == "/oauth2/end_session":
            provider.seen.sign_outs.append(dict(request.values))
        return response


@contextmanager
def proconnect_like_provider(agents: Sequence[tuple[str, Mapping[str, object]]]) -> Iterator[Provider]:
    """Serve a provider knowing these agents (sub, claims) until the block ends."""
    app = oidc_provider_mock.app(
        require_nonce=True,
        user_claims=[oidc_provider_mock.User(sub=sub, claims=dict(claims)) for sub, claims in agents],
    )
    server = make_server("localhost", 0, app, threaded=True)
    provider = Provider(issuer=f"http://localhost:{server.port}", seen=ProviderLog())
    _like_proconnect(app, provider)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        thread.join(timeout=10)
