"""The late decisions' repository on SQLite and PostgreSQL (the shared ``db`` fixture): exact
U256 columns, UTC time, first write wins per deposit, and the look-ups the watcher makes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from bridge.chains import CreditRecord
from bridge.payments.late import CREDIT, HOLD, LateTerms
from bridge.pricing.quotes import QuoteSigner, verify_late_terms
from bridge.storage import late as late_repo
from bridge.storage import payments as pay
from bridge.storage import quotes as quotes_repo
from bridge.types import Credit, PaymentTerms, Quote, quote_id_bytes

NOW = datetime(2026, 11, 26, 12, 0, 7, tzinfo=timezone.utc)
SIGNER = QuoteSigner.from_secret(b"\x09" * 32)
BIG = 2**256 - 1  # beyond SQLite's integers and PostgreSQL's BIGINT
SRC = b"\x31" * 32


async def a_payment(s, state: str | None = None):
    q = SIGNER.sign_quote(Quote(id=str(uuid.uuid4()), token="ETH", chain="ethereum", amount=10**30, credits=500,
                                rate=Decimal("3000"), credit_price_usd=Decimal("0.01"), created_at=NOW,
                                expires_at=NOW + timedelta(minutes=15)))
    await quotes_repo.add_quote(s, q)
    t = SIGNER.sign_terms(PaymentTerms(payment_id=str(uuid.uuid4()), reference=uuid.uuid4().bytes * 2,
                                       beneficiary=b"\x42" * 20, quote_id=q.id, chain="ethereum", token="ETH",
                                       amount=q.amount, credits=q.credits, expires_at=q.expires_at))
    rec = await pay.add_payment(s, t, now=NOW)
    if state is not None:
        assert await pay.update_payment(s, rec.id, now=NOW, state=state)
    return rec


def decision(rec, seq: int, **kw) -> LateTerms:
    d = dict(payment_id=rec.id, reference=rec.reference, source=SRC, sequence=seq, amount=BIG, block_time=2**40,
             decision=CREDIT, credits=500, counted=BIG - 7, refundable=7, fresh_quote_id=str(uuid.uuid4()),
             fresh_amount=BIG - 7, tolerance_bps=250, reason="credited at a fresh quote", created_at=NOW)
    d.update(kw)
    return SIGNER.sign_late_terms(LateTerms(**d))


async def test_round_trip_keeps_the_signature_valid_and_first_write_wins(db):
    async with db.begin() as s:
        rec = await a_payment(s)
    first = decision(rec, 2**63 - 1)
    async with db.begin() as s:
        assert await late_repo.get_late_decision(s, SRC, 2**63 - 1) is None
        assert await late_repo.add_late_decision(s, first) == first
    second = decision(rec, 2**63 - 1, decision=HOLD, credits=0, counted=0, refundable=BIG, fresh_quote_id="",
                      fresh_amount=None, reason="price unavailable")
    async with db.begin() as s:
        assert await late_repo.add_late_decision(s, second) == first  # the stored one is answered
    async with db.begin() as s:
        got = await late_repo.get_late_decision(s, SRC, 2**63 - 1)
    assert got == first and got.amount == BIG and got.created_at == NOW and got.created_at.tzinfo is not None
    verify_late_terms(got, SIGNER.public_key)

    held = decision(rec, 3, decision=HOLD, credits=0, counted=0, refundable=BIG, fresh_quote_id="",
                    fresh_amount=None, reason="price unavailable")
    async with db.begin() as s:
        assert await late_repo.add_late_decision(s, held) == held
    async with db.begin() as s:
        got = await late_repo.get_late_decision(s, SRC, 3)
        assert got.fresh_amount is None and got.fresh_quote_id == ""
        assert await late_repo.late_decisions_for_payment(s, rec.id) == [held, first]  # by deposit id
        assert await late_repo.late_decisions_for_payment(s, str(uuid.uuid4())) == []


async def test_concurrent_writers_store_one_decision(db):
    async with db.begin() as s:
        rec = await a_payment(s)
    candidates = [decision(rec, 9, credits=100 + i) for i in range(5)]

    async def write(t):
        async with db.begin() as s:
            return await late_repo.add_late_decision(s, t)

    answers = await asyncio.gather(*(write(t) for t in candidates))
    assert len(set(answers)) == 1 and answers[0] in candidates
    async with db.begin() as s:
        assert await late_repo.late_decisions_for_payment(s, rec.id) == [answers[0]]


async def test_lookups_of_the_payment_watcher(db):
    async with db.begin() as s:
        expired = await a_payment(s, "expired")
        late_held = await a_payment(s, "late")
        credited = await a_payment(s, "credited")
        await late_repo.add_late_decision(s, decision(expired, 1))
        await late_repo.add_late_decision(s, decision(expired, 2))  # two credits: listed once
        await late_repo.add_late_decision(s, decision(late_held, 3, decision=HOLD, credits=0, counted=0,
                                                      refundable=BIG))
        await late_repo.add_late_decision(s, decision(credited, 4))
    async with db.begin() as s:
        ids = await late_repo.payments_with_late_credits(s, ("expired", "late", "invalid"))
        assert ids == [expired.id]
        assert await late_repo.payments_with_late_credits(s, ("expired",), after_id=expired.id) == []
        fresh = str(uuid.uuid4())
        c = Credit(SRC, 1, b"\x42" * 20, 500, quote_id_bytes(fresh))  # named by the fresh quote
        assert await pay.record_credits(s, [CreditRecord(c, b"\xee" * 32, 12)]) == 1
    async with db.begin() as s:
        got = await late_repo.credits_for_deposits(s, [(SRC, 1), (SRC, 2), (SRC, 1)])
        assert got == [CreditRecord(c, b"\xee" * 32, 12)]
        assert await pay.credits_for_quote(s, expired.quote_id) == []  # not found by the payment's quote
        assert await late_repo.credits_for_deposits(s, []) == []

