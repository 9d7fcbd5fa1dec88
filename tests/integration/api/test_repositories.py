"""The API's repositories (quotes, payments, recorded credits) on SQLite and PostgreSQL (the
shared ``db`` fixture)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy.exc import IntegrityError

from bridge.chains import CreditRecord
from bridge.errors import InputError, NotFound
from bridge.payments.state import CONFIRMED, CREDITED, EXPIRED, NEW, SEEN
from bridge.pricing.quotes import QuoteSigner, verify_quote, verify_terms
from bridge.storage import payments as pay
from bridge.storage import quotes as quotes_repo
from bridge.types import Credit, PaymentTerms, Quote, quote_id_bytes

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SIGNER = QuoteSigner.from_secret(b"\x07" * 32)
WEI = 10**18


def quote(**kw) -> Quote:
    d = dict(id=str(uuid.uuid4()), token="ETH", chain="ethereum", amount=123 * WEI + 1, credits=2**127,
             rate=Decimal("3000.50"), credit_price_usd=Decimal("0.0100"), created_at=NOW,
             expires_at=NOW + timedelta(minutes=15), sources=("fixed", "kraken"))
    d.update(kw)
    return SIGNER.sign_quote(Quote(**d))


def terms(q: Quote, ref: bytes | None = None) -> PaymentTerms:
    return SIGNER.sign_terms(PaymentTerms(
        payment_id=str(uuid.uuid4()), reference=ref or uuid.uuid4().bytes * 2, beneficiary=b"\x42" * 20,
        quote_id=q.id, chain=q.chain, token=q.token, amount=q.amount, credits=q.credits, expires_at=q.expires_at))


async def test_quote_round_trip_keeps_the_signature_valid(db):
    q = quote()
    async with db.begin() as s:
        await quotes_repo.add_quote(s, q)
    async with db.begin() as s:
        got = await quotes_repo.get_quote(s, q.id)
        assert await quotes_repo.get_quote(s, str(uuid.uuid4())) is None
        await quotes_repo.ping(s)
    assert got == q
    assert str(got.rate) == "3000.50"  # the exact Decimal, exponent included
    verify_quote(got, SIGNER.public_key)


async def test_payment_round_trip_and_lookups(db):
    q = quote()
    t = terms(q)
    async with db.begin() as s:
        await quotes_repo.add_quote(s, q)
        rec = await pay.add_payment(s, t, now=NOW)
    assert rec.state == NEW and rec.paid_amount == 0 and rec.credited == 0 and rec.settlement_tx is None
    async with db.begin() as s:
        by_id = await pay.get_payment(s, t.payment_id)
        by_ref = await pay.get_payment_by_reference(s, t.reference)
        by_quote = await pay.get_payment_by_quote(s, q.id)
        assert await pay.get_payment(s, str(uuid.uuid4())) is None
        assert await pay.get_payment_by_reference(s, b"\x00" * 32) is None
    assert by_id == by_ref == by_quote == rec
    assert by_id.terms() == t
    verify_terms(by_id.terms(), SIGNER.public_key)
    assert by_id.expires_at == q.expires_at and by_id.expires_at.tzinfo is not None


async def test_one_payment_per_quote_and_per_reference(db):
    q, q2 = quote(), quote()
    t = terms(q)
    async with db.begin() as s:
        await quotes_repo.add_quote(s, q)
        await quotes_repo.add_quote(s, q2)
        await pay.add_payment(s, t, now=NOW)
    with pytest.raises(IntegrityError):
        async with db.begin() as s:
            await pay.add_payment(s, terms(q), now=NOW)  # same quote
    with pytest.raises(IntegrityError):
        async with db.begin() as s:
            await pay.add_payment(s, terms(q2, ref=t.reference), now=NOW)  # same reference


async def test_open_payments_and_updates(db):
    qs = [quote() for _ in range(4)]
    ts = [terms(q) for q in qs]
    async with db.begin() as s:
        for q, t in zip(qs, ts):
            await quotes_repo.add_quote(s, q)
            await pay.add_payment(s, t, now=NOW)
    later = NOW + timedelta(minutes=1)
    async with db.begin() as s:
        assert await pay.update_payment(s, ts[0].payment_id, now=later, state=SEEN, expected_state=NEW)
        assert not await pay.update_payment(s, ts[0].payment_id, now=later, state=CONFIRMED, expected_state=NEW)
        assert await pay.update_payment(s, ts[1].payment_id, now=later, state=CREDITED, paid_amount=qs[1].amount,
                                        credited=qs[1].credits, settlement_tx=b"\x99" * 32)
        assert await pay.update_payment(s, ts[2].payment_id, now=later, state=EXPIRED)
        with pytest.raises(NotFound):
            await pay.update_payment(s, str(uuid.uuid4()), now=later, state=SEEN)
        with pytest.raises(InputError):
            await pay.update_payment(s, ts[3].payment_id, now=later, state="bogus")
    async with db.begin() as s:
        open_ = await pay.list_open_payments(s)
        assert sorted(p.id for p in open_) == sorted([ts[0].payment_id, ts[3].payment_id])
        first = await pay.list_open_payments(s, limit=1)
        rest = await pay.list_open_payments(s, after_id=first[0].id)
        assert [p.id for p in first + rest] == sorted(p.id for p in open_)
        credited = await pay.get_payment(s, ts[1].payment_id)
        assert credited.state == CREDITED and credited.credited == qs[1].credits == 2**127
        assert credited.paid_amount == 123 * WEI + 1 and credited.settlement_tx == b"\x99" * 32
        assert credited.updated_at == later and credited.created_at == NOW
        assert [p.id for p in await pay.list_payments(s, [EXPIRED])] == [ts[2].payment_id]
    async with db.begin() as s:  # settlement_tx can be cleared explicitly, and is kept otherwise
        await pay.update_payment(s, ts[1].payment_id, now=later, credited=5)
        assert (await pay.get_payment(s, ts[1].payment_id)).settlement_tx == b"\x99" * 32
        await pay.update_payment(s, ts[1].payment_id, now=later, settlement_tx=None)
        assert (await pay.get_payment(s, ts[1].payment_id)).settlement_tx is None


async def test_record_credits_is_idempotent(db):
    q = quote()
    qid = quote_id_bytes(q.id)

    def rec(seq: int, credits: int, tx: bytes = b"\x01" * 32) -> CreditRecord:
        return CreditRecord(Credit(b"\x0a" * 32, seq, b"\x42" * 20, credits, qid), tx, 100 + seq)

    async with db.begin() as s:
        assert await pay.record_credits(s, [rec(1, 300), rec(2, 200)]) == 2
    async with db.begin() as s:
        # again, plus a duplicate within one call: only sequence 3 is new; the first record wins
        assert await pay.record_credits(s, [rec(1, 999, b"\x02" * 32), rec(3, 7), rec(3, 8)]) == 1
    async with db.begin() as s:
        got = await pay.credits_for_quote(s, q.id)
        assert await pay.credits_for_quote(s, str(uuid.uuid4())) == []
    assert [(r.credit.sequence, r.credit.credits, r.tx_hash, r.block_number) for r in got] == [
        (1, 300, b"\x01" * 32, 101), (2, 200, b"\x01" * 32, 102), (3, 7, b"\x01" * 32, 103)]
