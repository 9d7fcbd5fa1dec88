"""Signers under transient faults, on a real anvil and a served gateway (issue 11 items 2, 3):
a deposit is rejected only for a proved-bad fact; a chain endpoint or gateway that cannot tell
leaves it undecided with a stored backoff, retried until it can be decided; a payment reference
the gateway does not know is asked about again until the configured delay, then refunded to the
payer in full ("unattributed") through the lock's refund machinery; one deposit that cannot be
decided never holds up the others, in the pass or in the window.

The faults are real: a proxy on 127.0.0.1 in front of anvil (answering a receipt as missing, or
holding a receipt request until the client times out) and in front of the gateway (answering
the gateway's own 404 ``not-found`` problem, as during a database failover)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.api.problems import PROBLEM_BASE
from bridge.committee import digest as dg
from bridge.committee.gateway import GatewayClient
from bridge.committee.http import SignerMetrics
from bridge.committee.signer import SignerNode, retry_delay
from bridge.config import EvmChainConfig
from bridge.keystore import SecretKey
from bridge.payments import refunds
from bridge.payments.refunds import RefundWorker, lock_domain
from bridge.storage import observations as obs_repo
from bridge.storage.db import Database
from bridge.types import SettlementDomain
from relayers.evm.release import EvmLockReleaser
from relayers.evm.settlement import EvmSettlement
from relayers.evm.wallet import send_lock
from relayers.evm.watcher import EvmWatcher

from tests.integration.fault_proxy import FaultProxy, rpc_method, rpc_null_result
from tests.integration.lifecycle.test_committee_flow import (  # noqa: F401 - the module's anvil fixture
    CHAIN_ID, GAS, KEYS, PAYER, SIGNER_KEY, WallClock, attested, balance, chain, chain_settings, statuses)

REFUND_AFTER = 600


class Signers:
    def __init__(self, nodes, clock, rpc: FaultProxy, gateway: FaultProxy, registries) -> None:
        self.nodes, self.clock, self.rpc, self.gateway, self.registries = nodes, clock, rpc, gateway, registries

    async def follow(self) -> None:
        for n in self.nodes:
            for f in n.followers:
                await f.step()

    async def process(self, **kw) -> list[int]:
        return [await n.process_once(**kw) for n in self.nodes]

    def retries(self, i: int, reason: str) -> float:
        return self.registries[i].get_sample_value("creditbridge_signer_retries_total",
                                                   {"chain": "ethereum", "reason": reason}) or 0.0

    async def stored(self, i: int) -> dict[int, obs_repo.StoredObservation]:
        async with self.nodes[i].db.begin() as s:
            return {o.observation.sequence: o for st in ("new", "attested", "rejected", "queued")
                    for o in await obs_repo.observations_by_status(s, st, 1000)}


@pytest.fixture
async def signers(chain, tmp_path):
    """``await signers(gateway, n=1)``: signer nodes whose chain endpoint and gateway are each
    behind a FaultProxy (EVM requests time out after 0.5 s)."""
    made = []

    async def make(lc, n: int = 1) -> Signers:
        rpc = await FaultProxy(chain.anvil.rpc_url).start()
        gw = await FaultProxy(lc.url).start()
        session = aiohttp.ClientSession()
        cfg = EvmChainConfig(**{**chain.cfg.model_dump(), "rpc": [rpc.url], "request_timeout": 0.5})
        clock = WallClock()
        start = int(await chain.anvil.rpc("eth_blockNumber"), 16) + 1  # this test's deposits only
        nodes, registries = [], []
        for i, k in enumerate(KEYS[:n]):
            db = Database(f"sqlite+aiosqlite:///{tmp_path}/faults-{len(made)}-{i}.sqlite")
            await db.migrate()
            registry = CollectorRegistry()
            nodes.append(SignerNode(
                name=f"s{i}", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=db,
                watchers={"ethereum": EvmWatcher(cfg)}, settlement=EvmSettlement(chain.settlement_cfg, None),
                domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])),
                gateway=GatewayClient(gw.url, session, timeout=2), gateway_public_key=lc.app[SIGNER_KEY].public_key,
                lock_domains={"ethereum": lock_domain(CHAIN_ID, bytes.fromhex(chain.lock[2:]))},
                credit_price_usd=Decimal("0.01"), wall_clock=clock, poll_interval=0.1,
                metrics=SignerMetrics(registry), unknown_reference_refund_after_seconds=REFUND_AFTER,
                start_block={"ethereum": start}))
            registries.append(registry)
        made.append((session, nodes, rpc, gw))
        return Signers(nodes, clock, rpc, gw, registries)

    yield make
    for session, nodes, rpc, gw in made:
        for n in nodes:
            for w in n.watchers.values():
                await w.aclose()
            await n.settlement.aclose()
            await n.db.dispose()
        await session.close()
        await rpc.stop()
        await gw.stop()


async def lock(chain, reference: str, value: int) -> str:
    return await send_lock(chain.anvil.rpc_url, PAYER, chain.lock, reference, value)


def not_found_for(reference: str):
    """The gateway's own 404 ``not-found`` problem for one reference (a failover's empty replica)."""

    def rule(path: str, body: bytes):
        if reference.lower() in path.lower():
            return web.json_response({"type": PROBLEM_BASE + "not-found", "title": "Not Found", "status": 404,
                                      "detail": "no payment has this reference"}, status=404,
                                     content_type="application/problem+json")
        return None

    return rule


async def test_a_receipt_momentarily_missing_is_retried_then_credited(chain, lifecycle, signers):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc)
    p = await lc.payment(None, credits="100")
    tx = await lock(chain, p["reference"], int(p["amount"]))
    await sg.follow()
    sg.rpc.answer_if = rpc_null_result("eth_getTransactionReceipt", tx)  # this endpoint lost the receipt
    assert await sg.process() == [0]
    (o,) = (await sg.stored(0)).values()
    assert o.status == "new" and o.attempts == 1 and o.next_attempt_at == int(sg.clock()) + retry_delay(1)
    assert "chain-error" in o.detail and sg.retries(0, "chain-error") == 1
    assert await sg.process() == [0] and sg.rpc.answered == 1  # not due yet: not asked again
    sg.rpc.heal()
    sg.clock.t += retry_delay(1)
    assert await sg.process() == [1]
    assert list((await attested(sg.nodes[0])).values()) == [100]


async def test_a_gateway_404_during_a_failover_is_retried_then_credited(chain, lifecycle, signers):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc)
    p = await lc.payment(None, credits="100")
    await lock(chain, p["reference"], int(p["amount"]))
    await sg.follow()
    sg.gateway.answer_if = not_found_for(p["reference"])
    for k in range(1, 4):  # asked again, with a growing pause, while the gateway says "unknown"
        assert await sg.process() == [0]
        (o,) = (await sg.stored(0)).values()
        assert o.status == "new" and o.attempts == k and sg.retries(0, "unknown-reference") == k
        sg.clock.t = o.next_attempt_at
    assert await sg.nodes[0].releases_after(0, 10) == []  # nothing refunded before the delay
    sg.gateway.heal()
    assert await sg.process() == [1]
    assert list((await attested(sg.nodes[0])).values()) == [100]


async def test_an_unknown_reference_is_refunded_to_the_payer_after_the_delay(chain, lifecycle, signers):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc, n=4)
    amount = 3 * 10**15
    await lock(chain, "0x" + os.urandom(32).hex(), amount)  # a reference no payment has
    await sg.follow()
    assert await sg.process() == [0, 0, 0, 0]
    (o,) = (await sg.stored(0)).values()
    assert o.status == "new" and sg.retries(0, "unknown-reference") == 1
    sg.clock.t = o.observation.timestamp + REFUND_AFTER - 1
    assert await sg.process() == [0, 0, 0, 0]
    for n in sg.nodes:
        assert await n.releases_after(0, 10) == []
    (o,) = (await sg.stored(0)).values()
    assert o.next_attempt_at <= o.observation.timestamp + REFUND_AFTER  # asked again at the delay at the latest
    sg.clock.t = o.observation.timestamp + REFUND_AFTER
    assert await sg.process() == [1, 1, 1, 1]
    payer = dg.address_of(bytes.fromhex(PAYER[2:]))
    rid = refunds.release_id(o.observation.source, o.observation.sequence, "unattributed")
    for i, n in enumerate(sg.nodes):
        assert (await sg.stored(i))[o.observation.sequence].status == "rejected"
        (r,) = await n.releases_after(0, 10)
        assert (r["purpose"], int(r["amount"]), r["to"], r["release_id"], r["payment_id"]) == (
            "unattributed", amount, "0x" + payer.hex(), "0x" + rid.hex(), "")
        assert await attested(n) == {}
    # the refund worker makes it on the lock, once
    session = aiohttp.ClientSession()
    releaser = EvmLockReleaser(chain.cfg, GAS)
    try:
        from bridge.payments.refunds import ReleasesClient

        urls = []
        runners = []
        from bridge.committee.http import create_signer_app

        for n in sg.nodes[:3]:
            runner = web.AppRunner(create_signer_app(n, CollectorRegistry()))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            urls.append(f"http://{host}:{port}")
            runners.append(runner)
        before = await balance(chain, payer)
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in urls], releasers={"ethereum": releaser})
        assert await worker.step() == 1
        assert await balance(chain, payer) - before == amount
        assert await worker.step() == 0
        for runner in runners:
            await runner.cleanup()
    finally:
        await releaser.aclose()
        await session.close()


async def test_one_deposit_whose_check_fails_does_not_stop_the_others(chain, lifecycle, signers):
    """A receipt request that times out (the endpoint holds it) and a gateway answering 503
    for another deposit: both wait with a backoff, the third is attested in the same pass."""
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc)
    pays = [await lc.payment(None, credits=str(c)) for c in (100, 200, 300)]
    txs = [await lock(chain, p["reference"], int(p["amount"])) for p in pays]
    await sg.follow()
    sg.rpc.stall_if = rpc_method("eth_getTransactionReceipt", txs[0])
    ref1 = pays[1]["reference"].lower()
    sg.gateway.answer_if = lambda path, body: web.Response(status=503) if ref1 in path.lower() else None
    assert await sg.process() == [1]
    assert list((await attested(sg.nodes[0])).values()) == [300]
    st = await sg.stored(0)
    assert [st[s].status for s in sorted(st)] == ["new", "new", "attested"]
    assert sg.rpc.stalled >= 1 and sg.retries(0, "rpc-unavailable") == 1 and sg.retries(0, "gateway-unavailable") == 1
    sg.rpc.heal()
    sg.gateway.heal()
    sg.clock.t += retry_delay(1)
    assert await sg.process() == [2]
    assert sorted((await attested(sg.nodes[0])).values()) == [100, 200, 300]


async def test_deposits_waiting_for_a_late_decision_do_not_fill_the_window(chain, lifecycle, signers):
    """Two late deposits the gateway has not decided yet, then an on-time one, with a window
    of two: the waiting ones back off and the on-time one is attested."""
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc)
    lc.clock.now = lc.clock.now - timedelta(hours=1)
    late = [await lc.payment(None, credits="100") for _ in range(2)]
    lc.clock.now = lc.clock.now + timedelta(hours=1)
    ok = await lc.payment(None, credits="200")
    for p in (*late, ok):
        await lock(chain, p["reference"], int(p["amount"]))
    await sg.follow()
    for _ in range(3):
        await sg.process(limit=2)
    assert list((await attested(sg.nodes[0])).values()) == [200]
    assert sg.retries(0, "late-pending") == 2
    # once the gateway has seen them (late crediting is off: it says hold), they are decided
    await lc.deposit_from_chain(chain.cfg)
    sg.clock.t += retry_delay(1)
    assert await sg.process(limit=2) == [2]
    assert sorted(r["purpose"] for r in await sg.nodes[0].releases_after(0, 10)) == ["late", "late"]
    assert set((await statuses(sg.nodes[0])).values()) == {"attested", "rejected"}


async def test_a_deposit_retried_after_an_outage_is_not_overtaken_by_later_deposits(chain, lifecycle, signers):
    """The full chaos run's failed drain (seed 1): deposits first tried while the API was down
    were tried again only once the stream of newer deposits had ended, 7 to 12 minutes later,
    because their stored retry time sorted after every new deposit's 0. A deposit is now due
    from when the signer saw it, and each pass takes deposits in the order they became due."""
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc)
    first = await lc.payment(None, credits="100")
    await lock(chain, first["reference"], int(first["amount"]))
    await sg.follow()
    sg.gateway.answer_if = lambda path, body: web.Response(status=503)  # the API is down (kill_api)
    assert await sg.process(limit=2) == [0]
    assert sg.retries(0, "gateway-unavailable") == 1
    sg.gateway.heal()
    sg.clock.t += retry_delay(1) + 1  # its retry time has passed; then newer deposits arrive
    later = [await lc.payment(None, credits=str(c)) for c in (200, 300, 400)]
    for p in later:
        await lock(chain, p["reference"], int(p["amount"]))
    await sg.follow()
    assert await sg.process(limit=2) == [2]
    assert sorted((await attested(sg.nodes[0])).values()) == [100, 200]  # the oldest due first
    assert await sg.process(limit=2) == [2]
    assert sorted((await attested(sg.nodes[0])).values()) == [100, 200, 300, 400]


async def test_a_slow_gateway_answer_does_not_hold_the_reads_of_the_other_deposits(chain, lifecycle, signers):
    """The full chaos run's signers fell ~5 minutes behind the deposits while faults slowed
    their round trips (about 1 deposit a second on the loaded machine, 30 ms when idle): each
    deposit's reads (its receipt, its terms, the price bound) waited for the previous deposit's.
    Now the reads of a window's deposits run at once (``read_concurrency``); the decisions and
    writes stay in due order. Here the gateway holds the first deposit's terms: the others'
    terms are asked for meanwhile, and every deposit is attested once it answers."""
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    sg = await signers(lc)
    node = sg.nodes[0]
    node.gateway.timeout = aiohttp.ClientTimeout(total=60)  # the held request never times out here
    pays = [await lc.payment(None, credits=str(c)) for c in (100, 200, 300, 400)]
    for p in pays:
        await lock(chain, p["reference"], int(p["amount"]))
    await sg.follow()
    refs = [p["reference"].lower() for p in pays]
    asked: list[str] = []

    def record(path: str, body: bytes):
        asked.extend(r for r in refs if r in path.lower())
        return None

    sg.gateway.answer_if = record
    sg.gateway.stall_if = lambda path, body: refs[0] in path.lower()
    task = asyncio.ensure_future(node.process_once())
    try:
        for _ in range(100):  # up to 10 s for the other three while the first one is held
            if set(refs[1:]) <= set(asked):
                break
            await asyncio.sleep(0.1)
        assert sg.gateway.stalled == 1 and set(refs[1:]) <= set(asked), asked
        assert not task.done() and await attested(node) == {}  # decisions wait for the first, in order
    finally:
        sg.gateway.heal()
    assert await task == 4
    assert sg.retries(0, "gateway-unavailable") == 0
    assert sorted((await attested(node)).values()) == [100, 200, 300, 400]


class _Approvals:
    """The signer's approver contract (``step``) for three refund orders: the first one's chain
    endpoint keeps failing (retryable), the second hits a bug, the third goes through."""

    def __init__(self, failing: bytes, buggy: bytes) -> None:
        self.failing, self.buggy, self.calls = failing, buggy, []

    async def step(self, *, release_id: bytes, payer: bytes, amount: int, sequence: int, progress: dict) -> dict:
        from bridge.errors import RpcUnavailable

        self.calls.append(release_id)
        if release_id == self.failing:
            raise RpcUnavailable("chain polkadot: no endpoint answered (timeout)")
        if release_id == self.buggy:
            raise KeyError("timepoint")
        return {"state": "done", "detail": ""}


async def test_one_failing_refund_approval_does_not_starve_the_others(chain, tmp_path):
    import asyncio

    from bridge.storage import releases as rel_repo
    from bridge.types import utcnow

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/approvals.sqlite")
    await db.migrate()
    rids = [refunds.release_id(b"\x07" * 32, i, "excess") for i in range(3)]
    async with db.begin() as s:
        for i, rid in enumerate(rids):
            await rel_repo.add_release(s, source=b"\x07" * 32, sequence=i << 16, chain="polkadot", purpose="excess",
                                       to=b"\x01" * 32, amount=10**10, release_id=rid, signature=b"",
                                       payment_id="", now=utcnow())
    approvals = _Approvals(rids[0], rids[1])
    registry = CollectorRegistry()
    k = KEYS[0]
    node = SignerNode(name="s0", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=db, watchers={},
                      settlement=EvmSettlement(chain.settlement_cfg, None),
                      domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])), gateway=None,
                      gateway_public_key="00" * 32, approvers={"polkadot": approvals}, wall_clock=WallClock(),
                      metrics=SignerMetrics(registry))
    loop = asyncio.create_task(node._approval_loop(interval=0.01))
    try:
        await asyncio.sleep(0.5)
        assert not loop.done(), "the approval loop stopped"
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        await node.settlement.aclose()
    async with db.begin() as s:
        rows = {r.release_id: r for r in await rel_repo.open_approvals(s, ["polkadot"])}
        summary, failed = await rel_repo.refund_summary(s)
    await db.dispose()
    assert failed == []
    assert summary == {"polkadot": {"done": 1, "pending": 2}}
    assert set(rows) == {rids[0], rids[1]}  # the third is done; the others wait with a backoff
    assert all(r.attempts == 1 and r.next_attempt_at > 0 for r in rows.values())
    assert approvals.calls.count(rids[0]) == 1 and approvals.calls.count(rids[1]) == 1  # not hammered
    labels = {"chain": "polkadot"}
    assert registry.get_sample_value("creditbridge_signer_retries_total", {**labels, "reason": "rpc-unavailable"}) == 1
    assert registry.get_sample_value("creditbridge_signer_retries_total", {**labels, "reason": "internal"}) == 1
