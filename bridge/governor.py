"""The governor: per source chain, a rolling 24 h limit on the USD value credited and a delay
for single large payments (Wormhole's governor, applied where it cannot be bypassed).

Where it runs: in every **signer**, before it attests. The aggregator is untrusted and
anyone may run one, so a limit it enforced could be skipped by running another; the
settlement contract would need prices it does not have. A signer that does not attest
cannot be bypassed: without t attestations nothing is credited.

Determinism: the schedule is a pure function of chain facts. Each credited deposit gets a
*release time* computed when the signer first decides it, from the deposit's block time,
its USD value (credits x the configured credit price) and the release times of the deposits
of the same chain decided before it (signers decide a chain's deposits in chain order)::

    base    = block_time + (large_payment_delay if usd > large_payment_usd else 0)
    release = the earliest t >= base, among base and (r + 24 h) of earlier items, such that
              usd + sum(usd of earlier items released within 24 h of t) <= daily_limit
              (or nothing else is within 24 h of t: one payment above the daily limit
              waits until it is alone in its window rather than forever)

So honest signers assign identical release times and attest the same credits; only *when*
each one signs depends on its wall clock (seconds apart). The content of what they sign
never depends on the governor, so it cannot make signers disagree, only wait.

Held deposits are visible in the API (``GET /v1/admin/status`` ``queued``), which runs the
same function over its own copy of the chain facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Sequence

DAY = 86_400


@dataclass(frozen=True)
class Limits:
    daily_limit_usd: Decimal
    large_payment_usd: Decimal
    large_payment_delay_seconds: int

    @classmethod
    def from_config(cls, cfg) -> "Limits":
        return cls(cfg.daily_limit_usd, cfg.large_payment_usd, cfg.large_payment_delay_seconds)


def usd_value(credits: int, credit_price_usd: Decimal) -> Decimal:
    return Decimal(credits) * credit_price_usd


def release_time(limits: Limits, block_time: int, usd: Decimal,
                 earlier: Iterable[tuple[int, Decimal]]) -> int:
    """When a deposit of ``usd`` made at ``block_time`` may be attested, given the
    ``(release_at, usd)`` of the same chain's deposits decided before it."""
    base = block_time + (limits.large_payment_delay_seconds if usd > limits.large_payment_usd else 0)
    items = [(r, u) for r, u in earlier if r + DAY > base]
    for t in sorted({base} | {r + DAY for r, _ in items if r + DAY > base}):
        window = [u for r, u in items if t - DAY < r < t + DAY]
        if not window or sum(window) + usd <= limits.daily_limit_usd:
            return t
    return base  # not reached: the last candidate has an empty window


def schedule(limits: Limits, deposits: Sequence[tuple[int, Decimal]]) -> list[int]:
    """Release times of ``(block_time, usd)`` deposits decided in this order."""
    out: list[int] = []
    for block_time, usd in deposits:
        out.append(release_time(limits, block_time, usd, zip(out, (u for _, u in deposits))))
    return out
