"""The Chainlink price source against a real anvil with contracts/ethereum/PriceFeed.sol deployed:
the feed speaks AggregatorV3Interface, the source reads it with eth_call + eth_abi, turns the
answer into an exact Decimal and refuses non-positive, carried-over and stale rounds; the
aggregator takes the feed's heartbeat as its staleness limit; the API's wiring builds it from
the config and quotes from the median of the Chainlink feed and a fixed price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from eth_abi import decode as abi_decode
from eth_utils import keccak
from prometheus_client import CollectorRegistry

from bridge.config import settings_from_dict
from bridge.errors import PriceUnavailable, TransactionFailed
from bridge.pricing.aggregate import PriceAggregator
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.pricing.sources.http import MalformedPriceData
from bridge.supervisor import Supervisor
from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.chainlink import (
    ChainlinkSource,
    FeedAnswerInvalid,
    FeedStale,
    deploy_price_feed,
    price_from_answer,
    start_round,
    submit_answer,
)
from relayers.evm.rpc import JsonRpcError, RpcPool

from tests.integration.evm.helpers import closed_port_url

OWNER = DEV_PRIVATE_KEYS[0]
OTHER = DEV_PRIVATE_KEYS[1]
HOUR = timedelta(hours=1)


@pytest_asyncio.fixture(scope="module")
async def pool(anvil: AnvilNode):
    p = RpcPool([anvil.rpc_url], chain_id=DEFAULT_CHAIN_ID, name="ethereum")
    try:
        yield p
    finally:
        await p.aclose()


async def feed(anvil: AnvilNode, answer: int | None = 3000 * 10**8, decimals: int = 8, description: str = "ETH / USD") -> str:
    return await deploy_price_feed(anvil.rpc_url, OWNER, decimals=decimals, description=description, answer=answer)


async def block_time(anvil: AnvilNode) -> datetime:
    block = await anvil.rpc("eth_getBlockByNumber", "latest", False)
    return datetime.fromtimestamp(int(block["timestamp"], 16), UTC)


async def call(pool: RpcPool, address: str, signature: str, types: list[str], args: bytes = b"") -> tuple:
    raw = await pool.call(bytes.fromhex(address[2:]), keccak(text=signature)[:4] + args)
    return abi_decode(types, raw)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# --- the feed contract ------------------------------------------------------------------------
async def test_feed_speaks_aggregator_v3_interface(anvil, pool):
    address = await feed(anvil, answer=None)
    assert await call(pool, address, "decimals()", ["uint8"]) == (8,)
    assert await call(pool, address, "description()", ["string"]) == ("ETH / USD",)
    assert await call(pool, address, "version()", ["uint256"]) == (4,)
    # no round yet: zeros, as Chainlink's OCR aggregators answer
    assert await call(pool, address, "latestRoundData()", ["uint80", "int256", "uint256", "uint256", "uint80"]) \
        == (0, 0, 0, 0, 0)

    await submit_answer(anvil.rpc_url, OWNER, address, 3012_34567890)
    t1 = int((await block_time(anvil)).timestamp())
    await submit_answer(anvil.rpc_url, OWNER, address, 2999_00000000)
    t2 = int((await block_time(anvil)).timestamp())
    types = ["uint80", "int256", "uint256", "uint256", "uint80"]
    assert await call(pool, address, "latestRoundData()", types) == (2, 2999_00000000, t2, t2, 2)
    assert await call(pool, address, "getRoundData(uint80)", types, (1).to_bytes(32, "big")) \
        == (1, 3012_34567890, t1, t1, 1)
    assert await call(pool, address, "latestAnswer()", ["int256"]) == (2999_00000000,)
    assert await call(pool, address, "latestRound()", ["uint256"]) == (2,)

    with pytest.raises(JsonRpcError) as e:  # unknown round
        await call(pool, address, "getRoundData(uint80)", types, (3).to_bytes(32, "big"))
    assert e.value.is_revert and "No data present" in e.value.rpc_message


async def test_only_the_owner_submits(anvil):
    address = await feed(anvil)
    with pytest.raises(TransactionFailed):
        await submit_answer(anvil.rpc_url, OTHER, address, 1)


# --- the source -------------------------------------------------------------------------------
async def test_reads_exact_price_and_update_time(anvil, pool):
    address = await feed(anvil, answer=3012_34567891)
    updated = await block_time(anvil)
    src = ChainlinkSource({"ETH": (pool, address, HOUR)}, clock=Clock(updated + timedelta(minutes=5)))
    points = await src.fetch(frozenset({"ETH", "DOT"}))
    assert set(points) == {"ETH"}  # no DOT feed: not an error, just not known
    p = points["ETH"]
    assert p.price == Decimal("3012.34567891") and str(p.price) == "3012.34567891"
    assert p.timestamp == updated and p.source == "chainlink" and p.symbol == "ETH"
    assert src.max_age_for_symbol("ETH") == HOUR and src.max_age_for_symbol("DOT") is None
    assert await src.fetch(frozenset({"DOT"})) == {}


@pytest.mark.parametrize("answer, decimals", [
    (1, 0), (1, 18), (2**255 - 1, 18), (123456789, 36), (5_47310000, 8),
])
async def test_price_is_answer_over_ten_to_the_decimals_exactly(anvil, pool, answer, decimals):
    address = await feed(anvil, answer=answer, decimals=decimals)
    src = ChainlinkSource({"TON": (pool, address, HOUR)}, clock=Clock(await block_time(anvil)))
    price = (await src.fetch(frozenset({"TON"})))["TON"].price
    assert Fraction(price) == Fraction(answer, 10**decimals)  # exact: no digit lost to a context
    assert price == price_from_answer(answer, decimals)


async def test_no_round_yet_is_refused(anvil, pool):
    address = await feed(anvil, answer=None)
    src = ChainlinkSource({"ETH": (pool, address, HOUR)})
    with pytest.raises(FeedAnswerInvalid, match="no answered round"):
        await src.fetch(frozenset({"ETH"}))


@pytest.mark.parametrize("answer", [0, -1, -(2**255)])
async def test_non_positive_answers_are_refused(anvil, pool, answer):
    address = await feed(anvil, answer=answer)
    src = ChainlinkSource({"ETH": (pool, address, HOUR)}, clock=Clock(await block_time(anvil)))
    with pytest.raises(FeedAnswerInvalid, match="not a positive price"):
        await src.fetch(frozenset({"ETH"}))


async def test_a_round_carrying_an_earlier_answer_is_refused(anvil, pool):
    address = await feed(anvil, answer=3000 * 10**8)
    await start_round(anvil.rpc_url, OWNER, address)  # round 2 carries round 1's answer
    rnd = await call(pool, address, "latestRoundData()", ["uint80", "int256", "uint256", "uint256", "uint80"])
    assert rnd[0] == 2 and rnd[4] == 1
    src = ChainlinkSource({"ETH": (pool, address, HOUR)}, clock=Clock(await block_time(anvil)))
    with pytest.raises(FeedStale, match="carries the answer of round 1"):
        await src.fetch(frozenset({"ETH"}))
    await submit_answer(anvil.rpc_url, OWNER, address, 3001 * 10**8)  # answered again: usable
    assert (await src.fetch(frozenset({"ETH"})))["ETH"].price == 3001


async def test_an_answer_older_than_the_heartbeat_is_refused(anvil, pool):
    address = await feed(anvil)
    updated = await block_time(anvil)
    clock = Clock(updated + HOUR)  # exactly one heartbeat later: still fresh
    src = ChainlinkSource({"ETH": (pool, address, HOUR)}, clock=clock)
    assert (await src.fetch(frozenset({"ETH"})))["ETH"].price == 3000
    clock.now = updated + HOUR + timedelta(seconds=1)
    with pytest.raises(FeedStale, match="older than the 3600s heartbeat"):
        await src.fetch(frozenset({"ETH"}))
    assert src.statuses()[0].last_error_code == "price-source-stale"


async def test_an_update_from_the_future_is_refused(anvil, pool):
    address = await feed(anvil)
    src = ChainlinkSource({"ETH": (pool, address, HOUR)}, clock=Clock(await block_time(anvil) - timedelta(minutes=5)))
    with pytest.raises(MalformedPriceData, match="in the future"):
        await src.fetch(frozenset({"ETH"}))


async def test_no_contract_at_the_address(anvil, pool):
    src = ChainlinkSource({"ETH": (pool, "0x" + "42" * 20, HOUR)})
    with pytest.raises(MalformedPriceData, match="empty answer"):
        await src.fetch(frozenset({"ETH"}))


async def test_a_contract_that_is_not_a_feed(anvil, pool, deploy_contract, committee):
    from relayers.evm.contracts import LOCK

    lock = await deploy_contract(LOCK, [committee.checksum_addresses, 3, 1])
    src = ChainlinkSource({"ETH": (pool, lock.address, HOUR)})
    with pytest.raises(FeedAnswerInvalid, match="reverted"):
        await src.fetch(frozenset({"ETH"}))


async def test_unreachable_rpc_is_price_unavailable():
    dead = RpcPool([closed_port_url()], chain_id=DEFAULT_CHAIN_ID, attempts=1)
    try:
        src = ChainlinkSource({"ETH": (dead, "0x" + "42" * 20, HOUR)})
        with pytest.raises(PriceUnavailable) as e:
            await src.fetch(frozenset({"ETH"}))
        assert e.value.retryable and "no endpoint answered" in e.value.detail
    finally:
        await dead.aclose()


async def test_wrong_chain_is_price_unavailable(anvil):
    wrong = RpcPool([anvil.rpc_url], chain_id=1, attempts=1)
    try:
        src = ChainlinkSource({"ETH": (wrong, "0x" + "42" * 20, HOUR)})
        with pytest.raises(PriceUnavailable, match="serves chain id 31337, configured 1"):
            await src.fetch(frozenset({"ETH"}))
    finally:
        await wrong.aclose()


async def test_feeds_fail_independently(anvil, pool):
    eth = await feed(anvil, answer=3000 * 10**8)
    dot = await feed(anvil, answer=-5, description="DOT / USD")
    src = ChainlinkSource({"ETH": (pool, eth, HOUR), "DOT": (pool, dot, HOUR)}, clock=Clock(await block_time(anvil)))
    points = await src.fetch(frozenset({"ETH", "DOT"}))
    assert set(points) == {"ETH"}
    health = {h.name: h for h in src.statuses()}
    assert health["chainlink:DOT"].last_error_code == "price-source-invalid-answer"
    assert health["chainlink:ETH"].last_error is None and health["chainlink:ETH"].last_success_at is not None
    with pytest.raises(FeedAnswerInvalid):  # only failing feeds asked: the source fails
        await src.fetch(frozenset({"DOT"}))


async def test_source_made_from_chain_config_owns_its_pool(anvil):
    address = await feed(anvil)
    chain = settings_from_dict(_settings(anvil.rpc_url, address)).chain("ethereum")
    src = ChainlinkSource({"ETH": (chain, address, 3600)}, clock=Clock(await block_time(anvil)))
    try:
        assert (await src.fetch(frozenset({"ETH"})))["ETH"].price == 3000
    finally:
        await src.aclose()


# --- with the aggregator and the API ------------------------------------------------------------
async def test_aggregator_uses_the_heartbeat_as_the_staleness_limit(anvil, pool):
    address = await feed(anvil, answer=3010 * 10**8)
    updated = await block_time(anvil)
    clock = Clock(updated + timedelta(minutes=30))  # far older than max_age, within the heartbeat
    chainlink = ChainlinkSource({"ETH": (pool, address, HOUR)}, clock=clock)
    agg = PriceAggregator([chainlink, FixedPriceSource({"ETH": Decimal("3000")}, clock=clock)], min_sources=2,
                          max_deviation=Decimal("0.01"), max_age=timedelta(minutes=1), registry=CollectorRegistry(),
                          symbols={"ETH"}, clock=clock)
    await agg.refresh()
    p = agg.price("ETH")
    assert p.price == Decimal("3005") and [q.name for q in p.sources] == ["chainlink", "fixed"]
    assert agg.snapshot()["prices"]["ETH"]["sources"][0]["max_age_seconds"] == 3600

    clock.now = updated + HOUR + timedelta(seconds=1)  # past the heartbeat: chainlink drops out
    with pytest.raises(PriceUnavailable, match=r"chainlink: stale, 3601s old > max 3600s"):
        agg.price("ETH")
    await agg.refresh()  # the source itself now refuses the feed, and says why
    with pytest.raises(PriceUnavailable, match=r"chainlink: stale"):
        agg.price("ETH")
    status = next(s for s in agg.snapshot()["sources"] if s["name"] == "chainlink")
    assert "older than the 3600s heartbeat" in status["last_error"]


def _settings(rpc: str, feed_address: str, fixed_eth: str = "3000", **pricing) -> dict:
    return {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": DEFAULT_CHAIN_ID, "rpc": [rpc], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "evm", "name": "settlement", "chain_id": 31338, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "pricing": {
            "credit_price_usd": "0.01",
            "sources": [
                {"kind": "chainlink", "chain": "ethereum",
                 "feeds": {"ETH": {"address": feed_address, "heartbeat_seconds": 86400}}},
                {"kind": "fixed", "prices": {"ETH": fixed_eth}},
            ],
            "min_sources": 2,
            "max_deviation": "0.01",
            **pricing,
        },
    }


async def _serve_quotes(settings, aggregator):
    """The real app on 127.0.0.1 quoting from ``aggregator``; returns (url, cleanup)."""
    from bridge.api.app import create_app
    from bridge.pricing.quotes import QuoteService, QuoteSigner
    from bridge.storage.db import Database

    db = Database("sqlite+aiosqlite:///:memory:")
    await db.migrate()
    signer = QuoteSigner.from_secret(bytes(range(32)))
    app = create_app(settings, db=db, quote_service=QuoteService.from_settings(settings, aggregator, signer),
                     signer=signer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}", runner.cleanup


@pytest.mark.parametrize("fixed_eth, spread", [("3000", "0"), ("3000", "0.05")])
async def test_wired_api_quotes_from_chainlink_and_fixed(anvil, fixed_eth, spread):
    from bridge.api.wiring import build_pricing
    from bridge.pricing.credits import amount_for_credits

    address = await feed(anvil, answer=3010 * 10**8)
    settings = settings_from_dict(_settings(anvil.rpc_url, address, fixed_eth, credit_spread=spread))
    sup = Supervisor("test")
    aggregator = await build_pricing(settings, sup, CollectorRegistry())
    url, cleanup = await _serve_quotes(settings, aggregator)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/quotes", json={"token": "ETH", "credits": "500"}) as r:
                q = await r.json()
                assert r.status == 201, q
            assert q["rate"] == "3005" and q["sources"] == ["chainlink", "fixed"]
            credit_price = Decimal("0.01") * (1 + Decimal(spread))
            assert Decimal(q["credit_price_usd"]) == credit_price
            assert int(q["amount"]) == amount_for_credits(500, credit_price, Decimal("3005"), 18)
            async with http.get(url + "/v1/prices") as r:
                view = await r.json()
            assert view["prices"]["ETH"]["available"] is True
            assert {s["name"] for s in view["sources"]} == {"chainlink", "fixed"}
            chainlink = next(s for s in view["sources"] if s["name"] == "chainlink")
            assert chainlink["inner"][0]["name"] == "chainlink:ETH"

            # the feed moves 5% away from the fixed price: the sources disagree, no quote
            await submit_answer(anvil.rpc_url, OWNER, address, 3160 * 10**8)
            await aggregator.refresh()
            async with http.post(url + "/v1/quotes", json={"token": "ETH", "credits": "500"}) as r:
                problem = await r.json(content_type=None)
                assert r.status == 503 and r.content_type == "application/problem+json"
            assert problem["type"].endswith("/price-unavailable")
            assert "disagree" in problem["detail"] and "chainlink=3160" in problem["detail"]
    finally:
        await cleanup()
        for stop in reversed(sup._cleanups):
            await stop()


async def test_wiring_refuses_a_token_without_enough_sources(anvil):
    from bridge.api.wiring import build_pricing
    from bridge.errors import ConfigError

    address = await feed(anvil)
    cfg = _settings(anvil.rpc_url, address)
    cfg["pricing"]["sources"][1] = {"kind": "fixed", "prices": {"DOT": "6"}}  # ETH: chainlink only
    sup = Supervisor("test")
    with pytest.raises(ConfigError, match="token ETH is priced by 1 source"):
        await build_pricing(settings_from_dict(cfg), sup, CollectorRegistry())
    for stop in reversed(sup._cleanups):
        await stop()
