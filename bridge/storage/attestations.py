"""Repository of a signer node's own attestations and of the aggregator's settlements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.models import AttestationRow, SettlementRow
from bridge.types import Credit


@dataclass(frozen=True)
class StoredAttestation:
    id: int
    credit: Credit
    committee_index: int
    signature: bytes
    payment_id: str


def _credit(r: AttestationRow | SettlementRow) -> Credit:
    return Credit(r.source, r.sequence, r.beneficiary, r.credits, r.quote_id)


async def add_attestation(s: AsyncSession, credit: Credit, committee_index: int, signature: bytes,
                          payment_id: str, now: datetime) -> bool:
    """Store an attestation; False if this deposit was attested already (first one wins)."""
    existing = await s.scalar(select(AttestationRow.id).where(
        AttestationRow.source == credit.source, AttestationRow.sequence == credit.sequence))
    if existing is not None:
        return False
    s.add(AttestationRow(source=credit.source, sequence=credit.sequence, beneficiary=credit.beneficiary,
                         credits=credit.credits, quote_id=credit.quote_id, committee_index=committee_index,
                         signature=signature, payment_id=payment_id, created_at=now))
    await s.flush()
    return True


async def attestations_after(s: AsyncSession, after: int, limit: int) -> list[StoredAttestation]:
    rows = await s.scalars(select(AttestationRow).where(AttestationRow.id > after)
                           .order_by(AttestationRow.id).limit(limit))
    return [StoredAttestation(r.id, _credit(r), r.committee_index, r.signature, r.payment_id) for r in rows]


async def attested_credit(s: AsyncSession, source: bytes, sequence: int) -> Credit | None:
    r = await s.scalar(select(AttestationRow).where(AttestationRow.source == source,
                                                    AttestationRow.sequence == sequence))
    return None if r is None else _credit(r)


# --- aggregator ----------------------------------------------------------------------------------
async def settlement_status(s: AsyncSession, source: bytes, sequence: int) -> SettlementRow | None:
    return await s.get(SettlementRow, (source, sequence))


async def mark_settled(s: AsyncSession, credits: list[Credit], tx_hash: bytes | None, now: datetime) -> None:
    for c in credits:
        row = await s.get(SettlementRow, (c.source, c.sequence))
        if row is None:
            s.add(SettlementRow(source=c.source, sequence=c.sequence, beneficiary=c.beneficiary,
                                credits=c.credits, quote_id=c.quote_id, status="settled", tx_hash=tx_hash,
                                attempts=1, updated_at=now))
        else:
            row.status, row.updated_at = "settled", now
            row.tx_hash = tx_hash or row.tx_hash
    await s.flush()


async def note_attempt(s: AsyncSession, credits: list[Credit], now: datetime) -> None:
    for c in credits:
        row = await s.get(SettlementRow, (c.source, c.sequence))
        if row is None:
            s.add(SettlementRow(source=c.source, sequence=c.sequence, beneficiary=c.beneficiary,
                                credits=c.credits, quote_id=c.quote_id, status="pending", tx_hash=None,
                                attempts=1, updated_at=now))
        else:
            row.attempts += 1
            row.updated_at = now
    await s.flush()


async def settled_ids(s: AsyncSession, ids: list[tuple[bytes, int]]) -> set[tuple[bytes, int]]:
    out: set[tuple[bytes, int]] = set()
    for source, seq in ids:
        row = await s.get(SettlementRow, (source, seq))
        if row is not None and row.status == "settled":
            out.add((source, seq))
    return out
