"""The committee's own bound on what a deposit may mint: the gateway key alone cannot.

Signers credit by the gateway-signed terms (``amount`` base units buy ``credits``), and the
gateway key is a hot key in the internet-facing API. Without a check of their own, whoever
holds that key can sign ``{amount: the minimum, credits: 2**127}`` and the committee attests
it. So each signer bounds every credit it would attest, independently of the gateway:

* **rate**: the credits' USD value (credits x the price a credit is sold at, spread included:
  ``credit_price_usd * (1 + credit_spread)`` from the signer's own ``[pricing]``) must not
  exceed the paid amount's USD value at a *reference price* the signer reads itself, times
  ``1 + tolerance``. The rate checked is the signed terms' (``credits`` for ``amount``) for a
  deposit counted towards its quote, and the deposit's own (``credits`` for ``counted``) for a
  late deposit credited at the gateway's fresh quote (``bridge/payments/late.py``);
* **cap**: the deposit's credits are worth at most ``max_deposit_usd`` (a hard per-deposit cap).

The bound is one-sided: the gateway may always sell credits *dearer* than the reference.

Reference prices (``ReferenceSource``), per token, from the signer's config
(``[signer.price_bound.tokens]``):

* ``chainlink``: the Chainlink round **in force at the quote's issue time**, read from the
  chain (``relayers/evm/chainlink.py``, ``ChainlinkHistory``), so honest signers read the same
  round and agree exactly. The terms do not carry the issue time; it is derived
  deterministically as ``expires_at - quote_ttl_seconds`` (the API sets a payment's expiry to its
  quote's), capped by the deposit's block time (a forged future expiry cannot select a later
  price). A gateway forging ``expires_at`` can therefore choose the reference only within
  ``[block time - quote TTL - late grace, block time]``. A late deposit credited at a fresh
  quote is bounded by the round in force at its block time. Tolerance: small (e.g. 2-5%,
  the price's move over a quote's life).
* ``band``: tokens without an on-chain feed (KSM, TON on Ethereum): a wide band (e.g. 25%)
  around the guarded median of the signer's own ``[pricing]`` sources *now*. Not exactly
  deterministic across signers, which is why the band is wide: honest rates sit far inside
  it, and absurd ones far outside.

Outside the bound, the deposit is not attested; its whole amount is held for refund (purpose
``unpriced``), an ERROR is logged with the figures and
``creditbridge_signer_price_bound_violations_total{chain,token}`` is raised. When no reference
can be read right now (feed stale or unreachable, sources down) the signer *cannot tell*: it
raises a retryable ``PriceUnavailable`` and the deposit waits.

Exact maths only: integers and ``Fraction``, never a float.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Protocol

from bridge.config import per_token
from bridge.errors import ConfigError, InputError, PriceUnavailable
from bridge.payments import rules
from bridge.types import TOKEN_DECIMALS, Observation, PaymentTerms

log = logging.getLogger("creditbridge.signer.pricebound")

RATE = "rate"  # the credits are worth more than the paid amount at the reference price (+ tolerance)
CAP = "cap"  # the deposit's credits are worth more than the per-deposit USD cap


def _fraction(name: str, v) -> Fraction:
    if isinstance(v, Fraction):
        f = v
    elif isinstance(v, Decimal):
        if not v.is_finite():
            raise InputError(f"{name} must be finite")
        f = Fraction(v)
    elif isinstance(v, int) and not isinstance(v, bool):
        f = Fraction(v)
    else:
        raise InputError(f"{name} must be an int, Decimal or Fraction")
    return f


@dataclass(frozen=True)
class Reference:
    """A reference price of one whole token in USD, the tolerance it is used with, and where
    it came from (for the log)."""

    price: Fraction
    tolerance: Fraction
    basis: str

    def __post_init__(self) -> None:
        if not isinstance(self.price, Fraction) or self.price <= 0:
            raise InputError("a reference price must be a positive Fraction")
        if not isinstance(self.tolerance, Fraction) or self.tolerance < 0:
            raise InputError("a tolerance must be a non-negative Fraction")


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # "" | RATE | CAP
    credits_usd: Fraction  # the rate's credits at the credit price
    paid_usd: Fraction  # the rate's amount at the reference price
    allowed_usd: Fraction  # paid_usd * (1 + tolerance)
    deposit_usd: Fraction  # the deposit's credits at the credit price (what the cap bounds)

    def describe(self) -> str:
        def usd(f: Fraction) -> str:
            return f"${f.numerator / f.denominator:,.2f}" if f < 10**15 else f"~${float(f):.3e}"

        return (f"credits worth {usd(self.credits_usd)} for {usd(self.paid_usd)} paid at the reference price "
                f"(at most {usd(self.allowed_usd)} allowed); this deposit's credits are worth {usd(self.deposit_usd)}")


def check(*, rate_credits: int, rate_amount: int, deposit_credits: int, decimals: int, credit_price_usd,
          reference: Reference, max_deposit_usd) -> Verdict:
    """The bound, exactly: ``rate_credits * credit_price <= rate_amount / 10**decimals *
    reference.price * (1 + tolerance)`` and ``deposit_credits * credit_price <= max_deposit_usd``."""
    for name, v in (("rate_credits", rate_credits), ("rate_amount", rate_amount), ("deposit_credits", deposit_credits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise InputError(f"{name} must be a non-negative integer")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 36:
        raise InputError("decimals must be an integer in [0, 36]")
    cp = _fraction("credit_price_usd", credit_price_usd)
    cap = _fraction("max_deposit_usd", max_deposit_usd)
    if cp <= 0 or cap <= 0:
        raise InputError("credit_price_usd and max_deposit_usd must be positive")
    credits_usd = rate_credits * cp
    paid_usd = Fraction(rate_amount, 10**decimals) * reference.price
    allowed = paid_usd * (1 + reference.tolerance)
    deposit_usd = deposit_credits * cp
    if credits_usd > allowed:
        reason = RATE
    elif deposit_usd > cap:
        reason = CAP
    else:
        reason = ""
    return Verdict(reason == "", reason, credits_usd, paid_usd, allowed, deposit_usd)


def reference_time(*, expires_at: int, quote_ttl_seconds: int, block_time: int, late: bool) -> int:
    """When the reference price is read (unix seconds): the quote's issue time
    (``expires_at - quote_ttl_seconds``) but never after the deposit's block; a late deposit
    credited at a fresh quote: its block time."""
    if late:
        return block_time
    return min(expires_at - quote_ttl_seconds, block_time)


class ReferenceSource(Protocol):
    """Where a signer reads one token's reference price (Chainlink history, its own sources)."""

    async def reference(self, token: str, at: int) -> Reference:
        """The reference for ``token`` at unix time ``at``; PriceUnavailable (retryable) if
        it cannot be told right now."""
        ...


class SourcesBand:
    """A wide band around the guarded median of the signer's own price sources, *now*.

    ``aggregator`` is a ``bridge.pricing.aggregate.PriceAggregator`` over the signer's
    ``[pricing]`` sources; it is refreshed here when its points are older than
    ``refresh_seconds`` (no background loop needed). ``at`` is ignored: these sources have no
    history, which the wide band absorbs.
    """

    def __init__(self, aggregator, tolerance: Decimal | Fraction, *, refresh_seconds: float = 30.0,
                 clock=lambda: datetime.now(UTC), price_symbol: str | None = None) -> None:
        self.aggregator = aggregator
        self.price_symbol = price_symbol  # the symbol the token is priced under (default: the token's)
        self.tolerance = _fraction("tolerance", tolerance)
        self.refresh_seconds = refresh_seconds
        self._clock = clock

    async def reference(self, token: str, at: int) -> Reference:
        now = self._clock()
        last = self.aggregator.last_refresh_at
        if last is None or now - last > timedelta(seconds=self.refresh_seconds):
            await self.aggregator.refresh()  # never raises but for cancellation
            now = self._clock()
        try:
            agg = self.aggregator.price(self.price_symbol or token, now)
        except InputError as e:
            raise PriceUnavailable(f"no own price source for {token}: {e.detail}") from None
        names = ",".join(q.name for q in agg.sources)
        return Reference(Fraction(agg.price), self.tolerance,
                         f"{token} median {agg.price} USD of own sources [{names}], band {self.tolerance}")


class PriceBound:
    """A signer's bound per token (see the module docstring).

    ``references`` maps each bounded token to its :class:`ReferenceSource`; ``unbounded``
    names tokens an operator chose to leave to the gateway key alone (their deposits are
    credited as the terms say). A token is (symbol, chain): keys of ``references``,
    ``unbounded`` and ``decimals`` are ``SYMBOL@chain`` (that chain's token) or ``SYMBOL``
    (the symbol on every chain); the ``SYMBOL@chain`` entry wins (USDT has 6 decimals on
    Ethereum and Polkadot Hub, but a bridged USDT elsewhere may not).
    """

    def __init__(self, *, references: dict[str, ReferenceSource], credit_price_usd: Decimal,
                 max_deposit_usd: Decimal, quote_ttl_seconds: int, unbounded: frozenset[str] = frozenset(),
                 metrics=None, decimals: dict[str, int] | None = None) -> None:
        if set(references) & set(unbounded):
            raise ConfigError(f"tokens both bounded and unbounded: {sorted(set(references) & set(unbounded))}")
        decimals = dict(TOKEN_DECIMALS if decimals is None else decimals)
        for token in references:
            symbol, _, chain = token.partition("@")
            if per_token(decimals, symbol, chain) is None:
                raise ConfigError(f"price bound: token {token!r} has no known decimals")
        self.decimals = decimals
        if quote_ttl_seconds <= 0:
            raise ConfigError("price bound: quote_ttl_seconds must be positive")
        self.references = dict(references)
        self.unbounded = frozenset(unbounded)
        self.credit_price_usd = _fraction("credit_price_usd", credit_price_usd)
        self.max_deposit_usd = _fraction("max_deposit_usd", max_deposit_usd)
        self.quote_ttl_seconds = quote_ttl_seconds
        self.metrics = metrics

    async def verdict(self, obs: Observation, terms: PaymentTerms, decision: rules.Decision) -> Verdict | None:
        """The bound's verdict on attesting ``decision`` for ``obs``; None when nothing is to be
        minted or the token is unbounded. PriceUnavailable (retryable) when it cannot tell."""
        if decision.credits <= 0:
            return None
        label = f"{obs.token}@{obs.chain}"  # the per-chain entry wins over the symbol's, bound or not
        source = self.references.get(label)
        if source is None and label not in self.unbounded:
            source = self.references.get(obs.token)
        if source is None:
            if obs.token in self.unbounded or label in self.unbounded:
                return None
            # cannot happen with a validated config: refuse to attest rather than trust the key
            raise PriceUnavailable(f"no price bound is configured for {obs.token} on {obs.chain}", retryable=True)
        decimals = per_token(self.decimals, obs.token, obs.chain)
        if decimals is None:  # cannot happen either: refuse to attest
            raise PriceUnavailable(f"no decimals are known for {obs.token} on {obs.chain}", retryable=True)
        late = decision.outcome == rules.LATE
        if late:
            rate_credits, rate_amount = decision.credits, decision.counted
        else:
            rate_credits, rate_amount = terms.credits, terms.amount
        at = reference_time(expires_at=int(terms.expires_at.timestamp()), quote_ttl_seconds=self.quote_ttl_seconds,
                            block_time=obs.timestamp, late=late)
        try:
            ref = await source.reference(obs.token, at)
        except PriceUnavailable as e:  # cannot tell now: the deposit waits (never stops the signer)
            raise PriceUnavailable(f"price bound of {obs.token} at {at}: {e.detail}", retryable=True) from e
        v = check(rate_credits=rate_credits, rate_amount=rate_amount, deposit_credits=decision.credits,
                  decimals=decimals, credit_price_usd=self.credit_price_usd, reference=ref,
                  max_deposit_usd=self.max_deposit_usd)
        if not v.ok:
            log.error("PRICE BOUND VIOLATED (%s) for deposit %s/%d of payment %s: %d credits for %d base units of "
                      "%s (deposit credits %d, amount %d): %s; reference at %d: %s; tolerance %s, cap $%s. "
                      "Not attested; the whole deposit is held for refund. Is the gateway key compromised?",
                      v.reason, obs.chain, obs.sequence, terms.payment_id, rate_credits, rate_amount, obs.token,
                      decision.credits, obs.amount, v.describe(), at, ref.basis, ref.tolerance,
                      _fmt(self.max_deposit_usd))
            if self.metrics is not None:
                self.metrics.price_bound_violations.labels(chain=obs.chain, token=obs.token).inc()
        return v

    async def apply(self, obs: Observation, terms: PaymentTerms, decision: rules.Decision) -> rules.Decision:
        """``decision`` if within the bound, else the whole deposit held for refund (``unpriced``)."""
        v = await self.verdict(obs, terms, decision)
        if v is None or v.ok:
            return decision
        return rules.Decision(rules.UNPRICED, 0, 0, obs.amount)


def _fmt(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator / f.denominator:.2f}"
