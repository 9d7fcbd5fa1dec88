"""Late deposits credited at a fresh quote: the gateway's decision, as a pure function.

A deposit whose block time is after the payment's deadline (``expires_at + grace``) is *late*
(``bridge.payments.rules``): the signed quote no longer holds, so by the deposit rule alone
nothing is credited and the whole amount is held for refund. The product rule is softer:

    late (paid after expiry): credit at a fresh quote if the price moved less than a
    configured tolerance, otherwise hold for refund.

Signers have no price feed of their own, so the **gateway decides**: it makes a fresh quote
for the payment's credits (a real, stored, signed quote), applies :func:`decide_late`, signs
the result as :class:`LateTerms` with the key that signs the payment terms, stores it (the
first decision for a deposit wins, so every signer gets the same one whenever it asks) and
serves it at ``GET /v1/payments/by-reference/{reference}/late/{source}/{sequence}``. Signers
verify the signature with the pinned gateway key and follow the decision after checking its
bounds (the deposit's amount, ``counted + refundable == amount``, credits at most the quoted
credits); the gateway already signs the terms signers credit by, so this adds no new trust.

The rule, with A and C the quoted amount and credits, d the deposit and F the amount the same
C credits cost now (``fresh_amount``):

* **hold** if the tolerance is 0 (late crediting disabled, the default);
* **hold** if the payment has any other deposit. Only a payment paid *once*, late, is
  repriced: when in-time and late deposits (or several late ones) mix there is no single fair
  price -- the in-time part is bound to the signed quote, a fresh quote would price the same
  credits twice, and the order in which the deposits were decided would change the outcome;
* **hold** if there is no fresh price (prices unavailable);
* **hold** if ``|F - A| * 10000 > tolerance_bps * A`` (exact integers: the price moved beyond
  the tolerance, in either direction);
* otherwise **credit**: ``counted = min(d, F)``, ``credits = credits_for_deposit(counted, F, C)``
  (pro-rata, floored, at most C), ``refundable = d - counted`` (the overpayment at the fresh
  price); a deposit that buys no credit at the fresh price is held.

Never more credits than paid for at the fresh price, never more than the quoted credits, and
every base unit is either counted or refundable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bridge.errors import InputError
from bridge.pricing.credits import credits_for_deposit

CREDIT = "credit"
HOLD = "hold"
DECISIONS = (CREDIT, HOLD)

BPS = 10_000  # basis points in one

# reasons (stable strings: they are signed and stored)
CREDITED_AT_FRESH_QUOTE = "credited at a fresh quote"
DISABLED = "late crediting disabled"
OTHER_DEPOSITS = "payment has other deposits"
PRICE_UNAVAILABLE = "price unavailable"
PRICE_MOVED = "price moved beyond tolerance"
NO_CREDIT = "deposit buys no credit at the fresh quote"


@dataclass(frozen=True)
class LateDecision:
    decision: str  # credit | hold
    credits: int  # credits to attest for the deposit (0 when held)
    counted: int  # base units counted at the fresh quote (0 when held)
    refundable: int  # base units held for refund (the whole deposit when held)
    reason: str


def _uint(name: str, v: object, *, positive: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or (positive and v == 0):
        raise InputError(f"{name} must be a {'positive' if positive else 'non-negative'} integer")
    return v


def within_tolerance(terms_amount: int, fresh_amount: int, tolerance_bps: int) -> bool:
    """``|fresh - terms| / terms <= tolerance_bps / 10000``, in exact integers."""
    return abs(fresh_amount - terms_amount) * BPS <= tolerance_bps * terms_amount


def decide_late(
    *,
    terms_amount: int,
    terms_credits: int,
    deposit_amount: int,
    other_deposits: int,
    fresh_amount: int | None,
    tolerance_bps: int,
) -> LateDecision:
    """The gateway's decision for one late deposit (see the module docstring for the rule).

    ``fresh_amount`` is what ``terms_credits`` credits cost now in the payment's token (a
    fresh quote for the same credits), or None if no trustworthy price exists.
    """
    _uint("terms_amount", terms_amount, positive=True)
    _uint("terms_credits", terms_credits, positive=True)
    _uint("deposit_amount", deposit_amount, positive=True)
    _uint("other_deposits", other_deposits)
    _uint("tolerance_bps", tolerance_bps)
    if tolerance_bps > BPS:
        raise InputError("tolerance_bps must be at most 10000")
    if fresh_amount is not None:
        _uint("fresh_amount", fresh_amount, positive=True)

    def hold(reason: str) -> LateDecision:
        return LateDecision(HOLD, 0, 0, deposit_amount, reason)

    if tolerance_bps == 0:
        return hold(DISABLED)
    if other_deposits > 0:
        return hold(OTHER_DEPOSITS)
    if fresh_amount is None:
        return hold(PRICE_UNAVAILABLE)
    if not within_tolerance(terms_amount, fresh_amount, tolerance_bps):
        return hold(PRICE_MOVED)
    counted = min(deposit_amount, fresh_amount)
    credits = credits_for_deposit(counted, fresh_amount, terms_credits)
    if credits == 0:
        return hold(NO_CREDIT)
    return LateDecision(CREDIT, credits, counted, deposit_amount - counted, CREDITED_AT_FRESH_QUOTE)


@dataclass(frozen=True)
class LateTerms:
    """The gateway-signed decision for one late deposit ``(source, sequence)`` of a payment.

    Canonical bytes, signature and JSON form: ``bridge.pricing.quotes`` (``canonical_late_bytes``,
    ``QuoteSigner.sign_late_terms``, ``verify_late_terms``, ``late_terms_to_json`` /
    ``late_terms_from_json``), in the style of ``PaymentTerms``.
    """

    payment_id: str
    reference: bytes  # 32 bytes, the payment's
    source: bytes  # 32 bytes: the deposit id is (source, sequence)
    sequence: int
    amount: int  # the deposit's amount, base units
    block_time: int  # the deposit's block time, unix seconds
    decision: str  # credit | hold
    credits: int
    counted: int
    refundable: int
    fresh_quote_id: str  # the stored fresh quote, or "" when none was made
    fresh_amount: int | None  # what the quoted credits cost at the fresh quote; None: no fresh price
    tolerance_bps: int  # the tolerance the decision was made with
    reason: str
    created_at: datetime
    key_id: str = ""
    signature: bytes = b""

    @property
    def deposit_id(self) -> tuple[bytes, int]:
        return (self.source, self.sequence)

    def outcome(self) -> LateDecision:
        return LateDecision(self.decision, self.credits, self.counted, self.refundable, self.reason)

    def within_bounds(self, quoted_credits: int) -> bool:
        """The checks a signer makes before following the decision (besides the signature and
        the deposit's own facts): a known decision, ``counted + refundable == amount``, a hold
        credits nothing and refunds everything, a credit buys 1..quoted credits."""
        if self.decision not in DECISIONS or self.counted + self.refundable != self.amount:
            return False
        if self.decision == HOLD:
            return self.credits == 0 and self.counted == 0
        return 0 < self.credits <= quoted_credits and self.counted > 0
