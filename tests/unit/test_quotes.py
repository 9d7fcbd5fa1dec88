"""Signed quotes and payment terms: canonical bytes, signatures, tampering, expiry, the service."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bridge.config import PricingConfig
from bridge.errors import ConfigError, InputError, KeystoreError, PriceUnavailable, QuoteExpired, VerificationError
from bridge.keystore import SecretKey, public_of, write_keystore
from bridge.pricing.credits import amount_for_credits, credits_for_amount
from bridge.pricing.quotes import (
    QuoteService,
    QuoteSigner,
    canonical_quote_bytes,
    canonical_terms_bytes,
    decimal_str,
    ensure_not_expired,
    parse_rfc3339,
    quote_from_json,
    quote_to_json,
    rfc3339,
    terms_from_json,
    terms_to_json,
    verify_quote,
    verify_terms,
)
from bridge.pricing.sources.base import PricePoint, PriceSource
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.types import PaymentTerms, Quote

SECRET = bytes(range(1, 33))
OTHER = bytes(range(2, 34))
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def signer() -> QuoteSigner:
    return QuoteSigner.from_secret(SECRET)


def a_quote(**kw) -> Quote:
    d = dict(id="6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6", token="ETH", chain="ethereum", amount=1666666666666667,
             credits=500, rate=Decimal("3000.00"), credit_price_usd=Decimal("0.01"), created_at=T0,
             expires_at=T0 + timedelta(minutes=15), sources=("fixed",))
    d.update(kw)
    return Quote(**d)


def some_terms(**kw) -> PaymentTerms:
    d = dict(payment_id="0b5c9e2a-1111-4222-8333-944455556666", reference=bytes.fromhex("ab" * 32),
             beneficiary=bytes.fromhex("12" * 20), quote_id="6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6",
             chain="ethereum", token="ETH", amount=1666666666666667, credits=500,
             expires_at=T0 + timedelta(minutes=15))
    d.update(kw)
    return PaymentTerms(**d)


# --- encodings --------------------------------------------------------------------------------
def test_canonical_quote_bytes_are_stable():
    q = replace(a_quote(), key_id="0123456789abcdef")
    assert canonical_quote_bytes(q) == (
        b'creditbridge/quote/v1\n{"amount":"1666666666666667","chain":"ethereum",'
        b'"created_at":"2026-11-26T12:00:00Z","credit_price_usd":"0.01","credits":"500",'
        b'"expires_at":"2026-11-26T12:15:00Z","id":"6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6",'
        b'"key_id":"0123456789abcdef","rate":"3000","sources":"fixed","token":"ETH"}'
    )


def test_canonical_terms_bytes_are_stable():
    t = replace(some_terms(), key_id="0123456789abcdef")
    assert canonical_terms_bytes(t) == (
        b'creditbridge/payment/v1\n{"amount":"1666666666666667","beneficiary":"0x' + b"12" * 20 + b'",'
        b'"chain":"ethereum","credits":"500","expires_at":"2026-11-26T12:15:00Z","key_id":"0123456789abcdef",'
        b'"payment_id":"0b5c9e2a-1111-4222-8333-944455556666","quote_id":"6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6",'
        b'"reference":"0x' + b"ab" * 32 + b'","token":"ETH"}'
    )


def test_canonical_bytes_do_not_depend_on_representation():
    a = a_quote(rate=Decimal("3000.00"))
    b = a_quote(rate=Decimal("3E+3"), created_at=T0.astimezone(timezone(timedelta(hours=5))))
    assert canonical_quote_bytes(a) == canonical_quote_bytes(b)
    assert canonical_quote_bytes(a) != canonical_quote_bytes(a_quote(rate=Decimal("3000.01")))


def test_domains_separate_quotes_from_terms():
    assert canonical_quote_bytes(a_quote()).startswith(b"creditbridge/quote/v1\n")
    assert canonical_terms_bytes(some_terms()).startswith(b"creditbridge/payment/v1\n")


@pytest.mark.parametrize("d,s", [(Decimal("3000.00"), "3000"), (Decimal("1E-2"), "0.01"), (Decimal("0.0100"), "0.01"),
                                 (Decimal("7.25"), "7.25"), (Decimal("1E+3"), "1000"), (Decimal("0"), "0"),
                                 (Decimal("123456789012345678901234567890.123456789"),
                                  "123456789012345678901234567890.123456789")])
def test_decimal_str(d, s):
    assert decimal_str(d) == s
    assert Decimal(s) == d


def test_rfc3339():
    assert rfc3339(T0) == "2026-11-26T12:00:00Z"
    assert rfc3339(T0.replace(microsecond=1500)) == "2026-11-26T12:00:00.001500Z"
    assert parse_rfc3339("2026-11-26T12:00:00Z") == T0
    assert parse_rfc3339("2026-11-26T17:00:00+05:00") == T0
    with pytest.raises(InputError):
        rfc3339(datetime(2026, 1, 1))  # naive
    for bad in ("2026-11-26T12:00:00", "yesterday", "2026-11-26"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)


# --- signing ----------------------------------------------------------------------------------
def test_signer_identity(signer):
    assert signer.public_key == public_of("ed25519", SECRET)
    assert signer.key_id == signer.public_key[:16] and len(signer.key_id) == 16
    assert "SecretKey" not in repr(signer) and SECRET.hex() not in repr(signer)


def test_signer_refuses_other_key_kinds():
    with pytest.raises(KeystoreError):
        QuoteSigner(SecretKey("secp256k1", SECRET, "0x" + "00" * 20))


def test_signer_from_keystore(tmp_path, monkeypatch):
    path = tmp_path / "quote.json"
    write_keystore(path, "ed25519", SECRET, "correct horse", n=2**10)
    monkeypatch.setenv("CB_TEST_QUOTE_PW", "correct horse")
    from bridge.config import KeyRef

    s = QuoteSigner.from_ref(KeyRef(keystore=path, password_env="CB_TEST_QUOTE_PW"))
    assert s.public_key == public_of("ed25519", SECRET)


def test_sign_and_verify_quote(signer):
    q = signer.sign_quote(a_quote())
    assert q.key_id == signer.key_id and len(q.signature) == 64
    verify_quote(q, signer.public_key)


def test_sign_and_verify_terms(signer):
    t = signer.sign_terms(some_terms())
    assert t.key_id == signer.key_id and len(t.signature) == 64
    verify_terms(t, signer.public_key)


TAMPER_QUOTE = {
    "id": "00000000-0000-4000-8000-000000000000", "token": "DOT", "chain": "polkadot", "amount": 1,
    "credits": 501, "rate": Decimal("3001"), "credit_price_usd": Decimal("0.001"),
    "created_at": T0 - timedelta(days=1), "expires_at": T0 + timedelta(days=1), "sources": ("evil",),
}
TAMPER_TERMS = {
    "payment_id": "00000000-0000-4000-8000-000000000000", "reference": b"\x01" * 32, "beneficiary": b"\x13" * 20,
    "quote_id": "00000000-0000-4000-8000-000000000001", "chain": "polkadot", "token": "DOT", "amount": 1,
    "credits": 501, "expires_at": T0 + timedelta(days=1),
}


def test_tamper_table_covers_every_signed_field():
    # the batch proof (merkle_root, merkle_path) is tampered with in tests/unit/test_quote_batches.py
    assert set(TAMPER_QUOTE) == {f.name for f in fields(Quote)} - {"key_id", "signature", "merkle_root", "merkle_path"}
    assert set(TAMPER_TERMS) == {f.name for f in fields(PaymentTerms)} - {"key_id", "signature"}


@pytest.mark.parametrize("field,value", sorted(TAMPER_QUOTE.items()))
def test_quote_tampering_is_detected(signer, field, value):
    q = signer.sign_quote(a_quote())
    with pytest.raises(VerificationError):
        verify_quote(replace(q, **{field: value}), signer.public_key)


@pytest.mark.parametrize("field,value", sorted(TAMPER_TERMS.items()))
def test_terms_tampering_is_detected(signer, field, value):
    t = signer.sign_terms(some_terms())
    with pytest.raises(VerificationError):
        verify_terms(replace(t, **{field: value}), signer.public_key)


def test_wrong_key_signature_or_key_id_is_detected(signer):
    other = QuoteSigner.from_secret(OTHER)
    t = signer.sign_terms(some_terms())
    with pytest.raises(VerificationError, match="signed by key"):
        verify_terms(t, other.public_key)
    with pytest.raises(VerificationError):  # key id relabelled to the verifier's key
        verify_terms(replace(t, key_id=other.key_id), other.public_key)
    with pytest.raises(VerificationError):
        verify_terms(replace(t, signature=bytes(64)), signer.public_key)
    with pytest.raises(VerificationError):
        verify_terms(replace(t, signature=t.signature[:63]), signer.public_key)
    with pytest.raises(VerificationError):
        verify_terms(replace(t, signature=b""), signer.public_key)
    with pytest.raises(VerificationError):
        verify_terms(t, "zz" * 32)
    flipped = bytes([t.signature[0] ^ 1]) + t.signature[1:]
    with pytest.raises(VerificationError):
        verify_terms(replace(t, signature=flipped), signer.public_key)
    # a quote signature does not verify as terms (domain separation) even with equal fields
    with pytest.raises(VerificationError):
        verify_quote(replace(signer.sign_quote(a_quote()), signature=t.signature), signer.public_key)


def test_terms_with_naive_datetime_fail_verification(signer):
    t = signer.sign_terms(some_terms())
    with pytest.raises(VerificationError):
        verify_terms(replace(t, expires_at=t.expires_at.replace(tzinfo=None)), signer.public_key)


def test_json_round_trips_verify(signer):
    q = signer.sign_quote(a_quote())
    wire = json.loads(json.dumps(quote_to_json(q)))
    assert wire["amount"] == "1666666666666667" and wire["rate"] == "3000" and wire["sources"] == ["fixed"]
    q2 = quote_from_json(wire)
    verify_quote(q2, signer.public_key)
    assert canonical_quote_bytes(q2) == canonical_quote_bytes(q)
    t = signer.sign_terms(some_terms())
    t2 = terms_from_json(json.loads(json.dumps(terms_to_json(t))))
    assert t2 == t
    verify_terms(t2, signer.public_key)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("amount"),
    lambda d: d.update(amount=5),
    lambda d: d.update(amount="-5"),
    lambda d: d.update(amount="1.5"),
    lambda d: d.update(reference="0x1234"),
    lambda d: d.update(beneficiary="nothex"),
    lambda d: d.update(expires_at="tomorrow"),
    lambda d: d.update(signature=None),
])
def test_malformed_terms_json_is_a_verification_error(signer, mutate):
    d = terms_to_json(signer.sign_terms(some_terms()))
    mutate(d)
    with pytest.raises(VerificationError):
        terms_from_json(d)
    with pytest.raises(VerificationError):
        terms_from_json(["not", "an", "object"])


def test_expiry():
    q = a_quote()
    ensure_not_expired(q, q.expires_at - timedelta(microseconds=1))
    with pytest.raises(QuoteExpired) as e:
        ensure_not_expired(q, q.expires_at)
    assert e.value.code == "quote-expired" and e.value.http_status == 409
    with pytest.raises(QuoteExpired):
        ensure_not_expired(some_terms(), T0 + timedelta(hours=1))


# --- the fixed source and the service ---------------------------------------------------------
async def test_fixed_price_source():
    src = FixedPriceSource({"ETH": Decimal("3000"), "DOT": Decimal("7.25")}, clock=lambda: T0)
    assert isinstance(src, PriceSource)
    got = await src.fetch(frozenset({"ETH", "TON"}))
    assert got == {"ETH": PricePoint("ETH", Decimal("3000"), T0, "fixed")}
    with pytest.raises(ConfigError):
        FixedPriceSource({"ETH": Decimal("0")})
    with pytest.raises(ConfigError):
        FixedPriceSource({"ETH": 3000.0})  # type: ignore[dict-item]


def service(signer, prices=None, **pricing) -> QuoteService:
    cfg = PricingConfig(credit_price_usd=Decimal("0.01"), quote_ttl_seconds=900, **pricing)
    src = FixedPriceSource(prices if prices is not None else {"ETH": Decimal("3000")}, clock=lambda: T0)
    return QuoteService(cfg, src, signer, token_chains={"ETH": "ethereum"})


async def test_make_quote_by_credits(signer):
    q = await service(signer).make_quote("ETH", credits=500, now=T0 + timedelta(microseconds=7))
    verify_quote(q, signer.public_key)
    assert q.chain == "ethereum" and q.credits == 500 and q.rate == Decimal("3000")
    assert q.amount == amount_for_credits(500, Decimal("0.01"), Decimal("3000"), 18) == 1666666666666667
    assert q.created_at == T0 and q.expires_at == T0 + timedelta(seconds=900)
    assert q.sources == ("fixed",) and q.credit_price_usd == Decimal("0.01")


async def test_make_quote_by_amount(signer):
    q = await service(signer).make_quote("ETH", amount=10**18, now=T0)
    assert q.amount == 10**18 and q.credits == 300_000
    q = await service(signer).make_quote("ETH", amount=1666666666666666, now=T0)
    assert q.credits == 499 == credits_for_amount(1666666666666666, Decimal("0.01"), Decimal("3000"), 18)


@pytest.mark.parametrize("kw", [
    dict(),
    dict(credits=1, amount=1),
    dict(credits=0),
    dict(credits=-3),
    dict(credits=True),
    dict(credits=1.0),
    dict(credits="5"),
    dict(credits=2**128),
    dict(amount=0),
    dict(amount=2**256),
    dict(amount=1),  # buys no credit
])
async def test_make_quote_rejects_bad_input(signer, kw):
    with pytest.raises(InputError):
        await service(signer).make_quote("ETH", now=T0, **kw)


async def test_make_quote_refuses_naive_now(signer):
    with pytest.raises(InputError):
        await service(signer).make_quote("ETH", credits=1, now=datetime(2026, 11, 26, 12, 0))


async def test_make_quote_unknown_token_and_missing_price(signer):
    with pytest.raises(InputError, match="unknown token"):
        await service(signer).make_quote("DOGE", credits=1, now=T0)
    with pytest.raises(PriceUnavailable):
        await service(signer, prices={}).make_quote("ETH", credits=1, now=T0)


async def test_make_quote_minimum_amount(signer):
    svc = service(signer, min_amount={"ETH": 10**15})
    with pytest.raises(InputError, match="minimum"):
        await svc.make_quote("ETH", credits=1, now=T0)
    assert (await svc.make_quote("ETH", credits=300, now=T0)).amount == 10**15


async def test_stale_price_is_unavailable(signer):
    cfg = PricingConfig()
    src = FixedPriceSource({"ETH": Decimal("3000")}, clock=lambda: T0)
    svc = QuoteService(cfg, src, signer, token_chains={"ETH": "ethereum"}, max_price_age=timedelta(minutes=1))
    await svc.make_quote("ETH", credits=1, now=T0 + timedelta(seconds=59))
    with pytest.raises(PriceUnavailable, match="stale"):
        await svc.make_quote("ETH", credits=1, now=T0 + timedelta(minutes=2))


def test_service_refuses_tokens_without_decimals(signer):
    with pytest.raises(ConfigError):
        QuoteService(PricingConfig(), FixedPriceSource({}), signer, token_chains={"DOGE": "dogechain"})
