"""Repository of merchants' API keys, webhooks, the event outbox and the delivery log (API db)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.storage.leases import db_now
from bridge.storage.models import (
    ApiKeyRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEventRow,
    WebhookRow,
)

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


# --- API keys --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    role: str
    key_hash: bytes
    created_at: datetime
    revoked: bool


async def add_api_key(s: AsyncSession, key_id: str, name: str, role: str, key_hash: bytes, now: datetime) -> None:
    s.add(ApiKeyRow(id=key_id, name=name, role=role, key_hash=key_hash, created_at=now, revoked_at=None))
    await s.flush()


async def get_api_key(s: AsyncSession, key_id: str) -> ApiKey | None:
    r = await s.get(ApiKeyRow, key_id)
    if r is None:
        return None
    return ApiKey(r.id, r.name, r.role, bytes(r.key_hash), r.created_at, r.revoked_at is not None)


async def list_api_keys(s: AsyncSession) -> list[ApiKey]:
    rows = await s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.created_at))
    return [ApiKey(r.id, r.name, r.role, bytes(r.key_hash), r.created_at, r.revoked_at is not None) for r in rows]


async def revoke_api_key(s: AsyncSession, key_id: str, now: datetime) -> bool:
    res = await s.execute(update(ApiKeyRow).where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
                          .values(revoked_at=now))
    return res.rowcount == 1


# --- webhooks --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Webhook:
    id: str
    merchant_id: str
    url: str
    secret: str
    active: bool
    created_at: datetime


def _webhook(r: WebhookRow) -> Webhook:
    return Webhook(r.id, r.merchant_id, r.url, r.secret, r.active, r.created_at)


async def add_webhook(s: AsyncSession, webhook_id: str, merchant_id: str, url: str, secret: str,
                      now: datetime) -> Webhook:
    row = WebhookRow(id=webhook_id, merchant_id=merchant_id, url=url, secret=secret, active=True, created_at=now)
    s.add(row)
    await s.flush()
    return _webhook(row)


async def get_webhook(s: AsyncSession, webhook_id: str) -> Webhook | None:
    r = await s.get(WebhookRow, webhook_id)
    return None if r is None else _webhook(r)


async def list_webhooks(s: AsyncSession, merchant_id: str, *, active_only: bool = True) -> list[Webhook]:
    q = select(WebhookRow).where(WebhookRow.merchant_id == merchant_id)
    if active_only:
        q = q.where(WebhookRow.active.is_(True))
    return [_webhook(r) for r in await s.scalars(q.order_by(WebhookRow.created_at, WebhookRow.id))]


async def count_webhooks(s: AsyncSession, merchant_id: str) -> int:
    return await s.scalar(select(func.count()).select_from(WebhookRow).where(
        WebhookRow.merchant_id == merchant_id, WebhookRow.active.is_(True))) or 0


async def deactivate_webhook(s: AsyncSession, webhook_id: str) -> None:
    await s.execute(update(WebhookRow).where(WebhookRow.id == webhook_id).values(active=False))


# --- outbox ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delivery:
    id: str
    webhook_id: str
    event_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str
    redelivery_of: str | None
    created_at: datetime
    updated_at: datetime


def _delivery(r: WebhookDeliveryRow) -> Delivery:
    return Delivery(r.id, r.webhook_id, r.event_id, r.status, r.attempts, r.next_attempt_at, r.last_status,
                    r.last_error, r.redelivery_of, r.created_at, r.updated_at)


async def add_event(s: AsyncSession, event_id: str, payment_id: str, merchant_id: str | None, type_: str,
                    payload: str, now: datetime, delivery_ids, *, seq: int | None = None) -> list[str]:
    """Store an event and one pending delivery per active webhook of its merchant (the outbox:
    call it in the transaction that changes the payment). ``delivery_ids`` yields new ids.

    ``seq`` names the payment change the event reports (unique per payment): storing the same
    change again -- a second replica evaluating the same payment -- is a no-op that adds no
    deliveries (returns ``[]``), never a second event."""
    values = {"id": event_id, "payment_id": payment_id, "merchant_id": merchant_id, "type": type_,
              "payload": payload, "created_at": now, "seq": seq}
    dialect = s.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        if dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        table = WebhookEventRow.__table__
        res = await s.execute(insert(table).values(**values).on_conflict_do_nothing().returning(table.c.id))
        if res.first() is None:
            return []
    else:
        s.add(WebhookEventRow(**values))
    out = []
    if merchant_id is not None:
        for w in await list_webhooks(s, merchant_id):
            did = next(delivery_ids)
            s.add(WebhookDeliveryRow(id=did, webhook_id=w.id, event_id=event_id, status=PENDING, attempts=0,
                                     next_attempt_at=now, last_status=None, last_error="", redelivery_of=None,
                                     created_at=now, updated_at=now))
            out.append(did)
    await s.flush()
    return out


@dataclass(frozen=True)
class Event:
    id: str
    payment_id: str
    merchant_id: str | None
    type: str
    payload: str
    created_at: datetime


async def get_event(s: AsyncSession, event_id: str) -> Event | None:
    r = await s.get(WebhookEventRow, event_id)
    return None if r is None else Event(r.id, r.payment_id, r.merchant_id, r.type, r.payload, r.created_at)


async def events_for_payment(s: AsyncSession, payment_id: str) -> list[Event]:
    rows = await s.scalars(select(WebhookEventRow).where(WebhookEventRow.payment_id == payment_id)
                           .order_by(WebhookEventRow.created_at))
    return [Event(r.id, r.payment_id, r.merchant_id, r.type, r.payload, r.created_at) for r in rows]


def _unclaimed(s: AsyncSession):
    return or_(WebhookDeliveryRow.claimed_until.is_(None), WebhookDeliveryRow.claimed_until < db_now(s))


async def due_deliveries(s: AsyncSession, now: datetime, limit: int = 50, exclude: set[str] = frozenset()) -> list[Delivery]:
    """Due pending deliveries no replica holds a claim on (read only: ``claim_deliveries`` takes them)."""
    q = (select(WebhookDeliveryRow).where(WebhookDeliveryRow.status == PENDING,
                                          WebhookDeliveryRow.next_attempt_at <= now, _unclaimed(s))
         .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id).limit(limit + len(exclude)))
    return [d for d in (_delivery(r) for r in await s.scalars(q)) if d.id not in exclude][:limit]


async def claim_deliveries(s: AsyncSession, now: datetime, holder: str, lease_seconds: float, limit: int = 50,
                           exclude: set[str] = frozenset()) -> list[Delivery]:
    """Claim up to ``limit`` due pending deliveries for ``holder`` until ``lease_seconds`` from
    now (database clock). On PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED``
    (replicas claiming at once take disjoint rows without waiting); the claim itself is an
    UPDATE that re-checks that the row is still unclaimed, so a delivery is never held by two
    replicas at once on any dialect. A claim a dead replica left expires after its lease."""
    cand = (select(WebhookDeliveryRow.id)
            .where(WebhookDeliveryRow.status == PENDING, WebhookDeliveryRow.next_attempt_at <= now, _unclaimed(s))
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id).limit(limit))
    if exclude:
        cand = cand.where(WebhookDeliveryRow.id.not_in(list(exclude)))
    if s.get_bind().dialect.name == "postgresql":
        cand = cand.with_for_update(skip_locked=True)
    ids = list(await s.scalars(cand))
    if not ids:
        return []
    table = WebhookDeliveryRow.__table__
    res = await s.execute(
        update(table).where(table.c.id.in_(ids), table.c.status == PENDING,
                            or_(table.c.claimed_until.is_(None), table.c.claimed_until < db_now(s)))
        .values(claimed_by=holder, claimed_until=db_now(s) + lease_seconds).returning(table.c.id))
    got = {r[0] for r in res.all()}
    rows = await s.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.id.in_(got))
                           .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
                           .execution_options(populate_existing=True))
    return [_delivery(r) for r in rows]


async def next_due_at(s: AsyncSession) -> datetime | None:
    """When the next pending delivery no replica holds is due."""
    return await s.scalar(select(func.min(WebhookDeliveryRow.next_attempt_at))
                          .where(WebhookDeliveryRow.status == PENDING, _unclaimed(s)))


async def release_claims(s: AsyncSession, holder: str) -> int:
    """Drop ``holder``'s claims on pending deliveries (a worker stopping cleanly): another
    replica may take them at once instead of after their lease."""
    res = await s.execute(update(WebhookDeliveryRow)
                          .where(WebhookDeliveryRow.claimed_by == holder, WebhookDeliveryRow.status == PENDING)
                          .values(claimed_by=None, claimed_until=None)
                          .execution_options(synchronize_session=False))
    return res.rowcount


async def next_claim_expiry(s: AsyncSession) -> float | None:
    """Seconds until the earliest claim on a pending delivery runs out (None: no claims): when
    a replica that died holding one may have it taken over."""
    left = await s.scalar(select(func.min(WebhookDeliveryRow.claimed_until) - db_now(s))
                          .where(WebhookDeliveryRow.status == PENDING,
                                 WebhookDeliveryRow.claimed_until > db_now(s)))  # expired ones: next_due_at
    return None if left is None else max(0.0, float(left))


async def get_delivery(s: AsyncSession, delivery_id: str) -> Delivery | None:
    r = await s.get(WebhookDeliveryRow, delivery_id)
    return None if r is None else _delivery(r)


async def deliveries_of(s: AsyncSession, webhook_id: str, limit: int = 100) -> list[Delivery]:
    rows = await s.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id)
                           .order_by(WebhookDeliveryRow.created_at.desc(), WebhookDeliveryRow.id).limit(limit))
    return [_delivery(r) for r in rows]


async def record_attempt(s: AsyncSession, delivery_id: str, *, now: datetime, status_code: int | None, error: str,
                         outcome: str, next_attempt_at: datetime | None, holder: str | None = None,
                         lease_seconds: float | None = None) -> int | None:
    """Log one attempt and move the delivery on (``outcome``: pending again, succeeded, failed);
    the attempt's number, None for an unknown delivery.

    The counter is incremented in SQL (``attempts = attempts + 1 .. RETURNING``), never read
    and written back, so replicas cannot lose a count. A final outcome releases the claim; a
    pending one renews ``holder``'s claim for ``lease_seconds`` (it keeps the delivery while it
    waits for the next attempt)."""
    table = WebhookDeliveryRow.__table__
    values: dict = {"attempts": table.c.attempts + 1, "last_status": status_code, "last_error": error[:200],
                    "status": outcome, "updated_at": now}
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if outcome != PENDING or lease_seconds is None:
        values["claimed_by"], values["claimed_until"] = None, None
    else:
        values["claimed_by"], values["claimed_until"] = holder, db_now(s) + lease_seconds
    res = await s.execute(update(table).where(table.c.id == delivery_id).values(**values)
                          .returning(table.c.attempts))
    row = res.first()
    if row is None:
        return None
    s.add(WebhookAttemptRow(delivery_id=delivery_id, attempt=row[0], at=now, status_code=status_code,
                            error=error[:200]))
    await s.flush()
    return row[0]


async def renew_claim(s: AsyncSession, delivery_id: str, holder: str, lease_seconds: float) -> bool:
    """Extend ``holder``'s claim (before an attempt); False if it is no longer theirs."""
    res = await s.execute(update(WebhookDeliveryRow)
                          .where(WebhookDeliveryRow.id == delivery_id, WebhookDeliveryRow.claimed_by == holder,
                                 WebhookDeliveryRow.status == PENDING)
                          .values(claimed_until=db_now(s) + lease_seconds)
                          .execution_options(synchronize_session=False))
    return res.rowcount == 1


@dataclass(frozen=True)
class Attempt:
    attempt: int
    at: datetime
    status_code: int | None
    error: str


async def attempts_of(s: AsyncSession, delivery_ids: list[str]) -> dict[str, list[Attempt]]:
    out: dict[str, list[Attempt]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return out
    rows = await s.scalars(select(WebhookAttemptRow).where(WebhookAttemptRow.delivery_id.in_(delivery_ids))
                           .order_by(WebhookAttemptRow.id))
    for r in rows:
        out[r.delivery_id].append(Attempt(r.attempt, r.at, r.status_code, r.error))
    return out


async def add_redelivery(s: AsyncSession, original: Delivery, new_id: str, now: datetime) -> Delivery:
    row = WebhookDeliveryRow(id=new_id, webhook_id=original.webhook_id, event_id=original.event_id, status=PENDING,
                             attempts=0, next_attempt_at=now, last_status=None, last_error="",
                             redelivery_of=original.id, created_at=now, updated_at=now)
    s.add(row)
    await s.flush()
    return _delivery(row)


async def pending_count(s: AsyncSession) -> int:
    return await s.scalar(select(func.count()).select_from(WebhookDeliveryRow)
                          .where(WebhookDeliveryRow.status == PENDING)) or 0
