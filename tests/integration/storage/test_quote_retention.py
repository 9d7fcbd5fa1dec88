"""Quote retention on SQLite and PostgreSQL (the shared ``db`` fixture): expired quotes that
nothing uses are deleted in batches; quotes a payment, a late decision or a recorded credit
uses are kept for ever (audit); quotes inside the retention period are kept."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import func, select

from bridge.chains import CreditRecord
from bridge.payments.late import CREDIT, LateTerms
from bridge.pricing.quotes import QuoteSigner
from bridge.storage import late as late_repo
from bridge.storage import payments as pay
from bridge.storage import quotes as quotes_repo
from bridge.storage.models import QuoteRow
from bridge.types import Credit, PaymentTerms, Quote, quote_id_bytes

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SIGNER = QuoteSigner.from_secret(b"\x0a" * 32)
RETENTION = timedelta(days=7)


def a_quote(expires_at: datetime) -> Quote:
    return SIGNER.sign_quote(Quote(id=str(uuid.uuid4()), token="ETH", chain="ethereum", amount=10**18, credits=500,
                                   rate=Decimal("3000"), credit_price_usd=Decimal("0.01"),
                                   created_at=expires_at - timedelta(minutes=15), expires_at=expires_at))


async def a_payment(s, q: Quote):
    t = SIGNER.sign_terms(PaymentTerms(payment_id=str(uuid.uuid4()), reference=uuid.uuid4().bytes * 2,
                                       beneficiary=b"\x42" * 20, quote_id=q.id, chain="ethereum", token="ETH",
                                       amount=q.amount, credits=q.credits, expires_at=q.expires_at))
    return await pay.add_payment(s, t, now=q.created_at)


async def ids(db) -> set[str]:
    async with db.begin() as s:
        return set(await s.scalars(select(QuoteRow.id)))


async def test_unused_expired_quotes_go_used_ones_stay(db):
    long_ago = NOW - RETENTION - timedelta(hours=1)
    unused = [a_quote(long_ago - timedelta(seconds=i)) for i in range(25)]
    paid, late_fresh, credited = a_quote(long_ago), a_quote(long_ago), a_quote(long_ago)
    recent = a_quote(NOW - RETENTION + timedelta(hours=1))  # expired, but inside the retention
    live = a_quote(NOW + timedelta(minutes=10))
    async with db.begin() as s:
        await quotes_repo.add_quotes(s, [*unused, paid, late_fresh, credited, recent, live])
        rec = await a_payment(s, paid)
        await late_repo.add_late_decision(s, SIGNER.sign_late_terms(LateTerms(
            payment_id=rec.id, reference=rec.reference, source=b"\x31" * 32, sequence=1, amount=10**18,
            block_time=2**31, decision=CREDIT, credits=500, counted=10**18, refundable=0,
            fresh_quote_id=late_fresh.id, fresh_amount=10**18, tolerance_bps=100, reason="fresh quote",
            created_at=NOW)))
        await pay.record_credits(s, [CreditRecord(Credit(b"\x32" * 32, 2, b"\x42" * 20, 500,
                                                         quote_id_bytes(credited.id)), b"\x01" * 32, 7)])
    registry = CollectorRegistry()
    metric = Counter("creditbridge_api_quotes_pruned_total", "pruned", registry=registry)
    pruner = quotes_repo.QuotePruner(db, retention=RETENTION, interval=60, batch=4, metric=metric,
                                     clock=lambda: NOW)
    assert await pruner.prune() == 25  # in batches of 4, past the kept ones
    assert await ids(db) == {paid.id, late_fresh.id, credited.id, recent.id, live.id}
    assert registry.get_sample_value("creditbridge_api_quotes_pruned_total") == 25
    assert await pruner.prune() == 0
    async with db.begin() as s:  # what is kept still reads back whole
        assert await quotes_repo.get_quote(s, paid.id) == paid
    # a week later the recent one goes too; the used ones never do
    pruner.clock = lambda: NOW + RETENTION
    assert await pruner.prune() == 1
    assert await ids(db) == {paid.id, late_fresh.id, credited.id, live.id}


async def test_batches_are_bounded(db):
    expired = NOW - RETENTION - timedelta(days=1)
    async with db.begin() as s:
        await quotes_repo.add_quotes(s, [a_quote(expired) for _ in range(7)])
    async with db.begin() as s:
        deleted, cursor = await quotes_repo.prune_quotes(s, expired_before=NOW - RETENTION, limit=3)
        assert deleted == 3 and cursor is not None
        assert await s.scalar(select(func.count()).select_from(QuoteRow)) == 4
