"""Payment codes: the short text that names a payment in a TON text comment (issue 14).

Every new payment gets a random code, ``CB`` + 12 Crockford base32 characters (60 bits), and
its 32-byte reference is ``sha256(code as ASCII)``. The TON lock hashes the text comment of a
plain transfer on chain (``string_hash``), so a comment that is exactly the code logs the
payment's reference; any other text logs a reference no payment has, and the deposit is
refunded as unattributed. References stay opaque 32 bytes everywhere else (Ethereum and
Asset Hub derive per-payment addresses from them).
"""

from __future__ import annotations

import hashlib
import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
PREFIX = "CB"
LENGTH = 12
_CODE = re.compile(rf"^{PREFIX}[{ALPHABET}]{{{LENGTH}}}$")


def new_code() -> str:
    return PREFIX + "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def is_code(text: str) -> bool:
    return isinstance(text, str) and bool(_CODE.match(text))


def reference_for_code(code: str) -> bytes:
    """The payment reference a code stands for (what the TON lock logs for the comment)."""
    return hashlib.sha256(code.encode("ascii")).digest()
