"""Signed quotes and payment terms.

The gateway signs three things with its Ed25519 quote key:

* a ``Quote`` -- "``amount`` base units of ``token`` buy ``credits`` until ``expires_at``";
* a payment's ``PaymentTerms`` -- "reference R pays for quote Q, credits go to beneficiary B".
  Signer nodes fetch the terms by reference and check them with ``verify_terms`` against the
  gateway public key pinned in their config, so they need not trust the API's transport or
  database;
* a late deposit's ``LateTerms`` (``bridge/payments/late.py``) -- "the late deposit (S, n) of
  reference R is credited at a fresh quote / held for refund"; checked with
  ``verify_late_terms`` against the same pinned key.

Canonical bytes (what is signed) are a domain prefix followed by compact JSON with sorted
keys, ASCII only, in which every value is a string: integers as decimal strings, ``Decimal``
as plain positional notation without trailing zeros (``"3000"``, ``"0.01"``), bytes as
lower-case ``0x`` hex, datetimes as RFC 3339 UTC with ``Z`` (fractional seconds only when
non-zero). The signature itself is not part of the signed bytes; ``key_id`` is, so a
signature cannot be re-attributed to another key.

    "creditbridge/quote/v1\\n"   + {"amount":..,"chain":..,"created_at":..,"credit_price_usd":..,
                                    "credits":..,"expires_at":..,"id":..,"key_id":..,"rate":..,
                                    "sources":"a,b","token":..}
    "creditbridge/payment/v1\\n" + {"amount":..,"beneficiary":..,"chain":..,"credits":..,
                                    "expires_at":..,"key_id":..,"payment_id":..,"quote_id":..,
                                    "reference":..,"token":..}
    "creditbridge/late-terms/v1\\n" + {"amount":..,"block_time":..,"counted":..,"created_at":..,
                                    "credits":..,"decision":..,"fresh_amount":..,"fresh_quote_id":..,
                                    "key_id":..,"payment_id":..,"reason":..,"reference":..,
                                    "refundable":..,"sequence":..,"source":..,"tolerance_bps":..}
    (``fresh_amount`` is "" when there was no fresh price, ``fresh_quote_id`` "" when no fresh
    quote was made)

Quotes are signed in **batches** (``QuoteSigner.sign_quotes``): one signature over the root of
a Merkle tree whose leaves are the quotes' canonical bytes (``bridge/pricing/merkle.py`` has the
exact tree), each quote carrying the root and its proof path. A batch of one is the degenerate
case (root = leaf, empty path). Quotes signed before batching carry the signature over their
canonical bytes and no root; ``verify_quote`` accepts both. Payment terms and late decisions
are signed one by one, as before (signer nodes verify those).
"""

from __future__ import annotations

import functools
from binascii import hexlify
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Overflow
from fractions import Fraction

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from prometheus_client import CollectorRegistry

from bridge.config import KeyRef, PayableToken, PricingConfig, Settings, per_token
from bridge.errors import (
    ConfigError,
    InputError,
    KeystoreError,
    PriceUnavailable,
    QuoteExpired,
    TokenAmbiguous,
    TokenDepegged,
    TokenNotOffered,
    VerificationError,
)
from bridge.keystore import SecretKey, load_key, public_of
from bridge.payments.late import LateTerms
from bridge.pricing.aggregate import PriceAggregator
from bridge.pricing import merkle, quote_batch
from bridge.pricing.credits import credit_value_in_base_units
from bridge.pricing.sources.base import PriceSource
from bridge.pricing.wrappers import PricingMetrics
from bridge.types import TOKEN_DECIMALS, PaymentTerms, Quote, utcnow

QUOTE_DOMAIN = b"creditbridge/quote/v1\n"
TERMS_DOMAIN = b"creditbridge/payment/v1\n"
LATE_DOMAIN = b"creditbridge/late-terms/v1\n"

log = logging.getLogger("creditbridge.pricing")

MAX_CREDITS = 2**128 - 1  # the settlement contract's bound (see types.Credit)
MAX_AMOUNT = 2**256 - 1

_UINT_RE = re.compile(r"^(0|[1-9][0-9]{0,77})$")
_DEC_RE = re.compile(r"^[0-9]{1,78}(\.[0-9]{1,78})?$")
_HEX_RE = re.compile(r"^(0x)?[0-9a-fA-F]*$")
_PUB_RE = re.compile(r"^[0-9a-f]{64}$")


# --- canonical encodings ----------------------------------------------------------------------
def rfc3339(dt: datetime) -> str:
    """RFC 3339 in UTC with ``Z``; microseconds only when non-zero. Naive datetimes refused."""
    if not isinstance(dt, datetime) or dt.tzinfo is None or dt.utcoffset() is None:
        raise InputError("datetimes must be timezone-aware")
    return _rfc3339(dt)


@functools.lru_cache(maxsize=1024)
def _rfc3339(dt: datetime) -> str:
    # cached: every quote of a second has the same created_at and expires_at (equal aware
    # datetimes denote the same instant, so they format the same in UTC)
    u = dt.astimezone(timezone.utc)
    s = u.strftime("%Y-%m-%dT%H:%M:%S")
    if u.microsecond:
        s += f".{u.microsecond:06d}"
    return s + "Z"


def parse_rfc3339(s: str) -> datetime:
    """Parse an RFC 3339 timestamp with an offset (``Z`` or ``+hh:mm``) into an aware UTC datetime."""
    if not isinstance(s, str) or not 20 <= len(s) <= 35 or "T" not in s:
        raise ValueError("not an RFC 3339 timestamp")
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        raise ValueError("timestamp without a UTC offset")
    return dt.astimezone(timezone.utc)


def decimal_str(d: Decimal) -> str:
    """Plain positional notation, no exponent, no trailing zeros: 3000.00 -> "3000", 1E-2 -> "0.01"."""
    if not isinstance(d, Decimal) or not d.is_finite():
        raise InputError("expected a finite Decimal")
    return _decimal_str(d)


@functools.lru_cache(maxsize=1024)
def _decimal_str(d: Decimal) -> str:
    # cached: the rate and credit price repeat across quotes (equal Decimals print the same here)
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


def key_id_of(public_key_hex: str) -> str:
    """A key's short id: the first 16 hex digits of its Ed25519 public key."""
    return public_key_hex[:16]


def quote_fields(q: Quote) -> dict[str, str]:
    """The signed fields of a quote, every value a string."""
    return {
        "id": str(q.id),
        "token": str(q.token),
        "chain": str(q.chain),
        "amount": str(int(q.amount)),
        "credits": str(int(q.credits)),
        "rate": decimal_str(q.rate),
        "credit_price_usd": decimal_str(q.credit_price_usd),
        "created_at": rfc3339(q.created_at),
        "expires_at": rfc3339(q.expires_at),
        "key_id": str(q.key_id),
        "sources": ",".join(q.sources),
    }


def terms_fields(t: PaymentTerms) -> dict[str, str]:
    """The signed fields of payment terms, every value a string."""
    return {
        "payment_id": str(t.payment_id),
        "reference": _hex(t.reference),
        "beneficiary": _hex(t.beneficiary),
        "quote_id": str(t.quote_id),
        "chain": str(t.chain),
        "token": str(t.token),
        "amount": str(int(t.amount)),
        "credits": str(int(t.credits)),
        "expires_at": rfc3339(t.expires_at),
        "key_id": str(t.key_id),
    }


def late_fields(t: LateTerms) -> dict[str, str]:
    """The signed fields of a late deposit's decision, every value a string."""
    return {
        "payment_id": str(t.payment_id),
        "reference": _hex(t.reference),
        "source": _hex(t.source),
        "sequence": str(int(t.sequence)),
        "amount": str(int(t.amount)),
        "block_time": str(int(t.block_time)),
        "decision": str(t.decision),
        "credits": str(int(t.credits)),
        "counted": str(int(t.counted)),
        "refundable": str(int(t.refundable)),
        "fresh_quote_id": str(t.fresh_quote_id),
        "fresh_amount": "" if t.fresh_amount is None else str(int(t.fresh_amount)),
        "tolerance_bps": str(int(t.tolerance_bps)),
        "reason": str(t.reason),
        "created_at": rfc3339(t.created_at),
        "key_id": str(t.key_id),
    }


# one encoder for every call (``json.dumps`` with options builds a new one each time)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode


def _canonical_json(fields: dict[str, str]) -> bytes:
    return _CANONICAL(fields).encode("ascii")


# The quote's canonical JSON without building the dict and sorting it on every quote: the
# keys in sorted order, each value escaped by the very function JSONEncoder(ensure_ascii=True)
# uses for strings, so the bytes are identical to ``_canonical_json(quote_fields(q))``
# (tests/unit/test_quote_fastpaths.py checks both on awkward values). Of the eleven fields only
# ``amount``, ``credits`` and ``id`` differ between the quotes of one second and one price: the
# rest is formatted once (``_quote_template``) into the four byte strings around those three.
_QUOTE_KEYS = ("amount", "chain", "created_at", "credit_price_usd", "credits", "expires_at", "id", "key_id",
               "rate", "sources", "token")
_QUOTE_PREFIXES = tuple(("{" if i == 0 else ",") + json.dumps(k) + ":" for i, k in enumerate(_QUOTE_KEYS))
_escape = json.encoder.encode_basestring_ascii


@functools.lru_cache(maxsize=256)
def _quote_template(chain: str, created_at: datetime, credit_price_usd: Decimal, expires_at: datetime, key_id: str,
                    rate: Decimal, sources: tuple[str, ...], token: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The canonical bytes of a quote with these fields, cut around amount, credits and id:
    ``a + "amount" + b + "credits" + c + "id" + d`` (each of those three escaped and quoted).
    Cached: equal arguments format the same (see ``_rfc3339`` and ``_decimal_str``)."""
    a, b, c, d, e, f, g, h, i, j, k = _QUOTE_PREFIXES
    x = [_escape(v) for v in (str(chain), rfc3339(created_at), decimal_str(credit_price_usd), rfc3339(expires_at),
                              str(key_id), decimal_str(rate), ",".join(sources), str(token))]
    return (QUOTE_DOMAIN + a.encode("ascii"), (b + x[0] + c + x[1] + d + x[2] + e).encode("ascii"),
            (f + x[3] + g).encode("ascii"), (h + x[4] + i + x[5] + j + x[6] + k + x[7] + "}").encode("ascii"))


def canonical_quote_bytes(q: Quote) -> bytes:
    try:
        a, b, c, d = _quote_template(q.chain, q.created_at, q.credit_price_usd, q.expires_at, q.key_id, q.rate,
                                     q.sources, q.token)
    except TypeError:  # an unhashable field (sources as a list, a signalling NaN): formatted afresh
        a, b, c, d = _quote_template.__wrapped__(q.chain, q.created_at, q.credit_price_usd, q.expires_at, q.key_id,
                                                 q.rate, tuple(q.sources), q.token)
    return quote_batch.canonical((a, b, c, d), str(q.id), int(q.amount), int(q.credits))


def _evolve(q: Quote, **changes) -> Quote:
    """``dataclasses.replace(q, **changes)`` for a ``Quote``, several times cheaper (signing a
    batch makes one per quote): a new instance whose ``__dict__`` is a copy of ``q``'s with the
    changes. Equivalent because ``Quote`` is a plain frozen dataclass -- fields in ``__dict__``,
    no ``__post_init__``, no slots, no init-only fields (checked at import; the test compares
    with ``replace``); with unknown field names it raises TypeError like ``replace``."""
    unknown = changes.keys() - _QUOTE_FIELDS
    if unknown:
        raise TypeError(f"Quote has no field(s) {', '.join(sorted(unknown))}")
    new = object.__new__(Quote)
    d = q.__dict__.copy()
    d.update(changes)
    object.__setattr__(new, "__dict__", d)
    return new


_QUOTE_FIELDS = frozenset(f.name for f in fields(Quote))
if (hasattr(Quote, "__post_init__") or hasattr(Quote, "__slots__")
        or len(_QUOTE_FIELDS) != len(Quote.__dataclass_fields__)):  # pragma: no cover - a changed Quote
    def _evolve(q: Quote, **changes) -> Quote:  # noqa: F811
        return replace(q, **changes)


def canonical_terms_bytes(t: PaymentTerms) -> bytes:
    return TERMS_DOMAIN + _canonical_json(terms_fields(t))


def canonical_late_bytes(t: LateTerms) -> bytes:
    return LATE_DOMAIN + _canonical_json(late_fields(t))


# --- signing and verifying --------------------------------------------------------------------
class QuoteSigner:
    """Holds the gateway's Ed25519 quote key; signs quotes and payment terms."""

    def __init__(self, key: SecretKey) -> None:
        if not isinstance(key, SecretKey) or key.kind != "ed25519":
            raise KeystoreError("the quote key must be an ed25519 keystore key")
        self._private = Ed25519PrivateKey.from_private_bytes(key.secret)
        self.public_key: str = key.public  # 64 lower-case hex digits, no 0x
        self.key_id: str = key_id_of(self.public_key)

    @classmethod
    def from_secret(cls, secret: bytes) -> "QuoteSigner":
        return cls(SecretKey("ed25519", bytes(secret), public_of("ed25519", bytes(secret))))

    @classmethod
    def from_ref(cls, ref: KeyRef) -> "QuoteSigner":
        return cls(load_key(ref))

    def __repr__(self) -> str:
        return f"QuoteSigner(key_id={self.key_id!r})"

    def private_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 secret: only for the API's own quote store process, which
        signs the quote batches it stores (``bridge/storage/quote_store_worker.py``; it gets it
        over its stdin pipe). Never logged, never in an error."""
        return self._private.private_bytes_raw()

    def sign_bytes(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def sign_quote(self, q: Quote) -> Quote:
        """The quote with this key's ``key_id`` and signature (a batch of one)."""
        return self.sign_quotes([q])[0]

    def sign_quotes(self, quotes: Sequence[Quote]) -> list[Quote]:
        """The quotes, in order, with this key's ``key_id``, signed by one signature over the
        root of their Merkle tree (``bridge/pricing/merkle.py``), each with its proof path."""
        key_id = self.key_id
        keyed = [q if q.key_id == key_id else _evolve(q, key_id=key_id) for q in quotes]
        leaf = merkle.leaf_hash
        root, paths = merkle.build([leaf(canonical_quote_bytes(q)) for q in keyed])
        signature = self.sign_bytes(merkle.batch_message(root))
        return [_evolve(q, signature=signature, merkle_root=root, merkle_path=tuple(path))
                for q, path in zip(keyed, paths)]

    def sign_terms(self, t: PaymentTerms) -> PaymentTerms:
        t = replace(t, key_id=self.key_id, signature=b"")
        return replace(t, signature=self.sign_bytes(canonical_terms_bytes(t)))

    def sign_late_terms(self, t: LateTerms) -> LateTerms:
        t = replace(t, key_id=self.key_id, signature=b"")
        return replace(t, signature=self.sign_bytes(canonical_late_bytes(t)))


def _public_key(public_key_hex: str) -> Ed25519PublicKey:
    if not isinstance(public_key_hex, str) or not _PUB_RE.fullmatch(public_key_hex):
        raise VerificationError("gateway public key must be 64 lower-case hex digits")
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))


def _verify(what: str, key_id: str, signature: bytes, data_fn, public_key_hex: str) -> None:
    pk = _public_key(public_key_hex)
    if key_id != key_id_of(public_key_hex):
        raise VerificationError(f"{what} was signed by key {key_id!r}, not by {key_id_of(public_key_hex)!r}")
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != 64:
        raise VerificationError(f"{what} signature must be 64 bytes")
    try:
        data = data_fn()
    except InputError as e:
        raise VerificationError(f"{what} is malformed: {e.detail}") from None
    try:
        pk.verify(bytes(signature), data)
    except InvalidSignature:
        raise VerificationError(f"{what} signature is invalid") from None


def verify_quote(q: Quote, public_key_hex: str) -> None:
    """Raise VerificationError unless ``q`` carries a valid signature of ``public_key_hex``:
    a batch signature over ``q.merkle_root`` with ``q.merkle_path`` leading from the quote to
    that root, or (quotes signed before batching, no root) a signature over the quote itself."""
    if not q.merkle_root and not q.merkle_path:
        _verify("quote", q.key_id, q.signature, lambda: canonical_quote_bytes(q), public_key_hex)
        return

    def batch_message() -> bytes:
        root, path = q.merkle_root, q.merkle_path
        if not isinstance(root, (bytes, bytearray)) or len(root) != merkle.HASH_LEN:
            raise InputError("its Merkle root must be 32 bytes")
        if len(path) > merkle.MAX_PATH or not all(isinstance(p, (bytes, bytearray)) and len(p) == merkle.HASH_LEN
                                                  for p in path):
            raise InputError(f"its Merkle path must be at most {merkle.MAX_PATH} hashes of 32 bytes")
        if merkle.root_of(merkle.leaf_hash(canonical_quote_bytes(q)), [bytes(p) for p in path]) != bytes(root):
            raise InputError("its Merkle path does not lead from the quote to the signed root")
        return merkle.batch_message(bytes(root))

    _verify("quote", q.key_id, q.signature, batch_message, public_key_hex)


def verify_terms(terms: PaymentTerms, public_key_hex: str) -> None:
    """Raise VerificationError unless ``terms`` carry a valid signature of ``public_key_hex``.

    Signer nodes call this on terms fetched from the gateway, with the key from their config.
    """
    _verify("payment terms", terms.key_id, terms.signature, lambda: canonical_terms_bytes(terms), public_key_hex)


def verify_late_terms(t: LateTerms, public_key_hex: str) -> None:
    """Raise VerificationError unless the late deposit's decision ``t`` carries a valid signature
    of ``public_key_hex`` (signer nodes: the gateway key from their config). The decision's
    bounds are the caller's to check (``LateTerms.within_bounds`` and the deposit's facts)."""
    _verify("late terms", t.key_id, t.signature, lambda: canonical_late_bytes(t), public_key_hex)


def ensure_not_expired(q: Quote | PaymentTerms, now: datetime) -> None:
    """Raise QuoteExpired if ``now`` is at or after the expiry."""
    if now >= q.expires_at:
        raise QuoteExpired(f"expired at {rfc3339(q.expires_at)}")


# --- JSON forms (the API's wire format) -------------------------------------------------------
def quote_to_json(q: Quote) -> dict:
    d: dict = quote_fields(q)
    d["sources"] = list(q.sources)  # a list on the wire
    d["signature"] = bytes(q.signature).hex()
    if q.merkle_root:  # a batch signature: the root it signs and this quote's path to it
        d["proof"] = {"root": q.merkle_root.hex(), "path": [p.hex() for p in q.merkle_path]}
    return d


try:
    from orjson import dumps as _dumps  # installed with the pinned dependency set; ~5x json.dumps
except ImportError:  # pragma: no cover
    def _dumps(v: object) -> bytes:
        return json.dumps(v).encode()


@functools.lru_cache(maxsize=256)
def _quote_body_parts(token: str, chain: str, rate: Decimal, credit_price_usd: Decimal, created_at: datetime,
                      expires_at: datetime, key_id: str, sources: tuple[str, ...]) -> tuple[bytes, bytes, bytes]:
    """The JSON of a quote (``quote_to_json`` serialized by ``_dumps``) cut around the fields
    that differ between the quotes of one price and second: ``{"id":`` id ``a`` amount ``b``
    credits ``c`` signature... Each piece is ``_dumps`` of its value, so the whole is byte for
    byte what ``_dumps(quote_to_json(q))`` gives (compact JSON, keys in that order)."""
    f = quote_fields(Quote(id="", token=token, chain=chain, amount=0, credits=0, rate=rate,
                           credit_price_usd=credit_price_usd, created_at=created_at, expires_at=expires_at,
                           key_id=key_id, sources=sources))
    a = b',"token":' + _dumps(f["token"]) + b',"chain":' + _dumps(f["chain"]) + b',"amount":'
    c = b"".join((b',"rate":', _dumps(f["rate"]), b',"credit_price_usd":', _dumps(f["credit_price_usd"]),
                  b',"created_at":', _dumps(f["created_at"]), b',"expires_at":', _dumps(f["expires_at"]),
                  b',"key_id":', _dumps(f["key_id"]), b',"sources":', _dumps(list(sources)), b',"signature":"'))
    return a, b',"credits":', c


def quote_body(q: Quote) -> bytes:
    """``_dumps(quote_to_json(q))`` (the ``POST /v1/quotes`` answer), from cached pieces
    (``_quote_body_parts``, joined by ``quote_batch.body``)."""
    if type(q.sources) is not tuple:  # noqa: E721 - the cache needs a hashable sources
        return _dumps(quote_to_json(q))
    pieces = _quote_body_parts(q.token, q.chain, q.rate, q.credit_price_usd, q.created_at, q.expires_at,
                               q.key_id, q.sources)
    tail = quote_batch.proof_tail(q.merkle_root, q.merkle_path) if q.merkle_root else b'"}'
    return quote_batch.body(pieces, _dumps(q.id), int(q.amount), int(q.credits), hexlify(bytes(q.signature)), tail)


def quote_pieces(q: Quote) -> tuple[tuple[bytes, bytes, bytes, bytes], tuple[bytes, bytes, bytes]]:
    """``(canonical pieces, body pieces)`` of the quotes sharing ``q``'s template fields
    (everything but id, amount, credits and the signature): ``quote_batch.Template``'s first two."""
    try:
        canonical = _quote_template(q.chain, q.created_at, q.credit_price_usd, q.expires_at, q.key_id, q.rate,
                                    q.sources, q.token)
        body = _quote_body_parts(q.token, q.chain, q.rate, q.credit_price_usd, q.created_at, q.expires_at,
                                 q.key_id, q.sources)
    except TypeError:  # an unhashable field (sources as a list, a signalling NaN): formatted afresh
        sources = tuple(q.sources)
        canonical = _quote_template.__wrapped__(q.chain, q.created_at, q.credit_price_usd, q.expires_at, q.key_id,
                                                q.rate, sources, q.token)
        body = _quote_body_parts.__wrapped__(q.token, q.chain, q.rate, q.credit_price_usd, q.created_at,
                                             q.expires_at, q.key_id, sources)
    return canonical, body


def terms_to_json(t: PaymentTerms) -> dict[str, str]:
    d = terms_fields(t)
    d["signature"] = bytes(t.signature).hex()
    return d


def late_terms_to_json(t: LateTerms) -> dict[str, str]:
    d = late_fields(t)
    d["signature"] = bytes(t.signature).hex()
    return d


def _str(d: Mapping, k: str) -> str:
    v = d[k]
    if not isinstance(v, str):
        raise VerificationError(f"{k} must be a string")
    return v


def _uint(d: Mapping, k: str) -> int:
    v = _str(d, k)
    if not _UINT_RE.fullmatch(v):
        raise VerificationError(f"{k} must be a decimal integer string")
    return int(v)


def _bytes(d: Mapping, k: str, n: int | None = None) -> bytes:
    v = _str(d, k)
    if not _HEX_RE.fullmatch(v) or len(v) % 2:
        raise VerificationError(f"{k} must be hex")
    b = bytes.fromhex(v[2:] if v.startswith("0x") else v)
    if n is not None and len(b) != n:
        raise VerificationError(f"{k} must be {n} bytes")
    return b


def _time(d: Mapping, k: str) -> datetime:
    try:
        return parse_rfc3339(_str(d, k))
    except ValueError:
        raise VerificationError(f"{k} must be an RFC 3339 timestamp") from None


def _dec(d: Mapping, k: str) -> Decimal:
    v = _str(d, k)
    if not _DEC_RE.fullmatch(v):
        raise VerificationError(f"{k} must be a plain decimal string")
    try:
        return Decimal(v)
    except InvalidOperation:  # pragma: no cover - the pattern already excludes it
        raise VerificationError(f"{k} must be a decimal") from None


def _mapping(d) -> Mapping:
    if not isinstance(d, Mapping):
        raise VerificationError("expected a JSON object")
    return d


def _proof(d: Mapping) -> dict:
    """``merkle_root`` and ``merkle_path`` from a quote's optional ``proof`` object."""
    if "proof" not in d:
        return {}
    p = _mapping(d["proof"])
    path = p.get("path")
    if not isinstance(path, list) or len(path) > merkle.MAX_PATH:
        raise VerificationError(f"proof.path must be a list of at most {merkle.MAX_PATH} hashes")
    return {"merkle_root": _bytes(p, "root", merkle.HASH_LEN),
            "merkle_path": tuple(_bytes({"path": h}, "path", merkle.HASH_LEN) for h in path)}


def quote_from_json(d: Mapping) -> Quote:
    """Parse the JSON form of a quote (raises VerificationError; does not check the signature)."""
    d = _mapping(d)
    try:
        sources = d.get("sources", [])
        if isinstance(sources, str):
            sources = [s for s in sources.split(",") if s]
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise VerificationError("sources must be a list of strings")
        return Quote(
            id=_str(d, "id"),
            token=_str(d, "token"),
            chain=_str(d, "chain"),
            amount=_uint(d, "amount"),
            credits=_uint(d, "credits"),
            rate=_dec(d, "rate"),
            credit_price_usd=_dec(d, "credit_price_usd"),
            created_at=_time(d, "created_at"),
            expires_at=_time(d, "expires_at"),
            key_id=_str(d, "key_id"),
            signature=_bytes(d, "signature"),
            sources=tuple(sources),
            **_proof(d),
        )
    except KeyError as e:
        raise VerificationError(f"quote lacks field {e.args[0]!r}") from None


def terms_from_json(d: Mapping) -> PaymentTerms:
    """Parse the JSON form of payment terms (raises VerificationError; does not check the
    signature -- call ``verify_terms`` next)."""
    d = _mapping(d)
    try:
        return PaymentTerms(
            payment_id=_str(d, "payment_id"),
            reference=_bytes(d, "reference", 32),
            beneficiary=_bytes(d, "beneficiary", 20),
            quote_id=_str(d, "quote_id"),
            chain=_str(d, "chain"),
            token=_str(d, "token"),
            amount=_uint(d, "amount"),
            credits=_uint(d, "credits"),
            expires_at=_time(d, "expires_at"),
            key_id=_str(d, "key_id"),
            signature=_bytes(d, "signature"),
        )
    except KeyError as e:
        raise VerificationError(f"payment terms lack field {e.args[0]!r}") from None


def late_terms_from_json(d: Mapping) -> LateTerms:
    """Parse the JSON form of a late deposit's decision (raises VerificationError; does not
    check the signature -- call ``verify_late_terms`` next)."""
    d = _mapping(d)
    try:
        fresh = _str(d, "fresh_amount")
        return LateTerms(
            payment_id=_str(d, "payment_id"),
            reference=_bytes(d, "reference", 32),
            source=_bytes(d, "source", 32),
            sequence=_uint(d, "sequence"),
            amount=_uint(d, "amount"),
            block_time=_uint(d, "block_time"),
            decision=_str(d, "decision"),
            credits=_uint(d, "credits"),
            counted=_uint(d, "counted"),
            refundable=_uint(d, "refundable"),
            fresh_quote_id=_str(d, "fresh_quote_id"),
            fresh_amount=None if fresh == "" else _uint(d, "fresh_amount"),
            tolerance_bps=_uint(d, "tolerance_bps"),
            reason=_str(d, "reason"),
            created_at=_time(d, "created_at"),
            key_id=_str(d, "key_id"),
            signature=_bytes(d, "signature"),
        )
    except KeyError as e:
        raise VerificationError(f"late terms lack field {e.args[0]!r}") from None


# --- the quote service ------------------------------------------------------------------------
def effective_credit_price(credit_price_usd: Decimal, spread: Decimal) -> Decimal:
    """``credit_price_usd * (1 + spread)``, exactly (an inexact result raises, never rounds)."""
    for name, v in (("credit_price_usd", credit_price_usd), ("credit_spread", spread)):
        if not isinstance(v, Decimal) or not v.is_finite():
            raise ConfigError(f"{name} must be a finite Decimal")
    if credit_price_usd <= 0 or spread < 0:
        raise ConfigError("credit_price_usd must be positive and credit_spread not negative")
    if not spread:
        return credit_price_usd
    ctx = Context(prec=400, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact, InvalidOperation, Overflow])
    try:
        return ctx.multiply(credit_price_usd, ctx.add(Decimal(1), spread))
    except ArithmeticError:
        raise ConfigError("credit_price_usd * (1 + credit_spread) is not exactly representable") from None


class QuoteService:
    """Makes signed quotes from the configured credit price and a price source.

    ``source`` is either a :class:`PriceAggregator` (production: the guarded median of
    several sources, refreshed in the background; its staleness, quorum and deviation
    guards decide) or a single :class:`PriceSource` asked on every quote (tests, simple
    set-ups; then ``max_price_age`` bounds the point's age). Either way a missing or
    untrustworthy price raises ``PriceUnavailable`` (HTTP 503), never yields a quote.

    The credit price is ``credit_price_usd * (1 + credit_spread)``; it is signed into every
    quote as ``credit_price_usd``. A payable token is the pair (symbol, chain)
    (``bridge.config.PayableToken``): build the list from the settings with
    ``QuoteService.from_settings``, or give ``token_chains`` (symbol -> chain, native tokens).

    **Depeg guard**: a token with a ``peg`` is always priced at its *measured* rate. When that
    rate is more than ``peg_band_bps`` from the peg, quotes are refused (``TokenDepegged``,
    HTTP 503 ``token-depegged``) unless the token's ``depeg`` is ``"price"`` (then quoted at
    the measured rate); either way ``creditbridge_pricing_depegged_quotes_total`` counts it
    and a WARNING is logged when the token leaves the band (and an INFO when it is back).
    """

    def __init__(
        self,
        pricing: PricingConfig,
        source: PriceSource | PriceAggregator,
        signer: QuoteSigner,
        *,
        token_chains: Mapping[str, str] | None = None,
        tokens: Sequence[PayableToken] | None = None,
        max_price_age: timedelta | None = timedelta(minutes=10),
        decimals: Mapping[str, int] = TOKEN_DECIMALS,
        price_symbols: Mapping[str, str] | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if (tokens is None) == (token_chains is None):
            raise ConfigError("give exactly one of tokens and token_chains")
        if tokens is None:
            assert token_chains is not None
            for token in token_chains:
                if token not in decimals:
                    raise ConfigError(f"token {token!r} has no known decimals")
            tokens = [PayableToken(symbol=t, chain=c, family="", decimals=decimals[t],
                                   price_symbol=(price_symbols or {}).get(t, t)) for t, c in token_chains.items()]
        self.payable: dict[tuple[str, str], PayableToken] = {}
        for t in tokens:
            if t.key in self.payable:
                raise ConfigError(f"token {t.symbol} on {t.chain} is listed twice")
            self.payable[t.key] = t
        self.by_symbol: dict[str, list[PayableToken]] = {}
        for t in self.payable.values():
            self.by_symbol.setdefault(t.symbol, []).append(t)
        self.pricing = pricing
        self.source = source
        self.signer = signer
        # symbol -> chain of the symbols payable on one chain only (the OpenAPI token enum lists all)
        self.token_chains = {s: ts[0].chain for s, ts in self.by_symbol.items()}
        self.decimals = {k: t.decimals for k, t in self.payable.items()}
        # the symbol each token's USD price is asked under (one asset on every chain: USDT)
        self.price_symbols = {k: t.price_symbol for k, t in self.payable.items()}
        self.max_price_age = max_price_age
        self.ttl = timedelta(seconds=pricing.quote_ttl_seconds)
        self.credit_price_usd = effective_credit_price(pricing.credit_price_usd, pricing.credit_spread)
        self._view: PriceAggregator | None = source if isinstance(source, PriceAggregator) else None
        if registry is None:
            from prometheus_client import CollectorRegistry as _Registry

            registry = _Registry()
        self._metrics = PricingMetrics.for_registry(registry)
        self._depegged: set[tuple[str, str]] = set()  # tokens last seen outside their band (for the log)
        self._priced: dict[tuple[str, str], tuple] = {}  # token -> make_quote's context (see there)
        self._second: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, source: PriceSource | PriceAggregator, signer: QuoteSigner,
                      **kw) -> "QuoteService":
        return cls(settings.pricing, source, signer, tokens=settings.payable_tokens(), **kw)

    @property
    def price_keys(self) -> frozenset[str]:
        """The symbols the payable tokens are priced under."""
        return frozenset(self.price_symbols.values())

    @property
    def tokens(self) -> frozenset[str]:
        """The payable symbols (a symbol may be payable on several chains)."""
        return frozenset(self.by_symbol)

    @property
    def aggregator(self) -> PriceAggregator | None:
        return self.source if isinstance(self.source, PriceAggregator) else None

    def resolve(self, token: str, chain: str | None = None) -> PayableToken:
        """The payable token ``token`` (a symbol) on ``chain``; ``chain`` may be omitted when the
        symbol is payable on one chain only. InputError (400) for an unknown symbol,
        ``TokenNotOffered`` for a chain that does not offer it, ``TokenAmbiguous`` when the
        chain is needed."""
        options = self.by_symbol.get(token) if isinstance(token, str) else None
        if not options:
            raise InputError(f"unknown token; supported: {', '.join(sorted(self.by_symbol))}")
        if chain is None:
            if len(options) > 1:
                raise TokenAmbiguous(f"{token} is payable on several chains ({', '.join(t.chain for t in options)}): "
                                     "give chain, one of them")
            return options[0]
        chains = [t.chain for t in options]
        for t in options:
            if t.chain == chain:
                return t
        raise TokenNotOffered(f"chain {chain!r} does not offer {token}; {token} is payable on: {', '.join(chains)}")

    def chain_of(self, token: str, chain: str | None = None) -> str:
        return self.resolve(token, chain).chain

    def token_list(self) -> list[dict]:
        """The payable tokens as ``GET /v1/tokens`` lists them (minimum amounts in base units).
        A non-native token carries the one field that names it on its chain (``contract``,
        ``asset_id`` or ``jetton_master``); a native token carries none of them."""
        out = []
        for t in self.payable.values():
            d: dict = {"symbol": t.symbol, "chain": t.chain, "decimals": t.decimals, "native": t.native,
                       "min_amount": str(per_token(self.pricing.min_amount, t.symbol, t.chain, 0))}
            for k in ("contract", "asset_id", "jetton_master"):
                if getattr(t, k) is not None:
                    d[k] = getattr(t, k)
            if t.peg is not None:
                d["peg_usd"] = decimal_str(t.peg)
            out.append(d)
        return out

    async def price_of(self, token: str, now: datetime, chain: str | None = None) -> tuple[Decimal, tuple[str, ...]]:
        """``(USD per whole token, names of the sources behind it)``, or PriceUnavailable."""
        if chain is not None or token in self.by_symbol:
            token = self.resolve(token, chain).price_symbol
        if isinstance(self.source, PriceAggregator):
            if token not in self.source.symbols:
                raise PriceUnavailable(f"no price source is configured for {token}")
            aggregated = self.source.price(token, now)
            return aggregated.price, tuple(q.name for q in aggregated.sources)
        points = await self.source.fetch(frozenset({token}))
        point = points.get(token)
        if point is None:
            raise PriceUnavailable(f"no price for {token}")
        if not isinstance(point.price, Decimal) or not point.price.is_finite() or point.price <= 0:
            raise PriceUnavailable(f"the price of {token} is not a positive number")
        if self.max_price_age is not None and point.timestamp < now - self.max_price_age:
            raise PriceUnavailable(f"the price of {token} is stale")
        return point.price, (point.source,)

    def check_peg(self, token: PayableToken, rate: Decimal) -> None:
        """The depeg guard (see the class docstring): exact, in basis points of the peg."""
        if token.peg is None or token.peg_band_bps is None:
            return
        off = abs(Fraction(rate) - Fraction(token.peg)) / Fraction(token.peg) * 10_000  # bps, exact
        self._metrics.peg_deviation_bps.labels(token=token.symbol, chain=token.chain).set(float(off))
        if off <= token.peg_band_bps:
            if token.key in self._depegged:
                self._depegged.discard(token.key)
                log.info("%s on %s is back within its peg band: %s USD (peg %s, band %d bps)", token.symbol,
                         token.chain, decimal_str(rate), decimal_str(token.peg), token.peg_band_bps)
            return
        action = "priced" if token.depeg == "price" else "refused"
        self._metrics.depegged_quotes.labels(token=token.symbol, chain=token.chain, action=action).inc()
        if token.key not in self._depegged:
            self._depegged.add(token.key)
            log.warning("DEPEG: %s on %s trades at %s USD, %.1f bps from its peg %s (band %d bps): quotes are %s",
                        token.symbol, token.chain, decimal_str(rate), float(off), decimal_str(token.peg),
                        token.peg_band_bps, "priced at the measured rate" if action == "priced" else "refused")
        if action == "refused":
            raise TokenDepegged(f"{token.symbol} on {token.chain} trades at {decimal_str(rate)} USD, outside its "
                                f"peg band ({decimal_str(token.peg)} USD +/- {token.peg_band_bps} bps): "
                                "no quotes until it is back")

    async def prices(self, now: datetime | None = None) -> dict:
        """The ``GET /v1/prices`` view: the aggregator's snapshot. Over a single source, a
        one-source aggregator refreshed on each call gives the same shape."""
        if self._view is None:
            from prometheus_client import CollectorRegistry

            self._view = PriceAggregator(
                [self.source], min_sources=1, max_deviation=Decimal(0),
                max_age=self.max_price_age or timedelta(days=365), registry=CollectorRegistry(),
                symbols=self.price_keys or {"ETH"},
            )
        if self._view is not self.source:
            await self._view.refresh()
        return self._view.snapshot(now)

    async def make_quote(
        self,
        token: str,
        credits: int | None = None,
        amount: int | None = None,
        now: datetime | None = None,
        chain: str | None = None,
        *,
        sign: bool = True,
    ) -> Quote:
        """A signed quote for buying ``credits`` (amount rounded up) or for paying ``amount``
        base units (credits rounded down) of ``token`` on ``chain`` (which may be omitted when
        the symbol is payable on one chain only). Exactly one of credits and amount. With
        ``sign=False`` the quote carries this service's ``key_id`` but no signature yet (the
        API signs the quotes of a few milliseconds together: ``QuoteSigner.sign_quotes``)."""
        payable, now = self._prepare(token, credits, amount, now, chain)
        if isinstance(self.source, PriceAggregator):
            ctx = self._aggregated(payable, now)
        else:
            rate, sources = await self.price_of(payable.symbol, now, payable.chain)
            self.check_peg(payable, rate)
            ctx = self._context(payable, rate, sources, now)
        amount, credits = self._amounts(ctx, payable, credits, amount)
        quote = _evolve(ctx[3], id=_new_id(), amount=amount, credits=credits)
        return self.signer.sign_quote(quote) if sign else quote

    def quote_parts(self, token: str, credits: int | None = None, amount: int | None = None,
                    now: datetime | None = None, chain: str | None = None) -> tuple[Quote, str, int, int] | None:
        """``make_quote(..., sign=False)`` in parts, without awaiting: ``(template, id, amount,
        credits)``, the quote being ``template`` with those three fields (the template is shared
        by the quotes of one price and second: ``POST /v1/quotes`` hands the parts to the quote
        writer, which signs, stores and serializes them by batch). Same checks and errors as
        ``make_quote``; None when the price comes from a plain source (``make_quote`` awaits it)."""
        if not isinstance(self.source, PriceAggregator):
            return None
        payable, now = self._prepare(token, credits, amount, now, chain)
        ctx = self._aggregated(payable, now)
        amount, credits = self._amounts(ctx, payable, credits, amount)
        return ctx[3], _new_id(), amount, credits

    def _prepare(self, token: str, credits: int | None, amount: int | None, now: datetime | None,
                 chain: str | None) -> tuple[PayableToken, datetime]:
        """The payable token and ``now`` truncated to its second, once the inputs are checked."""
        payable = self.resolve(token, chain)
        if (credits is None) == (amount is None):
            raise InputError("give exactly one of credits and amount")
        if credits is not None:
            _positive("credits", credits, MAX_CREDITS)
        if amount is not None:
            _positive("amount", amount, MAX_AMOUNT)
        now = now or utcnow()
        if now.tzinfo is None or now.utcoffset() is None:
            raise InputError("now must be timezone-aware")
        if now.tzinfo is not timezone.utc:
            now = now.astimezone(timezone.utc)
        second = self._second  # the last second truncated: replace() parses keywords, a few µs
        if second is None or not _ZERO <= now - second < _ONE_SECOND:
            second = self._second = now.replace(microsecond=0)
        return payable, second

    def _aggregated(self, payable: PayableToken, now: datetime) -> tuple:
        """The quote context (``_context``) at the aggregator's price: the aggregator answers one
        AggregatedPrice object per symbol and second (until a refresh), so what a quote takes
        from it -- rate, sources, the exact credit value, the minimum, the dates -- is worked
        out once per (token, price object, second) into a template quote; each quote is that
        template with its own id, amount and credits."""
        aggregator = self.source
        symbol = payable.price_symbol
        if symbol not in aggregator.symbols:
            raise PriceUnavailable(f"no price source is configured for {symbol}")
        aggregated = aggregator.price(symbol, now)
        self.check_peg(payable, aggregated.price)  # the measured rate is what the quote uses, never the peg
        ctx = self._priced.get(payable.key)
        if (ctx is None or ctx[0] is not aggregated or ctx[1] != now or ctx[2] is not self.credit_price_usd
                or ctx[3].key_id != self.signer.key_id):
            ctx = self._priced[payable.key] = self._context(
                payable, aggregated.price, tuple(q.name for q in aggregated.sources), now, aggregated)
        return ctx

    @staticmethod
    def _amounts(ctx: tuple, payable: PayableToken, credits: int | None, amount: int | None) -> tuple[int, int]:
        """``(amount, credits)`` of a quote in context ``ctx``: the amount for ``credits`` rounded
        up, or the credits ``amount`` buys rounded down; InputError outside the limits."""
        num, den, minimum = ctx[4], ctx[5], ctx[6]
        if credits is not None:
            amount = -(-credits * num // den)  # == amount_for_credits(credits, price, rate, decimals)
            if amount > MAX_AMOUNT:
                raise InputError("too many credits for one quote")
        else:
            assert amount is not None
            credits = amount * den // num  # == credits_for_amount(amount, price, rate, decimals)
            if credits == 0:
                raise InputError("the amount does not buy a single credit")
            if credits > MAX_CREDITS:
                raise InputError("the amount buys too many credits for one quote")
        if amount < minimum:
            raise InputError(f"amount {amount} is below the minimum of {minimum} base units of {payable.symbol}")
        return amount, credits

    def _context(self, payable: PayableToken, rate: Decimal, sources: tuple[str, ...], now: datetime,
                 price_object: object = None) -> tuple:
        """``(price_object, now, credit price, template quote, num, den, minimum)`` for quotes of
        ``payable`` at ``rate`` made at ``now`` (``price_object``: what the cache is valid for)."""
        price = self.credit_price_usd
        num, den = _credit_value(price, rate, payable.decimals)  # exact, as amount_for_credits computes it
        minimum = per_token(self.pricing.min_amount, payable.symbol, payable.chain, 0)
        template = Quote(id="", token=payable.symbol, chain=payable.chain, amount=0, credits=0, rate=rate,
                         credit_price_usd=price, created_at=now, expires_at=now + self.ttl, sources=sources,
                         key_id=self.signer.key_id)
        return (price_object, now, price, template, num, den, minimum)


_ZERO, _ONE_SECOND = timedelta(0), timedelta(seconds=1)


@functools.lru_cache(maxsize=256)
def _credit_value(credit_price_usd: Decimal, token_usd: Decimal, decimals: int) -> tuple[int, int]:
    """(numerator, denominator) of one credit's value in base units (``credit_value_in_base_units``,
    an exact Fraction in lowest terms): the price repeats across quotes until it moves."""
    v = credit_value_in_base_units(credit_price_usd, token_usd, decimals)
    return v.numerator, v.denominator


class _UuidPool:
    """Quote ids: time-ordered UUIDs (RFC 9562 version 7): the 48-bit Unix time in milliseconds,
    then 74 random bits from ``os.urandom`` drawn 2.5 KiB at a time (the CSPRNG of
    ``uuid.uuid4()``, without a system call per quote). Unguessable as a version 4 id is (2^74
    per millisecond), and they sort by time: a store's index on the id grows at its end
    instead of at a random page per quote. With random (version 4) ids every quote of a batch
    dirtied its own index page, and the SQLite store process spent ~40% of its time writing
    those pages to the WAL (bench/quote_throughput.py). The time they give away is the quote's
    ``created_at``, which the quote states anyway."""

    def __init__(self, per_draw: int = 256) -> None:
        self.per_draw = per_draw
        self._hex = ""  # the random draw, as hex digits: 20 an id
        self._at = 0
        self._ms = -1
        self._prefix = ""  # the current millisecond's "xxxxxxxx-xxxx-7"

    def __call__(self) -> str:
        at = self._at
        if at >= len(self._hex):
            self._hex, at = os.urandom(10 * self.per_draw).hex(), 0
        self._at = at + 20
        r = self._hex[at:at + 20]
        ms = time.time_ns() // 1_000_000
        if ms != self._ms:
            h = format(ms, "012x")
            self._ms, self._prefix = ms, f"{h[:8]}-{h[8:]}-7"
        # xxxxxxxx-xxxx-7rrr-Vrrr-rrrrrrrrrrrr: version nibble 7; the variant digit V is 10 then
        # two random bits (8, 9, a or b: the low two bits of r[3]); 12 + 2 + 60 random bits
        return f"{self._prefix}{r[:3]}-{_VARIANT[r[3]]}{r[4:7]}-{r[7:19]}"


_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


_new_id = _UuidPool()


def _positive(name: str, v: int, maximum: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{name} must be an integer")
    if v <= 0:
        raise InputError(f"{name} must be positive")
    if v > maximum:
        raise InputError(f"{name} is too large")
