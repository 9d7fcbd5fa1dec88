"""Repository of payments and of the credits the settlement contract recorded (API database)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.chains import CreditRecord
from bridge.errors import InputError, NotFound, StorageError
from bridge.payments.feed import DEFAULT_KEEP_SECONDS, FeedEntry
from bridge.payments.state import NEW, OPEN_STATES, STATES
from bridge.storage.models import CreditRow, PaymentFeedRow, PaymentRow
from bridge.types import Credit, PaymentTerms, quote_id_bytes, utcnow


@dataclass(frozen=True)
class PaymentRecord:
    """A stored payment: its signed terms plus its current state."""

    id: str
    reference: bytes
    quote_id: str
    beneficiary: bytes
    chain: str
    token: str
    amount: int
    credits: int
    expires_at: datetime
    state: str
    key_id: str
    terms_signature: bytes
    paid_amount: int
    credited: int
    settlement_tx: bytes | None
    created_at: datetime
    updated_at: datetime
    refundable: int = 0
    merchant_id: str | None = None
    code: str | None = None  # issue 14: the payment code (None for payments made before codes)
    version: int = 0  # 0011: bumped by each evaluated change (bridge/payments/watcher.py)

    def terms(self) -> PaymentTerms:
        return PaymentTerms(
            payment_id=self.id, reference=self.reference, beneficiary=self.beneficiary,
            quote_id=self.quote_id, chain=self.chain, token=self.token, amount=self.amount,
            credits=self.credits, expires_at=self.expires_at, key_id=self.key_id,
            signature=self.terms_signature,
        )


def _record(r: PaymentRow) -> PaymentRecord:
    return PaymentRecord(
        id=r.id, reference=bytes(r.reference), quote_id=r.quote_id, beneficiary=bytes(r.beneficiary),
        chain=r.chain, token=r.token, amount=r.amount, credits=r.credits, expires_at=r.expires_at,
        state=r.state, key_id=r.key_id, terms_signature=bytes(r.terms_signature), paid_amount=r.paid_amount,
        credited=r.credited, settlement_tx=None if r.settlement_tx is None else bytes(r.settlement_tx),
        created_at=r.created_at, updated_at=r.updated_at, refundable=r.refundable or 0, merchant_id=r.merchant_id,
        code=r.code,
        version=r.version or 0,
    )


async def add_payment(s: AsyncSession, terms: PaymentTerms, *, now: datetime,
                      merchant_id: str | None = None, code: str | None = None) -> PaymentRecord:
    """Store a new payment (state ``new``) from its signed terms, and give it the next cursor of
    the reference feed. The reference, the code and the quote are unique: a second payment for
    any fails with IntegrityError at flush.

    On PostgreSQL the feed table is locked (against other writers only; readers go on) until the
    caller's transaction ends, so cursors become visible in increasing order: a feed reader that
    saw cursor n never later finds a new payment below n (sequence values alone are drawn at
    insert but committed in any order). SQLite serializes writers anyway."""
    if s.get_bind().dialect.name == "postgresql":
        await s.execute(text("LOCK TABLE payment_feed IN SHARE ROW EXCLUSIVE MODE"))
    row = PaymentRow(
        id=terms.payment_id, reference=terms.reference, quote_id=terms.quote_id, beneficiary=terms.beneficiary,
        chain=terms.chain, token=terms.token, amount=terms.amount, credits=terms.credits,
        expires_at=terms.expires_at, state=NEW, key_id=terms.key_id, terms_signature=terms.signature,
        paid_amount=0, credited=0, settlement_tx=None, created_at=now, updated_at=now,
        refundable=0, merchant_id=merchant_id, code=code,
    )
    s.add(row)
    await s.flush()
    s.add(PaymentFeedRow(payment_id=row.id))
    await s.flush()
    return _record(row)


async def get_payment(s: AsyncSession, payment_id: str) -> PaymentRecord | None:
    r = await s.get(PaymentRow, payment_id)
    return None if r is None else _record(r)


async def get_payment_by_reference(s: AsyncSession, reference: bytes) -> PaymentRecord | None:
    r = await s.scalar(select(PaymentRow).where(PaymentRow.reference == reference))
    return None if r is None else _record(r)


async def get_payment_by_code(s: AsyncSession, code: str) -> PaymentRecord | None:
    r = await s.scalar(select(PaymentRow).where(PaymentRow.code == code))
    return None if r is None else _record(r)


async def code_or_reference_taken(s: AsyncSession, code: str, reference: bytes) -> bool:
    """Whether a payment has this code or this reference already (new codes are random: 60 bits)."""
    hit = await s.scalar(select(PaymentRow.id).where((PaymentRow.code == code) | (PaymentRow.reference == reference))
                         .limit(1))
    return hit is not None


@dataclass(frozen=True)
class FeedRow:
    cursor: int
    reference: bytes
    expires_at: datetime


async def references_after(s: AsyncSession, chain: str, after: int, limit: int, *,
                           expired_since: datetime) -> list[FeedRow]:
    """The reference feed of ``chain``: payments with ``cursor > after`` whose expiry is at or after
    ``expired_since``, ascending by cursor, at most ``limit``."""
    rows = await s.execute(
        select(PaymentFeedRow.cursor, PaymentRow.reference, PaymentRow.expires_at)
        .join(PaymentRow, PaymentRow.id == PaymentFeedRow.payment_id)
        .where(PaymentFeedRow.cursor > after, PaymentRow.chain == chain, PaymentRow.expires_at >= expired_since)
        .order_by(PaymentFeedRow.cursor).limit(limit)
    )
    return [FeedRow(c, bytes(ref), exp) for c, ref, exp in rows]


async def get_payment_by_quote(s: AsyncSession, quote_id: str) -> PaymentRecord | None:
    r = await s.scalar(select(PaymentRow).where(PaymentRow.quote_id == quote_id))
    return None if r is None else _record(r)


async def list_payments(s: AsyncSession, states: Collection[str], *, limit: int = 1000,
                        after_id: str = "") -> list[PaymentRecord]:
    """Payments in ``states``, ordered by id; page with ``after_id`` (the last id seen)."""
    rows = await s.scalars(
        select(PaymentRow).where(PaymentRow.state.in_(list(states)), PaymentRow.id > after_id)
        .order_by(PaymentRow.id).limit(limit)
    )
    return [_record(r) for r in rows]


async def list_open_payments(s: AsyncSession, *, limit: int = 1000, after_id: str = "") -> list[PaymentRecord]:
    """Payments not yet in a final state (what the payment watcher evaluates)."""
    return await list_payments(s, OPEN_STATES, limit=limit, after_id=after_id)


_UNSET = object()


async def update_payment(
    s: AsyncSession,
    payment_id: str,
    *,
    now: datetime,
    state: str | None = None,
    paid_amount: int | None = None,
    credited: int | None = None,
    settlement_tx: bytes | None | object = _UNSET,
    expected_state: str | None = None,
    refundable: int | None = None,
    expected_version: int | None = None,
    bump: int = 0,
) -> bool:
    """Update a payment's state and figures. With ``expected_state`` the update happens only if
    the stored state still is that one (compare-and-set) and False is returned otherwise;
    likewise ``expected_version`` (0011: replicas evaluating one payment at once: one wins,
    even for a change that keeps the state). ``bump`` adds to the version.
    Raises NotFound for an unknown id."""
    if state is not None and state not in STATES:
        raise InputError(f"unknown payment state {state!r}")
    values: dict = {"updated_at": now}
    if state is not None:
        values["state"] = state
    if paid_amount is not None:
        values["paid_amount"] = paid_amount
    if credited is not None:
        values["credited"] = credited
    if settlement_tx is not _UNSET:
        values["settlement_tx"] = settlement_tx
    if refundable is not None:
        values["refundable"] = refundable
    if bump:
        values["version"] = PaymentRow.version + bump
    stmt = update(PaymentRow).where(PaymentRow.id == payment_id)
    if expected_state is not None:
        stmt = stmt.where(PaymentRow.state == expected_state)
    if expected_version is not None:
        stmt = stmt.where(PaymentRow.version == expected_version)
    result = await s.execute(stmt.values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 1:
        return True
    if await s.scalar(select(PaymentRow.id).where(PaymentRow.id == payment_id)) is None:
        raise NotFound("no such payment")
    return False


# --- credits recorded by the settlement contract ------------------------------------------------
async def record_credits(s: AsyncSession, records: Iterable[CreditRecord]) -> int:
    """Store credits read from the settlement contract, once per deposit id ``(source,
    sequence)``; records already stored are skipped (``ON CONFLICT DO NOTHING`` on SQLite and
    PostgreSQL: two processes storing one credit never collide). Returns how many were new."""
    dialect = s.get_bind().dialect.name
    added = 0
    for rec in records:
        c = rec.credit
        values = dict(source=c.source, sequence=c.sequence, beneficiary=c.beneficiary, credits=c.credits,
                      quote_id=c.quote_id, tx_hash=rec.tx_hash, block_number=rec.block_number, observed=False)
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert
            else:
                from sqlalchemy.dialects.postgresql import insert
            table = CreditRow.__table__
            res = await s.execute(insert(table).values(**values).on_conflict_do_nothing()
                                  .returning(table.c.sequence))
            added += res.first() is not None
            continue
        if await s.get(CreditRow, (c.source, c.sequence)) is not None:
            continue
        s.add(CreditRow(**values))
        added += 1
    await s.flush()
    return added


async def credits_for_quote(s: AsyncSession, quote_id: str) -> list[CreditRecord]:
    """Credits recorded for a quote (at most one payment uses a quote), by deposit id."""
    rows = await s.scalars(select(CreditRow).where(CreditRow.quote_id == quote_id_bytes(quote_id))
                           .order_by(CreditRow.block_number, CreditRow.source, CreditRow.sequence))
    return [CreditRecord(Credit(r.source, r.sequence, r.beneficiary, r.credits, r.quote_id),
                         bytes(r.tx_hash), r.block_number) for r in rows]


# --- the reference feed, read in-process ----------------------------------------------------------
class DatabaseReferenceFeed:
    """``bridge.payments.feed.ReferenceFeed`` over the API's own database (for components that run
    in the API's process; others use ``GatewayClient.references``, the same data over HTTP)."""

    def __init__(self, db, *, keep_seconds: int = DEFAULT_KEEP_SECONDS, clock=utcnow) -> None:
        self.db = db
        self.keep_seconds = keep_seconds
        self.clock = clock

    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        since = self.clock() - timedelta(seconds=self.keep_seconds)
        try:
            async with self.db.begin() as s:
                rows = await references_after(s, chain, after, limit, expired_since=since)
        except SQLAlchemyError as e:
            raise StorageError(f"reference feed: database error ({e.__class__.__name__})") from None
        return [FeedEntry(cursor=r.cursor, chain=chain, reference=r.reference,
                          expires_at=int(r.expires_at.timestamp())) for r in rows]
