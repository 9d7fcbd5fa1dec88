"""PriceAggregator: median, quorum, staleness and deviation guards, failure bookkeeping.

The end-to-end tests run the real Kraken, Binance, Coinbase and CoinGecko clients against
a local HTTP server on 127.0.0.1 whose payload shapes follow the exchanges' documented
formats (see ``fakes.py``). The rule tests feed the aggregator from a small in-memory
``PriceSource`` so each guard can be driven exactly; the aggregator itself is never mocked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.errors import ConfigError, InputError, PriceUnavailable
from bridge.pricing.aggregate import (
    AggregatedPrice,
    PriceAggregator,
    SourceQuote,
    median,
)
from bridge.pricing.sources.base import PricePoint
from bridge.pricing.sources.binance import BinanceSource
from bridge.pricing.sources.coinbase import CoinbaseSource
from bridge.pricing.sources.coingecko import CoinGeckoSource
from bridge.pricing.sources.http import HttpSettings
from bridge.pricing.sources.kraken import KrakenSource

from .fakes import json_reply

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
ALL = frozenset({"DOT", "KSM", "ETH", "TON"})


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class StaticSource:
    """An in-memory PriceSource (a test input, not the code under test)."""

    def __init__(
        self,
        name: str,
        prices: Mapping[str, str | Decimal] | None = None,
        *,
        at: datetime = T0,
        error: BaseException | None = None,
        delay: float = 0.0,
    ) -> None:
        self.name = name
        self.prices = {s: Decimal(p) for s, p in (prices or {}).items()}
        self.at = at
        self.error = error
        self.delay = delay
        self.calls = 0

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return {s: PricePoint(s, p, self.at, self.name) for s, p in self.prices.items() if s in symbols}


def agg(sources, registry: CollectorRegistry, clock: Clock | None = None, **kw) -> PriceAggregator:
    kw.setdefault("min_sources", 2)
    kw.setdefault("max_deviation", Decimal("0.02"))
    kw.setdefault("max_age", timedelta(minutes=2))
    return PriceAggregator(sources, registry=registry, clock=clock or Clock(), **kw)


def eth(*prices: str, at: datetime = T0) -> list[StaticSource]:
    return [StaticSource(f"s{i}", {"ETH": p}, at=at) for i, p in enumerate(prices)]


def failures(registry: CollectorRegistry, source: str) -> float:
    return registry.get_sample_value("creditbridge_pricing_source_failures_total", {"source": source}) or 0.0


# --- end to end over HTTP ---------------------------------------------------------------------
def real_sources(session, base_url: str, kraken_url: str | None = None):
    fast = HttpSettings(timeout=2.0)
    return [
        KrakenSource(session, base_url=kraken_url or base_url, settings=fast),
        BinanceSource(session, base_url=base_url, settings=fast),
        CoinbaseSource(session, base_url=base_url, settings=fast),
        CoinGeckoSource(session, base_url=base_url, settings=fast),
    ]


async def test_median_of_four_real_sources(session, exchanges, registry) -> None:
    exchanges.prices["ETH"] = Decimal("3000")
    exchanges.skew = {"binance": Decimal("1.004"), "coinbase": Decimal("0.998"), "coingecko": Decimal("1.001")}
    exchanges.updated_at = datetime.now(UTC) - timedelta(seconds=5)
    a = PriceAggregator(
        real_sources(session, exchanges.base_url),
        min_sources=3,
        max_deviation=Decimal("0.02"),
        max_age=timedelta(minutes=2),
        registry=registry,
    )
    await a.refresh()
    p = a.price("ETH")

    # 2994 (coinbase) < 3000 (kraken) < 3003 (coingecko) < 3012 (binance, USDT): mean of the middle two
    assert p.price == Decimal("3001.5")
    assert [(q.name, q.price) for q in p.sources] == [
        ("binance", Decimal("3012.00000000")),
        ("coinbase", Decimal("2994.000")),
        ("coingecko", Decimal("3003.000")),
        ("kraken", Decimal("3000.00000")),
    ]
    assert p.as_of == exchanges.updated_at.replace(microsecond=0)  # CoinGecko's whole-second time, the oldest
    # Coinbase lists no KSM by default; three sources still make the quorum
    assert {q.name for q in a.price("KSM").sources} == {"kraken", "binance", "coingecko"}
    assert registry.get_sample_value("creditbridge_pricing_price_usd", {"symbol": "ETH"}) == 3001.5
    age = registry.get_sample_value("creditbridge_pricing_source_age_seconds", {"source": "coingecko", "symbol": "ETH"})
    assert age is not None and 5 <= age < 60


async def test_stale_payloads_are_excluded(session, exchanges, registry) -> None:
    exchanges.updated_at = datetime.now(UTC) - timedelta(hours=1)  # Coinbase and CoinGecko report old times
    sources = real_sources(session, exchanges.base_url)
    a = PriceAggregator(
        sources, min_sources=2, max_deviation=Decimal("0.02"), max_age=timedelta(minutes=2), registry=registry
    )
    await a.refresh()
    assert {q.name for q in a.price("ETH").sources} == {"kraken", "binance"}

    strict = PriceAggregator(
        sources, min_sources=3, max_deviation=Decimal("0.02"), max_age=timedelta(minutes=2), registry=registry
    )
    await strict.refresh()
    with pytest.raises(PriceUnavailable, match=r"ETH: 2 fresh .*need 3.*coinbase: stale, 3\d{3}s old > max 120s"):
        strict.price("ETH")


async def test_server_down_is_recorded_and_does_not_break_refresh(session, exchanges, dead_url, registry) -> None:
    a = PriceAggregator(
        real_sources(session, exchanges.base_url, kraken_url=dead_url),
        min_sources=2,
        max_deviation=Decimal("0.02"),
        max_age=timedelta(minutes=2),
        registry=registry,
    )
    await a.refresh()
    assert failures(registry, "kraken") == 1
    assert {q.name for q in a.price("TON").sources} == {"binance", "coingecko"}
    view = a.snapshot()
    kraken = next(s for s in view["sources"] if s["name"] == "kraken")
    assert "request failed" in kraken["last_error"] and kraken["consecutive_failures"] == 1
    assert view["prices"]["TON"]["available"] is True


async def test_rate_limited_source_cools_down_across_refreshes(session, exchanges, registry) -> None:
    exchanges.queue(
        "binance",
        json_reply({"code": -1003, "msg": "Too much request weight used."}, status=429, **{"Retry-After": "30"}),
    )
    a = PriceAggregator(
        real_sources(session, exchanges.base_url),
        min_sources=2,
        max_deviation=Decimal("0.02"),
        max_age=timedelta(minutes=2),
        registry=registry,
    )
    await a.refresh()
    await a.refresh()
    assert exchanges.hits["binance"] == 1  # the second refresh respected Retry-After
    assert failures(registry, "binance") == 2
    assert a.health["binance"].last_error_code == "price-source-rate-limited"
    assert a.price("ETH").price == Decimal("3012.45")


# --- the rules ----------------------------------------------------------------------------------
async def test_median_of_an_odd_count(registry) -> None:
    a = agg(eth("3010", "3020.5", "3001"), registry)
    await a.refresh()
    p = a.price("ETH", T0)
    assert p == AggregatedPrice(
        "ETH",
        Decimal("3010"),
        (
            SourceQuote("s0", Decimal("3010"), timedelta(0)),
            SourceQuote("s1", Decimal("3020.5"), timedelta(0)),
            SourceQuote("s2", Decimal("3001"), timedelta(0)),
        ),
        T0,
    )


async def test_median_of_an_even_count_is_the_exact_mean_of_the_middle_two(registry) -> None:
    a = agg(eth("1.01", "1.02"), registry, max_deviation=Decimal("0.05"))
    await a.refresh()
    assert a.price("ETH", T0).price == Decimal("1.015")

    b = agg(eth("3000.000000000000000000000000001", "3000.000000000000000000000000002", "1", "9000"), registry,
            min_sources=4, max_deviation=Decimal(10))
    await b.refresh()
    assert b.price("ETH", T0).price == Decimal("3000.0000000000000000000000000015")  # 32 digits, not rounded


async def test_too_few_fresh_sources(registry) -> None:
    a = agg([*eth("100", "101"), StaticSource("s9")], registry, min_sources=3)
    await a.refresh()
    expected = r"ETH: 2 fresh price source\(s\) \(s0, s1\), need 3; excluded: s9: no data"
    with pytest.raises(PriceUnavailable, match=expected) as info:
        a.price("ETH", T0)
    assert info.value.retryable


async def test_deviation_guard(registry) -> None:
    a = agg(eth("99", "100", "101"), registry)  # spread 2 == 2% of the median 100: allowed
    await a.refresh()
    assert a.price("ETH", T0).price == Decimal("100")

    b = agg(eth("99", "100", "101.00000001"), registry)  # a hair over 2%
    await b.refresh()
    expected = (
        r"ETH: sources disagree by 2.00% of the median 100, more than the allowed 2.00% "
        r"\(s0=99, s1=100, s2=101.00000001\)"
    )
    with pytest.raises(PriceUnavailable, match=expected):
        b.price("ETH", T0)


async def test_one_wild_source_is_outvoted_only_if_within_deviation(registry) -> None:
    a = agg(eth("3000", "3001", "3002", "30000"), registry)  # a decimal slip at one exchange
    await a.refresh()
    with pytest.raises(PriceUnavailable, match="disagree"):
        a.price("ETH", T0)  # never a price when the sources disagree, even if the median looks fine


async def test_all_stale_is_never_a_price(registry) -> None:
    clock = Clock()
    a = agg(eth("3000", "3001", "3002", at=T0 - timedelta(minutes=10)), registry, clock=clock, min_sources=1)
    await a.refresh()
    expected = r"0 fresh price source\(s\) \(none\), need 1; excluded: s0: stale, 600s old > max 120s"
    with pytest.raises(PriceUnavailable, match=expected):
        a.price("ETH", T0)
    view = a.snapshot(T0)["prices"]["ETH"]
    assert view["available"] is False and view["code"] == "price-unavailable" and "stale" in view["reason"]
    assert "price_usd" not in view
    assert registry.get_sample_value("creditbridge_pricing_price_usd", {"symbol": "ETH"}) is None


async def test_max_age_boundary_and_per_source_override(registry) -> None:
    slow = StaticSource("coingecko", {"ETH": "3000"}, at=T0 - timedelta(minutes=5))
    edge = StaticSource("kraken", {"ETH": "3001"}, at=T0 - timedelta(minutes=2))  # exactly max_age: still fresh
    a = agg([slow, edge], registry, max_age_by_source={"coingecko": timedelta(minutes=10)})
    await a.refresh()
    p = a.price("ETH", T0)
    assert [(q.name, q.age) for q in p.sources] == [
        ("coingecko", timedelta(minutes=5)),
        ("kraken", timedelta(minutes=2)),
    ]
    assert p.as_of == T0 - timedelta(minutes=5)
    with pytest.raises(PriceUnavailable, match="kraken: stale"):
        a.price("ETH", T0 + timedelta(microseconds=1))


async def test_future_timestamps_are_excluded(registry) -> None:
    a = agg(
        [StaticSource("ahead", {"ETH": "3000"}, at=T0 + timedelta(minutes=5)),
         StaticSource("skewed", {"ETH": "3000"}, at=T0 + timedelta(seconds=30)),
         StaticSource("ok", {"ETH": "3000"})],
        registry,
    )
    await a.refresh()
    p = a.price("ETH", T0)
    assert {q.name: q.age for q in p.sources} == {"skewed": timedelta(0), "ok": timedelta(0)}
    strict = agg(a.sources, CollectorRegistry(), min_sources=3)
    await strict.refresh()
    with pytest.raises(PriceUnavailable, match="ahead: timestamp .* is in the future"):
        strict.price("ETH", T0)


async def test_a_failing_source_keeps_its_last_points_until_they_go_stale(registry) -> None:
    clock = Clock()
    flaky, steady = StaticSource("flaky", {"ETH": "3000"}), StaticSource("steady", {"ETH": "3002"})
    a = agg([flaky, steady], registry, clock=clock)
    await a.refresh()
    flaky.error = PriceUnavailable("flaky: HTTP 502")
    clock.now = T0 + timedelta(minutes=1)
    steady.at = clock.now
    await a.refresh()
    assert a.price("ETH").price == Decimal("3001")
    assert failures(registry, "flaky") == 1 and a.health["flaky"].last_error == "flaky: HTTP 502"

    clock.now = T0 + timedelta(minutes=2, seconds=1)
    with pytest.raises(PriceUnavailable, match=r"flaky: stale"):
        a.price("ETH")


async def test_older_points_do_not_replace_newer_ones(registry) -> None:
    src = StaticSource("s", {"ETH": "3000"}, at=T0)
    a = agg([src], registry, min_sources=1)
    await a.refresh()
    src.prices, src.at = {"ETH": Decimal("2900")}, T0 - timedelta(seconds=30)  # a lagging cache node
    await a.refresh()
    assert a.price("ETH", T0).price == Decimal("3000")


async def test_a_hanging_source_is_timed_out_and_recorded(registry) -> None:
    hung = StaticSource("hung", {"ETH": "1"}, delay=30)
    a = agg([hung, *eth("3000", "3001")], registry, fetch_timeout=timedelta(milliseconds=100))
    started = asyncio.get_running_loop().time()
    await a.refresh()
    assert asyncio.get_running_loop().time() - started < 2
    assert failures(registry, "hung") == 1
    assert a.health["hung"].last_error == "hung: no answer within 0.1s"
    assert a.price("ETH", T0).price == Decimal("3000.5")


async def test_a_buggy_source_never_crashes_refresh(registry) -> None:
    class Liar(StaticSource):
        async def fetch(self, symbols):
            return {"ETH": PricePoint("ETH", Decimal("NaN"), T0, self.name)}

    a = agg([StaticSource("bug", error=ZeroDivisionError("boom")), Liar("liar"), *eth("3000", "3001")], registry)
    await a.refresh()
    assert failures(registry, "bug") == 1 and failures(registry, "liar") == 1
    assert "unexpected ZeroDivisionError" in (a.health["bug"].last_error or "")
    assert "not a positive finite Decimal" in (a.health["liar"].last_error or "")
    assert a.price("ETH", T0).price == Decimal("3000.5")


async def test_refresh_queries_sources_concurrently(registry) -> None:
    """Each source answers only once all five are being asked at the same time, so a refresh
    that asked them one after another would never finish (no timing is asserted)."""
    all_asked = asyncio.Event()
    asked = 0

    class Gathered(StaticSource):
        async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
            nonlocal asked
            asked += 1
            if asked == 5:
                all_asked.set()
            await all_asked.wait()
            return await super().fetch(symbols)

    sources = [Gathered(f"s{i}", {"ETH": "3000"}) for i in range(5)]
    a = agg(sources, registry)
    await asyncio.wait_for(a.refresh(), 10)
    assert asked == 5 and all(s.calls == 1 for s in sources)


async def test_cancelling_refresh_propagates_and_records_nothing(registry) -> None:
    hung = StaticSource("hung", {"ETH": "1"}, delay=30)
    a = agg([hung, *eth("3000")], registry)
    task = asyncio.create_task(a.refresh())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert failures(registry, "hung") == 0 and a.health["hung"].last_error is None


async def test_run_refreshes_until_cancelled(registry) -> None:
    src = StaticSource("s", {"ETH": "3000"})
    a = agg([src], registry, min_sources=1)
    task = asyncio.create_task(a.run(timedelta(milliseconds=20)))
    await asyncio.wait_for(a.ready.wait(), 10)

    async def three_refreshes() -> None:
        while src.calls < 3:
            await asyncio.sleep(0.01)

    # Waits for the count rather than sleeping a fixed time: under a loaded CI machine a fixed
    # 0.15 s once saw only two refreshes.
    await asyncio.wait_for(three_refreshes(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert src.calls >= 3
    assert a.last_refresh_at == T0


async def test_gauges_track_price_and_age(registry) -> None:
    clock = Clock()
    a = agg(eth("3000", "3001", at=T0 - timedelta(seconds=20)), registry, clock=clock)
    await a.refresh()
    assert registry.get_sample_value("creditbridge_pricing_price_usd", {"symbol": "ETH"}) == 3000.5
    assert registry.get_sample_value("creditbridge_pricing_source_age_seconds", {"source": "s0", "symbol": "ETH"}) == 20
    clock.now += timedelta(seconds=10)  # ages are computed when scraped
    assert registry.get_sample_value("creditbridge_pricing_source_age_seconds", {"source": "s0", "symbol": "ETH"}) == 30
    assert registry.get_sample_value("creditbridge_pricing_price_usd", {"symbol": "DOT"}) is None  # no DOT source


async def test_snapshot_is_json_ready(registry) -> None:
    a = agg(eth("3000", "3001.5", at=T0 - timedelta(seconds=3)), registry, symbols={"ETH", "DOT"})
    await a.refresh()
    view = json.loads(json.dumps(a.snapshot(T0)))
    assert view["prices"]["ETH"] == {
        "available": True,
        "price_usd": "3000.75",
        "as_of": (T0 - timedelta(seconds=3)).isoformat(),
        "sources": [
            {"name": "s0", "price_usd": "3000", "age_seconds": 3, "max_age_seconds": 120},
            {"name": "s1", "price_usd": "3001.5", "age_seconds": 3, "max_age_seconds": 120},
        ],
    }
    assert view["prices"]["DOT"]["available"] is False
    assert view["max_deviation"] == "0.02" and view["min_sources"] == 2
    assert [s["name"] for s in view["sources"]] == ["s0", "s1"]


async def test_wrong_questions(registry) -> None:
    a = agg(eth("3000", "3001"), registry)
    await a.refresh()
    with pytest.raises(InputError, match="BTC"):
        a.price("BTC", T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        a.price("ETH", T0.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"min_sources": 0}, "min_sources"),
        ({"min_sources": 3}, "min_sources"),
        ({"max_deviation": 0.02}, "max_deviation"),
        ({"max_deviation": Decimal("-0.01")}, "max_deviation"),
        ({"max_deviation": Decimal("NaN")}, "max_deviation"),
        ({"max_age": timedelta(0)}, "max_age"),
        ({"max_age_by_source": {"nope": timedelta(minutes=1)}}, "unknown sources"),
        ({"symbols": []}, "symbol"),
    ],
)
def test_configuration_is_validated(registry, kw, match) -> None:
    with pytest.raises(ConfigError, match=match):
        agg(eth("1", "2"), registry, **kw)


def test_source_names_must_be_unique(registry) -> None:
    with pytest.raises(ConfigError, match="unique"):
        agg([StaticSource("kraken"), StaticSource("kraken")], registry)


# --- properties ---------------------------------------------------------------------------------
prices = st.decimals(
    min_value=Decimal("0.00000001"), max_value=Decimal("1000000000"), places=8, allow_nan=False, allow_infinity=False
)


@given(st.lists(prices, min_size=1, max_size=25))
def test_median_lies_within_the_inputs(values: list[Decimal]) -> None:
    m = median(values)
    assert min(values) <= m <= max(values)
    assert median(list(reversed(values))) == m
    ordered = sorted(values)
    if len(values) % 2 == 0:  # exact: twice the median is the sum of the middle two, no rounding
        assert 2 * m == ordered[len(values) // 2 - 1] + ordered[len(values) // 2]
    else:
        assert m in values


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    quotes=st.lists(prices, min_size=1, max_size=7),
    max_deviation=st.decimals(min_value=0, max_value=Decimal("0.5"), places=4),
)
async def test_aggregate_is_within_inputs_or_refused(quotes: list[Decimal], max_deviation: Decimal) -> None:
    a = PriceAggregator(
        [StaticSource(f"s{i}", {"ETH": q}) for i, q in enumerate(quotes)],
        min_sources=1,
        max_deviation=max_deviation,
        max_age=timedelta(minutes=1),
        registry=CollectorRegistry(),
        clock=Clock(),
    )
    await a.refresh()
    m = median(quotes)
    if max(quotes) - min(quotes) > max_deviation * m:
        with pytest.raises(PriceUnavailable, match="disagree"):
            a.price("ETH", T0)
    else:
        p = a.price("ETH", T0)
        assert min(quotes) <= p.price <= max(quotes) and p.price == m
