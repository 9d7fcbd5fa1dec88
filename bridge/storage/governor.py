"""Repository of a signer's governor schedule (release times of credited deposits)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.models import GovernorItemRow


@dataclass(frozen=True)
class GovernorItem:
    source: bytes
    sequence: int
    chain: str
    block_time: int
    credits: int
    release_at: int


def _item(r: GovernorItemRow) -> GovernorItem:
    return GovernorItem(bytes(r.source), r.sequence, r.chain, r.block_time, r.credits, r.release_at)


async def get_item(s: AsyncSession, source: bytes, sequence: int) -> GovernorItem | None:
    r = await s.get(GovernorItemRow, (source, sequence))
    return None if r is None else _item(r)


async def items_released_after(s: AsyncSession, chain: str, after: int) -> list[GovernorItem]:
    rows = await s.scalars(select(GovernorItemRow).where(GovernorItemRow.chain == chain,
                                                         GovernorItemRow.release_at > after))
    return [_item(r) for r in rows]


async def add_item(s: AsyncSession, item: GovernorItem, now: datetime) -> None:
    s.add(GovernorItemRow(source=item.source, sequence=item.sequence, chain=item.chain, block_time=item.block_time,
                          credits=item.credits, release_at=item.release_at, created_at=now))
    await s.flush()


async def recent_observations(s: AsyncSession, chain: str, since: int, limit: int = 10_000):
    """Final deposits of ``chain`` with block time >= ``since``, in chain order (API side)."""
    from bridge.storage.models import ObservationRow
    from bridge.storage.observations import _observation

    rows = await s.scalars(select(ObservationRow).where(ObservationRow.chain == chain,
                                                        ObservationRow.timestamp >= since)
                           .order_by(ObservationRow.source, ObservationRow.sequence).limit(limit))
    return [_observation(r) for r in rows]
