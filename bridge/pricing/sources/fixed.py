"""A price source with fixed prices (devnet, tests, and a last-resort configured fallback)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal

from bridge.errors import ConfigError
from bridge.pricing.sources.base import PricePoint
from bridge.types import utcnow


class FixedPriceSource:
    """Answers the configured USD price per whole token, stamped with the current time."""

    def __init__(
        self,
        prices: Mapping[str, Decimal],
        *,
        name: str = "fixed",
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        checked: dict[str, Decimal] = {}
        for symbol, price in prices.items():
            if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
                raise ConfigError(f"fixed price of {symbol} must be a positive finite Decimal")
            checked[symbol] = price
        self.name = name
        self._prices = checked
        self._clock = clock

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        now = self._clock()
        return {
            s: PricePoint(symbol=s, price=self._prices[s], timestamp=now, source=self.name)
            for s in symbols
            if s in self._prices
        }
