"""The devnet prices USDC and USDT from its local sources (issue 15): "USDC / USD" and "USDT / USD"
PriceFeeds on the settlement anvil (listed in devnet.json's price_feeds, kept fresh like ETH / USD)
and the fixed source. On ethereum they are payable ERC-20 test tokens (devnet.json's
chains.ethereum.tokens, /v1/tokens, held by the dev accounts, quoted with the chain); a config
that names them quotes them from those sources, at the measured rate."""

from __future__ import annotations

import json
from decimal import Decimal

from prometheus_client import CollectorRegistry

from bridge.config import settings_from_dict
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.supervisor import Supervisor


async def test_devnet_prices_stablecoins_from_its_local_feeds(devnet):
    feeds = devnet.info["price_feeds"]
    assert {"ETH", "USDC", "USDT"} <= set(feeds) and feeds["USDT"]["decimals"] == 8
    # the ERC-20 test tokens on ethereum (issue 15): listed with their contracts, held by the dev accounts
    from devnet.evm.tokens import DEV_TOKEN_FUNDS, token_balance

    listed = devnet.info["chains"]["ethereum"]["tokens"]
    assert set(listed) == {"USDC", "USDT"} and {t["decimals"] for t in listed.values()} == {6}
    tokens = await devnet.call("GET", "/v1/tokens", expect=200)
    erc20 = {t["symbol"]: t for t in tokens if t.get("chain") == "ethereum" and t["symbol"] in ("USDC", "USDT")}
    assert {s: t["contract"].lower() for s, t in erc20.items()} == {s: t["contract"].lower()
                                                                     for s, t in listed.items()}
    rpc = devnet.info["chains"]["ethereum"]["rpc"]
    for account in devnet.info["accounts"]["ethereum"]:
        for t in listed.values():
            assert await token_balance(rpc, t["contract"], account["address"]) == DEV_TOKEN_FUNDS
    for symbol in ("USDC", "USDT"):
        q = await devnet.call("POST", "/v1/quotes", {"token": symbol, "chain": "ethereum", "credits": "250"},
                              expect=201)
        assert int(q["amount"]) == 2_500_000  # 250 credits x $0.01 at $1.00, 6 decimals
    # payable only where custody exists: the ERC-20s on ethereum, TON's USDT jetton and the Asset Hub assets
    stables = sorted((t["symbol"], t["chain"]) for t in tokens if t["symbol"] in ("USDC", "USDT"))
    expected = [("USDC", "ethereum"), ("USDT", "ethereum"), ("USDT", "ton")]
    if "polkadot" in devnet.info["chains"]:
        expected += [("USDC", "polkadot"), ("USDT", "kusama"), ("USDT", "polkadot")]
    assert stables == sorted(expected)
    if "polkadot" in devnet.info["chains"]:
        assert {(t["symbol"], t.get("asset_id")) for t in tokens if t["chain"] == "polkadot"} >= {
            ("USDT", 1984), ("USDC", 1337)}
    (usdt,) = [t for t in tokens if t["symbol"] == "USDT" and t["chain"] == "ton"]
    assert usdt["jetton_master"] == devnet.info["chains"]["ton"]["tokens"]["USDT"]["jetton_master"]
    assert (usdt["decimals"], usdt["peg_usd"]) == (6, "1")

    # the devnet's own config quotes them from both local sources, at the measured rate
    settings = settings_from_dict(json.loads((devnet.dir / "config" / "api.json").read_text()))
    from bridge.api.wiring import build_pricing

    sup = Supervisor("test")
    try:
        aggregator = await build_pricing(settings, sup, CollectorRegistry())
        svc = QuoteService.from_settings(settings, aggregator, QuoteSigner.from_secret(bytes(range(32))))
        for symbol in ("USDC", "USDT"):
            q = await svc.make_quote(symbol, credits=250, chain="ethereum")
            assert q.rate == Decimal("1") and set(q.sources) >= {"chainlink", "fixed"}
            assert q.amount == 2_500_000  # 250 credits x $0.01 at $1.00, 6 decimals
    finally:
        for stop in reversed(sup._cleanups):
            await stop()
