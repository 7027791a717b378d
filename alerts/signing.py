"""Webhook signatures: HMAC-SHA256 over ``"<timestamp>.<body>"``, sent as
``X-Smartcity-Signature: t=<unix seconds>,v1=<hex digest>`` (the scheme Stripe uses).

The timestamp is inside the signed text, so a receiver that refuses timestamps older than a few
minutes cannot be fed a replayed request; the ``Idempotency-Key`` header lets it drop a message
it has already accepted (a retry after a lost answer). docs/alerts.md has the receiver's recipe.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Smartcity-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
DEFAULT_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A signature header is missing, malformed, wrong or too old."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check a signature header; return its timestamp, or raise ``SignatureError`` saying why."""
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise SignatureError("signature header has no valid t=<unix seconds>") from None
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"signature timestamp {timestamp} is more than {tolerance_s:.0f}s from now")
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    # Several v1 values are allowed so that a secret can be rotated without downtime.
    if not any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", [])):
        raise SignatureError("signature does not match the body (wrong secret or altered body)")
    return timestamp
