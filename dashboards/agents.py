"""Public agents signed in through OpenID Connect (ProConnect), and the communes they may see.

An agent is not in the users file: the operator's settings say which agents may see which
communes, by e-mail address (or ``@domain``) and by SIRET of the agent's organisation (a
commune's town hall has one). An agent no rule names is refused. Rights are worked out again on
every request, so changing the settings takes effect at once.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import flask
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dashboards.users import ALL_COMMUNES, User

SESSION_AGENT = "agent"
"""Session key of a signed-in agent's e-mail address and SIRET (what the rights are worked out from)."""


class OidcSettings(BaseModel):
    """The OpenID Connect provider (ProConnect or another) and who of its agents may come in.

    ProConnect's discovery lives at ``https://<domain>/api/v2/.well-known/openid-configuration``;
    its issuer is ``https://<domain>/api/v2``.
    """

    model_config = ConfigDict(extra="forbid")

    issuer: str
    """The provider's issuer URL; its discovery document is ``<issuer>/.well-known/openid-configuration``."""
    client_id: str
    client_secret: str
    label: str = "ProConnect"
    """The provider's name on the sign-in button."""
    scopes: str = "openid email given_name usual_name siret uid idp_id"
    acr_values: str | None = "eidas1"
    """Asked level of assurance; the ID token's ``acr`` must be one of these (space-separated)."""
    pkce: bool = True
    """Send a PKCE S256 code challenge with the authorization request."""
    signed_userinfo: bool = True
    """Require userinfo as a JWT signed with the provider's keys (``application/jwt``), as ProConnect does."""
    redirect_uri: str | None = None
    """The callback registered with the provider (``https://<host>/oidc/callback``); default: derived."""
    post_logout_redirect_uri: str | None = None
    """Where the provider sends the agent back after sign-out (``https://<host>/oidc/signed-out``)."""
    agents_by_email: dict[str, list[str]] = Field(default_factory=dict)
    """``"agent@ville.fr"`` or ``"@ville.fr"`` -> INSEE codes (or ``["*"]``)."""
    agents_by_siret: dict[str, list[str]] = Field(default_factory=dict)
    """SIRET of the agent's organisation -> INSEE codes (or ``["*"]``)."""

    @field_validator("issuer")
    @classmethod
    def _https(cls, issuer: str) -> str:
        # Tokens and agents' identities travel to and from the issuer: HTTPS only, except on
        # this machine (the tests' local provider).
        host = urlparse(issuer).hostname or ""
        if not issuer.startswith("https://") and host not in ("localhost", "127.0.0.1", "::1"):
            raise ValueError(f"the issuer must be an https:// URL, not {issuer!r}")
        return issuer

    @field_validator("agents_by_siret")
    @classmethod
    def _sirets(cls, rules: dict[str, list[str]]) -> dict[str, list[str]]:
        if bad := [siret for siret in rules if not re.fullmatch(r"\d{14}", siret)]:
            raise ValueError(f"a SIRET has 14 digits: {', '.join(bad)}")
        return rules

    @field_validator("agents_by_email")
    @classmethod
    def _emails(cls, rules: dict[str, list[str]]) -> dict[str, list[str]]:
        return {key.strip().lower(): codes for key, codes in rules.items()}


def agent_communes(settings: OidcSettings, email: str, siret: str) -> frozenset[str]:
    """The communes the rules give an agent: those of the address, its domain and its SIRET."""
    address = email.strip().lower()
    domain = "@" + address.rpartition("@")[2] if "@" in address else None
    codes: set[str] = set()
    for key in (address, domain):
        if key:
            codes.update(settings.agents_by_email.get(key, ()))
    codes.update(settings.agents_by_siret.get(siret.strip(), ()))
    return frozenset({ALL_COMMUNES}) if ALL_COMMUNES in codes else frozenset(codes)


def agent_user(settings: OidcSettings, email: str, siret: str) -> User | None:
    """The platform user an agent acts as, or None when no rule lets the agent in."""
    communes = agent_communes(settings, email, siret)
    return User(name=email.strip().lower(), communes=communes) if communes else None


def signed_in_agent(settings: OidcSettings | None) -> User | None:
    """The agent signed in in this session, with today's rights; None when there is none."""
    agent = flask.session.get(SESSION_AGENT)
    if settings is None or not isinstance(agent, dict):
        return None
    return agent_user(settings, str(agent.get("email", "")), str(agent.get("siret", "")))
