"""Repository of the gateway's signed decisions on late deposits (the API's database).

One decision per deposit id ``(source, sequence)``, and the **first write wins**: two API
requests (or two API processes) deciding the same deposit at once both get the decision
stored first, so every signer follows one decision whenever it asks. On SQLite and
PostgreSQL this is ``INSERT .. ON CONFLICT DO NOTHING`` followed by a read (race-free, no
IntegrityError to retry); other dialects check first, inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.chains import CreditRecord
from bridge.payments.late import CREDIT, LateTerms
from bridge.storage.models import CreditRow, LateDecisionRow, PaymentRow
from bridge.types import Credit

_CHUNK = 200


def _values(t: LateTerms) -> dict:
    return {
        "source": t.source,
        "sequence": t.sequence,
        "reference": t.reference,
        "payment_id": t.payment_id,
        "amount": t.amount,
        "block_time": t.block_time,
        "decision": t.decision,
        "credits": t.credits,
        "counted": t.counted,
        "refundable": t.refundable,
        "fresh_quote_id": t.fresh_quote_id,
        "fresh_amount": t.fresh_amount,
        "tolerance_bps": t.tolerance_bps,
        "reason": t.reason,
        "key_id": t.key_id,
        "signature": t.signature,
        "created_at": t.created_at,
    }


def _terms(r: LateDecisionRow) -> LateTerms:
    return LateTerms(
        payment_id=r.payment_id, reference=bytes(r.reference), source=bytes(r.source), sequence=r.sequence,
        amount=r.amount, block_time=r.block_time, decision=r.decision, credits=r.credits, counted=r.counted,
        refundable=r.refundable, fresh_quote_id=r.fresh_quote_id, fresh_amount=r.fresh_amount,
        tolerance_bps=r.tolerance_bps, reason=r.reason, created_at=r.created_at, key_id=r.key_id,
        signature=bytes(r.signature),
    )


async def get_late_decision(s: AsyncSession, source: bytes, sequence: int) -> LateTerms | None:
    """The stored signed decision for the deposit ``(source, sequence)``, if any."""
    r = await s.get(LateDecisionRow, (source, sequence))
    return None if r is None else _terms(r)


async def add_late_decision(s: AsyncSession, t: LateTerms) -> LateTerms:
    """Store the signed decision unless one is stored for the deposit already; return the
    stored one (``t`` itself, or the decision another request stored first)."""
    dialect = s.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        await s.execute(insert(LateDecisionRow.__table__).values(**_values(t)).on_conflict_do_nothing())
    elif await s.get(LateDecisionRow, (t.source, t.sequence)) is None:  # pragma: no cover - other dialects
        s.add(LateDecisionRow(**_values(t)))
        await s.flush()
    row = await s.scalar(
        select(LateDecisionRow)
        .where(LateDecisionRow.source == t.source, LateDecisionRow.sequence == t.sequence)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return _terms(row)


async def late_decisions_for_payment(s: AsyncSession, payment_id: str) -> list[LateTerms]:
    """Every decision on a late deposit of the payment, by deposit id."""
    rows = await s.scalars(select(LateDecisionRow).where(LateDecisionRow.payment_id == payment_id)
                           .order_by(LateDecisionRow.source, LateDecisionRow.sequence))
    return [_terms(r) for r in rows]


async def payments_with_late_credits(s: AsyncSession, states: Collection[str], *, limit: int = 1000,
                                     after_id: str = "") -> list[str]:
    """Ids of payments in ``states`` with a late deposit decided ``credit`` (the payment
    watcher looks at them again until that credit is recorded), ordered; page with ``after_id``."""
    rows = await s.scalars(
        select(PaymentRow.id).join(LateDecisionRow, LateDecisionRow.payment_id == PaymentRow.id)
        .where(PaymentRow.state.in_(list(states)), LateDecisionRow.decision == CREDIT, PaymentRow.id > after_id)
        .distinct().order_by(PaymentRow.id).limit(limit)
    )
    return list(rows)


async def credits_for_deposits(s: AsyncSession, ids: Iterable[tuple[bytes, int]]) -> list[CreditRecord]:
    """Credits the settlement contract recorded for these deposit ids, whatever quote they name
    (a late deposit credited at a fresh quote may name the fresh quote rather than the payment's)."""
    ids = list(dict.fromkeys(ids))
    out: list[CreditRecord] = []
    for i in range(0, len(ids), _CHUNK):
        rows = await s.scalars(select(CreditRow).where(
            tuple_(CreditRow.source, CreditRow.sequence).in_(ids[i : i + _CHUNK])))
        out += [CreditRecord(Credit(r.source, r.sequence, r.beneficiary, r.credits, r.quote_id), bytes(r.tx_hash),
                             r.block_number) for r in rows]
    out.sort(key=lambda c: (c.block_number, c.credit.source, c.credit.sequence))
    return out
