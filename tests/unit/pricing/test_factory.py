"""PricingConfig's source list and the factory that turns it into an aggregator: validation at
load time, every exchange kind built against the local fake exchanges, coverage checks, and the
credit spread's exact arithmetic."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import ConfigError, PricingConfig, settings_from_dict
from bridge.errors import ConfigError as BridgeConfigError
from bridge.pricing.factory import build_aggregator, build_sources, check_coverage
from bridge.pricing.quotes import effective_credit_price

from .fakes import BASE_PRICES

FEED = "0x" + "5f" * 20


def settings(pricing: dict, chains: list | None = None) -> dict:
    return {
        "chains": chains or [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "evm", "name": "settlement", "chain_id": 2, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "pricing": pricing,
    }


# --- config ------------------------------------------------------------------------------------
def test_defaults_and_fixed_usd_shorthand():
    p = PricingConfig.model_validate({"fixed_usd": {"ETH": "3000"}})
    assert (p.min_sources, p.max_deviation, p.credit_spread) == (1, Decimal("0.02"), Decimal(0))
    [fixed] = p.source_configs()
    assert fixed.kind == "fixed" and fixed.name == "fixed" and fixed.prices == {"ETH": Decimal("3000")}
    assert PricingConfig().source_configs() == []


def test_every_kind_parses():
    p = PricingConfig.model_validate({
        "sources": [
            {"kind": "chainlink", "chain": "ethereum", "feeds": {"ETH": {"address": FEED, "heartbeat_seconds": 3600}}},
            {"kind": "kraken"},
            {"kind": "binance", "base_url": "https://api.binance.us", "timeout": 2},
            {"kind": "coinbase", "markets": {"ETH": "ETH-USD"}},
            {"kind": "coingecko", "api_key_env": "CG_KEY", "name": "gecko"},
            {"kind": "fixed", "name": "floor", "prices": {"TON": "5.5"}},
        ],
        "fixed_usd": {"DOT": "6"},
        "min_sources": 3,
        "max_deviation": "0.015",
        "credit_spread": "0.02",
    })
    assert [PricingConfig.source_name(c) for c in p.source_configs()] == [
        "chainlink", "kraken", "binance", "coinbase", "gecko", "floor", "fixed"]
    assert p.sources[0].feeds["ETH"].heartbeat_seconds == 3600


@pytest.mark.parametrize("pricing, message", [
    ({"sources": [{"kind": "kraken"}, {"kind": "kraken"}]}, "names must be unique"),
    ({"sources": [{"kind": "fixed", "prices": {"ETH": "1"}}], "fixed_usd": {"ETH": "2"}}, "names must be unique"),
    ({"sources": [{"kind": "kraken"}], "min_sources": 2}, "min_sources is 2 but only 1"),
    ({"sources": [{"kind": "kraken", "api_key_env": "K"}]}, "coingecko only"),
    ({"sources": [{"kind": "chainlink", "chain": "ethereum", "feeds": {}}]}, "feeds"),
    ({"sources": [{"kind": "chainlink", "chain": "ethereum",
                   "feeds": {"ETH": {"address": "0x12", "heartbeat_seconds": 60}}}]}, "address"),
    ({"sources": [{"kind": "chainlink", "chain": "ethereum",
                   "feeds": {"ETH": {"address": FEED, "heartbeat_seconds": 0}}}]}, "heartbeat_seconds"),
    ({"sources": [{"kind": "chainlink", "chain": "nowhere",
                   "feeds": {"ETH": {"address": FEED, "heartbeat_seconds": 60}}}]}, "no chain named 'nowhere'"),
    ({"sources": [{"kind": "fixed", "prices": {"ETH": "0"}}]}, "prices"),
    ({"sources": [{"kind": "fixed", "prices": {"ETH": "NaN"}}]}, "prices"),
    ({"sources": [{"kind": "bitstamp"}]}, "kind"),
    ({"sources": [{"kind": "kraken", "base_url": "ftp://x"}]}, "base_url"),
    ({"credit_spread": "1"}, "credit_spread"),
    ({"credit_spread": "-0.01"}, "credit_spread"),
    ({"max_deviation": "-0.01"}, "max_deviation"),
    ({"min_sources": 0}, "min_sources"),
])
def test_bad_pricing_configs_are_one_line_errors(pricing, message):
    with pytest.raises(ConfigError) as e:
        settings_from_dict(settings(pricing))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_chainlink_chain_must_be_evm():
    chains = settings({})["chains"] + [{
        "family": "ton", "name": "ton", "toncenter": ["http://127.0.0.1:1"], "contracts": {"lock": "0:" + "00" * 32}}]
    cfg = settings({"sources": [{"kind": "chainlink", "chain": "ton",
                                 "feeds": {"TON": {"address": FEED, "heartbeat_seconds": 60}}}]}, chains)
    with pytest.raises(ConfigError, match="is not an evm chain"):
        settings_from_dict(cfg)


# --- factory -----------------------------------------------------------------------------------
async def test_every_exchange_kind_is_built_against_its_api(exchanges, session, registry):
    p = PricingConfig.model_validate({
        "sources": [{"kind": k, "base_url": exchanges.base_url} for k in ("kraken", "binance", "coinbase", "coingecko")],
        "fixed_usd": {"ETH": str(BASE_PRICES["ETH"])},
        "min_sources": 3,
    })
    agg = build_aggregator(p, ["ETH", "DOT"], registry=registry, session=session)
    await agg.refresh()
    eth = agg.price("ETH")
    assert eth.price == BASE_PRICES["ETH"]
    assert [q.name for q in eth.sources] == ["binance", "coinbase", "coingecko", "fixed", "kraken"]
    assert [q.name for q in agg.price("DOT").sources] == ["binance", "coinbase", "coingecko", "kraken"]
    assert {h for h, n in exchanges.hits.items() if n} >= {"kraken", "binance", "coinbase", "coingecko"}


async def test_markets_and_names_are_honoured(exchanges, session, registry):
    p = PricingConfig.model_validate({"sources": [
        {"kind": "kraken", "name": "kraken-eth-only", "base_url": exchanges.base_url + "/", "markets": {"ETH": "XETHZUSD"}},
    ]})
    [(source, symbols)] = build_sources(p, session=session)
    assert source.name == "kraken-eth-only" and symbols == {"ETH"}
    points = await source.fetch(frozenset({"ETH", "DOT"}))
    assert set(points) == {"ETH"} and exchanges.queries[-1][1]["pair"] == "XETHZUSD"


async def test_coingecko_key_comes_from_the_environment(exchanges, session):
    p = PricingConfig.model_validate({"sources": [
        {"kind": "coingecko", "base_url": exchanges.base_url, "api_key_env": "CB_TEST_CG_KEY"}]})
    with pytest.raises(BridgeConfigError, match="CB_TEST_CG_KEY is not set"):
        build_sources(p, session=session, env={})
    [(source, _)] = build_sources(p, session=session, env={"CB_TEST_CG_KEY": "demo-key"})
    await source.fetch(frozenset({"ETH"}))
    assert "demo-key" in exchanges.headers[-1].values()


def test_chainlink_needs_the_relayer_factory(registry):
    p = PricingConfig.model_validate({"sources": [
        {"kind": "chainlink", "chain": "ethereum", "feeds": {"ETH": {"address": FEED, "heartbeat_seconds": 60}}}]})
    with pytest.raises(BridgeConfigError, match="need the EVM relayer"):
        build_sources(p, session=None)
    made = []

    class Stub:  # what the composition root's factory returns: any PriceSource
        name = "chainlink"

        async def fetch(self, symbols):
            return {}

    def factory(cfg, name):
        made.append((cfg.chain, name, dict(cfg.feeds)))
        return Stub()

    [(source, symbols)] = build_sources(p, session=None, chainlink=factory)
    assert made[0][:2] == ("ethereum", "chainlink") and symbols == {"ETH"}


def test_coverage_is_checked_per_token(registry):
    p = PricingConfig.model_validate({"fixed_usd": {"ETH": "3000"}, "min_sources": 1})
    check_coverage(p, [("fixed", frozenset({"ETH"}))], ["ETH"])
    with pytest.raises(BridgeConfigError, match="token DOT is priced by 0 source"):
        build_aggregator(p, ["ETH", "DOT"], registry=registry, session=None)
    with pytest.raises(BridgeConfigError, match="no price source is configured"):
        build_aggregator(PricingConfig(), ["ETH"], registry=registry, session=None)


# --- credit spread -----------------------------------------------------------------------------
def test_credit_spread_is_exact():
    assert effective_credit_price(Decimal("0.01"), Decimal("0")) == Decimal("0.01")
    assert effective_credit_price(Decimal("0.01"), Decimal("0.05")) == Decimal("0.0105")
    long = Decimal("0." + "3" * 60)  # more digits than Decimal's default context keeps
    assert Fraction(effective_credit_price(long, long)) == Fraction(long) * (1 + Fraction(long))
    with pytest.raises(BridgeConfigError):
        effective_credit_price(Decimal("0.01"), Decimal("-0.1"))


@given(
    price=st.decimals(min_value=Decimal("1e-12"), max_value=Decimal("1e6"), allow_nan=False, allow_infinity=False, places=12),
    spread=st.decimals(min_value=Decimal(0), max_value=Decimal("0.999999"), allow_nan=False, allow_infinity=False, places=6),
)
def test_credit_spread_property(price, spread):
    assert Fraction(effective_credit_price(price, spread)) == Fraction(price) * (1 + Fraction(spread))
