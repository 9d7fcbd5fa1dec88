"""API keys of merchants and operators.

A key looks like ``cbk_<id>_<secret>``: ``id`` (12 hex digits) names the row, ``secret`` is
32 random bytes (base64url). Only ``SHA-256(key)`` is stored -- a high-entropy key needs no
slow hash -- and it is compared in constant time. Keys are created by the operator
(``creditbridge apikey new``) and shown once. Requests send ``Authorization: Bearer <key>``.
Roles: ``merchant`` (webhooks, payments of its own) and ``admin`` (``/v1/admin/*``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from bridge.errors import Unauthorized
from bridge.storage import webhooks as repo

ROLES = ("merchant", "admin")
_KEY = re.compile(r"^cbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Forbidden(Unauthorized):
    """The API key may not do this."""

    code = "forbidden"
    http_status = 403


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: str


def new_key() -> tuple[str, str, bytes]:
    """(key id, full key, its SHA-256) of a fresh random key."""
    key_id = secrets.token_hex(6)
    key = f"cbk_{key_id}_{secrets.token_urlsafe(32)}"
    return key_id, key, hash_key(key)


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def bearer(request: web.Request) -> str | None:
    value = request.headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <API key>'")
    return token.strip()


async def authenticate(request: web.Request, db, *, role: str | None = None, optional: bool = False) -> Principal | None:
    """The request's principal; Unauthorized (401) without a valid key, Forbidden (403) for
    a key of another role. ``optional``: None when no Authorization header is sent."""
    from bridge.api.handlers import transaction

    key = bearer(request)
    if key is None:
        if optional:
            return None
        raise Unauthorized("this endpoint needs an API key (Authorization: Bearer <key>)")
    m = _KEY.fullmatch(key)
    # one generic message for every failure; the key itself is never echoed or logged
    if m is None:
        raise Unauthorized("invalid API key")
    async with transaction(db) as s:
        row = await repo.get_api_key(s, m.group(1))
    expected = row.key_hash if row is not None else hashlib.sha256(b"no such key").digest()
    if not hmac.compare_digest(hash_key(key), expected) or row is None or row.revoked:
        raise Unauthorized("invalid API key")
    if role is not None and row.role != role:
        raise Forbidden(f"this endpoint needs a key of role {role}")
    return Principal(row.id, row.name, row.role)


async def create_key(db, name: str, role: str) -> tuple[str, str]:
    """Store a new key of ``role``; ``(key id, full key)`` -- the key is not stored, show it once."""
    from bridge.errors import InputError
    from bridge.types import utcnow

    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64:
        raise InputError("name must have 1 to 64 characters")
    key_id, key, digest = new_key()
    async with db.begin() as s:
        await repo.add_api_key(s, key_id, name, role, digest, utcnow())
    return key_id, key
