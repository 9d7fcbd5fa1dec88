"""Repository of a signer's signed refunds (``Release`` messages for the source chain's lock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.models import ReleaseRow

DUST = "dust"  # state of a held amount kept below the chain's min_refund (not refunded)


@dataclass(frozen=True)
class StoredRelease:
    id: int
    source: bytes
    sequence: int
    chain: str
    purpose: str
    to: bytes
    amount: int
    release_id: bytes
    signature: bytes
    payment_id: str
    state: str = ""
    progress: str = ""
    attempts: int = 0
    next_attempt_at: int = 0  # unix seconds (Asset Hub approvals)
    token: str | None = None  # None: the chain's native token; else the symbol of the token paid out

    @property
    def ledger(self) -> str:
        """What its amount is counted in: the chain for the native token, ``SYMBOL@chain`` otherwise."""
        return self.chain if self.token is None else f"{self.token}@{self.chain}"


def _release(r: ReleaseRow) -> StoredRelease:
    return StoredRelease(r.id, bytes(r.source), r.sequence, r.chain, r.purpose, bytes(r.to), r.amount,
                         bytes(r.release_id), bytes(r.signature), r.payment_id, r.state or "",
                         r.progress or "", r.attempts or 0, r.next_attempt_at or 0, r.token)


async def add_release(s: AsyncSession, *, source: bytes, sequence: int, chain: str, purpose: str, to: bytes,
                      amount: int, release_id: bytes, signature: bytes, payment_id: str, now: datetime,
                      token: str | None = None) -> bool:
    """Store a signed release; False if this release id was signed already (first one wins).
    ``token``: None for the chain's native token, else the symbol of the token it pays."""
    if await s.scalar(select(ReleaseRow.id).where(ReleaseRow.release_id == release_id)) is not None:
        return False
    s.add(ReleaseRow(source=source, sequence=sequence, chain=chain, purpose=purpose, to=to, amount=amount,
                     release_id=release_id, signature=signature, payment_id=payment_id, created_at=now,
                     token=token))
    await s.flush()
    return True


async def add_dust(s: AsyncSession, *, source: bytes, sequence: int, chain: str, purpose: str, to: bytes,
                   amount: int, release_id: bytes, payment_id: str, now: datetime, token: str | None = None) -> bool:
    """Record a held amount kept as dust (below the chain's ``min_refund``): a release row with
    no signature in state ``dust``, never signed, approved or served to the refund worker.
    False if this release id was recorded already (first one wins)."""
    if await s.scalar(select(ReleaseRow.id).where(ReleaseRow.release_id == release_id)) is not None:
        return False
    s.add(ReleaseRow(source=source, sequence=sequence, chain=chain, purpose=purpose, to=to, amount=amount,
                     release_id=release_id, signature=b"", payment_id=payment_id, created_at=now, state=DUST,
                     progress="", token=token))
    await s.flush()
    return True


async def dust_summary(s: AsyncSession, limit: int = 100) -> tuple[dict[str, dict], list[StoredRelease]]:
    """Per chain (``SYMBOL@chain`` for a non-native token: amounts of different tokens are never
    added), how many deposits left dust and its total (base units); the latest rows."""
    rows = await s.scalars(select(ReleaseRow).where(ReleaseRow.state == DUST))
    out: dict[str, dict] = {}
    for r in rows:
        d = out.setdefault(_release(r).ledger, {"count": 0, "amount": 0})
        d["count"] += 1
        d["amount"] += r.amount
    latest = await s.scalars(select(ReleaseRow).where(ReleaseRow.state == DUST).order_by(ReleaseRow.id.desc())
                             .limit(limit))
    return out, [_release(r) for r in latest]


async def releases_after(s: AsyncSession, after: int, limit: int) -> list[StoredRelease]:
    """Signed releases (the aggregator's feed); Asset Hub approvals have no signature to share."""
    rows = await s.scalars(select(ReleaseRow).where(ReleaseRow.id > after, func.length(ReleaseRow.signature) > 0)
                           .order_by(ReleaseRow.id).limit(limit))
    return [_release(r) for r in rows]


async def open_approvals(s: AsyncSession, chains: list[str], limit: int = 100,
                         now: int | None = None) -> list[StoredRelease]:
    """Refunds this signer approves on chain itself (Asset Hub) that are not finished yet; with
    ``now`` (unix seconds) only those due then, the longest waiting first (each step moves a
    refund's next attempt time on, so the window rotates: no refund starves the others)."""
    q = select(ReleaseRow).where(ReleaseRow.chain.in_(chains), ReleaseRow.state.not_in(("done", "failed", DUST)))
    if now is not None:
        q = q.where(ReleaseRow.next_attempt_at <= now)
    rows = await s.scalars(q.order_by(ReleaseRow.next_attempt_at, ReleaseRow.id).limit(limit))
    return [_release(r) for r in rows]


async def set_next_attempt(s: AsyncSession, release_id: bytes, attempts: int, next_attempt_at: int) -> None:
    row = await s.scalar(select(ReleaseRow).where(ReleaseRow.release_id == release_id))
    if row is not None:
        row.attempts, row.next_attempt_at = attempts, next_attempt_at


async def set_progress(s: AsyncSession, release_id: bytes, state: str, progress: str) -> None:
    row = await s.scalar(select(ReleaseRow).where(ReleaseRow.release_id == release_id))
    if row is not None:
        row.state, row.progress = state, progress


async def refund_summary(s: AsyncSession) -> tuple[dict[str, dict[str, int]], list[StoredRelease]]:
    """Per chain, how many refunds this signer signed (lock contracts) or is approving / has
    approved on chain, by state; and the failed ones (they need an operator; treasury sweeps
    included, with purpose "sweep"). Sweeps are counted in the treasury view (GET /v1/sweeps),
    not here."""
    signed = func.length(ReleaseRow.signature) > 0
    rows = await s.execute(select(ReleaseRow.chain, ReleaseRow.state, signed, func.count())
                           .where(ReleaseRow.purpose != "sweep")
                           .group_by(ReleaseRow.chain, ReleaseRow.state, signed))
    out: dict[str, dict[str, int]] = {}
    for chain, state, has_sig, n in rows:
        label = "signed" if has_sig else (state or "pending")
        out.setdefault(chain, {})[label] = out.get(chain, {}).get(label, 0) + int(n)
    failed = await s.scalars(select(ReleaseRow).where(ReleaseRow.state == "failed").order_by(ReleaseRow.id).limit(100))
    return out, [_release(r) for r in failed]


async def purposes_of_deposit(s: AsyncSession, source: bytes, sequence: int) -> set[str]:
    """Purposes of the refunds (or dust records) this node made for one deposit."""
    rows = await s.scalars(select(ReleaseRow.purpose).where(ReleaseRow.source == source,
                                                            ReleaseRow.sequence == sequence))
    return set(rows)
