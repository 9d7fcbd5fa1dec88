"""The one small interface every price source implements (BTCPay's IRateProvider idea).

A source answers "USD per whole token" for the symbols it knows. Wrappers (fallback,
cache) compose sources; a wrapper re-raises ``asyncio.CancelledError`` and records every
other failure instead of crashing the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class PricePoint:
    symbol: str  # "DOT", "KSM", "ETH", "TON"
    price: Decimal  # USD (or USDT where that is the listed pair) per whole token, > 0
    timestamp: datetime  # when the source says the price was valid (UTC, aware)
    source: str  # the source's name, e.g. "kraken"


@runtime_checkable
class PriceSource(Protocol):
    name: str

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        """Current prices for those of ``symbols`` this source knows.

        Raises ``bridge.errors.PriceUnavailable`` (or a subclass) when the source cannot
        answer; never returns a non-positive or non-finite price.
        """
        ...
