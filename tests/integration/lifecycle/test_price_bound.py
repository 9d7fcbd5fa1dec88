"""Issue 11.1: the gateway key alone cannot mint. A compromised gateway (a real HTTP server on
127.0.0.1 holding the API's REAL Ed25519 quote key) signs absurd terms -- the lock's minimum
for 2**127 credits, and a milder 10x overprice -- for real payments paid on a real anvil. Every
signer checks the terms' rate against the ETH/USD Chainlink round (PriceFeed.sol on the same
anvil) in force when the quote was issued: neither deposit is attested, each is held for
refund as ``unpriced`` (and refunded on CreditLock by the refund worker), the violations metric
is raised; an honest payment served through the same gateway is still credited."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.api.keys import SIGNER as SIGNER_KEY
from bridge.committee import digest as dg
from bridge.committee.http import SignerMetrics
from bridge.committee.pricebound import PriceBound
from bridge.payments import refunds
from bridge.payments.refunds import RefundWorker, ReleasesClient
from bridge.pricing.quotes import terms_to_json
from bridge.types import PaymentTerms, hex_to_bytes
from relayers.evm.chainlink import ChainlinkHistory, deploy_price_feed
from relayers.evm.release import EvmLockReleaser

from tests.integration.lifecycle.test_committee_flow import (  # noqa: F401  (fixtures)
    GAS,
    PAYER,
    attested,
    balance,
    chain,
    chain_settings,
    committee_of,
    pay,
    statuses,
    step_all,
)

LOCK_MINIMUM = 10**9  # CreditLock's minimum deposit in the chain fixture


class CompromisedGateway:
    """Serves forged terms (signed with the real gateway key) for some references and passes
    every other request through to the real gateway."""

    def __init__(self, real_url: str) -> None:
        self.real_url = real_url
        self.forged: dict[str, dict] = {}
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        ref = request.match_info["ref"]
        if ref in self.forged:
            return web.json_response(self.forged[ref])
        async with aiohttp.ClientSession() as s, s.get(self.real_url + request.path) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")


@pytest.fixture
async def compromised(lifecycle):
    runners = []

    async def start(lc) -> CompromisedGateway:
        gw = CompromisedGateway(lc.url)
        app = web.Application()
        app.router.add_get("/v1/payments/by-reference/{ref}", gw.handle)
        app.router.add_get("/v1/payments/by-reference/{ref}/{rest:.*}", gw.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        gw.url = f"http://{host}:{port}"
        runners.append(runner)
        return gw

    yield start
    for r in runners:
        await r.cleanup()


async def test_absurd_terms_signed_with_the_real_gateway_key_are_not_attested_but_refunded(
        chain, lifecycle, committee_of, compromised):
    feed = await deploy_price_feed(chain.anvil.rpc_url, GAS, decimals=8, description="ETH / USD",
                                   answer=3000 * 10**8)
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    lc.clock.now = lc.clock.now + timedelta(seconds=2)  # quotes issued after the feed's round
    gw = await compromised(lc)
    key = lc.app[SIGNER_KEY]  # the API's real quote key (from its keystore)
    registries = [CollectorRegistry() for _ in range(4)]
    histories = [ChainlinkHistory(chain.cfg, feed, timedelta(hours=1), symbol="ETH", tolerance=Decimal("0.03"))
                 for _ in range(4)]

    def bound(i: int) -> PriceBound:
        return PriceBound(references={"ETH": histories[i]}, credit_price_usd=Decimal("0.01"),
                          max_deposit_usd=Decimal("100000"), quote_ttl_seconds=900,
                          metrics=SignerMetrics(registries[i]))

    try:
        c = await committee_of(lc, bound=bound, gateway_url=gw.url)
        honest = await lc.payment(None, credits="500")  # served by the real gateway, unchanged

        def forge(p: dict, amount: int, credits: int) -> None:
            t = PaymentTerms(payment_id=p["id"], reference=hex_to_bytes(p["reference"], 32),
                             beneficiary=hex_to_bytes(p["beneficiary"], 20), quote_id=str(uuid.uuid4()),
                             chain="ethereum", token="ETH", amount=amount, credits=credits,
                             expires_at=lc.clock.now + timedelta(seconds=900))
            gw.forged[p["reference"]] = terms_to_json(key.sign_terms(t))

        absurd = await lc.payment(None, credits="1")
        forge(absurd, LOCK_MINIMUM, 2**127)
        tenx = await lc.payment(None, credits="500")
        forge(tenx, int(tenx["amount"]), 5000)  # ten times the credits its ETH is worth

        await pay(chain, honest, int(honest["amount"]))
        await pay(chain, absurd, LOCK_MINIMUM)
        await pay(chain, tenx, int(tenx["amount"]))
        await step_all(c)

        for i, n in enumerate(c.nodes):
            assert sorted((await attested(n)).values()) == [500]  # only the honest payment
            assert sorted((await statuses(n)).values()) == ["attested", "rejected", "rejected"]
            rel = await n.releases_after(0, 100)
            assert sorted((r["purpose"], int(r["amount"])) for r in rel) == sorted(
                [("unpriced", LOCK_MINIMUM), ("unpriced", int(tenx["amount"]))])
            assert registries[i].get_sample_value("creditbridge_signer_price_bound_violations_total",
                                                  {"chain": "ethereum", "token": "ETH"}) == 2

        # the held deposits go back to the payer, once, by the committee-signed release
        payer = dg.address_of(bytes.fromhex(PAYER[2:]))
        session = aiohttp.ClientSession()
        releaser = EvmLockReleaser(chain.cfg, GAS)
        try:
            before = await balance(chain, payer)
            worker = RefundWorker(signers=[ReleasesClient(u, session) for u in c.urls[:3]],
                                  releasers={"ethereum": releaser})
            assert await worker.step() == 2
            assert await balance(chain, payer) - before == LOCK_MINIMUM + int(tenx["amount"])
            src = c.nodes[0].watchers["ethereum"].source
            assert {r for r, _ in worker.submitted} == {
                refunds.release_id(src, s, "unpriced") for s, st in (await statuses(c.nodes[0])).items()
                if st == "rejected"}
        finally:
            await releaser.aclose()
            await session.close()
    finally:
        for h in histories:
            await h.aclose()
