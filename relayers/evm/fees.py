"""Fee policy of the relay's transactions: a cap on the price per gas, the priority fee, and
replacement ("bump") of a transaction left unmined.

- ``max_fee_per_gas`` (wei, None: no cap): the most the relay pays per gas. An EIP-1559
  transaction's ``maxFeePerGas`` is ``2 * base fee + tip`` clamped to the cap; when even
  ``base fee + tip`` is above the cap (or a legacy chain's gas price is), the transaction is not
  sent at all: :class:`FeeAboveCap` (retryable: fees come down).
- ``priority_fee`` (wei, None: ask the node).
- A transaction unmined after ``bump_after`` seconds is sent again with the same nonce and its
  fees raised by ``bump_percent`` (>= 10: geth, anvil and most pools refuse a replacement
  cheaper than +10% on both fees), at most ``max_bumps`` times; a bump whose price would pass
  the cap is not sent (the transaction waits at the price it has).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.errors import TransactionFailed

MIN_BUMP_PERCENT = 10


class FeeAboveCap(TransactionFailed):
    """The price the chain asks now is above the configured cap: nothing was sent."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retryable=True)


@dataclass(frozen=True)
class FeePolicy:
    max_fee_per_gas: int | None = None
    priority_fee: int | None = None
    bump_percent: int = 12
    bump_after: float = 30.0
    max_bumps: int = 3

    def __post_init__(self) -> None:
        if self.bump_percent < MIN_BUMP_PERCENT:
            raise ValueError(f"fee bump of {self.bump_percent}% is below the {MIN_BUMP_PERCENT}% replacement minimum")
        if self.max_fee_per_gas is not None and self.max_fee_per_gas <= 0:
            raise ValueError("max_fee_per_gas must be positive")
        if self.priority_fee is not None and self.max_fee_per_gas is not None and self.priority_fee > self.max_fee_per_gas:
            raise ValueError("priority_fee is above max_fee_per_gas")

    def initial(self, base_fee: int | None, tip: int | None, gas_price: int | None) -> dict[str, int]:
        """The fee fields of a new transaction (``base_fee`` None: a legacy chain priced by
        ``gas_price``); FeeAboveCap when the chain asks more than the cap."""
        cap = self.max_fee_per_gas
        if base_fee is None:
            assert gas_price is not None
            if cap is not None and gas_price > cap:
                raise FeeAboveCap(f"gas price {gas_price} wei is above the cap of {cap} wei: not sent")
            return {"gasPrice": gas_price}
        assert tip is not None
        if cap is not None and base_fee + tip > cap:
            raise FeeAboveCap(f"base fee {base_fee} + tip {tip} wei is above the cap of {cap} wei per gas: not sent")
        max_fee = 2 * base_fee + tip
        if cap is not None:
            max_fee = min(max_fee, cap)
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": max_fee}

    def _up(self, v: int) -> int:
        return max(-(-v * (100 + self.bump_percent) // 100), v + 1)

    def bumped(self, fees: dict[str, int], base_fee: int | None = None) -> dict[str, int] | None:
        """The fee fields of the replacement of a transaction priced ``fees``: each raised by
        ``bump_percent`` (and ``maxFeePerGas`` at least ``2 * base_fee + tip`` when the base
        fee rose further); None when that is above the cap (no replacement is sent)."""
        cap = self.max_fee_per_gas
        if "gasPrice" in fees:
            price = self._up(fees["gasPrice"])
            return None if cap is not None and price > cap else {"gasPrice": price}
        tip = self._up(fees["maxPriorityFeePerGas"])
        max_fee = self._up(fees["maxFeePerGas"])
        if base_fee is not None:
            max_fee = max(max_fee, 2 * base_fee + tip)
            if cap is not None and max_fee > cap >= self._up(fees["maxFeePerGas"]):
                max_fee = cap  # the base fee's headroom is clamped; the +bump% itself still fits
        if cap is not None and max_fee > cap:
            return None
        return {"maxPriorityFeePerGas": min(tip, max_fee), "maxFeePerGas": max_fee}

    @classmethod
    def from_config(cls, cfg: Any) -> "FeePolicy":
        """From an ``[aggregator]`` section (bridge.config.AggregatorConfig)."""
        return cls(max_fee_per_gas=cfg.max_fee_per_gas, priority_fee=cfg.priority_fee_per_gas,
                   bump_percent=cfg.fee_bump_percent, bump_after=cfg.fee_bump_after_seconds,
                   max_bumps=cfg.max_fee_bumps)
