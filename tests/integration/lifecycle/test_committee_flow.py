"""The signers' side of the payment lifecycle on a real anvil: in-process signer nodes (their
own databases, EvmWatchers, the gateway over HTTP) decide deposits with the shared rule; the
governor holds a large payment until its release time and then attests it; overpaid and
late deposits are refunded on CreditLock by a committee-signed ``release`` that the refund
worker submits, once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge import governor as gov
from bridge.committee import digest as dg
from bridge.committee.gateway import GatewayClient
from bridge.committee.http import create_signer_app
from bridge.committee.signer import SignerNode
from bridge.config import EvmChainConfig
from bridge.hashing import keccak256
from bridge.keystore import SecretKey
from bridge.payments import refunds
from bridge.payments.refunds import RefundWorker, ReleasesClient, lock_domain
from bridge.storage import attestations as att_repo
from bridge.storage import governor as gov_repo
from bridge.storage import observations as obs_repo
from bridge.storage.db import Database
from bridge.types import SettlementDomain, quote_id_bytes
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.contracts import deploy
from relayers.evm.release import EvmLockReleaser
from relayers.evm.settlement import EvmSettlement
from relayers.evm.wallet import send_lock
from relayers.evm.watcher import EvmWatcher

from tests.integration.lifecycle.conftest import BENEFICIARY

CHAIN_ID = 31337
KEYS = sorted((keccak256(f"creditbridge-lifecycle/{i}".encode()) for i in range(4)), key=dg.address_of)
PAYER = DEV_PRIVATE_KEYS[1]
GAS = DEV_PRIVATE_KEYS[9]


class WallClock:
    def __init__(self) -> None:
        import time

        self.t = time.time()

    def __call__(self) -> float:
        return self.t


@dataclass
class Chain:
    anvil: AnvilNode
    lock: str
    ledger: str
    cfg: EvmChainConfig
    settlement_cfg: EvmChainConfig


@pytest.fixture(scope="module")
async def chain():
    node = await AnvilNode.start(chain_id=CHAIN_ID)
    w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
    addrs = [AsyncWeb3.to_checksum_address(dg.address_of(k)) for k in KEYS]
    lock = await deploy(w3, "CreditLock", [addrs, 3, 10**9], DEV_PRIVATE_KEYS[0])
    ledger = await deploy(w3, "CreditLedger", [addrs, 3, AsyncWeb3.to_checksum_address(dg.address_of(
        bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])))], DEV_PRIVATE_KEYS[0])
    await w3.provider.disconnect()
    cfg = EvmChainConfig(family="evm", name="ethereum", chain_id=CHAIN_ID, rpc=[node.rpc_url], token="ETH",
                         finality=0, contracts={"lock": lock})
    st = EvmChainConfig(family="evm", name="settlement", chain_id=CHAIN_ID, rpc=[node.rpc_url], finality=0,
                        contracts={"credits": ledger})
    try:
        yield Chain(node, lock, ledger, cfg, st)
    finally:
        await node.stop()


@dataclass
class Committee:
    nodes: list[SignerNode]
    urls: list[str]
    clock: WallClock


@pytest.fixture
async def committee_of(chain, tmp_path):
    """``await committee_of(gateway, governor=...)``: 4 signer nodes served on 127.0.0.1
    (``bound(i)``: node i's price bound; ``gateway_url``: where the nodes fetch terms)."""
    made = []

    async def make(lc, *, governor=None, grace: int = 0, bound=None, gateway_url: str | None = None) -> Committee:
        session = aiohttp.ClientSession()
        clock = WallClock()
        nodes, urls, runners = [], [], []
        for i, k in enumerate(KEYS):
            db = Database(f"sqlite+aiosqlite:///{tmp_path}/signer-{len(made)}-{i}.sqlite")
            await db.migrate()
            node = SignerNode(
                name=f"s{i}", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=db,
                watchers={"ethereum": EvmWatcher(chain.cfg)}, settlement=EvmSettlement(chain.settlement_cfg, None),
                domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])),
                gateway=GatewayClient(gateway_url or lc.url, session), price_bound=bound(i) if bound else None, gateway_public_key=lc.app[SIGNER_KEY].public_key,
                late_grace_seconds=grace, lock_domains={"ethereum": lock_domain(CHAIN_ID, bytes.fromhex(chain.lock[2:]))},
                governor=governor or {}, credit_price_usd=Decimal("0.01"), wall_clock=clock, poll_interval=0.1)
            runner = web.AppRunner(create_signer_app(node, __import__("prometheus_client").CollectorRegistry()))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            nodes.append(node)
            urls.append(f"http://{host}:{port}")
            runners.append(runner)
        made.append((session, nodes, runners))
        return Committee(nodes, urls, clock)

    yield make
    for session, nodes, runners in made:
        for r in runners:
            await r.cleanup()
        for n in nodes:
            for w in n.watchers.values():
                await w.aclose()
            await n.settlement.aclose()
            await n.db.dispose()
        await session.close()


from bridge.api.keys import SIGNER as SIGNER_KEY  # noqa: E402


def chain_settings(chain: Chain, **extra) -> dict:
    return {"chains": [chain.cfg.model_dump(mode="json"), chain.settlement_cfg.model_dump(mode="json")], **extra}


async def step_all(c: Committee) -> None:
    for n in c.nodes:
        for f in n.followers:
            await f.step()
        await n.process_once()


async def statuses(node: SignerNode) -> dict[int, str]:
    async with node.db.begin() as s:
        out = {}
        for st in ("new", "queued", "attested", "rejected"):
            for o in await obs_repo.observations_by_status(s, st, 1000):
                out[o.observation.sequence] = st
        return out


async def attested(node: SignerNode) -> dict[int, int]:
    async with node.db.begin() as s:
        return {a.credit.sequence: a.credit.credits for a in await att_repo.attestations_after(s, 0, 1000)}


async def pay(chain: Chain, p: dict, value: int, key: str = PAYER) -> None:
    await send_lock(chain.anvil.rpc_url, key, chain.lock, p["reference"], value)


async def balance(chain: Chain, address: bytes) -> int:
    return int(await chain.anvil.rpc("eth_getBalance", "0x" + address.hex(), "latest"), 16)


async def test_governor_holds_a_large_payment_then_releases_it(chain, lifecycle, committee_of):
    limits = {"ethereum": gov.Limits(Decimal("1000"), Decimal("2"), 600)}
    lc = await lifecycle(chains=chain_settings(chain)["chains"],
                         governor={"chains": {"ethereum": {"daily_limit_usd": "1000", "large_payment_usd": "2",
                                                           "large_payment_delay_seconds": 600}}})
    c = await committee_of(lc, governor=limits)
    big = await lc.payment(None, credits="500")  # $5 > $2
    small = await lc.payment(None, credits="100")  # $1
    await pay(chain, big, int(big["amount"]))
    await pay(chain, small, int(small["amount"]))
    await step_all(c)
    for n in c.nodes:
        st = await statuses(n)
        assert sorted(st.values()) == ["attested", "queued"]
        att = await attested(n)
        assert list(att.values()) == [100]
    big_seq = next(seq for seq, s in (await statuses(c.nodes[0])).items() if s == "queued")
    items = []
    for n in c.nodes:  # every signer fixed the same release time
        async with n.db.begin() as s:
            source = n.watchers["ethereum"].source
            items.append(await gov_repo.get_item(s, source, big_seq))
    assert len({i.release_at for i in items}) == 1 and items[0].release_at == items[0].block_time + 600
    # the API shows it queued (same rule, its own copy of the chain facts)
    admin = await lc.merchant("ops", role="admin")
    await lc.deposit_from_chain(chain.cfg)
    status, st = await lc.request("GET", "/v1/admin/status", admin)
    assert status == 200 and [(q["payment_id"], q["release_at"]) for q in st["queued"]] == [
        (big["id"], items[0].release_at)]
    # still held a moment before the release time
    c.clock.t = items[0].release_at - 1
    await step_all(c)
    for n in c.nodes:
        assert sorted((await attested(n)).values()) == [100]
    c.clock.t = items[0].release_at
    await step_all(c)
    for n in c.nodes:
        assert sorted((await attested(n)).values()) == [100, 500]
        assert set((await statuses(n)).values()) == {"attested"}
    lc.clock.now = lc.clock.now + timedelta(seconds=items[0].release_at - lc.clock.now.timestamp() + 1)
    status, st = await lc.request("GET", "/v1/admin/status", admin)
    assert status == 200 and st["queued"] == []


async def test_overpaid_and_late_deposits_are_refunded_once(chain, lifecycle, committee_of):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    payer = dg.address_of(bytes.fromhex(PAYER[2:]))
    over = await lc.payment(None, credits="500")
    extra = 10**15
    await pay(chain, over, int(over["amount"]) + extra)
    # a payment whose quote expired an hour before the deposit's block
    lc.clock.now = lc.clock.now - timedelta(hours=1)
    late = await lc.payment(None, credits="100")
    lc.clock.now = lc.clock.now + timedelta(hours=1)
    await pay(chain, late, int(late["amount"]))
    await step_all(c)  # the gateway has not seen the late deposit yet: signers wait for its decision
    for n in c.nodes:
        assert sorted((await attested(n)).values()) == [500]
        assert [r["purpose"] for r in await n.releases_after(0, 100)] == ["excess"]
    await lc.deposit_from_chain(chain.cfg)  # now it has (late crediting is off: it says hold)
    c.clock.t += 2  # the waiting deposit's first backoff (it left the window to the others meanwhile)
    await step_all(c)
    for n in c.nodes:
        assert sorted((await attested(n)).values()) == [500]  # credited the quote, not the excess
        rel = await n.releases_after(0, 100)
        assert sorted((r["purpose"], int(r["amount"])) for r in rel) == sorted(
            [("excess", extra), ("late", int(late["amount"]))])
        assert all(r["to"] == "0x" + payer.hex() for r in rel)
    session = aiohttp.ClientSession()
    async with session.get(c.urls[0] + "/v1/refunds") as r:  # the operator's view of a node's refunds
        assert r.status == 200 and await r.json() == {"by_chain": {"ethereum": {"signed": 2}}, "failed": [],
                                                          "dust": {}, "dust_latest": []}
    releaser = EvmLockReleaser(chain.cfg, GAS)
    try:
        before = await balance(chain, payer)
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in c.urls[:3]],  # 3 of 4 suffice
                              releasers={"ethereum": releaser})
        assert await worker.step() == 2
        assert await balance(chain, payer) - before == extra + int(late["amount"])
        assert await worker.step() == 0  # nothing twice
        # another (untrusted) worker tries the same releases: the lock refuses them
        again = RefundWorker(signers=[ReleasesClient(u, session) for u in c.urls], releasers={"ethereum": releaser})
        assert await again.step() == 2 and all(tx == b"" for _, tx in again.submitted)
        assert await balance(chain, payer) - before == extra + int(late["amount"])
        # the release ids are the documented hash of deposit id and purpose
        ids = {r for r, _ in worker.submitted}
        src = c.nodes[0].watchers["ethereum"].source
        seqs = sorted((await statuses(c.nodes[0])))
        assert ids <= {refunds.release_id(src, s, p) for s in seqs for p in ("excess", "late")}
    finally:
        await releaser.aclose()
        await session.close()
    # the API's state machine agrees with the committee
    await lc.deposit_from_chain(chain.cfg)
    await lc.watcher.step()
    _, got_over = await lc.request("GET", f"/v1/payments/{over['id']}")
    assert got_over["state"] == "overpaid" and got_over["refundable_amount"] == str(extra)
    _, got_late = await lc.request("GET", f"/v1/payments/{late['id']}")
    assert got_late["state"] == "late" and got_late["refundable_amount"] == late["amount"]


async def test_a_forged_or_unjustified_release_is_not_submitted(chain, lifecycle, committee_of):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    p = await lc.payment(None, credits="100")
    await pay(chain, p, int(p["amount"]))  # exact: nothing held, nothing signed
    await step_all(c)
    for n in c.nodes:
        assert await n.releases_after(0, 10) == []
    # two signers signing an unjustified release is below the threshold of 3
    releaser = EvmLockReleaser(chain.cfg, GAS)
    try:
        rid = refunds.release_id(b"\x00" * 32, 0, "excess")
        to = dg.address_of(bytes.fromhex(GAS[2:]))
        d = dg.release_digest(releaser.domain, to, 1, rid)
        sigs = [(dg.address_of(k), dg.sign_digest(k, d)) for k in KEYS[:2]]
        from bridge.errors import TransactionFailed

        with pytest.raises(TransactionFailed):
            await releaser.release(to, 1, rid, sigs)
    finally:
        await releaser.aclose()


async def test_a_late_deposit_is_credited_at_a_fresh_quote_within_the_tolerance(chain, lifecycle, committee_of):
    """Late crediting on (2% tolerance) and the price unchanged: the gateway decides "credit" at
    a fresh quote and signs it; every signer verifies that decision with the pinned key and the
    deposit's own facts and attests the fresh quote's credits; the overpaid remainder at the
    fresh price is refunded as "late". The API shows the payment ``late`` while its credit is
    pending (nothing is settled here: no aggregator), with only the remainder refundable."""
    lc = await lifecycle(chains=chain_settings(chain)["chains"],
                         payments={"webhooks": {"allow_loopback": True}, "late_tolerance_bps": 200})
    c = await committee_of(lc)
    lc.clock.now = lc.clock.now - timedelta(hours=1)
    late = await lc.payment(None, credits="100")
    lc.clock.now = lc.clock.now + timedelta(hours=1)
    extra = 10**14
    await pay(chain, late, int(late["amount"]) + extra)
    await lc.deposit_from_chain(chain.cfg)
    await step_all(c)
    quote_ids, seqs = set(), set()
    for n in c.nodes:
        async with n.db.begin() as s:
            atts = await att_repo.attestations_after(s, 0, 100)
        assert [a.credit.credits for a in atts] == [100]  # the fresh quote's credits, not more
        quote_ids |= {a.credit.quote_id for a in atts}
        seqs |= {a.credit.sequence for a in atts}
        rel = await n.releases_after(0, 100)
        assert [(r["purpose"], int(r["amount"])) for r in rel if int(r["sequence"]) in seqs] == [("late", extra)]
    (fresh,) = quote_ids  # all signers name the same, fresh quote
    assert fresh != quote_id_bytes(late["quote_id"])
    # the decision the signers followed is the stored, signed one; asking again gives the same
    src = c.nodes[0].watchers["ethereum"].source
    (seq,) = seqs
    path = f"/v1/payments/by-reference/{late['reference']}/late/0x{src.hex()}/{seq}"
    status, first = await lc.request("GET", path)
    status2, second = await lc.request("GET", path)
    assert status == status2 == 200 and first == second and first["decision"] == "credit"
    assert first["credits"] == "100" and first["refundable"] == str(extra)
    await lc.watcher.step()
    _, got = await lc.request("GET", f"/v1/payments/{late['id']}")
    assert got["state"] == "late" and got["refundable_amount"] == str(extra), got
