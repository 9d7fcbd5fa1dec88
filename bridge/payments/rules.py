"""The deposit rule: what one deposit of a payment is worth, decided the same way everywhere.

Every committee signer applies :func:`decide` to each final deposit before it attests
anything, and the API's state machine applies the very same function to the deposits it
observed, so the payment states the API shows are a *prediction of what the committee
attests*, never a second opinion. The rule is a pure function of chain facts (amount, block
time, chain, token, the deposit's position among the payment's deposits) and of the
gateway-signed terms, so honest signers reach byte-identical decisions.

For a deposit ``d`` of the payment with quoted ``amount`` A and ``credits`` C, let ``before``
be the sum of the payment's earlier *counted* deposits (same chain and token, block time not
after the deadline, lower deposit sequence):

* **invalid**: the deposit's chain or token is not the payment's. Nothing is credited; the
  whole amount is held for refund.
* **late**: its block time is after ``expires_at + grace``. By this rule nothing is credited
  and the whole amount is held for refund: the signed quote no longer holds. Whether it is
  credited at a *fresh* quote instead is not decided here (signers have no price feed): the
  gateway decides and signs that per late deposit (``bridge/payments/late.py``, within the
  configured price tolerance); signers verify the gateway's signature and the decision's
  bounds and follow it, and the API's state machine reads the stored decision. See the
  README, "Payment lifecycle".
* otherwise it is **counted** up to the quote: ``counted = min(before + d, A) - min(before, A)``
  and it buys ``credits = cr(min(before + d, A)) - cr(min(before, A))`` where
  ``cr = credits_for_deposit(., A, C)`` (pro-rata, floored, at most C). The rest
  (``d - counted``, the overpayment) is held for refund.

Telescoping makes the sum of all deposits' credits ``cr(min(total, A))``: several partial
deposits add up exactly as one deposit of their sum would (no floor lost per deposit, never
more than C), and every base unit paid is either counted towards the quote or refundable.
What is lost is the rounding remainder of an underpaid payment, below one credit's worth.

A held amount below the chain's ``min_refund`` is dust (:func:`is_dust`): kept, not refunded.

A deposit whose ``credits`` is 0 is not attested (nothing to credit): it is wholly excess
(refundable), late, invalid, or a top-up too small to complete one more credit on its own
(its value still counts towards the next deposit's credits).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

from bridge.pricing.credits import credits_for_deposit

CREDIT = "credit"  # counted, credits > 0
BELOW_ONE_CREDIT = "below-one-credit"  # counted, but completes no further credit
EXCESS = "excess"  # counted nothing: the quote was fully paid already
LATE = "late"
INVALID = "invalid"
# outside the signer's own price bound (bridge/committee/pricebound.py): never returned by
# ``decide``; a signer holds the whole deposit for refund instead of attesting it
UNPRICED = "unpriced"
UNATTRIBUTED = "unattributed"  # the gateway never learned the deposit's reference (signer/refunds)

# purposes of a refund (release) of held funds
REFUND_PURPOSES = (EXCESS, LATE, INVALID, UNPRICED, UNATTRIBUTED)


@dataclass(frozen=True)
class Terms:
    """The parts of the signed payment terms the rule needs."""

    chain: str
    token: str
    amount: int
    credits: int
    expires_at: datetime


@dataclass(frozen=True)
class DepositFact:
    """One deposit as the rule sees it; ``key`` orders a payment's deposits (source, sequence)."""

    key: tuple[bytes, int]
    chain: str
    token: str
    amount: int
    timestamp: int  # block time, unix seconds


@dataclass(frozen=True)
class Decision:
    outcome: str  # credit | below-one-credit | excess | late | invalid
    credits: int  # credits to attest for this deposit (0: not attested)
    counted: int  # base units counted towards the quote
    refundable: int  # base units held for refund (overpayment, late or invalid)

    @property
    def refund_purpose(self) -> str | None:
        """Why this deposit's held part is refundable, or None if nothing is held."""
        if self.refundable == 0:
            return None
        return self.outcome if self.outcome in (LATE, INVALID, UNPRICED, UNATTRIBUTED) else EXCESS


def is_dust(refundable: int, min_refund: int) -> bool:
    """Whether a held amount is below the chain's refund minimum (``min_refund`` on its
    ``[[chains]]`` entry): then it is not refunded but kept in custody as *dust* and reported,
    since refunding it would cost the committee (fees, deposits) more than it returns. A pure
    function of the deposit's decision and the shared config, so every signer agrees."""
    return 0 < refundable < min_refund


def deadline(expires_at: datetime, grace_seconds: int) -> int:
    """The last block time (unix seconds) at which a deposit still counts."""
    return int(expires_at.timestamp()) + grace_seconds


def is_valid(terms: Terms, d: DepositFact) -> bool:
    return d.chain == terms.chain and d.token == terms.token


def is_counted(terms: Terms, d: DepositFact, grace_seconds: int) -> bool:
    """Valid and in time: its amount counts towards the quote."""
    return is_valid(terms, d) and d.timestamp <= deadline(terms.expires_at, grace_seconds)


def decide(terms: Terms, deposit: DepositFact, earlier: Iterable[DepositFact], grace_seconds: int) -> Decision:
    """The decision for ``deposit`` given the payment's other deposits (only those with a
    lower ``key`` on the same chain are looked at, so callers may pass them all)."""
    if not is_valid(terms, deposit):
        return Decision(INVALID, 0, 0, deposit.amount)
    if deposit.timestamp > deadline(terms.expires_at, grace_seconds):
        return Decision(LATE, 0, 0, deposit.amount)
    before = sum(e.amount for e in earlier
                 if e.key < deposit.key and e.chain == deposit.chain and is_counted(terms, e, grace_seconds))
    a, c = terms.amount, terms.credits
    lo, hi = min(before, a), min(before + deposit.amount, a)
    counted = hi - lo
    credits = credits_for_deposit(hi, a, c) - credits_for_deposit(lo, a, c)
    if credits > 0:
        outcome = CREDIT
    elif counted == 0:
        outcome = EXCESS
    else:
        outcome = BELOW_ONE_CREDIT
    return Decision(outcome, credits, counted, deposit.amount - counted)


def decide_all(terms: Terms, deposits: Sequence[DepositFact], grace_seconds: int) -> list[Decision]:
    """Decisions for every deposit, in the order given."""
    return [decide(terms, d, deposits, grace_seconds) for d in deposits]
