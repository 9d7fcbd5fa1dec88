"""Treasury sweeps of the TON lock (issue 12) on the local TON chain (real TVM, real lock, an
unmodified LiteBalancer) with the settlement chain on anvil: four signer nodes with their
sweepers (tests/integration/treasury_harness.py says what is given to them and what is real).

A credited payment is swept once to the treasury -- the lock's balance drops by exactly the
amount, the treasury receives the amount minus the release's own fees; an overpayment's excess
is refunded and never swept; a deposit whose credit is not recorded is not swept; a replayed
sweep is refused by the lock (exit 410); a sweep below the lock's min_release waits and rolls
into the next epoch instead of being lost."""

from __future__ import annotations

import asyncio
import os

import aiohttp
from pytoniq.liteclient.client import LiteServerError
import pytest

from bridge.payments import refunds, rules
from bridge.payments.refunds import RefundWorker, ReleasesClient
from relayers.ton import lock as L
from relayers.ton.custody import TonCustody
from devnet.ton.localchain import LOCAL_GLOBAL_ID
from relayers.ton.release import TonLockReleaser, TonRefundSigner
from relayers.ton.watcher import TonWatcher
from tests.integration.ton.conftest import TON, TonEnv
from tests.integration.treasury_harness import (  # noqa: F401  (settlement is a fixture)
    close, credit, learn, make_node, processed, serve, settlement)

MIN_RELEASE = L.DEFAULT_MIN_RELEASE


async def _observe(ton: TonEnv, watcher: TonWatcher, start: int, refs: list[bytes]) -> dict[bytes, object]:
    """The lock's deposits carrying ``refs``, as the real watcher reads them."""
    for _ in range(100):
        end = await watcher.finalized_height()
        got = {o.reference: o for o in await watcher.fetch_deposits(start, end) if o.reference in refs}
        if len(got) == len(refs):
            return got
        await ton.wait_block()
    raise AssertionError("deposits not observed")


async def test_a_credited_payment_is_swept_once_and_small_epochs_roll_over(ton: TonEnv, settlement, tmp_path):
    cfg = ton.config(min_refund=MIN_RELEASE)
    treasury = os.urandom(32)  # a fresh basechain account: its balance is what sweeps paid
    probe = TonWatcher(cfg)
    start = await probe.finalized_height() + 1
    refs = [os.urandom(32) for _ in range(5)]
    amounts = [3 * TON, 2 * TON, TON, 3 * 10**7, 3 * 10**7]  # the last two below min_release each
    for i, (ref, amount) in enumerate(zip(refs, amounts)):
        await ton.pay(i % 3, amount, L.deposit_body(ref))
    obs = await _observe(ton, probe, start, refs)
    exact, over, pending, small1, small2 = (obs[r] for r in refs)
    excess = TON // 2
    deposits = [(exact, rules.Decision(rules.CREDIT, 300, exact.amount, 0)),
                (over, rules.Decision(rules.CREDIT, 150, over.amount - excess, excess)),
                (pending, rules.Decision(rules.CREDIT, 100, pending.amount, 0)),
                (small1, rules.Decision(rules.CREDIT, 3, small1.amount, 0)),
                (small2, rules.Decision(rules.CREDIT, 3, small2.amount, 0))]
    nodes, runners, session = [], [], aiohttp.ClientSession()
    releaser = TonLockReleaser(cfg, timeout=30)
    try:
        height = await probe.finalized_height()
        for i, seed in enumerate(ton.seeds):
            node = await make_node(tmp_path, i, chain="ton", token="TON", watcher=TonWatcher(cfg),
                                   custody=TonCustody(cfg), treasury=treasury, settlement=settlement,
                                   min_refund=cfg.min_refund,
                                   refund_signers={"ton": TonRefundSigner.from_config(cfg, seed)})
            await learn(node, "ton", height, deposits)
            nodes.append(node)
        urls = [await serve(n, runners) for n in nodes]
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in urls], releasers={"ton": releaser})

        async def sweep_all() -> list[int]:
            return [await n.sweeper.step() for n in nodes]

        async def sweeps(i: int = 0) -> list[dict]:
            return [r for r in await nodes[i].releases_after(0, 1000) if r["purpose"] == "sweep"]

        async def treasury_balance() -> int:
            state = await ton.lb.get_account_state(L.basechain(treasury))
            return state.balance

        # attested, not credited: nothing earned whatever epochs close
        await settlement.next_epoch()
        await settlement.mine(5)
        assert await sweep_all() == [0, 0, 0, 0]
        # the exact payment and the overpayment are credited; the third is not (yet)
        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits[:2], block)
        assert await sweep_all() == [0, 0, 0, 0]  # its epoch is not closed yet
        await settlement.mine(5)
        assert await sweep_all() == [1, 1, 1, 1]
        earned = exact.amount + over.amount - excess
        got = [await sweeps(i) for i in range(4)]
        assert all(len(g) == 1 for g in got)
        assert len({(g[0]["release_id"], g[0]["to"], g[0]["amount"], g[0]["signer"]) for g in got}) == 4
        sweep = got[0][0]
        assert sweep["to"] == "0x" + treasury.hex() and int(sweep["amount"]) == earned
        source = await probe.source()
        rid = bytes.fromhex(sweep["release_id"][2:])
        assert rid == refunds.release_id(source, sweep["sequence"], "sweep")

        # the worker pays the sweep and the excess refund; the lock pays each release's fees out of it
        custody = TonCustody(cfg)
        before = await probe.finalized_height()
        lock_before = await custody.balance(before)
        assert await worker.step() == 2
        await ton.wait_block()
        after = await probe.finalized_height()
        # exactly the two amounts, plus the lock's own storage rent (nanotons a transaction)
        assert 0 <= lock_before - await custody.balance(after) - (earned + excess) < 1000
        received = await treasury_balance()
        assert earned - L.RELEASE_FEE_BOUND < received < earned  # the amount minus the release's fees
        assert await custody.released(after, {rid}) == {rid}
        assert await TonCustody(cfg).released(before, {rid}) == set()  # read at a block: not paid then
        # the nodes find it paid; nothing more is swept, the audit trail says so
        for n in nodes:
            await processed(n, "ton", after)
        assert await sweep_all() == [0, 0, 0, 0]
        view = await nodes[0].sweeper.view()
        (row,) = view["sweeps"]
        assert row["state"] == "paid" and row["amount"] == str(earned)
        assert sorted(int(d["earned"]) for d in row["deposits"]) == sorted([exact.amount, over.amount - excess])
        assert view["chains"]["ton"]["swept"] == view["chains"]["ton"]["earned"] == str(earned)

        # a replay: the worker counts it done without paying; the raw message is refused on chain
        again = RefundWorker(signers=[ReleasesClient(u, session) for u in urls], releasers={"ton": releaser})
        await again.step()
        await ton.wait_block(3)  # past the liteserver's duplicate window: a genuine replay
        sigs = {bytes.fromhex(r["signer"][2:]): bytes.fromhex(r["signature"][2:]) for r in [g[0] for g in got][:3]}
        payload = L.release_payload(global_id=LOCAL_GLOBAL_ID, lock=ton.lock, destination=L.basechain(treasury),
                                    amount=earned, release_id=rid)
        with pytest.raises(LiteServerError, match=f"exit code {L.ERR_RELEASE_USED}"):
            await ton.lb.raw_send_message(L.release_message(ton.lock, L.release_body(payload, sigs)).to_boc())
        await ton.wait_block()
        assert await treasury_balance() == received

        # a credited deposit below min_release: its epoch is skipped (the lock would refuse it) ...
        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits[3:4], block)
        await settlement.mine(5)
        assert await sweep_all() == [0, 0, 0, 0]
        assert [len(await sweeps(i)) for i in range(4)] == [1, 1, 1, 1]
        # ... and rolls into the next epoch that reaches it, with everything earned since
        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits[4:5], block)
        await settlement.mine(5)
        assert await sweep_all() == [1, 1, 1, 1]
        rolled = [s for s in await sweeps() if s["release_id"] != sweep["release_id"]]
        assert [int(s["amount"]) for s in rolled] == [small1.amount + small2.amount]
        assert rolled[0]["sequence"] == block // 4 + (block % 4 > 0)  # the epoch that reached the minimum
        assert await worker.step() == 1
        await ton.wait_block()
        paid_too = await treasury_balance() - received
        assert small1.amount + small2.amount - L.RELEASE_FEE_BOUND < paid_too < small1.amount + small2.amount
        # the uncredited deposit was never swept
        view = await nodes[0].sweeper.view()
        covered = {d["sequence"] for w in view["sweeps"] for d in w["deposits"]}
        assert pending.sequence not in covered and {small1.sequence, small2.sequence} <= covered
        await asyncio.sleep(0)
    finally:
        for r in runners:
            await r.cleanup()
        for n in nodes:
            for w in n.watchers.values():
                await w.aclose()
        await close(nodes)
        await releaser.aclose()
        await probe.aclose()
        await session.close()
