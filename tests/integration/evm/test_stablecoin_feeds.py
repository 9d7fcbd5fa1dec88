"""Stablecoin prices from Chainlink-style feeds on a real anvil (contracts/ethereum/PriceFeed.sol,
the project's AggregatorV3Interface feed, deployed as "USDC / USD" and "USDT / USD" as for ETH):
the API's wiring reads them, quotes use the measured median (never 1.00), a feed moving off peg
makes the depeg guard refuse quotes; the signer's price bound reads the same feeds' history for
USDC and USDT (per (symbol, chain), with the token's own decimals)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import settings_from_dict
from bridge.errors import TokenDepegged
from bridge.payments import rules
from bridge.pricing.credits import amount_for_credits
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.supervisor import Supervisor
from bridge.types import Observation, PaymentTerms
from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.chainlink import deploy_price_feed, submit_answer

OWNER = DEV_PRIVATE_KEYS[0]
MEMBER = "0x" + "d4" * 32
POLKADOT_HUB = "0x68d56f15f85d3136970ec16946040bc1752654e906147f7e43e9d539d7c3de2f"
USDC = "0x" + "a0" * 20  # token contracts: only named here (custody is not part of these tests)
USDT = "0x" + "da" * 20


def settings(rpc: str, usdc_feed: str, usdt_feed: str, signer: bool = False):
    peg = {"peg": "1.00", "peg_band_bps": 100}
    cfg = {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": DEFAULT_CHAIN_ID, "rpc": [rpc], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:1"], "token": "DOT",
             "ss58_prefix": 0, "genesis_hash": POLKADOT_HUB, "committee": {"members": [MEMBER], "threshold": 1}},
            {"family": "evm", "name": "settlement", "chain_id": 31338, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "tokens": [{"symbol": "USDC", "chain": "ethereum", "decimals": 6, "contract": USDC, **peg},
                   {"symbol": "USDT", "chain": "ethereum", "decimals": 6, "contract": USDT, **peg},
                   {"symbol": "USDT", "chain": "polkadot", "decimals": 6, "asset_id": 1984, **peg}],
        "pricing": {
            "credit_price_usd": "0.01",
            "sources": [
                {"kind": "chainlink", "chain": "ethereum",
                 "feeds": {"USDC": {"address": usdc_feed, "heartbeat_seconds": 86400},
                           "USDT": {"address": usdt_feed, "heartbeat_seconds": 86400}}},
                # an exchange-like second opinion for USDC only; USDT: the feed alone
                {"kind": "fixed", "prices": {"USDC": "0.9999", "ETH": "3000", "DOT": "5"}},
            ],
            "min_sources": 1,
            "max_deviation": "0.01",
        },
    }
    if signer:
        feed = {"kind": "chainlink", "chain": "ethereum", "heartbeat_seconds": 86400, "tolerance": "0.02"}
        cfg["signer"] = {"name": "s1", "key": {"keystore": "/k.json", "password_env": "PW"},
                         "gateway_url": "http://gw", "gateway_public_key": "00" * 32,
                         "price_bound": {"max_deposit_usd": "10000", "unbounded": ["ETH", "DOT"],
                                         "tokens": {"USDC": {**feed, "address": usdc_feed},
                                                    "USDT": {**feed, "address": usdt_feed}}}}
    return settings_from_dict(cfg)


async def feeds(anvil: AnvilNode, usdc: int, usdt: int) -> tuple[str, str]:
    a = await deploy_price_feed(anvil.rpc_url, OWNER, decimals=8, description="USDC / USD", answer=usdc)
    b = await deploy_price_feed(anvil.rpc_url, OWNER, decimals=8, description="USDT / USD", answer=usdt)
    return a, b


async def test_stablecoin_quotes_from_the_feeds_and_the_depeg_guard(anvil):
    from bridge.api.wiring import build_pricing

    usdc_feed, usdt_feed = await feeds(anvil, 99_980_000, 100_030_000)  # $0.9998, $1.0003
    s = settings(anvil.rpc_url, usdc_feed, usdt_feed)
    sup = Supervisor("test")
    try:
        aggregator = await build_pricing(s, sup, CollectorRegistry())
        assert {"USDC", "USDT"} <= aggregator.symbols
        svc = QuoteService.from_settings(s, aggregator, QuoteSigner.from_secret(bytes(range(32))),
                                         registry=CollectorRegistry())
        q = await svc.make_quote("USDC", credits=1000)
        assert q.rate == Decimal("0.99985") and q.sources == ("chainlink", "fixed")  # exact median
        assert q.amount == amount_for_credits(1000, Decimal("0.01"), Decimal("0.99985"), 6) == 10_001_501
        q = await svc.make_quote("USDT", credits=1000, chain="polkadot")
        assert (q.rate, q.chain, q.amount) == (Decimal("1.0003"), "polkadot", 9_997_001)

        await submit_answer(anvil.rpc_url, OWNER, usdt_feed, 98_500_000)  # USDT at $0.985: 150 bps off
        await aggregator.refresh()
        for chain in ("ethereum", "polkadot"):
            with pytest.raises(TokenDepegged, match=f"USDT on {chain} trades at 0.985 USD"):
                await svc.make_quote("USDT", credits=1000, chain=chain)
        assert (await svc.make_quote("USDC", credits=1000)).rate == Decimal("0.99985")  # unaffected
    finally:
        for stop in reversed(sup._cleanups):
            await stop()


async def test_the_signers_bound_reads_the_stablecoin_feeds(anvil):
    from bridge.node import signer_price_bound

    usdc_feed, usdt_feed = await feeds(anvil, 100_000_000, 99_900_000)
    s = settings(anvil.rpc_url, usdc_feed, usdt_feed, signer=True)
    block = await anvil.rpc("eth_getBlockByNumber", "latest", False)
    t = int(block["timestamp"], 16)
    sup = Supervisor("test")
    try:
        bound = signer_price_bound(s, sup, CollectorRegistry(), None)

        def obs(chain: str, token: str, amount: int) -> Observation:
            return Observation(chain=chain, source=b"\x01" * 32, sequence=1, tx_id=b"\x02" * 32, event_index=0,
                               block_number=1, block_hash=b"\x03" * 32, timestamp=t, token=token, amount=amount,
                               payer=b"\x00" * 12 + b"\x04" * 20, reference=b"\x05" * 32)

        def terms(chain: str, token: str, amount: int, credits: int) -> PaymentTerms:
            return PaymentTerms("p", b"\x05" * 32, b"\x06" * 20, "q", chain, token, amount, credits,
                                datetime.fromtimestamp(t + 900, UTC))

        # 10 USDT (6 decimals) at the feed's $0.999 buy at most 999 x 1.02 = 1018.98 credits
        ok = rules.Decision(rules.CREDIT, 1018, 10_000_000, 0)
        v = await bound.verdict(obs("polkadot", "USDT", 10_000_000), terms("polkadot", "USDT", 10_000_000, 1018), ok)
        assert v.ok and v.paid_usd == Decimal("9.99")
        greedy = rules.Decision(rules.CREDIT, 1019, 10_000_000, 0)
        got = await bound.apply(obs("ethereum", "USDT", 10_000_000), terms("ethereum", "USDT", 10_000_000, 1019),
                                greedy)
        assert got.outcome == rules.UNPRICED
        v = await bound.verdict(obs("ethereum", "USDC", 5_000_000), terms("ethereum", "USDC", 5_000_000, 500),
                                rules.Decision(rules.CREDIT, 500, 5_000_000, 0))
        assert v.ok and v.paid_usd == 5
    finally:
        for stop in reversed(sup._cleanups):
            await stop()
