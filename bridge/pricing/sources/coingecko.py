"""CoinGecko API v3: ``GET /api/v3/simple/price`` (public; optional demo/pro key).

Request: ``ids=polkadot,kusama,ethereum,the-open-network&vs_currencies=usd&
include_last_updated_at=true``. Documented response::

    {"polkadot": {"usd": 6.41, "last_updated_at": 1764153312},
     "ethereum": {"usd": 3012.45, "last_updated_at": 1764153305}, ...}

Unlike the exchanges, CoinGecko sends prices as JSON **numbers**; the shared client
decodes them straight to ``Decimal`` (never through ``float``). ``last_updated_at`` is
Unix seconds and is required here (we ask for it): CoinGecko caches prices for up to a
minute or more, so the payload's own time is what staleness must be judged on. Unknown
ids are silently omitted by CoinGecko, so a missing id is treated as a malformed answer.

Errors: HTTP 429 when rate limited (keyless use is limited per IP), with bodies such as
``{"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit..."}}``
or ``{"error": "..."}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from bridge.pricing.sources.base import PricePoint
from bridge.pricing.sources.http import (
    HttpSettings,
    JsonHttpClient,
    check_not_future,
    parse_price,
    parse_unix_seconds,
    require,
)

DEFAULT_BASE_URL = "https://api.coingecko.com"
PRICE_PATH = "/api/v3/simple/price"
DEFAULT_IDS: Mapping[str, str] = {
    "DOT": "polkadot",
    "KSM": "kusama",
    "ETH": "ethereum",
    "TON": "the-open-network",
    "USDT": "tether",
    "USDC": "usd-coin",
}
DEMO_KEY_HEADER = "x-cg-demo-api-key"


def _describe_error(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    status = body.get("status")
    if isinstance(status, dict) and "error_message" in status:
        return f"code {status.get('error_code')}: {status['error_message']}"
    error = body.get("error")
    if isinstance(error, str):
        return error
    if isinstance(error, dict):
        return _describe_error(error)
    return None


class CoinGeckoSource:
    """Aggregated USD prices from CoinGecko's simple price endpoint, one request for all."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        ids: Mapping[str, str] | None = None,
        name: str = "coingecko",
        api_key: str | None = None,
        api_key_header: str = DEMO_KEY_HEADER,
        settings: HttpSettings | None = None,
    ) -> None:
        self.name = name
        self.ids = dict(DEFAULT_IDS if ids is None else ids)
        headers = {api_key_header: api_key} if api_key else None
        self._http = JsonHttpClient(
            session,
            base_url,
            source=name,
            settings=settings,
            headers=headers,
            describe_error=_describe_error,
        )

    @property
    def http(self) -> JsonHttpClient:
        return self._http

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        wanted = {self.ids[s]: s for s in sorted(symbols) if s in self.ids}
        if not wanted:
            return {}
        params = {
            "ids": ",".join(wanted),
            "vs_currencies": "usd",
            "include_last_updated_at": "true",
        }
        resp = await self._http.get_json(PRICE_PATH, params)
        body = resp.body
        src = self.name
        require(isinstance(body, dict), src, "response is not an object")

        points: dict[str, PricePoint] = {}
        for coin_id, symbol in wanted.items():
            entry = body.get(coin_id)
            require(isinstance(entry, dict), src, f"response has no entry for {coin_id}")
            price = parse_price(entry.get("usd"), source=src, where=f"{coin_id}.usd", json_number=True)
            where = f"{coin_id}.last_updated_at"
            ts = parse_unix_seconds(entry.get("last_updated_at"), source=src, where=where)
            ts = check_not_future(ts, resp.received_at, self._http.settings, source=src, where=where)
            points[symbol] = PricePoint(symbol, price, ts, src)
        return points
