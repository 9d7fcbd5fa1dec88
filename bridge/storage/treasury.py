"""Repository of a signer's treasury facts and sweeps (bridge/payments/treasury.py,
bridge/committee/treasury.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.payments.treasury import DepositFacts
from bridge.storage.models import CreditRow, ObservationRow, SweepItemRow, SweepRow, TreasuryDepositRow

log = logging.getLogger("creditbridge.treasury")


@dataclass(frozen=True)
class Sweep:
    id: int
    release_id: bytes
    chain: str
    token: str
    epoch: int
    cutoff: int
    amount: int
    to: bytes
    state: str
    created_at: datetime
    updated_at: datetime
    paid_tx: bytes | None = None  # the custody's payout transaction, when the custody can tell
    paid_block: int | None = None
    paid_at: datetime | None = None  # its block's time


def _sweep(r: SweepRow) -> Sweep:
    return Sweep(r.id, bytes(r.release_id), r.chain, r.token, r.epoch, r.cutoff, r.amount, bytes(r.to), r.state,
                 r.created_at, r.updated_at, bytes(r.paid_tx) if r.paid_tx is not None else None, r.paid_block,
                 r.paid_at)


async def track_new_deposits(s: AsyncSession, chain: str) -> int:
    """Add a fact row (undecided) for every stored observation of ``chain`` not tracked yet."""
    untracked = (select(ObservationRow)
                 .outerjoin(TreasuryDepositRow, (TreasuryDepositRow.source == ObservationRow.source)
                            & (TreasuryDepositRow.sequence == ObservationRow.sequence))
                 .where(ObservationRow.chain == chain, TreasuryDepositRow.source.is_(None))
                 .order_by(ObservationRow.id))
    n = 0
    for o in await s.scalars(untracked):
        s.add(TreasuryDepositRow(source=o.source, sequence=o.sequence, chain=chain, reference=o.reference,
                                 amount=o.amount, outcome=None, credits=0, counted=0, refundable=0, token=o.token))
        n += 1
    await s.flush()
    return n


async def undecided(s: AsyncSession, chain: str) -> list[tuple[int, str]]:
    """(observation row id, the signer's status) of tracked deposits with no decision yet."""
    rows = await s.execute(
        select(ObservationRow.id, ObservationRow.status)
        .join(TreasuryDepositRow, (TreasuryDepositRow.source == ObservationRow.source)
              & (TreasuryDepositRow.sequence == ObservationRow.sequence))
        .where(TreasuryDepositRow.chain == chain, TreasuryDepositRow.outcome.is_(None))
        .order_by(ObservationRow.id))
    return [(i, st) for i, st in rows]


async def set_decision(s: AsyncSession, source: bytes, sequence: int, *, outcome: str, credits: int, counted: int,
                       refundable: int, refund_id: bytes | None) -> None:
    row = await s.get(TreasuryDepositRow, (source, sequence))
    if row is not None and row.outcome is None:
        row.outcome, row.credits, row.counted, row.refundable, row.refund_id = (outcome, credits, counted,
                                                                                  refundable, refund_id)


async def record_credits(s: AsyncSession, records) -> int:
    """Store credits the settlement contract recorded (``CreditRecord``s read at or below its
    finality point); one row per deposit id, the first record wins."""
    n = 0
    for r in records:
        c = r.credit
        if await s.get(CreditRow, (c.source, c.sequence)) is not None:
            continue
        s.add(CreditRow(source=c.source, sequence=c.sequence, beneficiary=c.beneficiary, credits=c.credits,
                        quote_id=c.quote_id, tx_hash=r.tx_hash, block_number=r.block_number, observed=False))
        n += 1
    await s.flush()
    return n


async def credited_undecided(s: AsyncSession, source: bytes, upto: int) -> list[int]:
    """Sequences of ``source`` whose credit is recorded at or below ``upto`` and that this signer
    has not decided (or not stored) yet: an epoch closing at ``upto`` must wait for them."""
    credited = await s.execute(select(CreditRow.sequence).where(CreditRow.source == source,
                                                                CreditRow.block_number <= upto))
    decided = set(q for (q,) in await s.execute(select(TreasuryDepositRow.sequence).where(
        TreasuryDepositRow.source == source, TreasuryDepositRow.outcome.is_not(None))))
    return sorted(q for (q,) in credited if q not in decided)


async def facts(s: AsyncSession, chain: str, token: str = "") -> list[DepositFacts]:
    """Every tracked deposit of ``chain`` (in ``token``, a symbol, when given: a custody's
    figures are per token) with the settlement block of its recorded credit."""
    credited = {(bytes(a), b): (n, c) for a, b, n, c in await s.execute(
        select(CreditRow.source, CreditRow.sequence, CreditRow.block_number, CreditRow.credits))}
    out = []
    q = select(TreasuryDepositRow).where(TreasuryDepositRow.chain == chain)
    if token:
        q = q.where(TreasuryDepositRow.token == token)
    for r in await s.scalars(q):
        key = (bytes(r.source), r.sequence)
        block, credits = credited.get(key, (None, None))
        if block is not None and r.outcome is not None and credits != r.credits:
            # the ledger recorded another credit than this signer decided: not earned by its count
            log.error("treasury: deposit %s/%d is recorded with %d credits, this signer decided %d; "
                      "kept out of sweeps", chain, r.sequence, credits, r.credits)
            block = None
        out.append(DepositFacts(key, bytes(r.reference), r.amount, r.outcome, r.credits, r.counted, r.refundable,
                                bytes(r.refund_id) if r.refund_id is not None else None, block))
    return out


async def add_sweep(s: AsyncSession, *, release_id: bytes, chain: str, token: str, epoch: int, cutoff: int,
                    amount: int, to: bytes, items: dict[tuple[bytes, int], int], now: datetime,
                    state: str = "signed") -> bool:
    """Record a signed sweep and the deposits it covers; False if this epoch of this token was
    signed already."""
    if await s.scalar(select(SweepRow.id).where(SweepRow.chain == chain, SweepRow.token == token,
                                                SweepRow.epoch == epoch)) is not None:
        return False
    s.add(SweepRow(release_id=release_id, chain=chain, token=token, epoch=epoch, cutoff=cutoff, amount=amount, to=to,
                   state=state, created_at=now, updated_at=now))
    for (source, sequence), v in items.items():
        s.add(SweepItemRow(release_id=release_id, source=source, sequence=sequence, amount=v))
    await s.flush()
    return True


async def sweeps(s: AsyncSession, chain: str | None = None, limit: int = 1000, token: str = "") -> list[Sweep]:
    q = select(SweepRow).order_by(SweepRow.id.desc()).limit(limit)
    if chain is not None:
        q = q.where(SweepRow.chain == chain)
    if token:
        q = q.where(SweepRow.token == token)
    return [_sweep(r) for r in await s.scalars(q)]


async def last_epoch(s: AsyncSession, chain: str, token: str = "") -> int:
    """The highest epoch this signer signed a sweep for on ``chain`` (of ``token``; 0: none)."""
    rows = await sweeps(s, chain, limit=1, token=token)
    return rows[0].epoch if rows else 0


async def sweep_items(s: AsyncSession, release_id: bytes) -> list[tuple[bytes, int, int]]:
    rows = await s.scalars(select(SweepItemRow).where(SweepItemRow.release_id == release_id)
                           .order_by(SweepItemRow.source, SweepItemRow.sequence))
    return [(bytes(r.source), r.sequence, r.amount) for r in rows]


async def mark_paid(s: AsyncSession, release_ids: set[bytes], now: datetime) -> int:
    n = 0
    for r in await s.scalars(select(SweepRow).where(SweepRow.state != "paid")):
        if bytes(r.release_id) in release_ids:
            r.state, r.updated_at = "paid", now
            n += 1
    return n


async def set_payout(s: AsyncSession, release_id: bytes, tx: bytes, block: int, at: datetime | None) -> bool:
    """Record where the custody paid a sweep (first answer wins; a paid sweep only)."""
    row = await s.scalar(select(SweepRow).where(SweepRow.release_id == release_id))
    if row is None or row.state != "paid" or row.paid_tx is not None:
        return False
    row.paid_tx, row.paid_block, row.paid_at = tx, block, at
    return True


async def credit_blocks(s: AsyncSession, source: bytes) -> list[int]:
    """Settlement blocks at which credits of ``source``'s deposits were recorded."""
    return sorted(set(b for (b,) in await s.execute(select(CreditRow.block_number).where(CreditRow.source == source))))


async def observation(s: AsyncSession, row_id: int):
    from bridge.storage.observations import _stored

    row = await s.get(ObservationRow, row_id)
    return None if row is None else _stored(row)
