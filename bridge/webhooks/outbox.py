"""The outbox: a payment event becomes a stored event (plus one pending delivery per webhook
of the payment's merchant) in the *same transaction* as the payment's state change, so a
crash between the commit and the delivery loses nothing: the delivery worker finds it.

One event per change, whatever the number of replicas: the payment watcher passes ``seq``,
the payment's version the change produced, and the event id is derived from
``(payment id, seq)``; ``(payment_id, seq)`` is unique in ``webhook_events``, so storing the
same change twice keeps one event (one id) and one set of deliveries."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bridge.payments.state import UPDATED, Event
from bridge.pricing.quotes import rfc3339
from bridge.storage import webhooks as repo
from bridge.storage.payments import PaymentRecord


def event_type(ev: Event) -> str:
    return "payment.updated" if ev.kind == UPDATED else f"payment.{ev.kind}"


def event_body(event_id: str, p: PaymentRecord, ev: Event, now: datetime) -> dict:
    """The JSON a webhook receives (money as decimal strings of base units)."""
    return {
        "id": event_id,
        "type": event_type(ev),
        "created_at": rfc3339(now),
        "data": {
            "payment_id": p.id,
            "reference": "0x" + p.reference.hex(),
            "state": ev.state,
            "previous_state": ev.previous,
            "chain": p.chain,
            "token": p.token,
            "amount": str(p.amount),
            "credits": str(p.credits),
            "paid_amount": str(ev.paid_amount),
            "pending_amount": str(ev.seen_amount),
            "balance": ev.balance or None,
            "expected_credits": str(ev.expected_credits),
            "credited": str(ev.credited),
            "refundable_amount": str(ev.refundable),
            "excess_amount": str(ev.excess),
            "late_amount": str(ev.late_amount),
            "invalid_amount": str(ev.invalid_amount),
            "settlement_tx": None if ev.settlement_tx is None else "0x" + ev.settlement_tx.hex(),
            "expires_at": rfc3339(p.expires_at),
        },
    }


EVENT_NAMESPACE = uuid.UUID("5d0c7a4e-3f4b-4c55-9a57-6372656469ee")


def event_id_for(payment_id: str, seq: int) -> str:
    """The id of the event reporting a payment's change number ``seq`` (the same on every replica)."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{payment_id}/{seq}"))


async def record_event(s: AsyncSession, p: PaymentRecord, ev: Event, now: datetime, seq: int | None = None) -> str:
    """Store the event and its pending deliveries in the caller's transaction; its id.
    With ``seq`` a second store of the same change is a no-op returning the same id."""
    event_id = str(uuid.uuid4()) if seq is None else event_id_for(p.id, seq)
    body = json.dumps(event_body(event_id, p, ev, now), separators=(",", ":"), sort_keys=True)
    ids = iter(lambda: str(uuid.uuid4()), None)
    await repo.add_event(s, event_id, p.id, p.merchant_id, event_type(ev), body, now, ids, seq=seq)
    return event_id
