"""Treasury sweeps on a real anvil (issue 12): four in-process signer nodes with their sweepers,
the real CreditLock and CreditLedger, the real gateway, the aggregator settling credits and the
refund worker submitting releases. A credited payment is swept once to the treasury (exactly its
earned amount; the worker pays the gas); an overpayment's excess is refunded and never swept; a
governor-held deposit is not swept until its credit is recorded; a replayed or redirected sweep
is refused by the lock; a sweep that would leave the custody short of what it owes is refused."""

from __future__ import annotations

import logging
from decimal import Decimal

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge import governor as gov
from bridge.committee import digest as dg
from bridge.committee.aggregate import Aggregator, SignerClient
from bridge.committee.treasury import Sweeper, TreasuryMetrics
from bridge.config import EvmChainConfig
from bridge.errors import TransactionFailed
from bridge.hashing import keccak256
from bridge.payments import refunds
from bridge.payments.refunds import RefundWorker, ReleasesClient
from bridge.storage.db import Database
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.contracts import deploy
from relayers.evm.custody import EvmCustody
from relayers.evm.release import EvmLockReleaser
from relayers.evm.settlement import EvmSettlement

from tests.integration.lifecycle.test_committee_flow import (  # noqa: F401  (committee_of is a fixture)
    CHAIN_ID,
    GAS,
    KEYS,
    PAYER,
    Chain,
    balance,
    chain_settings,
    committee_of,
    pay,
    statuses,
    step_all,
)

EPOCH = 4  # settlement blocks per epoch


def fresh_address(tag: str) -> bytes:
    return dg.address_of(keccak256(f"creditbridge-treasury-test/{tag}".encode()))


class Sweeps:
    """The sweepers of a committee, an aggregator and a refund worker over the same anvil."""

    def __init__(self, chain, committee, treasury: bytes, tmp_path, reserve: dict | None = None) -> None:
        self.chain, self.c, self.treasury = chain, committee, treasury
        self.registry = CollectorRegistry()
        metrics = TreasuryMetrics(self.registry)
        self.custodies = [EvmCustody(chain.cfg) for _ in committee.nodes]
        for node, custody in zip(committee.nodes, self.custodies):
            node.sweeper = Sweeper(node, addresses={"ethereum": treasury}, epoch_blocks=EPOCH,
                                   custody={"ethereum": custody}, tokens={"ethereum": "ETH"}, reserve=reserve,
                                   settlement_start=chain.settlement_cfg.start_block,
                                   metrics=metrics if node is committee.nodes[0] else None)
        self.session = aiohttp.ClientSession()
        self.settlement = EvmSettlement(chain.settlement_cfg, DEV_PRIVATE_KEYS[8])  # its own nonce
        self.releaser = EvmLockReleaser(chain.cfg, GAS)
        self.tmp_path = tmp_path
        self.agg: Aggregator | None = None
        self.worker = RefundWorker(signers=[ReleasesClient(u, self.session) for u in committee.urls[:3]],
                                   releasers={"ethereum": self.releaser})

    async def start(self) -> "Sweeps":
        db = Database(f"sqlite+aiosqlite:///{self.tmp_path}/aggregator.sqlite")
        await db.migrate()
        self.agg = Aggregator(signers=[SignerClient(u, self.session) for u in self.c.urls],
                              settlement=self.settlement, domain=self.c.nodes[0].domain, db=db, max_batch_wait=0)
        self.agg_db = db
        return self

    async def settle(self) -> int:
        return await self.agg.step()

    async def close_epoch(self) -> None:
        """Mine past the next epoch boundary, let every signer's follower catch up."""
        await self.chain.anvil.mine(EPOCH + 1)
        await step_all(self.c)

    async def sweep_all(self) -> list[int]:
        return [await n.sweeper.step() for n in self.c.nodes]

    async def releases(self, node=0, purpose: str = "sweep") -> list[dict]:
        return [r for r in await self.c.nodes[node].releases_after(0, 1000) if r["purpose"] == purpose]

    def metric(self, name: str) -> float:
        return self.registry.get_sample_value(name, {"chain": "ethereum", "token": "ETH"}) or 0

    async def aclose(self) -> None:
        for c in self.custodies:
            await c.aclose()
        await self.releaser.aclose()
        await self.settlement.aclose()
        await self.session.close()
        if self.agg is not None:
            await self.agg_db.dispose()


@pytest.fixture(scope="module")
async def anvil():
    node = await AnvilNode.start(chain_id=CHAIN_ID)
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture
async def chain(anvil):
    """A fresh lock and ledger per test (each test's custody holds only its own deposits)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
    addrs = [AsyncWeb3.to_checksum_address(dg.address_of(k)) for k in KEYS]
    lock = await deploy(w3, "CreditLock", [addrs, 3, 10**9], DEV_PRIVATE_KEYS[0])
    ledger = await deploy(w3, "CreditLedger", [addrs, 3, AsyncWeb3.to_checksum_address(dg.address_of(
        bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])))], DEV_PRIVATE_KEYS[0])
    start = await w3.eth.block_number
    await w3.provider.disconnect()
    cfg = EvmChainConfig(family="evm", name="ethereum", chain_id=CHAIN_ID, rpc=[anvil.rpc_url], token="ETH",
                         finality=0, contracts={"lock": lock}, start_block=start)
    st = EvmChainConfig(family="evm", name="settlement", chain_id=CHAIN_ID, rpc=[anvil.rpc_url], finality=0,
                        contracts={"credits": ledger}, start_block=start)
    return Chain(anvil, lock, ledger, cfg, st)


@pytest.fixture
async def sweeps(chain, tmp_path):
    made = []

    async def make(committee, treasury, **kw) -> Sweeps:
        d = tmp_path / f"agg{len(made)}"
        d.mkdir()
        s = await Sweeps(chain, committee, treasury, d, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.aclose()


async def test_a_credited_payment_is_swept_once_and_an_excess_is_refunded_not_swept(chain, lifecycle, committee_of,
                                                                                    sweeps):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    treasury = fresh_address("one")
    sw = await sweeps(c, treasury)
    payer = dg.address_of(bytes.fromhex(PAYER[2:]))
    exact = await lc.payment(None, credits="500")
    over = await lc.payment(None, credits="100")
    extra = 10**15
    await pay(chain, exact, int(exact["amount"]))
    await pay(chain, over, int(over["amount"]) + extra)
    await step_all(c)
    # attested, not credited yet: nothing is earned, whatever epochs close
    await sw.close_epoch()
    assert await sw.sweep_all() == [0, 0, 0, 0]
    assert await sw.settle() == 2
    await sw.close_epoch()
    assert await sw.sweep_all() == [1, 1, 1, 1]
    earned = int(exact["amount"]) + int(over["amount"])
    got = [await sw.releases(i) for i in range(4)]
    assert all(len(g) == 1 for g in got)
    assert len({(g[0]["release_id"], g[0]["to"], g[0]["amount"]) for g in got}) == 1  # byte-identical
    sweep = got[0][0]
    assert sweep["to"] == "0x" + treasury.hex() and int(sweep["amount"]) == earned
    src = c.nodes[0].watchers["ethereum"].source
    assert bytes.fromhex(sweep["release_id"][2:]) == refunds.release_id(src, sweep["sequence"], "sweep")
    # the worker pays the sweep and the refund of the excess; the treasury gets exactly the earned amount
    before_payer = await balance(chain, payer)
    assert await sw.worker.step() == 2
    assert await balance(chain, treasury) == earned
    assert await balance(chain, payer) - before_payer == extra
    assert await sw.worker.step() == 0
    # a replayed sweep (same id, same signatures) is refused by the lock
    again = RefundWorker(signers=[ReleasesClient(u, sw.session) for u in c.urls], releasers={"ethereum": sw.releaser})
    assert await again.step() == 2 and all(tx == b"" for _, tx in again.submitted)
    # later epochs: nothing more is earned, nothing more is swept
    await sw.close_epoch()
    assert await sw.sweep_all() == [0, 0, 0, 0]
    assert await balance(chain, treasury) == earned
    # the audit trail and the metrics
    async with sw.session.get(c.urls[0] + "/v1/sweeps") as r:
        assert r.status == 200
        view = await r.json()
    (row,) = view["sweeps"]
    assert row["state"] == "paid" and row["amount"] == str(earned) and row["to"] == "0x" + treasury.hex()
    assert sorted(int(d["earned"]) for d in row["deposits"]) == sorted([int(exact["amount"]), int(over["amount"])])
    assert view["chains"]["ethereum"]["earned"] == view["chains"]["ethereum"]["swept"] == str(earned)
    assert view["chains"]["ethereum"]["signed_unpaid"] == "0"
    assert sw.metric("creditbridge_treasury_sweeps_total") == 1
    # the operator's command reads every signer's view; they agree
    import asyncio
    import contextlib
    import io
    import json

    from bridge import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        args = ["treasury", "status", "--json", *[a for u in c.urls for a in ("--signer", u)]]
        assert await asyncio.to_thread(cli.main, args) == 0
    status = json.loads(out.getvalue())["chains"]["ethereum"]
    assert status["earned"] == status["swept"] == str(earned) and status["disagreeing_signers"] == []
    assert status["last_sweep"]["state"] == "paid" and status["last_sweep"]["amount"] == str(earned)
    # a signer that lost its sweep records finds the epoch paid on chain: records it, signs nothing
    from sqlalchemy import delete

    from bridge.storage.models import ReleaseRow, SweepItemRow, SweepRow

    lost = c.nodes[3]
    async with lost.db.begin() as s:
        for table in (SweepRow, SweepItemRow):
            await s.execute(delete(table))
        await s.execute(delete(ReleaseRow).where(ReleaseRow.purpose == "sweep"))
    assert await lost.sweeper.step() == 0
    assert await sw.releases(3) == []
    (again_row,) = (await lost.sweeper.view())["sweeps"]
    assert (again_row["state"], again_row["amount"], again_row["release_id"]) == ("paid", str(earned),
                                                                                 sweep["release_id"])
    assert sw.metric("creditbridge_treasury_swept") == earned == sw.metric("creditbridge_treasury_earned")


async def test_a_governor_held_deposit_is_not_swept_until_credited(chain, lifecycle, committee_of, sweeps):
    limits = {"ethereum": gov.Limits(Decimal("1000"), Decimal("2"), 600)}
    lc = await lifecycle(chains=chain_settings(chain)["chains"],
                         governor={"chains": {"ethereum": {"daily_limit_usd": "1000", "large_payment_usd": "2",
                                                           "large_payment_delay_seconds": 600}}})
    c = await committee_of(lc, governor=limits)
    treasury = fresh_address("governed")
    sw = await sweeps(c, treasury)
    big = await lc.payment(None, credits="500")  # $5 > $2: held
    small = await lc.payment(None, credits="100")
    await pay(chain, big, int(big["amount"]))
    await pay(chain, small, int(small["amount"]))
    await step_all(c)
    assert sorted((await statuses(c.nodes[0])).values()) == ["attested", "queued"]
    assert await sw.settle() == 1
    await sw.close_epoch()
    assert await sw.sweep_all() == [1, 1, 1, 1]
    assert [int(r["amount"]) for r in await sw.releases()] == [int(small["amount"])]
    assert await sw.worker.step() == 1
    assert await balance(chain, treasury) == int(small["amount"])
    # the governor releases it; once its credit is recorded the next epoch sweeps it
    c.clock.t += 3600
    await step_all(c)
    assert await sw.settle() == 1
    await sw.close_epoch()
    assert await sw.sweep_all() == [1, 1, 1, 1]
    assert sorted(int(r["amount"]) for r in await sw.releases()) == sorted([int(small["amount"]), int(big["amount"])])
    assert await sw.worker.step() == 1
    assert await balance(chain, treasury) == int(small["amount"]) + int(big["amount"])


async def test_a_redirected_sweep_is_refused_and_an_insolvent_one_not_signed(chain, lifecycle, committee_of, sweeps,
                                                                             caplog):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    treasury = fresh_address("redirect")
    # a reserve beyond the custody's balance: every sweep would leave it short
    sw = await sweeps(c, treasury, reserve={"ethereum": 10**30})
    p = await lc.payment(None, credits="100")
    await pay(chain, p, int(p["amount"]))
    await step_all(c)
    assert await sw.settle() == 1
    await sw.close_epoch()
    with caplog.at_level(logging.ERROR, logger="creditbridge.treasury"):
        assert await sw.sweep_all() == [0, 0, 0, 0]
    refused = [r.getMessage() for r in caplog.records if "REFUSED" in r.getMessage()]
    assert refused and str(int(p["amount"])) in refused[0] and str(10**30) in refused[0]
    assert sw.metric("creditbridge_treasury_solvency_refusals_total") == 1
    assert await sw.releases() == []
    # the reserve lifted (an operator's config change): the same epoch is signed now
    for n in c.nodes:
        n.sweeper.reserve = {}
    assert await sw.sweep_all() == [1, 1, 1, 1]
    rel = [(await sw.releases(i))[0] for i in range(3)]
    rid, amount = bytes.fromhex(rel[0]["release_id"][2:]), int(rel[0]["amount"])
    sigs = [(bytes.fromhex(r["signer"][2:]), bytes.fromhex(r["signature"][2:])) for r in rel]
    thief = fresh_address("thief")
    # the committee's signatures do not hold for another destination or amount: the lock refuses
    with pytest.raises(TransactionFailed):
        await sw.releaser.release(thief, amount, rid, sigs)
    with pytest.raises(TransactionFailed):
        await sw.releaser.release(treasury, amount + 1, rid, sigs)
    assert await balance(chain, thief) == 0
    assert await sw.worker.step() == 1
    assert await balance(chain, treasury) == amount == int(p["amount"])


async def test_a_below_one_credit_deposit_is_swept_with_the_deposit_that_completes_it(chain, lifecycle,
                                                                                      committee_of, sweeps):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    treasury = fresh_address("partial")
    sw = await sweeps(c, treasury)
    p = await lc.payment(None, credits="100")
    tiny = 10**12  # below one credit's worth (0.01 USD at 3000 USD/ETH is 3.3e12 wei)
    await pay(chain, p, tiny)
    await step_all(c)
    assert await sw.settle() == 0  # nothing to credit yet
    await sw.close_epoch()
    assert await sw.sweep_all() == [0, 0, 0, 0]
    view = await c.nodes[0].sweeper.view()
    assert view["chains"]["ethereum"]["stranded"] == str(tiny)  # kept and reported, not swept
    await pay(chain, p, int(p["amount"]) - tiny)
    await step_all(c)
    assert await sw.settle() == 1
    await sw.close_epoch()
    assert await sw.sweep_all() == [1, 1, 1, 1]
    (w,) = (await c.nodes[0].sweeper.view())["sweeps"]
    assert sorted(int(d["earned"]) for d in w["deposits"]) == sorted([tiny, int(p["amount"]) - tiny])
    assert await sw.worker.step() == 1
    assert await balance(chain, treasury) == int(p["amount"])
