"""The payment state machine: one pure function (design rule 7, BTCPay's InvoiceWatcher).

``evaluate(payment, facts, now) -> (state, events)`` looks at what the chains say about a
payment and returns its state and what happened. It has no I/O and no clock of its own; the
watcher loop feeds it facts, saves only when the returned events are non-empty (together
with the events, in one transaction: the webhook outbox), publishes after the commit, and
stops watching a payment once it is in a final state.

What each deposit is worth is decided by ``bridge.payments.rules.decide`` -- the very rule
every committee signer applies before attesting -- so the states below are the API's
prediction of what the committee does, computed from the same chain facts::

    deposit rule (per final deposit)   signers do                    payment figures
    ---------------------------------  ----------------------------  -------------------------
    credit (in time, counted, >0 cr)   attest `credits`              paid, expected credits
    below-one-credit (counted, 0 cr)   nothing (value carried on)    paid
    excess (quote already covered)     nothing; sign a refund        refundable (excess)
    credit with overpaid part          attest; sign refund of part   refundable (excess)
    late  (block time > expiry+grace)  nothing; sign a refund        refundable (late)
    late, gateway decided "credit"     attest its `credits` (fresh   expected credits;
      at a fresh quote (late.py)         quote); refund the remainder  refundable (late) remainder
    invalid (wrong chain / token)      nothing; sign a refund        refundable (invalid)

States (``paid`` = sum of counted deposits' amounts, A = quoted amount)::

    new ──pending deposit──> seen ──final, paid < A──> underpaid ──top-up──> confirmed / overpaid
     │  <──deposit gone────┘  │                          │  (open until the window closes)
     │                        ├──final, paid = A──> confirmed ──every due credit recorded──> credited
     │                        └──final, paid > A──> overpaid  ──every due credit recorded──> credited
     ├──window closed, nothing paid──> expired       underpaid ──window closed, due credits
     ├──window closed, only late deposits──> late                   recorded──> credited (partial)
     └──window closed, only invalid deposits──> invalid

    expired / late / invalid ──a late deposit decided "credit"──> late ──its credit recorded──> credited

* The **window** closes when the payment chain's *final* block time passes the deadline
  (``expires_at + grace``, the signers' lateness rule): only then is every deposit that
  could still count final and known, so a deposit exactly at expiry is never missed. Without
  a chain clock (``facts.horizon is None``) the wall clock ``now`` stands in.
* ``underpaid`` stays open for top-ups until the window closes; several deposits sum up.
  Each counted deposit is credited as it becomes final (the committee attests per deposit),
  so an underpaid payment whose window closed ends ``credited`` with ``balance:
  "underpaid"`` (credits pro-rata for what was paid), or ``expired`` if what was paid buys
  less than one credit.
* ``overpaid``: the quoted credits are credited; the excess is recorded (``refundable``) and
  the committee signs its refund. It ends ``credited`` with ``balance: "overpaid"``.
* ``late`` and ``invalid`` are final and hold the funds for refund. A late or invalid
  deposit next to counted ones does not change the state; it only adds to ``refundable``.
* **Late deposits at a fresh quote** (``bridge/payments/late.py``): the gateway may decide,
  and sign, that a late deposit is credited at a fresh quote (``Deposit.late``, the stored
  decision; signers follow it). Such a deposit is due its decided ``credits`` like a counted
  one (``expected_credits``, and ``credited`` waits for its credit to be recorded) and only
  its ``refundable`` remainder is held (as ``late``); it is not part of ``paid_amount`` (the
  amount counted towards the *signed* quote). A payment with nothing counted and such a
  deposit is ``late`` until the credit is recorded, then ``credited``. A decision to hold,
  or one whose figures do not add up (``counted + refundable != amount``, no credits -- the
  bounds signers check too), changes nothing: the deposit is late as before.
* Final states: credited, expired, late, invalid. Deposits arriving after that are still
  decided (and refunded) by the committee per deposit; the payment is no longer watched --
  except that ``expired``, ``late`` and ``invalid`` are evaluated again when the facts show a
  late deposit decided "credit" (the watcher looks those payments up until they are
  ``credited``): the committee credits it, so the payment must show it.
* Skipped states are not replayed: a ``new`` payment whose facts already show recorded
  credits goes straight to ``credited`` in one event. At most one event per evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bridge.errors import InputError
from bridge.payments import late as late_rule
from bridge.payments import rules

NEW = "new"
SEEN = "seen"
UNDERPAID = "underpaid"
CONFIRMED = "confirmed"
OVERPAID = "overpaid"
CREDITED = "credited"
EXPIRED = "expired"
LATE = "late"
INVALID = "invalid"

STATES = (NEW, SEEN, UNDERPAID, CONFIRMED, OVERPAID, CREDITED, EXPIRED, LATE, INVALID)
FINAL_STATES = frozenset({CREDITED, EXPIRED, LATE, INVALID})
# final states left again when a late deposit is decided "credit" at a fresh quote
REOPENED_BY_LATE_CREDIT = (EXPIRED, LATE, INVALID)
OPEN_STATES = (NEW, SEEN, UNDERPAID, CONFIRMED, OVERPAID)  # the states a watcher keeps looking at
PAID_STATES = frozenset({UNDERPAID, CONFIRMED, OVERPAID})  # something counted: never back to new/seen

# event kinds: the state entered, or "updated" (same state, new figures)
UPDATED = "updated"


@dataclass(frozen=True)
class PaymentView:
    """What the state machine needs to know of a stored payment."""

    id: str
    state: str
    amount: int  # quoted amount, base units
    credits: int  # quoted credits
    expires_at: datetime
    chain: str = ""
    token: str = ""
    grace_seconds: int = 0  # the committee's late grace (same on every signer)
    paid_amount: int = 0  # sum of counted deposits, as last saved
    credited: int = 0  # credits recorded on the settlement contract, as last saved
    settlement_tx: bytes | None = None  # the latest settlement transaction, as last saved
    refundable: int = 0  # held for refund (excess + late + invalid), as last saved

    def terms(self) -> rules.Terms:
        return rules.Terms(self.chain, self.token, self.amount, self.credits, self.expires_at)


@dataclass(frozen=True)
class Settled:
    """Credits the settlement contract recorded for one deposit of the payment."""

    credits: int
    tx_hash: bytes


@dataclass(frozen=True)
class Deposit:
    """One deposit carrying the payment's reference, as the chains show it now."""

    key: tuple[bytes, int]  # deposit id (source, sequence)
    amount: int
    timestamp: int  # block time
    final: bool = True
    chain: str = ""
    token: str = ""
    settled: Settled | None = None  # credits recorded for this deposit, if any
    late: late_rule.LateDecision | None = None  # the gateway's stored decision, if it was late

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int) or self.amount <= 0:
            raise InputError("deposit amounts must be positive integers")
        if self.settled is not None and (isinstance(self.settled.credits, bool)
                                         or not isinstance(self.settled.credits, int) or self.settled.credits < 0):
            raise InputError("settled credits must be non-negative integers")
        if self.settled is not None and not self.final:
            raise InputError("a deposit with recorded credits is final")
        if self.late is not None and not self.final:
            raise InputError("a deposit with a late decision is final")

    def fact(self) -> rules.DepositFact:
        return rules.DepositFact(self.key, self.chain, self.token, self.amount, self.timestamp)


@dataclass(frozen=True)
class Facts:
    """What the chains say about one payment right now (a full snapshot, not a delta)."""

    deposits: tuple[Deposit, ...] = ()
    # block time of the payment chain's newest *final* block the watcher has fully read
    # (every deposit up to it is in ``deposits``); None: unknown, the wall clock decides
    horizon: int | None = None


@dataclass(frozen=True)
class Event:
    """Something that happened to a payment; carries the figures to save with it."""

    kind: str  # the state entered, or "updated"
    payment_id: str
    previous: str  # state before
    state: str  # state after
    paid_amount: int  # sum of counted deposits (in time, right chain and token)
    seen_amount: int  # sum of deposits not yet final
    credited: int  # credits recorded on the settlement contract
    settlement_tx: bytes | None
    balance: str  # "" (nothing counted yet) | "underpaid" | "paid" | "overpaid"
    refundable: int = 0  # excess + late + invalid, held for refund
    excess: int = 0
    late_amount: int = 0
    invalid_amount: int = 0
    expected_credits: int = 0  # what the committee attests in total for the counted deposits
    late_counted: int = 0  # late deposits' base units counted at a fresh quote (not in paid_amount)


def _balance(paid: int, amount: int) -> str:
    if paid == 0:
        return ""
    return "underpaid" if paid < amount else "overpaid" if paid > amount else "paid"


def _with_defaults(payment: PaymentView, d: Deposit) -> Deposit:
    # deposits that name no chain/token are the payment's own (unit-test shorthand)
    if d.chain and d.token:
        return d
    return Deposit(d.key, d.amount, d.timestamp, d.final, d.chain or payment.chain, d.token or payment.token,
                   d.settled, d.late)


def _late_credit(d: Deposit, dec: rules.Decision, quoted_credits: int) -> rules.Decision:
    """The deposit's decision, with a late one replaced by the gateway's decision to credit it
    at a fresh quote -- only if that decision is within the bounds signers check."""
    lt = d.late
    if (dec.outcome != rules.LATE or lt is None or lt.decision != late_rule.CREDIT
            or not 0 < lt.credits <= quoted_credits or lt.counted <= 0 or lt.refundable < 0
            or lt.counted + lt.refundable != d.amount):
        return dec
    return rules.Decision(rules.LATE, lt.credits, lt.counted, lt.refundable)


def evaluate(payment: PaymentView, facts: Facts, now: datetime) -> tuple[str, list[Event]]:
    """The payment's state given ``facts`` at ``now``, and the events that lead there.

    Returns ``(payment.state, [])`` when nothing changed (and for final states, unless a late
    deposit decided "credit" reopens one), so the caller can save only when the event list is
    non-empty. At most one event is returned.
    """
    state = payment.state
    if state not in STATES:
        raise InputError(f"unknown payment state {state!r}")
    if state in FINAL_STATES and (state not in REOPENED_BY_LATE_CREDIT
                                  or not any(d.late is not None and d.final for d in facts.deposits)):
        return state, []

    terms = payment.terms()
    grace = payment.grace_seconds
    deposits = [_with_defaults(payment, d) for d in facts.deposits]
    final = sorted((d for d in deposits if d.final), key=lambda d: d.key)
    pending = [d for d in deposits if not d.final]
    facts_final = [d.fact() for d in final]
    decisions = [_late_credit(d, dec, payment.credits)
                 for d, dec in zip(final, rules.decide_all(terms, facts_final, grace))]
    late_due = any(dec.outcome == rules.LATE and dec.credits > 0 for dec in decisions)
    if state in FINAL_STATES and not late_due:
        return state, []

    paid = sum(d.amount for d, dec in zip(final, decisions) if dec.outcome in (rules.CREDIT, rules.BELOW_ONE_CREDIT,
                                                                            rules.EXCESS))
    late = sum(dec.refundable for dec in decisions if dec.outcome == rules.LATE)
    late_counted = sum(dec.counted for dec in decisions if dec.outcome == rules.LATE)
    invalid = sum(dec.refundable for dec in decisions if dec.outcome == rules.INVALID)
    refundable = sum(dec.refundable for dec in decisions)
    expected = sum(dec.credits for dec in decisions)
    due = [d for d, dec in zip(final, decisions) if dec.credits > 0]
    all_due_settled = all(d.settled is not None for d in due)
    settled = [d.settled for d in final if d.settled is not None]
    credited = sum(s.credits for s in settled)
    tx = settled[-1].tx_hash if settled else payment.settlement_tx
    seen_amount = sum(d.amount for d in pending)

    dl = rules.deadline(payment.expires_at, grace)
    horizon = facts.horizon if facts.horizon is not None else int(now.timestamp())
    window_closed = horizon > dl
    pending_may_count = any(rules.is_counted(terms, d.fact(), grace) for d in pending)

    if paid >= payment.amount:
        target = CREDITED if all_due_settled else OVERPAID if paid > payment.amount else CONFIRMED
    elif paid > 0:
        if window_closed and not pending_may_count and all_due_settled:
            target = CREDITED if expected > 0 else EXPIRED
        else:
            target = UNDERPAID
    elif state in PAID_STATES:
        target = state  # counted deposits never vanish: this snapshot is incomplete, wait
    elif late_due:  # a final late deposit: the window is closed on the payment chain
        target = CREDITED if all_due_settled else LATE
    elif pending:
        target = SEEN
    elif window_closed:
        target = LATE if late else INVALID if invalid else EXPIRED
    else:
        target = NEW

    if state in FINAL_STATES and target != CREDITED:
        target = LATE  # reopened by a late deposit decided "credit": late until that credit is recorded

    if state in PAID_STATES and paid < payment.paid_amount:
        return state, []  # an incomplete snapshot (never less than was counted before)

    changed = (paid, credited, tx, refundable) != (payment.paid_amount, payment.credited, payment.settlement_tx,
                                                   payment.refundable)
    if target == state and not changed:
        return state, []
    kind = target if target != state else UPDATED
    return target, [Event(kind, payment.id, state, target, paid, seen_amount, credited, tx,
                          _balance(paid, payment.amount), refundable, max(0, paid - payment.amount), late,
                          invalid, expected, late_counted)]
