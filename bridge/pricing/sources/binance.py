"""Binance spot REST API: ``GET /api/v3/ticker/price?symbols=["DOTUSDT",...]`` (public).

Documented response ("Symbol price ticker", with the ``symbols`` parameter)::

    [{"symbol": "DOTUSDT", "price": "6.41200000"},
     {"symbol": "ETHUSDT", "price": "3012.45000000"}]

Errors come as a non-2xx status with ``{"code": -1121, "msg": "Invalid symbol."}``; one
unknown symbol fails the whole request. HTTP 429 means a rate limit was broken and 418
that the IP has been auto-banned for ignoring 429s; both carry ``Retry-After`` (seconds),
which the shared HTTP client honours as a cool-down.

The pairs are quoted in USDT, not USD (Binance lists no USD spot pairs for these tokens);
the aggregator's deviation guard bounds what a USDT de-peg can do. The ticker carries no
timestamp, so points are stamped with the time the response arrived.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from bridge.pricing.sources.base import PricePoint
from bridge.pricing.sources.http import (
    HttpSettings,
    JsonHttpClient,
    parse_price,
    require,
)

DEFAULT_BASE_URL = "https://api.binance.com"
TICKER_PATH = "/api/v3/ticker/price"
DEFAULT_SYMBOLS: Mapping[str, str] = {
    "DOT": "DOTUSDT",
    "KSM": "KSMUSDT",
    "ETH": "ETHUSDT",
    "TON": "TONUSDT",
    # USDC measured in USDT (Binance has no USD pairs, so it cannot price USDT itself): during a
    # USDT de-peg this disagrees with the USD sources and the deviation guard refuses the price
    "USDC": "USDCUSDT",
}


def _describe_error(body: Any) -> str | None:
    if isinstance(body, dict) and "msg" in body:
        return f"code {body.get('code')}: {body['msg']}"
    return None


class BinanceSource:
    """Latest prices from Binance's spot ticker, one request for all symbols."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        symbols: Mapping[str, str] | None = None,
        name: str = "binance",
        settings: HttpSettings | None = None,
    ) -> None:
        self.name = name
        self.symbols = dict(DEFAULT_SYMBOLS if symbols is None else symbols)
        self._http = JsonHttpClient(
            session, base_url, source=name, settings=settings, describe_error=_describe_error
        )

    @property
    def http(self) -> JsonHttpClient:
        return self._http

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        wanted = {self.symbols[s]: s for s in sorted(symbols) if s in self.symbols}
        if not wanted:
            return {}
        # compact JSON array, as in Binance's documentation: ["DOTUSDT","ETHUSDT"]
        query = json.dumps(list(wanted), separators=(",", ":"))
        resp = await self._http.get_json(TICKER_PATH, {"symbols": query})
        src = self.name
        require(isinstance(resp.body, list), src, "response is not a list")

        points: dict[str, PricePoint] = {}
        for i, item in enumerate(resp.body):
            require(isinstance(item, dict), src, f"item {i} is not an object")
            pair = item.get("symbol")
            require(isinstance(pair, str), src, f"item {i} has no string 'symbol'")
            if pair not in wanted:
                continue  # not asked for; ignore rather than trust
            symbol = wanted[pair]
            require(symbol not in points, src, f"{pair} appears twice")
            price = parse_price(item.get("price"), source=src, where=f"{pair}.price")
            points[symbol] = PricePoint(symbol, price, resp.received_at, src)
        missing = sorted(p for p, s in wanted.items() if s not in points)
        require(not missing, src, f"response lacks {', '.join(missing)}")
        return points
