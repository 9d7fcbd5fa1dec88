#!/usr/bin/env python3
"""Verify a creditbridge quote as a dApp would: standard library + ``cryptography`` only.

    python verify_quote.py QUOTE.json --public-key HEX     # the gateway key you pinned
    curl -s $API/v1/quotes/$ID | python verify_quote.py - --public-key HEX

Exit status 0 and ``valid`` when the gateway's Ed25519 key signed the quote; 1 and the reason
otherwise. The format (docs/quotes.md): the signed fields as compact JSON with sorted keys,
ASCII only, after the domain ``creditbridge/quote/v1\\n``; with a ``proof`` the signature covers
the root of a Merkle tree of a batch of quotes (SHA-256: leaf = H(0x00 || canonical bytes),
node = H(0x01 || min(a, b) || max(a, b))) and ``proof.path`` leads from this quote to it; without
one (quotes issued before batched signing) it covers the canonical bytes themselves.
Checking ``expires_at`` against your clock is yours to do, as is pinning the public key (fetch
it once from ``GET /v1/gateway`` over a channel you trust, not with every quote).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

QUOTE_DOMAIN = b"creditbridge/quote/v1\n"
BATCH_DOMAIN = b"creditbridge/quote-batch/v1\n"
SIGNED_FIELDS = ("amount", "chain", "created_at", "credit_price_usd", "credits", "expires_at", "id", "key_id",
                 "rate", "sources", "token")


class Invalid(Exception):
    pass


def canonical_bytes(quote: dict) -> bytes:
    """The signed bytes: every signed field as the string the API sent (``sources`` joined by commas)."""
    fields = {}
    for k in SIGNED_FIELDS:
        v = quote.get(k)
        if k == "sources" and isinstance(v, list) and all(isinstance(s, str) for s in v):
            v = ",".join(v)
        if not isinstance(v, str):
            raise Invalid(f"field {k!r} is missing or not a string")
        fields[k] = v
    return QUOTE_DOMAIN + json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _hash32(h, what: str) -> bytes:
    if not isinstance(h, str) or len(h) != 64:
        raise Invalid(f"{what} must be 64 hex digits")
    try:
        return bytes.fromhex(h)
    except ValueError:
        raise Invalid(f"{what} must be 64 hex digits") from None


def signed_message(quote: dict) -> bytes:
    data = canonical_bytes(quote)
    proof = quote.get("proof")
    if proof is None:  # signed on its own (before batched signing)
        return data
    if not isinstance(proof, dict) or not isinstance(proof.get("path"), list) or len(proof["path"]) > 64:
        raise Invalid("proof must be {root, path: [at most 64 hashes]}")
    root = _hash32(proof.get("root"), "proof.root")
    h = hashlib.sha256(b"\x00" + data).digest()
    for s in proof["path"]:
        s = _hash32(s, "a proof.path entry")
        h = hashlib.sha256(b"\x01" + min(h, s) + max(h, s)).digest()
    if h != root:
        raise Invalid("the proof does not lead from this quote to the signed root")
    return BATCH_DOMAIN + root


def verify(quote: dict, public_key_hex: str) -> None:
    """Raise Invalid unless ``quote`` (the API's JSON) is signed by ``public_key_hex``."""
    if not isinstance(quote, dict):
        raise Invalid("a quote is a JSON object")
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
    except ValueError:
        raise Invalid("the public key must be 64 hex digits") from None
    if quote.get("key_id") != public_key_hex.lower()[:16]:
        raise Invalid(f"signed by key {quote.get('key_id')!r}, not by {public_key_hex.lower()[:16]!r}")
    sig = quote.get("signature")
    if not isinstance(sig, str) or len(sig) != 128:
        raise Invalid("signature must be 128 hex digits")
    try:
        key.verify(bytes.fromhex(sig), signed_message(quote))
    except (InvalidSignature, ValueError):
        raise Invalid("the signature is invalid") from None


def main() -> int:
    p = argparse.ArgumentParser(description="Verify a creditbridge quote's signature.")
    p.add_argument("quote", help="a file with the quote's JSON, or - for standard input")
    p.add_argument("--public-key", required=True, help="the gateway's Ed25519 public key, 64 hex digits")
    a = p.parse_args()
    try:
        text = sys.stdin.read() if a.quote == "-" else open(a.quote, encoding="utf-8").read()
        verify(json.loads(text), a.public_key)
    except (Invalid, ValueError, OSError) as e:
        print(f"invalid: {e}")
        return 1
    print("valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
