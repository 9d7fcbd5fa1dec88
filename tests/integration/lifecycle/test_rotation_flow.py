"""Signers, aggregator and refund worker across a committee rotation (issue 13 item 2), on a real
anvil with in-process signer nodes served over HTTP (the fixtures of test_committee_flow).

The committee {K0..K3} (t=3) attests a payment and signs the refund of its excess; then the
ledger and the lock rotate to {K0, K1, N1, N2} (t=3). What was signed under the old index must
still end well: the aggregator re-asks the remaining members for new-index batch signatures,
and the refund worker never submits a release that only the old set signed (it would revert):
it waits until a new member's node has decided the deposit and signed too.
"""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web

from bridge.committee import digest as dg
from bridge.committee import rotation as R
from bridge.committee.aggregate import Aggregator, SignerClient
from bridge.committee.gateway import GatewayClient
from bridge.committee.http import create_signer_app
from bridge.committee.signer import SignerNode
from bridge.hashing import keccak256
from bridge.keystore import SecretKey
from bridge.payments.refunds import RefundWorker, ReleasesClient, lock_domain
from bridge.storage.db import Database
from bridge.types import SettlementDomain
from relayers.evm import rotation as evm_rot
from relayers.evm.release import EvmLockReleaser
from relayers.evm.rpc import RpcPool
from relayers.evm.settlement import EvmSettlement
from relayers.evm.watcher import EvmWatcher
from tests.integration.lifecycle.test_committee_flow import (CHAIN_ID, GAS, KEYS, PAYER, SIGNER_KEY, WallClock,  # noqa: F401
                                                             attested, balance, chain, chain_settings, committee_of,
                                                             pay, step_all)

NEW = [keccak256(f"creditbridge-rotation-flow/{i}".encode()) for i in range(2)]
NEW_SET = [KEYS[0], KEYS[1], *NEW]


async def rotate(chain, contract: str, name: str) -> None:
    """The old set (3 of K0..K3) signs and submits RotateCommittee(1, NEW_SET, 3) on one contract."""
    role = "ledger" if name == "ledger" else "lock"
    committee = R.NewCommittee(index=1, threshold=3, members=[
        R.Member(name=f"m{i}", address="0x" + dg.address_of(k).hex()) for i, k in enumerate(NEW_SET)])
    custody = R.EvmCustody(family="evm", chain=name, role=role, chain_id=CHAIN_ID, contract=contract)
    d = R.evm_digest(custody, committee)
    sigs = dg.pack_signatures((dg.address_of(k), dg.sign_digest(k, d)) for k in KEYS[1:4])
    async with RpcPool.from_config(chain.cfg) as pool:
        await evm_rot.submit_rotation(pool, bytes.fromhex(contract[2:]), committee.evm_signers(), 3, sigs, GAS)
        assert (await evm_rot.committee_of(pool, bytes.fromhex(contract[2:])))[0] == 1


async def new_member_node(chain, lc, key: bytes, tmp_path, session):
    """A new member's signer node: its own database, scanning the chain from block 0."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/new-member.sqlite")
    await db.migrate()
    node = SignerNode(
        name="n1", key=SecretKey("secp256k1", key, "0x" + dg.address_of(key).hex()), db=db,
        watchers={"ethereum": EvmWatcher(chain.cfg)}, settlement=EvmSettlement(chain.settlement_cfg, None),
        domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])),
        gateway=GatewayClient(lc.url, session), gateway_public_key=lc.app[SIGNER_KEY].public_key,
        lock_domains={"ethereum": lock_domain(CHAIN_ID, bytes.fromhex(chain.lock[2:]))},
        credit_price_usd=Decimal("0.01"), wall_clock=WallClock(), poll_interval=0.1)
    runner = web.AppRunner(create_signer_app(node, __import__("prometheus_client").CollectorRegistry()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return node, runner, f"http://{host}:{port}"


async def test_old_index_attestations_and_releases_after_a_rotation(chain, lifecycle, committee_of, tmp_path):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    payer = dg.address_of(bytes.fromhex(PAYER[2:]))
    p = await lc.payment(None, credits="500")
    extra = 10**15
    await pay(chain, p, int(p["amount"]) + extra)
    await step_all(c)
    for n in c.nodes:
        assert list((await attested(n)).values()) == [500]
        assert [r["purpose"] for r in await n.releases_after(0, 10)] == ["excess"]
        assert (await n.committee())[0] == 0  # cached: the nodes attested under index 0

    await rotate(chain, chain.ledger, "ledger")
    await rotate(chain, chain.lock, "ethereum")

    session = aiohttp.ClientSession()
    releaser = EvmLockReleaser(chain.cfg, GAS)
    settlement = EvmSettlement(chain.settlement_cfg, GAS)
    agg_db = Database(f"sqlite+aiosqlite:///{tmp_path}/aggregator.sqlite")
    await agg_db.migrate()
    node = runner = None
    try:
        # refunds: only K0 and K1 of the signers are current members, below the threshold; the
        # worker waits instead of submitting a release that would revert (UnknownSigner)
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in c.urls], releasers={"ethereum": releaser})
        before = await balance(chain, payer)
        assert await worker.step() == 0
        assert await balance(chain, payer) == before and worker.failed == {}

        # credits: the old-index attestations alone cannot settle; the aggregator asks the
        # current members among the signers (K0, K1 and the new member's node) for index 1
        node, runner, url = await new_member_node(chain, lc, NEW[0], tmp_path, session)
        for f in node.followers:
            await f.step()
        await node.process_once()
        assert list((await attested(node)).values()) == [500]
        urls = [*c.urls, url]
        agg = Aggregator(signers=[SignerClient(u, session) for u in urls], settlement=settlement,
                         domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])), db=agg_db,
                         max_batch_wait=0)
        assert await agg.step() == 1
        assert await settlement.credits_of(bytes.fromhex(p["beneficiary"][2:])) == 500
        assert (await c.nodes[0].committee())[0] == 1  # K0 refreshed its view when asked for index 1

        # refunds: with the new member's signature the worker has 3 current members' signatures
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in urls], releasers={"ethereum": releaser})
        assert await worker.step() == 1
        assert await balance(chain, payer) - before == extra
    finally:
        if runner is not None:
            await runner.cleanup()
        if node is not None:
            for w in node.watchers.values():
                await w.aclose()
            await node.settlement.aclose()
            await node.db.dispose()
        await releaser.aclose()
        await settlement.aclose()
        await agg_db.dispose()
        await session.close()
