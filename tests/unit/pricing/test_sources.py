"""The real price-source clients and wrappers against a local HTTP server on 127.0.0.1.

Payload shapes follow the exchanges' documented formats: Kraken ``GET /0/public/Ticker``
(``{"error": [...], "result": {PAIR: {"c": [price, lot], ...}}}``), Binance ``GET
/api/v3/ticker/price?symbols=[...]`` (``[{"symbol", "price"}]``, errors ``{"code",
"msg"}``, 429/418 with ``Retry-After``), Coinbase Exchange ``GET /products/{id}/ticker``
(``{"price", "time", ...}``, errors ``{"message"}``) and CoinGecko ``GET
/api/v3/simple/price`` (``{id: {"usd": number, "last_updated_at": seconds}}``, 429 with
``{"status": {"error_code", "error_message"}}``). No part of the code under test is mocked.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from bridge.errors import PriceUnavailable
from bridge.pricing.sources.base import PricePoint, PriceSource
from bridge.pricing.sources.binance import BinanceSource
from bridge.pricing.sources.coinbase import CoinbaseSource
from bridge.pricing.sources.coingecko import CoinGeckoSource
from bridge.pricing.sources.http import (
    HttpSettings,
    MalformedPriceData,
    PriceSourceRateLimited,
    PriceSourceRejected,
)
from bridge.pricing.sources.kraken import KrakenSource
from bridge.pricing.wrappers import CachedSource, FallbackSource

from .fakes import (
    BASE_PRICES,
    FakeExchanges,
    FakeMonotonic,
    Reply,
    coinbase_body,
    coingecko_text,
    json_reply,
    kraken_body,
    kraken_ticker,
)

ALL = frozenset({"DOT", "KSM", "ETH", "TON"})


def settings(mono: FakeMonotonic, **kw) -> HttpSettings:
    return HttpSettings(monotonic=mono, **kw)


def kraken(session, ex: FakeExchanges, mono: FakeMonotonic, **kw) -> KrakenSource:
    return KrakenSource(session, base_url=ex.base_url, settings=settings(mono, **kw))


def binance(session, ex: FakeExchanges, mono: FakeMonotonic, **kw) -> BinanceSource:
    return BinanceSource(session, base_url=ex.base_url, settings=settings(mono, **kw))


def coinbase(session, ex: FakeExchanges, mono: FakeMonotonic, **kw) -> CoinbaseSource:
    return CoinbaseSource(session, base_url=ex.base_url, settings=settings(mono, **kw))


def coingecko(session, ex: FakeExchanges, mono: FakeMonotonic, **kw) -> CoinGeckoSource:
    return CoinGeckoSource(session, base_url=ex.base_url, settings=settings(mono, **kw))


def failures(registry: CollectorRegistry, source: str) -> float:
    return registry.get_sample_value("creditbridge_pricing_source_failures_total", {"source": source}) or 0.0


def assert_received_now(point: PricePoint, before: datetime, after: datetime) -> None:
    assert point.timestamp.tzinfo is not None and point.timestamp.utcoffset() == timedelta(0)
    assert before <= point.timestamp <= after


async def test_sources_implement_the_protocol(session) -> None:
    for source in (KrakenSource(session), BinanceSource(session), CoinbaseSource(session), CoinGeckoSource(session)):
        assert isinstance(source, PriceSource)


# --- Kraken -----------------------------------------------------------------------------------
async def test_kraken_parses_last_trade_of_each_pair(session, exchanges, mono) -> None:
    before = datetime.now(UTC)
    points = await kraken(session, exchanges, mono).fetch(ALL)
    after = datetime.now(UTC)

    assert exchanges.queries == [("kraken", {"pair": "DOTUSD,XETHZUSD,KSMUSD,TONUSD"})]
    assert set(points) == ALL
    for symbol, point in points.items():
        assert point.symbol == symbol and point.source == "kraken"
        assert point.price == BASE_PRICES[symbol].quantize(Decimal("0.00001"))
        assert type(point.price) is Decimal
        assert_received_now(point, before, after)  # Kraken's ticker has no timestamp


async def test_kraken_asks_only_for_known_symbols(session, exchanges, mono) -> None:
    src = kraken(session, exchanges, mono)
    assert await src.fetch(frozenset({"BTC"})) == {}
    assert exchanges.hits["kraken"] == 0
    points = await src.fetch(frozenset({"ETH", "BTC"}))
    assert list(points) == ["ETH"]
    assert exchanges.queries[-1][1] == {"pair": "XETHZUSD"}


async def test_kraken_error_list_is_a_failure_even_with_http_200(session, exchanges, mono) -> None:
    exchanges.queue("kraken", json_reply({"error": ["EQuery:Unknown asset pair"], "result": {}}))
    with pytest.raises(PriceSourceRejected, match="EQuery:Unknown asset pair") as info:
        await kraken(session, exchanges, mono).fetch(ALL)
    assert info.value.retryable is False


async def test_kraken_service_errors_are_retryable(session, exchanges, mono) -> None:
    exchanges.queue("kraken", json_reply({"error": ["EService:Unavailable"]}))
    with pytest.raises(PriceUnavailable, match="EService:Unavailable") as info:
        await kraken(session, exchanges, mono).fetch(ALL)
    assert info.value.retryable is True


async def test_kraken_rate_limit_error_starts_a_cooldown(session, exchanges, mono) -> None:
    src = kraken(session, exchanges, mono, default_cooldown=20)
    exchanges.queue("kraken", json_reply({"error": ["EGeneral:Too many requests"]}))
    with pytest.raises(PriceSourceRateLimited) as info:
        await src.fetch(ALL)
    assert info.value.retryable and info.value.retry_after == 20
    with pytest.raises(PriceSourceRateLimited, match="cooling down"):
        await src.fetch(ALL)
    assert exchanges.hits["kraken"] == 1  # the cool-down kept us off the exchange
    mono.advance(20)
    assert set(await src.fetch(ALL)) == ALL
    assert exchanges.hits["kraken"] == 2


def _kraken_with(c: object) -> dict:
    body = kraken_body({"ETH": BASE_PRICES["ETH"]})
    body["result"]["XETHZUSD"]["c"] = c
    return body


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(json_reply(_kraken_with(["NaN", "1.0"])), id="price-NaN-string"),
        pytest.param(json_reply(_kraken_with(["Infinity", "1.0"])), id="price-Infinity-string"),
        pytest.param(json_reply(_kraken_with(["0.00000", "1.0"])), id="price-zero"),
        pytest.param(json_reply(_kraken_with(["-3012.45", "1.0"])), id="price-negative"),
        pytest.param(json_reply(_kraken_with(["3.01245e3", "1.0"])), id="price-exponent"),
        pytest.param(json_reply(_kraken_with([" 3012.45", "1.0"])), id="price-whitespace"),
        pytest.param(json_reply(_kraken_with([3012.45, "1.0"])), id="price-number-not-string"),
        pytest.param(json_reply(_kraken_with(None)), id="c-null"),
        pytest.param(json_reply(_kraken_with(["3012.45"])), id="c-too-short"),
        pytest.param(json_reply({"error": [], "result": {"XETHZUSD": {"a": ["1", "1", "1"]}}}), id="c-missing"),
        pytest.param(json_reply({"error": [], "result": {"ETHUSD": kraken_ticker(Decimal(1))}}), id="pair-missing"),
        pytest.param(json_reply({"result": {}}), id="error-field-missing"),
        pytest.param(json_reply({"error": [], "result": []}), id="result-not-object"),
        pytest.param(json_reply([]), id="body-not-object"),
        pytest.param(
            Reply(200, '{"error":[],"result":{"XETHZUSD":{"c":[NaN,"1.0"]}}}'), id="json-NaN-literal"
        ),
        pytest.param(Reply(200, '{"error":[],"result":', {}), id="truncated-json"),
        pytest.param(Reply(200, "<html>maintenance</html>", content_type="text/html"), id="html"),
        pytest.param(Reply(200, b'{"error":[],"result":{"\xff":1}}'), id="invalid-utf8"),
    ],
)
async def test_kraken_rejects_malformed_payloads(session, exchanges, mono, reply: Reply) -> None:
    exchanges.queue("kraken", reply)
    with pytest.raises(MalformedPriceData):
        await kraken(session, exchanges, mono).fetch(frozenset({"ETH"}))


# --- Binance ----------------------------------------------------------------------------------
async def test_binance_parses_the_symbols_list(session, exchanges, mono) -> None:
    before = datetime.now(UTC)
    points = await binance(session, exchanges, mono).fetch(ALL)
    after = datetime.now(UTC)

    route, query = exchanges.queries[0]
    assert route == "binance"
    assert query == {"symbols": '["DOTUSDT","ETHUSDT","KSMUSDT","TONUSDT"]'}
    assert {s: p.price for s, p in points.items()} == {
        s: p.quantize(Decimal("0.00000001")) for s, p in BASE_PRICES.items()
    }
    for point in points.values():
        assert point.source == "binance"
        assert_received_now(point, before, after)


async def test_binance_error_body_is_reported(session, exchanges, mono) -> None:
    exchanges.queue("binance", json_reply({"code": -1121, "msg": "Invalid symbol."}, status=400))
    with pytest.raises(PriceSourceRejected, match=r"HTTP 400: code -1121: Invalid symbol\.") as info:
        await binance(session, exchanges, mono).fetch(ALL)
    assert info.value.retryable is False


async def test_binance_429_is_retryable_and_honours_retry_after(session, exchanges, mono) -> None:
    src = binance(session, exchanges, mono)
    exchanges.queue(
        "binance",
        json_reply(
            {"code": -1003, "msg": "Too much request weight used; please use WebSocket Streams for live updates."},
            status=429,
            **{"Retry-After": "7"},
        ),
    )
    with pytest.raises(PriceSourceRateLimited, match="HTTP 429.*-1003") as info:
        await src.fetch(ALL)
    assert info.value.retryable is True and info.value.retry_after == 7

    mono.advance(6.5)  # still cooling down: the exchange is not asked
    with pytest.raises(PriceSourceRateLimited, match="cooling down"):
        await src.fetch(ALL)
    assert exchanges.hits["binance"] == 1

    mono.advance(0.5)
    assert set(await src.fetch(ALL)) == ALL
    assert exchanges.hits["binance"] == 2


async def test_binance_418_ban_cooldown_is_capped(session, exchanges, mono) -> None:
    src = binance(session, exchanges, mono, max_cooldown=600)
    exchanges.queue(
        "binance",
        json_reply(
            {"code": -1003, "msg": "Way too much request weight used; IP banned until 1764157000000."},
            status=418,
            **{"Retry-After": "259200"},  # three days, the longest documented ban
        ),
    )
    with pytest.raises(PriceSourceRateLimited, match="HTTP 418") as info:
        await src.fetch(ALL)
    assert info.value.retry_after == 600
    assert src.http.cooldown_remaining() == 600


async def test_429_without_retry_after_uses_default_cooldown(session, exchanges, mono) -> None:
    src = binance(session, exchanges, mono, default_cooldown=45)
    exchanges.queue("binance", json_reply({"code": -1003, "msg": "Too many requests."}, status=429))
    with pytest.raises(PriceSourceRateLimited):
        await src.fetch(ALL)
    assert src.http.cooldown_remaining() == 45


async def test_5xx_is_retryable_and_retry_after_http_date_is_honoured(session, exchanges, mono) -> None:
    src = binance(session, exchanges, mono)
    retry_at = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    exchanges.queue(
        "binance",
        Reply(503, "<html><body>Service Unavailable</body></html>", {"Retry-After": retry_at}, "text/html"),
    )
    with pytest.raises(PriceUnavailable, match="server error HTTP 503") as info:
        await src.fetch(ALL)
    assert info.value.retryable is True
    assert 100 < src.http.cooldown_remaining() <= 120


async def test_5xx_without_retry_after_does_not_cool_down(session, exchanges, mono) -> None:
    src = binance(session, exchanges, mono)
    exchanges.queue("binance", json_reply({"code": -1000, "msg": "An unknown error occurred."}, status=500))
    with pytest.raises(PriceUnavailable, match="HTTP 500: code -1000") as info:
        await src.fetch(ALL)
    assert info.value.retryable
    assert set(await src.fetch(ALL)) == ALL


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([{"symbol": "ETHUSDT", "price": "3012.45"}], id="symbols-missing"),
        pytest.param(
            [{"symbol": "ETHUSDT", "price": 3012.45}, {"symbol": "DOTUSDT", "price": "6.4"}], id="price-number"
        ),
        pytest.param([{"symbol": "ETHUSDT"}, {"symbol": "DOTUSDT", "price": "6.4"}], id="price-missing"),
        pytest.param([{"price": "1"}, {"symbol": "DOTUSDT", "price": "6.4"}], id="symbol-missing"),
        pytest.param(
            [
                {"symbol": "ETHUSDT", "price": "1"},
                {"symbol": "ETHUSDT", "price": "2"},
                {"symbol": "DOTUSDT", "price": "6.4"},
            ],
            id="duplicate",
        ),
        pytest.param({"symbol": "ETHUSDT", "price": "3012.45"}, id="object-not-list"),
    ],
)
async def test_binance_rejects_malformed_payloads(session, exchanges, mono, body) -> None:
    exchanges.queue("binance", json_reply(body))
    with pytest.raises(MalformedPriceData):
        await binance(session, exchanges, mono).fetch(frozenset({"ETH", "DOT"}))


# --- Coinbase ---------------------------------------------------------------------------------
async def test_coinbase_uses_trade_time_from_the_payload(session, exchanges, mono) -> None:
    exchanges.updated_at = datetime(2026, 11, 26, 10, 35, 12, 123456, tzinfo=UTC)
    points = await coinbase(session, exchanges, mono).fetch(ALL)

    assert exchanges.hits["coinbase"] == 2  # one request per product
    assert set(points) == {"ETH", "DOT"}  # Coinbase Exchange lists no KSM or TON product by default
    assert points["ETH"] == PricePoint("ETH", Decimal("3012.45"), exchanges.updated_at, "coinbase")
    assert points["DOT"].price == Decimal("6.412")


async def test_coinbase_accepts_nanosecond_times(session, exchanges, mono) -> None:
    body = coinbase_body(Decimal("3012.45"), datetime.now(UTC))
    body["time"] = "2026-11-26T10:35:12.123456789Z"
    exchanges.queue("coinbase:ETH-USD", json_reply(body))
    points = await coinbase(session, exchanges, mono).fetch(frozenset({"ETH"}))
    assert points["ETH"].timestamp == datetime(2026, 11, 26, 10, 35, 12, 123456, tzinfo=UTC)


async def test_coinbase_not_found_is_rejected(session, exchanges, mono) -> None:
    src = CoinbaseSource(session, base_url=exchanges.base_url, products={"KSM": "KSM-USD"}, settings=settings(mono))
    with pytest.raises(PriceSourceRejected, match="HTTP 404: NotFound"):
        await src.fetch(frozenset({"KSM"}))


async def test_coinbase_one_failing_product_fails_the_fetch(session, exchanges, mono) -> None:
    exchanges.queue(
        "coinbase:DOT-USD",
        json_reply({"message": "Public rate limit exceeded"}, status=429, **{"Retry-After": "3"}),
    )
    src = coinbase(session, exchanges, mono)
    with pytest.raises(PriceSourceRateLimited, match="Public rate limit exceeded"):
        await src.fetch(ALL)
    with pytest.raises(PriceSourceRateLimited, match="cooling down"):
        await src.fetch(frozenset({"ETH"}))
    mono.advance(3)
    assert set(await src.fetch(ALL)) == {"ETH", "DOT"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time", None),
        ("time", "2026-11-26T10:35:12"),  # no offset
        ("time", "2026-13-26T10:35:12Z"),  # no such month
        ("time", 1764153312),
        ("price", None),
        ("price", "NaN"),
        ("price", "0"),
        ("price", 3012.45),
    ],
)
async def test_coinbase_rejects_malformed_payloads(session, exchanges, mono, field, value) -> None:
    body = coinbase_body(Decimal("3012.45"), datetime.now(UTC))
    if value is None:
        del body[field]
    else:
        body[field] = value
    exchanges.queue("coinbase:ETH-USD", json_reply(body))
    with pytest.raises(MalformedPriceData):
        await coinbase(session, exchanges, mono).fetch(frozenset({"ETH"}))


async def test_coinbase_rejects_a_time_in_the_future(session, exchanges, mono) -> None:
    body = coinbase_body(Decimal("3012.45"), datetime.now(UTC) + timedelta(hours=1))
    exchanges.queue("coinbase:ETH-USD", json_reply(body))
    with pytest.raises(MalformedPriceData, match="in the future"):
        await coinbase(session, exchanges, mono).fetch(frozenset({"ETH"}))


# --- CoinGecko --------------------------------------------------------------------------------
async def test_coingecko_decodes_json_numbers_exactly(session, exchanges, mono) -> None:
    updated = datetime(2026, 11, 26, 10, 35, 5, tzinfo=UTC)
    ts = int(updated.timestamp())
    exchanges.queue(
        "coingecko",
        Reply(
            200,
            coingecko_text(
                {
                    "polkadot": (Decimal("6.41"), ts),
                    "kusama": (Decimal("27.850000000000001"), ts),  # would not survive a float
                    "ethereum": (Decimal("3012"), ts),  # a whole number arrives as a JSON int
                    "the-open-network": (Decimal("5.473E-0"), ts),
                }
            ),
        ),
    )
    points = await coingecko(session, exchanges, mono).fetch(ALL)

    assert exchanges.queries[0] == (
        "coingecko",
        {"ids": "polkadot,ethereum,kusama,the-open-network", "vs_currencies": "usd", "include_last_updated_at": "true"},
    )
    assert points["DOT"].price == Decimal("6.41")
    assert points["KSM"].price == Decimal("27.850000000000001")
    assert points["ETH"].price == Decimal(3012)
    assert points["TON"].price == Decimal("5.473")
    assert all(type(p.price) is Decimal and p.timestamp == updated and p.source == "coingecko" for p in points.values())


async def test_coingecko_429_with_its_error_body(session, exchanges, mono) -> None:
    exchanges.queue(
        "coingecko",
        json_reply(
            {
                "status": {
                    "error_code": 429,
                    "error_message": (
                        "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing "
                        "to subscribe to our API plans for higher rate limits."
                    ),
                }
            },
            status=429,
            **{"Retry-After": "60"},
        ),
    )
    src = coingecko(session, exchanges, mono)
    with pytest.raises(PriceSourceRateLimited, match="code 429: You've exceeded the Rate Limit") as info:
        await src.fetch(ALL)
    assert info.value.retry_after == 60
    with pytest.raises(PriceSourceRateLimited):
        await src.fetch(ALL)
    assert exchanges.hits["coingecko"] == 1


async def test_coingecko_sends_the_api_key_header(session, exchanges, mono) -> None:
    src = CoinGeckoSource(session, base_url=exchanges.base_url, api_key="CG-test", settings=settings(mono))
    await src.fetch(frozenset({"ETH"}))
    headers = exchanges.headers[-1]
    assert headers["x-cg-demo-api-key"] == "CG-test"
    assert headers["User-Agent"].startswith("creditbridge")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('{"polkadot":{"usd":6.41}}', id="last-updated-missing"),
        pytest.param('{"polkadot":{"usd":6.41,"last_updated_at":"1764153305"}}', id="timestamp-string"),
        pytest.param('{"polkadot":{"usd":6.41,"last_updated_at":1764153305000}}', id="timestamp-millis"),
        pytest.param('{"polkadot":{"usd":6.41,"last_updated_at":1764153305.5}}', id="timestamp-fraction"),
        pytest.param('{"polkadot":{"usd":"6.41","last_updated_at":1764153305}}', id="price-string"),
        pytest.param('{"polkadot":{"usd":null,"last_updated_at":1764153305}}', id="price-null"),
        pytest.param('{"polkadot":{"usd":0,"last_updated_at":1764153305}}', id="price-zero"),
        pytest.param('{"polkadot":{"usd":-6.41,"last_updated_at":1764153305}}', id="price-negative"),
        pytest.param('{"polkadot":{"usd":NaN,"last_updated_at":1764153305}}', id="price-NaN"),
        pytest.param('{"polkadot":{"usd":Infinity,"last_updated_at":1764153305}}', id="price-Infinity"),
        pytest.param('{"polkadot":{"usd":true,"last_updated_at":1764153305}}', id="price-bool"),
        pytest.param('{"polkadot":{"eur":5.9,"last_updated_at":1764153305}}', id="usd-missing"),
        pytest.param("{}", id="id-missing"),
        pytest.param('{"polkadot":[6.41]}', id="entry-not-object"),
    ],
)
async def test_coingecko_rejects_malformed_payloads(session, exchanges, mono, text: str) -> None:
    exchanges.queue("coingecko", Reply(200, text))
    with pytest.raises(MalformedPriceData):
        await coingecko(session, exchanges, mono).fetch(frozenset({"DOT"}))


# --- transport failures -----------------------------------------------------------------------
async def test_timeout_is_a_retryable_failure(session, exchanges, mono) -> None:
    exchanges.queue("binance", Reply(200, "[]", delay=1.0))
    with pytest.raises(PriceUnavailable, match="no answer within 0.2s") as info:
        await binance(session, exchanges, mono, timeout=0.2).fetch(ALL)
    assert info.value.retryable


async def test_server_down_is_a_retryable_failure(session, dead_url, mono) -> None:
    src = KrakenSource(session, base_url=dead_url, settings=settings(mono))
    with pytest.raises(PriceUnavailable, match="request failed") as info:
        await src.fetch(ALL)
    assert info.value.retryable


async def test_oversized_body_is_rejected(session, exchanges, mono) -> None:
    exchanges.queue("binance", Reply(200, "[" + " " * 5000 + "]"))
    with pytest.raises(MalformedPriceData, match="too large|larger than"):
        await binance(session, exchanges, mono, max_body_bytes=1000).fetch(ALL)


async def test_redirects_are_not_followed(session, exchanges, mono) -> None:
    exchanges.queue("kraken", Reply(301, "", {"Location": "http://198.51.100.1/"}))
    with pytest.raises(PriceSourceRejected, match="HTTP 301"):
        await kraken(session, exchanges, mono).fetch(ALL)


async def test_base_url_must_be_http(session) -> None:
    with pytest.raises(ValueError, match="base_url"):
        KrakenSource(session, base_url="file:///etc/passwd")


# --- CachedSource -----------------------------------------------------------------------------
async def test_cached_source_serves_within_ttl(session, exchanges, mono, registry) -> None:
    cached = CachedSource(kraken(session, exchanges, mono), timedelta(seconds=10), registry=registry, monotonic=mono)
    first = await cached.fetch(ALL)
    again = await cached.fetch(frozenset({"ETH"}))  # a subset is served from the cache
    assert again == {"ETH": first["ETH"]}
    assert exchanges.hits["kraken"] == 1

    mono.advance(10)
    await cached.fetch(ALL)
    assert exchanges.hits["kraken"] == 2
    assert cached.name == "kraken"


async def test_cached_source_refetches_for_new_symbols(session, exchanges, mono, registry) -> None:
    cached = CachedSource(kraken(session, exchanges, mono), timedelta(seconds=10), registry=registry, monotonic=mono)
    await cached.fetch(frozenset({"ETH"}))
    await cached.fetch(frozenset({"ETH", "DOT"}))
    assert exchanges.hits["kraken"] == 2


async def test_cached_source_shares_one_fetch_between_concurrent_callers(session, exchanges, mono, registry) -> None:
    exchanges.queue("kraken", Reply(200, json.dumps(kraken_body(BASE_PRICES)), delay=0.1))
    cached = CachedSource(kraken(session, exchanges, mono), timedelta(seconds=10), registry=registry, monotonic=mono)
    results = await asyncio.gather(*(cached.fetch(ALL) for _ in range(5)))
    assert exchanges.hits["kraken"] == 1
    assert all(r == results[0] for r in results)


async def test_cached_source_records_failures_and_does_not_cache_them(session, dead_url, mono, registry) -> None:
    src = KrakenSource(session, base_url=dead_url, settings=settings(mono))
    cached = CachedSource(src, timedelta(seconds=10), registry=registry, monotonic=mono)
    for attempt in (1, 2):
        with pytest.raises(PriceUnavailable, match="request failed"):
            await cached.fetch(ALL)
        assert failures(registry, "kraken") == attempt
    assert cached.health.consecutive_failures == 2
    assert "request failed" in (cached.health.last_error or "")
    assert cached.health.last_error_code == "price-unavailable"


async def test_cached_source_reraises_cancellation_without_recording(session, exchanges, mono, registry) -> None:
    exchanges.always("kraken", Reply(200, "{}", delay=5))
    cached = CachedSource(kraken(session, exchanges, mono), timedelta(seconds=10), registry=registry, monotonic=mono)
    task = asyncio.create_task(cached.fetch(ALL))
    while exchanges.hits["kraken"] == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures(registry, "kraken") == 0
    assert cached.health.last_error is None


class _Broken:
    """A source with a bug: raises something that is not PriceUnavailable."""

    name = "broken"

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        raise KeyError("oops")


async def test_wrappers_turn_bugs_into_recorded_price_unavailable(registry) -> None:
    cached = CachedSource(_Broken(), timedelta(seconds=1), registry=registry)
    with pytest.raises(PriceUnavailable, match="unexpected KeyError") as info:
        await cached.fetch(ALL)
    assert isinstance(info.value.__cause__, KeyError)
    assert failures(registry, "broken") == 1


# --- FallbackSource ---------------------------------------------------------------------------
async def test_fallback_uses_the_next_source_when_one_fails(session, exchanges, mono, registry) -> None:
    exchanges.queue("kraken", json_reply({"error": ["EService:Unavailable"]}))
    fb = FallbackSource([kraken(session, exchanges, mono), binance(session, exchanges, mono)], registry=registry)
    points = await fb.fetch(ALL)
    assert {p.source for p in points.values()} == {"binance"}
    assert failures(registry, "kraken") == 1
    assert fb.health["kraken"].last_error == "kraken: EService:Unavailable"
    assert fb.health["binance"].last_success_at is not None
    assert fb.name == "fallback(kraken,binance)"


async def test_fallback_fills_symbols_the_first_source_does_not_list(session, exchanges, mono, registry) -> None:
    fb = FallbackSource([coinbase(session, exchanges, mono), kraken(session, exchanges, mono)], registry=registry)
    points = await fb.fetch(ALL)
    assert {s: p.source for s, p in points.items()} == {
        "ETH": "coinbase", "DOT": "coinbase", "KSM": "kraken", "TON": "kraken"
    }
    assert exchanges.queries[-1] == ("kraken", {"pair": "KSMUSD,TONUSD"})


async def test_fallback_raises_when_every_source_fails(session, exchanges, dead_url, mono, registry) -> None:
    exchanges.queue("binance", json_reply({"code": -1121, "msg": "Invalid symbol."}, status=400))
    fb = FallbackSource(
        [KrakenSource(session, base_url=dead_url, settings=settings(mono)), binance(session, exchanges, mono)],
        registry=registry,
        name="backup",
    )
    with pytest.raises(PriceUnavailable, match=r"backup: every source failed: kraken: .*; binance: HTTP 400") as info:
        await fb.fetch(ALL)
    assert info.value.retryable  # the connection failure may heal
    assert failures(registry, "kraken") == 1 and failures(registry, "binance") == 1


async def test_a_failure_passing_through_two_wrappers_is_counted_once(session, dead_url, mono, registry) -> None:
    inner = CachedSource(
        KrakenSource(session, base_url=dead_url, settings=settings(mono)),
        timedelta(seconds=5),
        registry=registry,
    )
    fb = FallbackSource([inner], registry=registry)
    with pytest.raises(PriceUnavailable):
        await fb.fetch(ALL)
    assert failures(registry, "kraken") == 1
    assert inner.health.failures == 1 and fb.health["kraken"].failures == 1


async def test_fallback_reraises_cancellation(session, exchanges, mono, registry) -> None:
    exchanges.always("kraken", Reply(200, "{}", delay=5))
    fb = FallbackSource([kraken(session, exchanges, mono), binance(session, exchanges, mono)], registry=registry)
    task = asyncio.create_task(fb.fetch(ALL))
    while exchanges.hits["kraken"] == 0:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert exchanges.hits["binance"] == 0  # cancellation is not a reason to fall back
    assert failures(registry, "kraken") == 0


async def test_fallback_rejects_a_source_breaking_its_promise(registry) -> None:
    class Liar:
        name = "liar"

        async def fetch(self, symbols):
            return {"ETH": PricePoint("ETH", Decimal("-1"), datetime.now(UTC), "liar")}

    fb = FallbackSource([Liar()], registry=registry)
    with pytest.raises(PriceUnavailable, match="every source failed: liar: ETH price .* not a positive finite Decimal"):
        await fb.fetch(ALL)
    assert failures(registry, "liar") == 1


async def test_a_huge_error_page_is_still_a_retryable_server_error(session, exchanges, mono) -> None:
    exchanges.queue("binance", Reply(502, "<html>" + "x" * 200_000 + "</html>", content_type="text/html"))
    with pytest.raises(PriceUnavailable, match=r"server error HTTP 502$") as info:
        await binance(session, exchanges, mono, max_body_bytes=1000).fetch(ALL)
    assert info.value.retryable
