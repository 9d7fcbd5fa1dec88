"""The devnet prices USDC and USDT from its local sources (issue 15): "USDC / USD" and "USDT / USD"
PriceFeeds on the settlement anvil (listed in devnet.json's price_feeds, kept fresh like ETH / USD)
and the fixed source. The tokens are not payable on the devnet until their custody exists, so the
devnet lists none; a config that adds them (as the custody work will) quotes them from those
sources, at the measured rate."""

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
    tokens = await devnet.call("GET", "/v1/tokens", expect=200)
    # payable only where custody exists: TON's USDT jetton and the Asset Hub assets (issue 15)
    stables = sorted((t["symbol"], t["chain"]) for t in tokens if t["symbol"] in ("USDC", "USDT"))
    expected = [("USDT", "ton")]
    if "polkadot" in devnet.info["chains"]:
        expected += [("USDC", "polkadot"), ("USDT", "kusama"), ("USDT", "polkadot")]
    assert stables == sorted(expected)
    if "polkadot" in devnet.info["chains"]:
        assert {(t["symbol"], t.get("asset_id")) for t in tokens if t["chain"] == "polkadot"} >= {
            ("USDT", 1984), ("USDC", 1337)}
    (usdt,) = [t for t in tokens if t["symbol"] == "USDT" and t["chain"] == "ton"]
    assert usdt["jetton_master"] == devnet.info["chains"]["ton"]["tokens"]["USDT"]["jetton_master"]
    assert (usdt["decimals"], usdt["peg_usd"]) == (6, "1")

    cfg = json.loads((devnet.dir / "config" / "api.json").read_text())
    cfg["tokens"] = [*cfg.get("tokens", []), {"symbol": "USDC", "chain": "ethereum", "decimals": 6, "contract": "0x" + "a0" * 20,
                      "peg": "1.00", "peg_band_bps": 100},
                     {"symbol": "USDT", "chain": "ethereum", "decimals": 6, "contract": "0x" + "da" * 20,
                      "peg": "1.00", "peg_band_bps": 100}]
    settings = settings_from_dict(cfg)
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
