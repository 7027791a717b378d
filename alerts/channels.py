"""The two delivery channels: an email webhook (signed HTTP POST of JSON) and direct SMTP.

A channel makes one attempt and says how it went; retrying, back-off and keeping the message
are the outbox's job (alerts/outbox.py).
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

import httpx

from alerts.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign

USER_AGENT = "smartcity-alerts/1"

# Answers after which the very same request cannot succeed: the receiver refuses the message
# itself. Everything else (5xx, 429, 408, 401/403 while a secret is being fixed, 404 while a
# URL is) is retried with back-off, because giving up would lose an alert.
PERMANENT_HTTP = frozenset({400, 413, 415, 422})


@dataclass(frozen=True, slots=True)
class Attempt:
    """The outcome of one delivery attempt."""

    ok: bool
    retryable: bool
    status: int | None = None
    error: str | None = None
    target: str = ""


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes posted (and signed): compact, sorted keys, UTF-8."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _secret(name: str | None, environ: Mapping[str, str]) -> str | None:
    return environ.get(name) if name else None


def send_webhook(
    channel: Mapping[str, Any],
    message_id: str,
    payload: Mapping[str, Any],
    *,
    now: float,
    client: httpx.Client,
    environ: Mapping[str, str] | None = None,
) -> Attempt:
    """POST ``payload`` to the channel's URL, signed with the secret of its ``secret_env``."""
    env = os.environ if environ is None else environ
    url = str(channel["url"])
    secret = _secret(channel.get("secret_env"), env)
    if not secret:
        return Attempt(
            ok=False,
            retryable=True,
            error=f"environment variable {channel.get('secret_env')} (the webhook secret) is not set",
            target=url,
        )
    body = encode_body(payload)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        IDEMPOTENCY_HEADER: message_id,
        SIGNATURE_HEADER: sign(secret, int(now), body),
    }
    try:
        response = client.post(
            url, content=body, headers=headers, timeout=float(channel.get("timeout_s", 10.0))
        )
    except httpx.TimeoutException:
        return Attempt(ok=False, retryable=True, error="timed out", target=url)
    except httpx.HTTPError as exc:
        return Attempt(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}", target=url)
    if 200 <= response.status_code < 300:
        return Attempt(ok=True, retryable=False, status=response.status_code, target=url)
    detail = response.text[:200].strip()
    return Attempt(
        ok=False,
        retryable=response.status_code not in PERMANENT_HTTP,
        status=response.status_code,
        error=f"HTTP {response.status_code}" + (f": {detail}" if detail else ""),
        target=url,
    )


def build_email(channel: Mapping[str, Any], message_id: str, payload: Mapping[str, Any]) -> EmailMessage:
    """The email of a message: plain text with an HTML alternative, a stable Message-ID."""
    email = EmailMessage()
    email["From"] = str(channel["from"])
    email["To"] = ", ".join(payload["to"])
    email["Subject"] = str(payload["subject"])
    email["Date"] = formatdate(localtime=False)
    # A stable Message-ID per message: mail clients and relays drop a duplicate after a retry.
    email["Message-ID"] = f"<{message_id}@smartcity.alerts>"
    email["X-Smartcity-Alert-Id"] = message_id
    email.set_content(str(payload["text"]))
    email.add_alternative(str(payload["html"]), subtype="html")
    return email


def send_smtp(
    channel: Mapping[str, Any],
    message_id: str,
    payload: Mapping[str, Any],
    *,
    environ: Mapping[str, str] | None = None,
    smtp_factory: Callable[..., smtplib.SMTP] | None = None,
) -> Attempt:
    """Send the message to the channel's mail server (STARTTLS, implicit TLS or plain; auth)."""
    env = os.environ if environ is None else environ
    host, port = str(channel["host"]), int(channel.get("port", 587))
    target = f"smtp://{host}:{port}"
    security = channel.get("security", "starttls")
    timeout = float(channel.get("timeout_s", 30.0))
    context = ssl.create_default_context(cafile=channel.get("ca_file") or None)
    password = None
    if channel.get("username"):
        password = _secret(channel.get("password_env"), env)
        if not password:
            return Attempt(
                ok=False,
                retryable=True,
                error=f"environment variable {channel.get('password_env')} (the SMTP password) is not set",
                target=target,
            )
    email = build_email(channel, message_id, payload)
    try:
        if security == "ssl":
            server: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            server = (smtp_factory or smtplib.SMTP)(host, port, timeout=timeout)
        with server:
            server.ehlo()
            if security == "starttls":
                server.starttls(context=context)
                server.ehlo()
            if channel.get("username") and password:
                server.login(str(channel["username"]), password)
            refused = server.send_message(email)
    except smtplib.SMTPRecipientsRefused as exc:
        return Attempt(
            ok=False, retryable=False, error=f"every recipient refused: {exc.recipients}", target=target
        )
    except smtplib.SMTPResponseException as exc:
        # 5xx is a permanent refusal of this message, except for authentication (a password can
        # be fixed) ; 4xx is explicitly "try again later".
        permanent = exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError)
        message = (
            exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        return Attempt(
            ok=False, retryable=not permanent, status=exc.smtp_code, error=str(message), target=target
        )
    except (smtplib.SMTPException, OSError) as exc:
        return Attempt(ok=False, retryable=True, error=f"{type(exc).__name__}: {exc}", target=target)
    if refused:
        return Attempt(
            ok=True, retryable=False, status=250, error=f"some recipients refused: {refused}", target=target
        )
    return Attempt(ok=True, retryable=False, status=250, target=target)


def unix_now() -> float:
    """Wall-clock time in Unix seconds (what a receiver compares signature timestamps with)."""
    return time.time()
