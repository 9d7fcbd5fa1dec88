"""Stablecoins over the real HTTP API (AppRunner on 127.0.0.1, migrated SQLite): ``GET /v1/tokens``
lists each (symbol, chain) with what names it on its chain; ``POST /v1/quotes`` needs ``chain``
for a symbol payable on several chains (400 ``token-ambiguous``), refuses a chain that does not
offer it (400 ``token-not-offered``) and a stablecoin outside its peg band (503
``token-depegged``); the OpenAPI document describes all of it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bridge.config import settings_from_dict
from bridge.pricing.credits import amount_for_credits

from tests.integration.api.test_tokens_config import PASSWORD_ENV, serve  # noqa: F401  (fixture)

MEMBER = "0x" + "d4" * 32
POLKADOT_HUB = "0x68d56f15f85d3136970ec16946040bc1752654e906147f7e43e9d539d7c3de2f"
USDC_ETH = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
USDT_ETH = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


def config(tmp_path, usdt="1.0004", depeg=None) -> dict:
    peg = {"peg": "1.00", "peg_band_bps": 50, **({"depeg": depeg} if depeg else {})}
    return {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:1"], "token": "DOT",
             "ss58_prefix": 0, "genesis_hash": POLKADOT_HUB, "committee": {"members": [MEMBER], "threshold": 1}},
            {"family": "evm", "name": "settlement", "chain_id": 8453, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "tokens": [
            {"symbol": "USDC", "chain": "ethereum", "decimals": 6, "contract": USDC_ETH, **peg},
            {"symbol": "USDT", "chain": "ethereum", "decimals": 6, "contract": USDT_ETH, **peg},
            {"symbol": "USDT", "chain": "polkadot", "decimals": 6, "asset_id": 1984, **peg},
        ],
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/api.sqlite"},
        "pricing": {"credit_price_usd": "0.01",
                    "fixed_usd": {"ETH": "3000", "DOT": "5", "USDC": "0.9999", "USDT": usdt},
                    "min_amount": {"USDT@polkadot": 100_000}},
        "api": {"quote_key": {"keystore": str(tmp_path / "quote-key.json"), "password_env": PASSWORD_ENV}},
    }


async def problem_of(resp) -> dict:
    assert resp.content_type == "application/problem+json"
    return await resp.json(content_type=None)


async def test_tokens_lists_each_symbol_chain_pair(tmp_path, serve):  # noqa: F811
    http = await serve(settings_from_dict(config(tmp_path)))
    async with http.get("/v1/tokens") as r:
        assert r.status == 200
        tokens = await r.json()
    assert tokens == [
        {"symbol": "ETH", "chain": "ethereum", "decimals": 18, "native": True, "min_amount": "0"},
        {"symbol": "DOT", "chain": "polkadot", "decimals": 10, "native": True, "min_amount": "0"},
        {"symbol": "USDC", "chain": "ethereum", "decimals": 6, "native": False, "contract": USDC_ETH,
         "peg_usd": "1", "min_amount": "0"},
        {"symbol": "USDT", "chain": "ethereum", "decimals": 6, "native": False, "contract": USDT_ETH,
         "peg_usd": "1", "min_amount": "0"},
        {"symbol": "USDT", "chain": "polkadot", "decimals": 6, "native": False, "asset_id": 1984,
         "peg_usd": "1", "min_amount": "100000"},
    ]
    async with http.get("/openapi.json") as r:
        spec = await r.json()
    schemas = spec["components"]["schemas"]
    assert {"contract", "asset_id", "jetton_master", "native"} <= set(schemas["Token"]["properties"])
    assert "chain" in schemas["QuoteRequest"]["properties"]
    assert schemas["QuoteRequest"]["properties"]["token"]["enum"] == ["ETH", "DOT", "USDC", "USDT"]
    responses = spec["paths"]["/v1/quotes"]["post"]["responses"]
    assert "token-ambiguous" in responses["400"]["description"]
    assert "token-depegged" in responses["503"]["description"]


async def test_quotes_need_the_chain_of_an_ambiguous_symbol(tmp_path, serve):  # noqa: F811
    http = await serve(settings_from_dict(config(tmp_path)))
    async with http.post("/v1/quotes", json={"token": "USDT", "credits": "300"}) as r:
        assert r.status == 400
        p = await problem_of(r)
    assert p["type"].endswith("/token-ambiguous")
    assert p["detail"] == "USDT is payable on several chains (ethereum, polkadot): give chain, one of them"

    async with http.post("/v1/quotes", json={"token": "USDT", "chain": "polkadot", "credits": "300"}) as r:
        assert r.status == 201, await r.text()
        q = await r.json()
    assert (q["token"], q["chain"], q["rate"]) == ("USDT", "polkadot", "1.0004")
    assert int(q["amount"]) == amount_for_credits(300, Decimal("0.01"), Decimal("1.0004"), 6) == 2_998_801

    async with http.post("/v1/quotes", json={"token": "USDC", "credits": "300"}) as r:  # one chain: implied
        assert r.status == 201
        assert (await r.json())["chain"] == "ethereum"

    async with http.post("/v1/quotes", json={"token": "USDC", "chain": "polkadot", "credits": "300"}) as r:
        assert r.status == 400
        p = await problem_of(r)
    assert p["type"].endswith("/token-not-offered")
    assert p["detail"] == "chain 'polkadot' does not offer USDC; USDC is payable on: ethereum"

    for bad in ("Polkadot!", None, 7):
        async with http.post("/v1/quotes", json={"token": "USDT", "chain": bad, "credits": "300"}) as r:
            assert r.status == 400 and (await problem_of(r))["type"].endswith("/invalid-input")

    async with http.get("/metrics") as r:
        text = await r.text()
    assert 'creditbridge_api_quotes_issued_total{chain="polkadot",token="USDT"} 1.0' in text


@pytest.mark.parametrize("depeg", [None, "price"])
async def test_a_depegged_stablecoin_is_refused_unless_priced(tmp_path, serve, depeg):  # noqa: F811
    http = await serve(settings_from_dict(config(tmp_path, usdt="0.9940", depeg=depeg)))  # 60 bps off, band 50
    async with http.post("/v1/quotes", json={"token": "USDT", "chain": "ethereum", "credits": "300"}) as r:
        if depeg is None:
            assert r.status == 503
            p = await problem_of(r)
            assert p["type"].endswith("/token-depegged")
            assert p["detail"].startswith("USDT on ethereum trades at 0.994 USD, outside its peg band")
        else:
            assert r.status == 201
            q = await r.json()
            assert q["rate"] == "0.994"  # the measured rate, not 1.00
            assert int(q["amount"]) == amount_for_credits(300, Decimal("0.01"), Decimal("0.994"), 6) == 3_018_109
    async with http.post("/v1/quotes", json={"token": "USDC", "credits": "300"}) as r:
        assert r.status == 201  # in its band
