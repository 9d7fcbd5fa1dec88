"""Storage against real SQLite and a real PostgreSQL server: migrations, exact money columns,
UTC time, and the uniqueness rules that keep a deposit from being attested or settled twice."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bridge.storage import attestations as att
from bridge.storage.models import QuoteRow
from bridge.types import Credit

WEI_100_ETH = 100 * 10**18  # beyond SQLite's 64-bit integers
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def credit(seq: int, credits: int = 500) -> Credit:
    return Credit(b"\x11" * 32, seq, b"\x22" * 20, credits, b"\x33" * 32)


async def test_migration_is_idempotent(db):
    await db.migrate()  # second run is a no-op
    async with db.begin() as s:
        assert (await s.scalars(select(QuoteRow))).all() == []


async def test_u256_and_utc_round_trip(db):
    big = 2**256 - 1
    async with db.begin() as s:
        s.add(QuoteRow(id="q1", token="ETH", chain="ethereum", amount=WEI_100_ETH, credits=big, rate="3000.5",
                       credit_price_usd="0.01", created_at=NOW, expires_at=NOW + timedelta(minutes=15),
                       key_id="k", signature=b"\x01" * 64))
    async with db.begin() as s:
        q = await s.get(QuoteRow, "q1")
        assert q.amount == WEI_100_ETH and isinstance(q.amount, int)
        assert q.credits == big
        assert q.created_at == NOW and q.created_at.tzinfo is not None
        assert q.expires_at - q.created_at == timedelta(minutes=15)


async def test_u256_rejects_negative_and_float(db):
    for bad in (-1, 1.5, 2**256):
        with pytest.raises(Exception):
            async with db.begin() as s:
                s.add(QuoteRow(id=f"bad{bad}", token="ETH", chain="ethereum", amount=bad, credits=1, rate="1",
                               credit_price_usd="1", created_at=NOW, expires_at=NOW, key_id="k", signature=b""))


async def test_attestation_once_per_deposit(db):
    async with db.begin() as s:
        assert await att.add_attestation(s, credit(1), 0, b"\x01" * 65, "p1", NOW) is True
        assert await att.add_attestation(s, credit(1, 999), 0, b"\x02" * 65, "p1", NOW) is False
        assert await att.add_attestation(s, credit(2), 0, b"\x03" * 65, "p2", NOW) is True
    async with db.begin() as s:
        rows = await att.attestations_after(s, 0, 10)
        assert [r.credit.sequence for r in rows] == [1, 2]
        assert rows[0].credit.credits == 500  # the first attestation wins
        assert await att.attestations_after(s, rows[0].id, 10) == rows[1:]
        assert await att.attested_credit(s, credit(1).source, 1) == credit(1)
        assert await att.attested_credit(s, credit(1).source, 3) is None


async def test_database_enforces_uniqueness_even_without_the_check(db):
    from bridge.storage.models import AttestationRow

    with pytest.raises(IntegrityError):
        async with db.begin() as s:
            for sig in (b"\x01", b"\x02"):
                s.add(AttestationRow(source=b"\x11" * 32, sequence=7, beneficiary=b"\x22" * 20, credits=1,
                                     quote_id=b"\x33" * 32, committee_index=0, signature=sig * 65,
                                     payment_id="p", created_at=NOW))
                await s.flush()


async def test_settlement_records(db):
    cs = [credit(1), credit(2)]
    async with db.begin() as s:
        await att.note_attempt(s, cs, NOW)
        assert await att.settled_ids(s, [c.deposit_id for c in cs]) == set()
        await att.mark_settled(s, cs[:1], b"\xaa" * 32, NOW)
    async with db.begin() as s:
        assert await att.settled_ids(s, [c.deposit_id for c in cs]) == {cs[0].deposit_id}
        row = await att.settlement_status(s, *cs[0].deposit_id)
        assert row.tx_hash == b"\xaa" * 32 and row.status == "settled"
