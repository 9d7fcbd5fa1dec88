"""Tokens are configuration (issue 13): ``[[tokens]]`` adds payable tokens (a testnet's WND)
with their decimals and the symbol they are priced under; the built-in DOT, KSM, ETH, TON stay
the defaults. The gateway is served for real (AppRunner on 127.0.0.1, migrated SQLite)."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web

from bridge.api.app import create_app
from bridge.config import settings_from_dict
from bridge.errors import ConfigError
from bridge.keystore import write_keystore
from bridge.pricing.credits import amount_for_credits
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.storage.db import Database

PASSWORD_ENV = "CB_TOKENS_TEST_QUOTE_PW"
WESTEND_AH = "0x67f9723393ef76214df0118c34bbbd3dbebc8ed46a10973a8c969d48fe7598c9"
MEMBER = "0x" + "d4" * 32


def config(tmp_path, tokens=None, substrate_token="WND", fixed=None) -> dict:
    return {
        "chains": [
            {"family": "evm", "name": "sepolia", "chain_id": 11155111, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "substrate", "name": "westend", "rpc": ["ws://127.0.0.1:1"], "token": substrate_token,
             "ss58_prefix": 42, "genesis_hash": WESTEND_AH, "committee": {"members": [MEMBER], "threshold": 1}},
            {"family": "evm", "name": "settlement", "chain_id": 84532, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        **({"tokens": tokens} if tokens is not None else {}),
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/api.sqlite"},
        "pricing": {"credit_price_usd": "0.01", "fixed_usd": fixed or {"ETH": "3000", "WND": "5"},
                    "min_amount": {"WND": 10**10}},
        "api": {"quote_key": {"keystore": str(tmp_path / "quote-key.json"), "password_env": PASSWORD_ENV}},
    }


@pytest.fixture
async def serve(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "tokens test password")
    write_keystore(tmp_path / "quote-key.json", "ed25519", bytes(range(32)), "tokens test password", n=2**10)
    runners, sessions = [], []

    async def _serve(settings):
        db = Database(settings.storage.url)
        await db.migrate()
        signer = QuoteSigner.from_ref(settings.api.quote_key)
        source = FixedPriceSource(settings.pricing.fixed_usd)
        app = create_app(settings, db=db, quote_service=QuoteService.from_settings(settings, source, signer),
                         signer=signer)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        http = aiohttp.ClientSession(base_url=f"http://{host}:{port}")
        sessions.append(http)
        return http

    yield _serve
    for s in sessions:
        await s.close()
    for r in runners:
        await r.cleanup()


async def test_a_configured_testnet_token_is_listed_and_quoted_with_its_decimals(tmp_path, serve):
    settings = settings_from_dict(config(tmp_path, tokens=[{"symbol": "WND", "decimals": 12}]))
    http = await serve(settings)
    async with http.get("/v1/tokens") as r:
        assert r.status == 200
        tokens = await r.json()
    assert tokens == [{"symbol": "ETH", "chain": "sepolia", "decimals": 18, "native": True, "min_amount": "0"},
                      {"symbol": "WND", "chain": "westend", "decimals": 12, "native": True,
                       "min_amount": "10000000000"}]
    async with http.post("/v1/quotes", json={"token": "WND", "credits": "500"}) as r:
        assert r.status == 201, await r.text()
        q = await r.json()
    # 500 credits x $0.01 at $5 per WND = 1 WND = 10**12 base units
    assert int(q["amount"]) == amount_for_credits(500, Decimal("0.01"), Decimal("5"), 12) == 10**12


async def test_price_symbol_prices_a_token_under_another_symbol(tmp_path, serve):
    # a testnet token priced as its mainnet counterpart (demo pricing); decimals stay its own
    settings = settings_from_dict(config(
        tmp_path, tokens=[{"symbol": "WND", "decimals": 12, "price_symbol": "DOT"}],
        fixed={"ETH": "3000", "DOT": "4"}))
    http = await serve(settings)
    async with http.post("/v1/quotes", json={"token": "WND", "credits": "400"}) as r:
        assert r.status == 201, await r.text()
        q = await r.json()
    assert int(q["amount"]) == 10**12  # 400 x $0.01 / $4 = 1 WND of 12 decimals


def test_the_builtin_tokens_are_the_defaults(tmp_path):
    s = settings_from_dict(config(tmp_path, substrate_token="DOT"))
    assert {t: c.decimals for t, c in s.token_table().items()} == {"DOT": 10, "KSM": 12, "ETH": 18, "TON": 9}
    # a configured entry may replace a built-in one (e.g. a devnet whose "DOT" has 12 decimals)
    s = settings_from_dict(config(tmp_path, substrate_token="DOT", tokens=[{"symbol": "DOT", "decimals": 12}]))
    assert s.token("DOT").decimals == 12


@pytest.mark.parametrize("tokens,substrate_token,message", [
    (None, "WND", "chain 'westend': token 'WND' is not configured (known: DOT, ETH, KSM, TON; add it under [[tokens]])"),
    ([{"symbol": "WND", "decimals": 12}, {"symbol": "WND", "decimals": 10}], "WND", "symbols must be unique"),
    ([{"symbol": "WND", "decimals": 37}], "WND", "tokens.0.decimals"),
    ([{"symbol": "wnd", "decimals": 12}], "WND", "tokens.0.symbol"),
    ([{"symbol": "WND", "decimals": "12"}], "WND", "tokens.0.decimals"),
    ([{"symbol": "WND", "decimals": 12, "price": 1}], "WND", "tokens.0.price"),
])
def test_bad_token_configs_are_one_line_errors(tmp_path, tokens, substrate_token, message):
    with pytest.raises(ConfigError) as e:
        settings_from_dict(config(tmp_path, tokens=tokens, substrate_token=substrate_token))
    assert "\n" not in str(e.value)
    assert message in str(e.value)
