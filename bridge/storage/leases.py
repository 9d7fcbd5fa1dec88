"""Repository of singleton jobs' leases, and the database clock replicas share.

A lease is one row ``(name, holder, expires_at)``. Taking or renewing it is a single
``INSERT .. ON CONFLICT (name) DO UPDATE .. WHERE holder = me OR expires_at < now
RETURNING holder`` (SQLite >= 3.35 and PostgreSQL), so two replicas racing for a free or
expired lease get one winner, and a live holder is never displaced. Times are unix seconds by
the *database's* clock (``db_now``), so replicas on hosts with skewed clocks agree on expiry.
"""

from __future__ import annotations

from sqlalchemy import Float, case, cast, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.models import LeaseRow


def db_now(s: AsyncSession):
    """SQL expression: the database server's current time, unix seconds (float)."""
    if s.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", func.clock_timestamp()), Float(precision=53))
    return (func.julianday("now") - 2440587.5) * 86400.0


def _insert(s: AsyncSession):
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


async def now(s: AsyncSession) -> float:
    return float(await s.scalar(select(db_now(s))))


async def acquire(s: AsyncSession, name: str, holder: str, ttl: float) -> bool:
    """Take ``name`` for ``ttl`` seconds, or renew it if ``holder`` has it; False while
    another holder's lease has not expired."""
    t = db_now(s)
    ins = _insert(s)(LeaseRow).values(name=name, holder=holder, acquired_at=t, expires_at=t + ttl)
    table = LeaseRow.__table__
    stmt = ins.on_conflict_do_update(
        index_elements=[table.c.name],
        set_={"holder": ins.excluded.holder, "expires_at": ins.excluded.expires_at,
              # a renewal keeps when the holder took it
              "acquired_at": case((table.c.holder == ins.excluded.holder, table.c.acquired_at),
                                  else_=ins.excluded.acquired_at)},
        where=(table.c.holder == ins.excluded.holder) | (table.c.expires_at < ins.excluded.acquired_at),
    ).returning(table.c.holder)
    row = (await s.execute(stmt)).first()
    return row is not None and row[0] == holder


async def release(s: AsyncSession, name: str, holder: str) -> bool:
    """Give ``name`` up (only if ``holder`` still has it): the next replica takes it at once."""
    res = await s.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder))
    return res.rowcount == 1


async def holder_of(s: AsyncSession, name: str) -> tuple[str, float] | None:
    """``(holder, seconds left)`` of a live lease, None if free or expired."""
    row = (await s.execute(select(LeaseRow.holder, LeaseRow.expires_at - db_now(s))
                           .where(LeaseRow.name == name))).first()
    if row is None or row[1] <= 0:
        return None
    return row[0], float(row[1])
