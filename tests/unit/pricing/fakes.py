"""A local stand-in for four exchanges' public price APIs, served over real HTTP on 127.0.0.1.

The payloads follow each exchange's documented formats (Kraken ``/0/public/Ticker``,
Binance ``/api/v3/ticker/price``, Coinbase Exchange ``/products/{id}/ticker``, CoinGecko
``/api/v3/simple/price``), including their error bodies and rate-limit responses, so the
real source clients are exercised end to end: HTTP, status handling, JSON, parsing.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

# Kraken pair name, Binance symbol, Coinbase product, CoinGecko id, per token
KRAKEN_PAIRS = {"ETH": "XETHZUSD", "DOT": "DOTUSD", "KSM": "KSMUSD", "TON": "TONUSD"}
BINANCE_SYMBOLS = {"ETH": "ETHUSDT", "DOT": "DOTUSDT", "KSM": "KSMUSDT", "TON": "TONUSDT"}
COINBASE_PRODUCTS = {"ETH": "ETH-USD", "DOT": "DOT-USD"}
COINGECKO_IDS = {"ETH": "ethereum", "DOT": "polkadot", "KSM": "kusama", "TON": "the-open-network"}

BASE_PRICES = {
    "ETH": Decimal("3012.45"),
    "DOT": Decimal("6.412"),
    "KSM": Decimal("27.85"),
    "TON": Decimal("5.4731"),
}


@dataclass
class Reply:
    status: int = 200
    body: str | bytes = ""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0


def json_reply(payload: Any, status: int = 200, **headers: str) -> Reply:
    return Reply(status, json.dumps(payload), dict(headers))


# --- payload builders in the exchanges' documented shapes ------------------------------------
def kraken_ticker(price: Decimal) -> dict[str, Any]:
    """One pair's entry of Kraken's Ticker result: all documented fields, strings like Kraken's."""
    p = price.quantize(Decimal("0.00001"))
    return {
        "a": [str(p + Decimal("0.01")), "12", "12.000"],
        "b": [str(p), "3", "3.000"],
        "c": [str(p), "0.01820000"],
        "v": ["1834.51820399", "9213.06153781"],
        "p": [str(p), str(p)],
        "t": [1512, 7431],
        "l": [str(p - 1), str(p - 2)],
        "h": [str(p + 1), str(p + 2)],
        "o": str(p),
    }


def kraken_body(prices: dict[str, Decimal]) -> dict[str, Any]:
    return {"error": [], "result": {KRAKEN_PAIRS[s]: kraken_ticker(p) for s, p in prices.items()}}


def binance_body(prices: dict[str, Decimal]) -> list[dict[str, str]]:
    return [
        {"symbol": BINANCE_SYMBOLS[s], "price": str(p.quantize(Decimal("0.00000001")))}
        for s, p in prices.items()
    ]


def coinbase_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def coinbase_body(price: Decimal, ts: datetime) -> dict[str, Any]:
    return {
        "ask": str(price + Decimal("0.01")),
        "bid": str(price),
        "volume": "84512.31970562",
        "trade_id": 570312849,
        "price": str(price),
        "size": "0.01820000",
        "time": coinbase_time(ts),
        "rfq_volume": "1843.091577",
    }


def coingecko_text(entries: dict[str, tuple[Decimal, int]]) -> str:
    """CoinGecko's simple/price body; prices are JSON numbers, written exactly (no float)."""
    parts = [f'"{cid}":{{"usd":{price},"last_updated_at":{ts}}}' for cid, (price, ts) in entries.items()]
    return "{" + ",".join(parts) + "}"


# --- the fake exchange server -----------------------------------------------------------------
class FakeExchanges:
    """Serves all four APIs; tests queue special replies or change prices and times."""

    def __init__(self) -> None:
        self.prices: dict[str, Decimal] = dict(BASE_PRICES)
        self.skew: dict[str, Decimal] = {}  # per exchange: multiply its prices by this
        self.updated_at: datetime | None = None  # payload times; None means "just now"
        self.hits: Counter[str] = Counter()
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.headers: list[dict[str, str]] = []
        self._queued: dict[str, list[Reply]] = {}
        self._sticky: dict[str, Reply] = {}
        self.base_url = ""

    def queue(self, route: str, *replies: Reply) -> None:
        """Serve these replies (in order) on ``route`` before going back to normal."""
        self._queued.setdefault(route, []).extend(replies)

    def always(self, route: str, reply: Reply | None) -> None:
        """Serve ``reply`` on ``route`` until told otherwise (None restores normal replies)."""
        if reply is None:
            self._sticky.pop(route, None)
        else:
            self._sticky[route] = reply

    def _override(self, route: str) -> Reply | None:
        queue = self._queued.get(route)
        if queue:
            return queue.pop(0)
        return self._sticky.get(route)

    def price(self, route: str, symbol: str) -> Decimal:
        return self.prices[symbol] * self.skew.get(route, Decimal(1))

    def _payload_time(self) -> datetime:
        return self.updated_at or datetime.now(UTC) - timedelta(seconds=2)

    async def _serve(self, route: str, request: web.Request, normal: Reply) -> web.StreamResponse:
        self.hits[route] += 1
        self.queries.append((route, dict(request.query)))
        self.headers.append(dict(request.headers))
        reply = self._override(route) or normal
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(
            status=reply.status,
            body=reply.body.encode() if isinstance(reply.body, str) else reply.body,
            headers=reply.headers,
            content_type=reply.content_type,
        )

    # handlers ------------------------------------------------------------------------
    async def kraken(self, request: web.Request) -> web.StreamResponse:
        by_pair = {v: k for k, v in KRAKEN_PAIRS.items()}
        pairs = request.query.get("pair", "").split(",")
        if any(p not in by_pair for p in pairs):
            normal = json_reply({"error": ["EQuery:Unknown asset pair"], "result": {}})
        else:
            normal = json_reply(kraken_body({by_pair[p]: self.price("kraken", by_pair[p]) for p in pairs}))
        return await self._serve("kraken", request, normal)

    async def binance(self, request: web.Request) -> web.StreamResponse:
        by_symbol = {v: k for k, v in BINANCE_SYMBOLS.items()}
        try:
            asked = json.loads(request.query["symbols"])
        except (KeyError, ValueError):
            asked = None
        if not isinstance(asked, list) or any(a not in by_symbol for a in asked):
            normal = json_reply({"code": -1121, "msg": "Invalid symbol."}, status=400)
        else:
            normal = json_reply(binance_body({by_symbol[a]: self.price("binance", by_symbol[a]) for a in asked}))
        return await self._serve("binance", request, normal)

    async def coinbase(self, request: web.Request) -> web.StreamResponse:
        product = request.match_info["product"]
        by_product = {v: k for k, v in COINBASE_PRODUCTS.items()}
        if product not in by_product:
            normal = json_reply({"message": "NotFound"}, status=404)
        else:
            normal = json_reply(coinbase_body(self.price("coinbase", by_product[product]), self._payload_time()))
        route = f"coinbase:{product}"
        if self._queued.get(route) or route in self._sticky:
            self.hits["coinbase"] += 1
            return await self._serve(route, request, normal)
        return await self._serve("coinbase", request, normal)

    async def coingecko(self, request: web.Request) -> web.StreamResponse:
        by_id = {v: k for k, v in COINGECKO_IDS.items()}
        ts = int(self._payload_time().timestamp())
        ids = request.query.get("ids", "").split(",")
        # like CoinGecko, unknown ids are silently left out
        text = coingecko_text({i: (self.price("coingecko", by_id[i]), ts) for i in ids if i in by_id})
        return await self._serve("coingecko", request, Reply(200, text))


@dataclass
class FakeMonotonic:
    """An injectable monotonic clock for cool-downs and TTLs."""

    t: float = 10_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


async def start_server(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # do not wait for slow handlers
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def failures(registry: CollectorRegistry, source: str) -> float:
    return registry.get_sample_value("creditbridge_pricing_source_failures_total", {"source": source}) or 0.0
