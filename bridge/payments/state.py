"""The payment state machine: one pure function (design rule 7, BTCPay's InvoiceWatcher).

``evaluate(payment, facts, now) -> (state, events)`` looks at what the chains say about a
payment and returns its state and what happened. It has no I/O and no clock of its own; the
watcher loop feeds it facts, saves only when the returned events are non-empty, publishes
the events after the commit, and stops watching a payment once it is in a final state.

States::

    new ──deposit seen──> seen ──deposit final──> confirmed ──credits recorded──> credited
     │  <──deposit gone──┘  │                                               (final)
     └──nothing seen by expires_at──> expired (final)

* ``new``: nothing seen yet. Becomes ``expired`` at ``expires_at`` if still nothing is seen.
* ``seen``: a deposit is visible but not final. If every seen deposit disappears (reorg,
  dropped transaction) the payment goes back to ``new`` -- or to ``expired`` if that is due.
* ``confirmed``: at least one deposit is final. Never goes back; an underpayment stays
  ``confirmed`` and is credited pro-rata (see ``pricing.credits.credits_for_deposit``).
* ``credited``: the settlement contract recorded credits for the payment, for every final
  deposit (one credit per deposit id), and no further deposit is still in flight.

A deposit the watcher first sees after ``expires_at`` still moves a ``new`` payment to
``seen``: whether a late deposit is honoured is the committee's decision (block time
against expiry plus its grace), not the API's. Skipped states are not replayed: a ``new``
payment whose facts already show recorded credits goes straight to ``credited`` in one event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bridge.errors import InputError

NEW = "new"
SEEN = "seen"
CONFIRMED = "confirmed"
CREDITED = "credited"
EXPIRED = "expired"

STATES = (NEW, SEEN, CONFIRMED, CREDITED, EXPIRED)
FINAL_STATES = frozenset({CREDITED, EXPIRED})
OPEN_STATES = (NEW, SEEN, CONFIRMED)  # the states a watcher keeps looking at

# event kinds: the state entered, or "updated" (same state, new paid/credited figures)
UPDATED = "updated"


@dataclass(frozen=True)
class PaymentView:
    """What the state machine needs to know of a stored payment."""

    id: str
    state: str
    amount: int  # quoted amount, base units
    credits: int  # quoted credits
    expires_at: datetime
    paid_amount: int = 0  # sum of final deposits, as last saved
    credited: int = 0  # credits recorded on the settlement contract, as last saved
    settlement_tx: bytes | None = None  # the latest settlement transaction, as last saved


@dataclass(frozen=True)
class Settled:
    """Credits the settlement contract recorded for one deposit of the payment."""

    credits: int
    tx_hash: bytes


@dataclass(frozen=True)
class Facts:
    """What the chains say about one payment right now (a full snapshot, not a delta)."""

    seen: tuple[int, ...] = ()  # amounts of deposits visible but not yet final
    confirmed: tuple[int, ...] = ()  # amounts of final deposits
    settled: tuple[Settled, ...] = ()  # credits recorded on the settlement contract

    def __post_init__(self) -> None:
        for name in ("seen", "confirmed"):
            for a in getattr(self, name):
                if isinstance(a, bool) or not isinstance(a, int) or a <= 0:
                    raise InputError(f"{name} deposit amounts must be positive integers")
        for s in self.settled:
            if isinstance(s.credits, bool) or not isinstance(s.credits, int) or s.credits < 0:
                raise InputError("settled credits must be non-negative integers")


@dataclass(frozen=True)
class Event:
    """Something that happened to a payment; carries the figures to save with it."""

    kind: str  # seen | new (deposit gone) | confirmed | credited | expired | updated
    payment_id: str
    previous: str  # state before
    state: str  # state after
    paid_amount: int  # sum of final deposits
    seen_amount: int  # sum of deposits not yet final
    credited: int  # credits recorded on the settlement contract
    settlement_tx: bytes | None
    balance: str  # "" (nothing final yet) | "underpaid" | "paid" | "overpaid"


def _balance(paid: int, amount: int) -> str:
    if paid == 0:
        return ""
    return "underpaid" if paid < amount else "overpaid" if paid > amount else "paid"


def evaluate(payment: PaymentView, facts: Facts, now: datetime) -> tuple[str, list[Event]]:
    """The payment's state given ``facts`` at ``now``, and the events that lead there.

    Returns ``(payment.state, [])`` when nothing changed (and always for final states), so
    the caller can save only when the event list is non-empty. At most one event is returned.
    """
    state = payment.state
    if state not in STATES:
        raise InputError(f"unknown payment state {state!r}")
    if state in FINAL_STATES:
        return state, []

    paid = max(payment.paid_amount, sum(facts.confirmed))
    seen_amount = sum(facts.seen)
    credited = max(payment.credited, sum(s.credits for s in facts.settled))
    tx = facts.settled[-1].tx_hash if facts.settled else payment.settlement_tx

    if facts.settled and not facts.seen and len(facts.settled) >= len(facts.confirmed):
        target = CREDITED
    elif facts.confirmed or facts.settled or state == CONFIRMED:
        target = CONFIRMED  # a recorded credit implies a final deposit; confirmed never goes back
    elif facts.seen:
        target = SEEN
    elif now >= payment.expires_at:
        target = EXPIRED
    else:
        target = NEW

    changed = (paid, credited, tx) != (payment.paid_amount, payment.credited, payment.settlement_tx)
    if target == state and not changed:
        return state, []
    kind = target if target != state else UPDATED
    return target, [Event(kind, payment.id, state, target, paid, seen_amount, credited, tx,
                          _balance(paid, payment.amount))]
