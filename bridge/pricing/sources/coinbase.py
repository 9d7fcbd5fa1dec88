"""Coinbase Exchange REST API: ``GET /products/{product_id}/ticker`` (public, no key).

We use the Exchange API (``https://api.exchange.coinbase.com``) rather than the retail v2
spot-price API because its ticker is a real last trade with its own trade time, which
lets the aggregator judge staleness from the payload. Documented response ("Get product
ticker")::

    {"ask": "3012.46", "bid": "3012.45", "volume": "84512.31970562",
     "trade_id": 570312849, "price": "3012.45", "size": "0.0182",
     "time": "2026-11-26T10:35:12.123456Z", "rfq_volume": "1843.091577"}

The price used is ``price`` (the last trade), stamped with ``time``. Errors are a
non-2xx status with ``{"message": "NotFound"}``; public endpoints are rate limited per
IP and answer 429 when exceeded. There is one request per product, made concurrently;
if any of them fails the whole fetch fails (a partial answer would silently drop a
market from the median).

Only the products Coinbase Exchange lists are mapped by default (ETH-USD, DOT-USD); add
others through ``products`` if and when they are listed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.errors import PriceUnavailable
from bridge.pricing.sources.base import PricePoint
from bridge.pricing.sources.http import (
    HttpSettings,
    JsonHttpClient,
    check_not_future,
    parse_iso8601,
    parse_price,
    require,
)

DEFAULT_BASE_URL = "https://api.exchange.coinbase.com"
DEFAULT_PRODUCTS: Mapping[str, str] = {
    "ETH": "ETH-USD",
    "DOT": "DOT-USD",
    "USDT": "USDT-USD",  # (Coinbase lists no USDC-USD product: USDC converts 1:1 to USD there)
}


def _describe_error(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return None


class CoinbaseSource:
    """Last-trade prices from Coinbase Exchange product tickers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        products: Mapping[str, str] | None = None,
        name: str = "coinbase",
        settings: HttpSettings | None = None,
    ) -> None:
        self.name = name
        self.products = dict(DEFAULT_PRODUCTS if products is None else products)
        self._http = JsonHttpClient(
            session, base_url, source=name, settings=settings, describe_error=_describe_error
        )

    @property
    def http(self) -> JsonHttpClient:
        return self._http

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        wanted = [(s, self.products[s]) for s in sorted(symbols) if s in self.products]
        if not wanted:
            return {}
        results = await asyncio.gather(
            *(self._fetch_one(symbol, product) for symbol, product in wanted),
            return_exceptions=True,
        )
        points: dict[str, PricePoint] = {}
        failures: list[PriceUnavailable] = []
        for result in results:
            if isinstance(result, PricePoint):
                points[result.symbol] = result
            elif isinstance(result, PriceUnavailable):
                failures.append(result)
            elif isinstance(result, BaseException):
                raise result  # a bug, or cancellation: not ours to swallow
        if failures:
            if len(failures) == 1:
                raise failures[0]
            raise PriceUnavailable(
                "; ".join(f.detail for f in failures),
                retryable=any(f.retryable for f in failures),
            ) from failures[0]
        return points

    async def _fetch_one(self, symbol: str, product: str) -> PricePoint:
        resp = await self._http.get_json(f"/products/{quote(product, safe='')}/ticker")
        src = self.name
        body = resp.body
        require(isinstance(body, dict), src, f"{product}: response is not an object")
        price = parse_price(body.get("price"), source=src, where=f"{product}.price")
        ts = parse_iso8601(body.get("time"), source=src, where=f"{product}.time")
        ts = check_not_future(ts, resp.received_at, self._http.settings, source=src, where=f"{product}.time")
        return PricePoint(symbol, price, ts, src)
