"""Kraken spot REST API: ``GET /0/public/Ticker?pair=A,B,...`` (public, no key).

Documented response (Kraken "Get Ticker Information")::

    {"error": [],
     "result": {"XETHZUSD": {"a": ["3012.45000", "1", "1.000"],   # ask  [price, whole lot, lot]
                             "b": ["3012.44000", "3", "3.000"],   # bid
                             "c": ["3012.45000", "0.01820000"],   # last trade closed [price, lot volume]
                             "v": [...], "p": [...], "t": [...], "l": [...], "h": [...],
                             "o": "2987.10000"}}}

Kraken answers HTTP 200 even for failures and signals them with a non-empty ``error``
list of strings like ``"EQuery:Unknown asset pair"`` or ``"EGeneral:Too many requests"``.
The result is keyed by Kraken's own pair names, which for older assets carry X/Z
prefixes (``XETHZUSD``) and for newer ones do not (``DOTUSD``, ``KSMUSD``, ``TONUSD``).
We query by those exact names, so the keys come back the same.

The price used is the last trade (``c[0]``). The ticker carries no timestamp, so the
point is stamped with the time the response arrived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from bridge.errors import PriceUnavailable
from bridge.pricing.sources.base import PricePoint
from bridge.pricing.sources.http import (
    HttpSettings,
    JsonHttpClient,
    PriceSourceRateLimited,
    PriceSourceRejected,
    parse_price,
    require,
)

DEFAULT_BASE_URL = "https://api.kraken.com"
TICKER_PATH = "/0/public/Ticker"
DEFAULT_PAIRS: Mapping[str, str] = {
    "ETH": "XETHZUSD",
    "DOT": "DOTUSD",
    "KSM": "KSMUSD",
    "TON": "TONUSD",
    "USDT": "USDTZUSD",  # stablecoins against the US dollar itself (the depeg guard measures them)
    "USDC": "USDCUSD",
}

# Kraken error strings that mean "slow down" or "try again later" rather than "you are wrong"
_RATE_LIMIT_ERRORS = ("EGeneral:Too many requests", "EAPI:Rate limit exceeded")
_TRANSIENT_PREFIXES = ("EService:", "EGeneral:Internal error", "EGeneral:Temporary lockout")


def _describe_error(body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("error"), list) and body["error"]:
        return "; ".join(str(e) for e in body["error"])
    return None


class KrakenSource:
    """Last-trade prices from Kraken's public ticker, one request for all pairs."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str = DEFAULT_BASE_URL,
        pairs: Mapping[str, str] | None = None,
        name: str = "kraken",
        settings: HttpSettings | None = None,
    ) -> None:
        self.name = name
        self.pairs = dict(DEFAULT_PAIRS if pairs is None else pairs)
        self._http = JsonHttpClient(
            session, base_url, source=name, settings=settings, describe_error=_describe_error
        )

    @property
    def http(self) -> JsonHttpClient:
        return self._http

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        wanted = {s: self.pairs[s] for s in sorted(symbols) if s in self.pairs}
        if not wanted:
            return {}
        resp = await self._http.get_json(TICKER_PATH, {"pair": ",".join(wanted.values())})
        body = resp.body
        src = self.name
        require(isinstance(body, dict), src, "response is not an object")
        errors = body.get("error")
        require(isinstance(errors, list), src, "'error' is missing or not a list")
        if errors:
            self._raise_for_errors([str(e) for e in errors])
        result = body.get("result")
        require(isinstance(result, dict), src, "'result' is missing or not an object")

        points: dict[str, PricePoint] = {}
        for symbol, pair in wanted.items():
            ticker = result.get(pair)
            require(isinstance(ticker, dict), src, f"result has no ticker for {pair}")
            last = ticker.get("c")
            require(
                isinstance(last, list) and len(last) == 2,
                src,
                f"{pair}.c must be [price, lot volume]",
            )
            price = parse_price(last[0], source=src, where=f"{pair}.c[0]")
            points[symbol] = PricePoint(symbol, price, resp.received_at, src)
        return points

    def _raise_for_errors(self, errors: list[str]) -> None:
        message = f"{self.name}: " + "; ".join(errors)
        if any(e.startswith(_RATE_LIMIT_ERRORS) for e in errors):
            waited = self._http.start_cooldown(None)
            raise PriceSourceRateLimited(f"{message} (cooling down {waited:.0f}s)", retry_after=waited)
        if all(e.startswith(_TRANSIENT_PREFIXES) for e in errors):
            raise PriceUnavailable(message, retryable=True)
        raise PriceSourceRejected(message)
