"""Late deposits at a fresh quote: the gateway's rule (``decide_late``), its bounds, and the signed
``LateTerms`` (canonical bytes, signature, tampering, JSON round trip)."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.committee.gateway import late_terms_from_json as client_parse
from bridge.errors import InputError, VerificationError
from bridge.payments.late import (
    CREDIT,
    CREDITED_AT_FRESH_QUOTE,
    DISABLED,
    HOLD,
    NO_CREDIT,
    OTHER_DEPOSITS,
    PRICE_MOVED,
    PRICE_UNAVAILABLE,
    LateDecision,
    LateTerms,
    decide_late,
    within_tolerance,
)
from bridge.pricing.credits import credits_for_deposit
from bridge.pricing.quotes import (
    QuoteSigner,
    canonical_late_bytes,
    canonical_terms_bytes,
    late_terms_from_json,
    late_terms_to_json,
    verify_late_terms,
    verify_terms,
)
from bridge.types import PaymentTerms

SECRET = bytes(range(1, 33))
OTHER = bytes(range(2, 34))
T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
A, C = 1_000_000, 500  # quoted amount and credits


def late(**kw) -> LateDecision:
    d = dict(terms_amount=A, terms_credits=C, deposit_amount=A, other_deposits=0, fresh_amount=A, tolerance_bps=200)
    d.update(kw)
    return decide_late(**d)


# --- the rule -------------------------------------------------------------------------------------
def test_same_price_credits_the_quoted_credits():
    assert late() == LateDecision(CREDIT, C, A, 0, CREDITED_AT_FRESH_QUOTE)


def test_disabled_by_default_tolerance_zero():
    assert late(tolerance_bps=0) == LateDecision(HOLD, 0, 0, A, DISABLED)
    assert late(tolerance_bps=0, other_deposits=3, fresh_amount=None).reason == DISABLED


def test_other_deposits_hold():
    assert late(other_deposits=1) == LateDecision(HOLD, 0, 0, A, OTHER_DEPOSITS)


def test_no_fresh_price_holds():
    assert late(fresh_amount=None) == LateDecision(HOLD, 0, 0, A, PRICE_UNAVAILABLE)


def test_tolerance_boundary_is_exact_in_both_directions():
    # 200 bps of 1_000_000 is 20_000 base units
    assert late(fresh_amount=A + 20_000).decision == CREDIT
    assert late(fresh_amount=A - 20_000).decision == CREDIT
    assert late(fresh_amount=A + 20_001) == LateDecision(HOLD, 0, 0, A, PRICE_MOVED)
    assert late(fresh_amount=A - 20_001) == LateDecision(HOLD, 0, 0, A, PRICE_MOVED)
    assert within_tolerance(3, 4, 3333) is False and within_tolerance(3, 4, 3334) is True  # 1/3 = 3333.3.. bps
    assert late(fresh_amount=A * 2, tolerance_bps=10_000).decision == CREDIT  # 100 %: anything up to double


def test_price_fell_credits_the_quote_and_refunds_the_remainder():
    # the same credits cost less now: the deposit covers them with room to spare
    d = late(fresh_amount=990_000)
    assert d == LateDecision(CREDIT, C, 990_000, 10_000, CREDITED_AT_FRESH_QUOTE)


def test_price_rose_credits_pro_rata():
    d = late(fresh_amount=1_010_000)
    assert d.decision == CREDIT and d.counted == A and d.refundable == 0
    assert d.credits == A * C // 1_010_000 == 495


def test_underpaid_late_deposit_is_pro_rata_at_the_fresh_price():
    d = late(deposit_amount=300_000, fresh_amount=1_005_000)
    assert d == LateDecision(CREDIT, 300_000 * C // 1_005_000, 300_000, 0, CREDITED_AT_FRESH_QUOTE)


def test_dust_buys_no_credit_and_is_held():
    assert late(deposit_amount=1) == LateDecision(HOLD, 0, 0, 1, NO_CREDIT)


@pytest.mark.parametrize("kw", [
    {"terms_amount": 0}, {"terms_credits": 0}, {"deposit_amount": 0}, {"other_deposits": -1},
    {"fresh_amount": 0}, {"tolerance_bps": -1}, {"tolerance_bps": 10_001}, {"deposit_amount": 1.5},
    {"terms_amount": True},
])
def test_bad_inputs_are_refused(kw):
    with pytest.raises(InputError):
        late(**kw)


amounts = st.integers(min_value=1, max_value=2**256 - 1)


@given(terms_amount=amounts, terms_credits=st.integers(min_value=1, max_value=2**128 - 1), deposit_amount=amounts,
       other=st.integers(min_value=0, max_value=3), fresh=st.none() | amounts,
       tolerance=st.integers(min_value=0, max_value=10_000))
def test_never_credits_more_than_paid_for(terms_amount, terms_credits, deposit_amount, other, fresh, tolerance):
    d = decide_late(terms_amount=terms_amount, terms_credits=terms_credits, deposit_amount=deposit_amount,
                    other_deposits=other, fresh_amount=fresh, tolerance_bps=tolerance)
    assert d.counted + d.refundable == deposit_amount and d.counted >= 0 and d.refundable >= 0
    assert 0 <= d.credits <= terms_credits
    if d.decision == HOLD:
        assert (d.credits, d.counted, d.refundable) == (0, 0, deposit_amount)
        return
    assert d.decision == CREDIT and d.credits > 0
    assert tolerance > 0 and other == 0 and fresh is not None
    assert abs(fresh - terms_amount) * 10_000 <= tolerance * terms_amount
    assert d.counted == min(deposit_amount, fresh)
    # never more than the counted amount is worth at the fresh price (floored, pro-rata)
    assert d.credits * fresh <= d.counted * terms_credits
    assert d.credits == credits_for_deposit(d.counted, fresh, terms_credits)


@given(data=st.data())
def test_a_price_within_tolerance_credits_a_lone_late_deposit(data):
    a = data.draw(st.integers(min_value=1, max_value=10**30), label="terms_amount")
    c = data.draw(st.integers(min_value=1, max_value=10**20), label="terms_credits")
    tolerance = data.draw(st.integers(min_value=1, max_value=10_000), label="tolerance_bps")
    span = tolerance * a // 10_000
    fresh = data.draw(st.integers(min_value=max(1, a - span), max_value=a + span), label="fresh_amount")
    deposit = data.draw(st.integers(min_value=1, max_value=3 * a), label="deposit_amount")
    d = decide_late(terms_amount=a, terms_credits=c, deposit_amount=deposit, other_deposits=0, fresh_amount=fresh,
                    tolerance_bps=tolerance)
    credits = credits_for_deposit(min(deposit, fresh), fresh, c)
    if credits == 0:
        assert d == LateDecision(HOLD, 0, 0, deposit, NO_CREDIT)
    else:
        assert d == LateDecision(CREDIT, credits, min(deposit, fresh), deposit - min(deposit, fresh),
                                 CREDITED_AT_FRESH_QUOTE)
        assert d.credits * fresh <= d.counted * c and d.credits <= c
    assert decide_late(terms_amount=a, terms_credits=c, deposit_amount=deposit, other_deposits=1,
                       fresh_amount=fresh, tolerance_bps=tolerance).reason == OTHER_DEPOSITS


@given(deposit=st.integers(min_value=1, max_value=10**30), fresh=st.integers(min_value=1, max_value=10**30))
def test_a_deposit_covering_the_fresh_amount_gets_every_quoted_credit(deposit, fresh):
    d = decide_late(terms_amount=fresh, terms_credits=C, deposit_amount=deposit, other_deposits=0,
                    fresh_amount=fresh, tolerance_bps=1)
    if deposit >= fresh:
        assert d.credits == C and d.refundable == deposit - fresh


# --- the signed form ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signer() -> QuoteSigner:
    return QuoteSigner.from_secret(SECRET)


def some_late(**kw) -> LateTerms:
    d = dict(payment_id="0b5c9e2a-1111-4222-8333-944455556666", reference=bytes.fromhex("ab" * 32),
             source=bytes.fromhex("cd" * 32), sequence=7, amount=A, block_time=1_790_000_000, decision=CREDIT,
             credits=495, counted=A, refundable=0, fresh_quote_id="6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6",
             fresh_amount=1_010_000, tolerance_bps=200, reason=CREDITED_AT_FRESH_QUOTE, created_at=T0)
    d.update(kw)
    return LateTerms(**d)


def test_canonical_late_bytes_are_stable():
    t = replace(some_late(), key_id="0123456789abcdef")
    assert canonical_late_bytes(t) == (
        b'creditbridge/late-terms/v1\n{"amount":"1000000","block_time":"1790000000","counted":"1000000",'
        b'"created_at":"2026-11-26T12:00:00Z","credits":"495","decision":"credit","fresh_amount":"1010000",'
        b'"fresh_quote_id":"6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6","key_id":"0123456789abcdef",'
        b'"payment_id":"0b5c9e2a-1111-4222-8333-944455556666","reason":"credited at a fresh quote",'
        b'"reference":"0x' + b"ab" * 32 + b'","refundable":"0","sequence":"7","source":"0x' + b"cd" * 32
        + b'","tolerance_bps":"200"}'
    )
    held = some_late(decision=HOLD, credits=0, counted=0, refundable=A, fresh_quote_id="", fresh_amount=None)
    assert b'"fresh_amount":""' in canonical_late_bytes(held) and b'"fresh_quote_id":""' in canonical_late_bytes(held)


def test_sign_verify_and_json_round_trip(signer):
    for t in (some_late(), some_late(decision=HOLD, credits=0, counted=0, refundable=A, fresh_quote_id="",
                                     fresh_amount=None, reason=PRICE_UNAVAILABLE)):
        signed = signer.sign_late_terms(t)
        assert signed.key_id == signer.key_id and len(signed.signature) == 64
        verify_late_terms(signed, signer.public_key)
        wire = json.loads(json.dumps(late_terms_to_json(signed)))
        assert all(isinstance(v, str) for v in wire.values())
        assert wire["reference"] == "0x" + "ab" * 32 and wire["signature"] == signed.signature.hex()
        back = late_terms_from_json(wire)
        assert back == signed and client_parse(wire) == signed
        verify_late_terms(back, signer.public_key)


TAMPER_LATE = {
    "payment_id": "00000000-0000-4000-8000-000000000000", "reference": b"\x01" * 32, "source": b"\x02" * 32,
    "sequence": 8, "amount": A + 1, "block_time": 1_790_000_001, "decision": HOLD, "credits": 496, "counted": A - 1,
    "refundable": 1, "fresh_quote_id": "", "fresh_amount": None, "tolerance_bps": 10_000, "reason": "other",
    "created_at": T0 + timedelta(seconds=1),
}


def test_tamper_table_covers_every_signed_field():
    assert set(TAMPER_LATE) == {f.name for f in fields(LateTerms)} - {"key_id", "signature"}


@pytest.mark.parametrize("field,value", sorted(TAMPER_LATE.items(), key=lambda kv: kv[0]))
def test_late_terms_tampering_is_detected(signer, field, value):
    t = signer.sign_late_terms(some_late())
    with pytest.raises(VerificationError):
        verify_late_terms(replace(t, **{field: value}), signer.public_key)
    # also after a trip through JSON (what a signer node receives)
    wire = late_terms_to_json(replace(t, **{field: value}))
    with pytest.raises(VerificationError):
        verify_late_terms(late_terms_from_json(wire), signer.public_key)


def test_wrong_key_and_domain_separation(signer):
    other = QuoteSigner.from_secret(OTHER)
    t = signer.sign_late_terms(some_late())
    with pytest.raises(VerificationError, match="signed by key"):
        verify_late_terms(t, other.public_key)
    with pytest.raises(VerificationError):
        verify_late_terms(replace(t, key_id=other.key_id), other.public_key)
    with pytest.raises(VerificationError):
        verify_late_terms(replace(t, signature=t.signature[:63]), signer.public_key)
    with pytest.raises(VerificationError):
        verify_late_terms(replace(t, created_at=T0.replace(tzinfo=None)), signer.public_key)
    # a payment terms signature never verifies as a late decision, and the other way round
    terms = signer.sign_terms(PaymentTerms(
        payment_id=t.payment_id, reference=t.reference, beneficiary=b"\x12" * 20, quote_id=t.fresh_quote_id,
        chain="ethereum", token="ETH", amount=t.amount, credits=t.credits, expires_at=T0))
    assert canonical_late_bytes(t).startswith(b"creditbridge/late-terms/v1\n")
    assert not canonical_terms_bytes(terms).startswith(b"creditbridge/late-terms/v1\n")
    with pytest.raises(VerificationError):
        verify_late_terms(replace(t, signature=terms.signature), signer.public_key)
    with pytest.raises(VerificationError):
        verify_terms(replace(terms, signature=t.signature), signer.public_key)


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("decision"),
    lambda d: d.pop("signature"),
    lambda d: d.update(sequence=7),
    lambda d: d.update(amount="-5"),
    lambda d: d.update(credits="1.5"),
    lambda d: d.update(fresh_amount="01"),
    lambda d: d.update(fresh_amount=None),
    lambda d: d.update(reference="0x1234"),
    lambda d: d.update(source="nothex"),
    lambda d: d.update(created_at="tomorrow"),
    lambda d: d.update(signature="zz"),
])
def test_malformed_late_terms_json_is_a_verification_error(signer, mutate):
    d = late_terms_to_json(signer.sign_late_terms(some_late()))
    mutate(d)
    with pytest.raises(VerificationError):
        late_terms_from_json(d)
    with pytest.raises(VerificationError):
        client_parse(d)
    with pytest.raises(VerificationError):
        late_terms_from_json(["not", "an", "object"])


def test_bounds_signers_check():
    assert some_late().within_bounds(C)
    assert not some_late(credits=C + 1).within_bounds(C)  # more than the quoted credits
    assert not some_late(credits=0).within_bounds(C)
    assert not some_late(counted=A - 1).within_bounds(C)  # counted + refundable != amount
    assert not some_late(decision="maybe").within_bounds(C)
    held = some_late(decision=HOLD, credits=0, counted=0, refundable=A)
    assert held.within_bounds(C)
    assert not replace(held, credits=1).within_bounds(C)
    assert some_late().outcome() == LateDecision(CREDIT, 495, A, 0, CREDITED_AT_FRESH_QUOTE)
    assert some_late().deposit_id == (b"\xcd" * 32, 7)
