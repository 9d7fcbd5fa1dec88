"""Webhook signatures (Stripe-like): ``Creditbridge-Signature: t=<unix seconds>,v1=<hex>``
where ``v1 = HMAC-SHA256(secret, "<t>." + body)``. Receivers recompute it over the raw body,
compare in constant time and refuse timestamps too far from their clock (replays)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

SIGNATURE_HEADER = "Creditbridge-Signature"
DELIVERY_HEADER = "Creditbridge-Delivery"
EVENT_HEADER = "Creditbridge-Event"
SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE = 300


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return mac.hexdigest()


def header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, value: str, body: bytes, now: int, tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True if ``value`` (the header) signs ``body`` with ``secret`` within ``tolerance`` s."""
    try:
        parts = dict(p.split("=", 1) for p in value.split(","))
        t = int(parts["t"])
    except (ValueError, KeyError):
        return False
    if abs(now - t) > tolerance:
        return False
    candidates = [v for k, v in (p.split("=", 1) for p in value.split(",")) if k == "v1"]
    expected = signature(secret, t, body)
    return any(hmac.compare_digest(expected, c) for c in candidates)
