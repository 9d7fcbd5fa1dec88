"""``creditbridge quote`` as a user runs it: the real command in a subprocess against the real
API served on 127.0.0.1 (ETH on an EVM chain, DOT on an Asset Hub chain, prices from an
aggregator). Its output is the signed quote, which verifies with the gateway's key; failures
are one line naming the API's problem code, with a non-zero exit status."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.api.app import create_app
from bridge.config import settings_from_dict
from bridge.pricing.aggregate import PriceAggregator
from bridge.pricing.credits import amount_for_credits, credits_for_amount
from bridge.pricing.quotes import QuoteService, QuoteSigner, quote_from_json, verify_quote
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.storage.db import Database
from tests.integration.evm.helpers import closed_port_url


def _settings(home) -> dict:
    return {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:1"], "token": "DOT", "ss58_prefix": 0,
             "committee": {"members": ["0x" + "01" * 32, "0x" + "02" * 32], "threshold": 2}},
            {"family": "evm", "name": "settlement", "chain_id": 31337, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "storage": {"url": f"sqlite+aiosqlite:///{home}/api.sqlite"},
        "pricing": {"credit_price_usd": "0.01", "min_amount": {"DOT": 10**8, "ETH": 10**12}},
    }


@pytest.fixture
async def api(tmp_path):
    settings = settings_from_dict(_settings(tmp_path))
    db = Database(settings.storage.url)
    await db.migrate()
    signer = QuoteSigner.from_secret(bytes(range(40, 72)))
    aggregator = PriceAggregator(
        [FixedPriceSource({"ETH": Decimal("3000"), "DOT": Decimal("6.412")}, name="a"),
         FixedPriceSource({"ETH": Decimal("3000"), "DOT": Decimal("6.412")}, name="b")],
        min_sources=2, max_deviation=Decimal("0.01"), max_age=timedelta(minutes=5),
        registry=CollectorRegistry(), symbols={"ETH", "DOT"},
    )
    await aggregator.refresh()
    app = create_app(settings, db=db, quote_service=QuoteService.from_settings(settings, aggregator, signer),
                     signer=signer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", aggregator
    finally:
        await runner.cleanup()


async def creditbridge(*args: str, cwd=None) -> tuple[int, str, str]:
    """Run the real command (``python -m bridge.cli``) while this loop keeps serving the API."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge.cli", *args, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode, out.decode(), err.decode()


async def gateway_key(url: str) -> str:
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/v1/gateway") as r:
            return (await r.json())["public_key"]


async def test_quote_dot_for_credits(api):
    url, _ = api
    code, out, err = await creditbridge("quote", "--api", url, "--token", "DOT", "--credits", "500")
    assert code == 0, err
    q = json.loads(out)
    assert q["token"] == "DOT" and q["chain"] == "polkadot" and q["credits"] == "500" and q["rate"] == "6.412"
    # $5 at $6.412/DOT, 10 decimals, rounded up
    assert int(q["amount"]) == amount_for_credits(500, Decimal("0.01"), Decimal("6.412"), 10) == 7797878977
    assert q["sources"] == ["a", "b"]
    verify_quote(quote_from_json(q), await gateway_key(url))


async def test_quote_eth_for_an_amount(api):
    url, _ = api
    code, out, err = await creditbridge("quote", "--api", url + "/", "--token", "ETH", "--amount", str(10**16))
    assert code == 0, err
    q = json.loads(out)
    assert q["amount"] == str(10**16)
    assert int(q["credits"]) == credits_for_amount(10**16, Decimal("0.01"), Decimal("3000"), 18) == 3000


@pytest.mark.parametrize("args, problem", [
    (["--token", "KSM", "--credits", "5"], "creditbridge: invalid-input: unknown token; supported: DOT, ETH"),
    (["--token", "DOT", "--credits", "1"], "creditbridge: invalid-input: amount 15595758 is below the minimum"),
    (["--token", "DOT", "--credits", "-5"], "creditbridge: invalid-input: credits must be a decimal string"),
])
async def test_refused_quotes_are_one_line_errors(api, args, problem):
    url, _ = api
    code, out, err = await creditbridge("quote", "--api", url, *args)
    assert code == 1 and out == ""
    assert err.startswith(problem) and err.count("\n") == 1, err


async def test_no_trustworthy_price_is_reported(api):
    url, aggregator = api
    aggregator.sources[0]._prices["DOT"] = Decimal("7")  # one source moves 9% away: they disagree
    await aggregator.refresh()
    code, out, err = await creditbridge("quote", "--api", url, "--token", "DOT", "--credits", "500")
    assert code == 1 and out == ""
    assert err.startswith("creditbridge: price-unavailable: DOT: sources disagree"), err


async def test_exactly_one_of_credits_and_amount(api):
    url, _ = api
    code, _, err = await creditbridge("quote", "--api", url, "--token", "DOT", "--credits", "5", "--amount", "5")
    assert code == 1 and "exactly one of --credits or --amount" in err


async def test_unreachable_api_and_missing_devnet(tmp_path):
    code, _, err = await creditbridge("quote", "--api", closed_port_url(), "--token", "ETH", "--credits", "5")
    assert code == 1 and "cannot reach" in err
    code, _, err = await creditbridge("quote", "--token", "ETH", "--credits", "5", cwd=tmp_path)
    assert code == 1 and "start the devnet first" in err
