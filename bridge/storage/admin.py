"""Read-only queries of the operator's status endpoint (API database)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.models import CursorRow, PaymentRow


async def payments_by_state(s: AsyncSession) -> dict[str, int]:
    rows = await s.execute(select(PaymentRow.state, func.count()).group_by(PaymentRow.state))
    return {state: n for state, n in rows.all()}


async def cursors(s: AsyncSession, component: str) -> dict[str, int]:
    rows = await s.scalars(select(CursorRow).where(CursorRow.component == component))
    return {r.chain: r.height for r in rows}
