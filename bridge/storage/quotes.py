"""Repository of signed quotes (the API's database)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.models import QuoteRow
from bridge.types import Quote


def _quote(r: QuoteRow) -> Quote:
    return Quote(
        id=r.id,
        token=r.token,
        chain=r.chain,
        amount=r.amount,
        credits=r.credits,
        rate=Decimal(r.rate),
        credit_price_usd=Decimal(r.credit_price_usd),
        created_at=r.created_at,
        expires_at=r.expires_at,
        key_id=r.key_id,
        signature=bytes(r.signature),
        sources=tuple(x for x in r.sources.split(",") if x),
    )


async def add_quote(s: AsyncSession, q: Quote) -> None:
    """Store a signed quote. Decimals are stored with ``str`` so they read back identical."""
    s.add(QuoteRow(
        id=q.id, token=q.token, chain=q.chain, amount=q.amount, credits=q.credits, rate=str(q.rate),
        credit_price_usd=str(q.credit_price_usd), sources=",".join(q.sources), created_at=q.created_at,
        expires_at=q.expires_at, key_id=q.key_id, signature=q.signature,
    ))
    await s.flush()


async def get_quote(s: AsyncSession, quote_id: str) -> Quote | None:
    r = await s.get(QuoteRow, quote_id)
    return None if r is None else _quote(r)


async def ping(s: AsyncSession) -> None:
    """A trivial round trip to the database (health checks)."""
    await s.execute(text("SELECT 1"))
