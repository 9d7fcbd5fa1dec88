"""Treasury sweeps of the Asset Hub committee account (issue 12) on chopsticks (the real Asset
Hub runtime), with the settlement chain on anvil: three signer nodes (committee threshold 2 of
3) with their sweepers; each stores the sweep and its own approval loop (``_approval_loop`` ->
relayers/substrate/refund.py) approves ``transfer_keep_alive(treasury, amount)`` + the remark of
the sweep's release id on chain (tests/integration/treasury_harness.py says what is given to the
nodes and what is real).

A credited payment is swept once to the treasury with two approvals (the committee account
drops by exactly the sweep and the refund: the members pay the fees); an overpayment's excess is
refunded, never swept; a deposit whose credit is not recorded is not swept; the third member,
coming late, finds the sweep executed and approves nothing: it is not executed twice."""

from __future__ import annotations

import asyncio
import os

from bridge.payments import refunds, rules
from bridge.storage import releases as rel_repo
from relayers.substrate.custody import SubstrateCustody
from relayers.substrate.multisig import ss58
from relayers.substrate.refund import SignerApprovals
from relayers.substrate.watcher import SubstrateWatcher
from tests.integration.substrate.helpers import (
    COMMITTEE, COMMITTEE_ID, UNIT, batch, blocks_until, chain_config, remark, transfer)
from tests.integration.substrate.test_substrate_refund_dust import member_seed
from tests.integration.treasury_harness import (  # noqa: F401  (settlement is a fixture)
    close, credit, learn, make_node, processed, settlement)


async def free(chain, account: bytes) -> int:
    return await chain.run(lambda si: si.query("System", "Account", [ss58(account, 42)]).value["data"]["free"])


async def states(node, rid: bytes) -> str:
    async with node.db.begin() as s:
        rows = await rel_repo.open_approvals(s, ["polkadot"], limit=1000)
    return next((r.state for r in rows if r.release_id == rid), "closed")


async def test_a_sweep_executes_once_with_t_approvals(chain, settlement, tmp_path):
    head = await chain.head()
    cfg = chain_config(chain.url, start_block=head)
    treasury = os.urandom(32)  # a fresh account: its balance is what sweeps paid
    refs = [os.urandom(32) for _ in range(3)]
    amounts = [10 * UNIT, 6 * UNIT, 3 * UNIT]
    sent = [await chain.send("//Alice", lambda si, r=r, a=a: batch(si, [transfer(si, COMMITTEE, a), remark(si, r)]))
            for r, a in zip(refs, amounts)]
    await chain.new_block(sent)
    probe = SubstrateWatcher(cfg)
    end = await probe.finalized_height()
    obs = {o.reference: o for o in await probe.fetch_deposits(head + 1, end)}
    exact, over, pending = (obs[r] for r in refs)
    excess = UNIT
    deposits = [(exact, rules.Decision(rules.CREDIT, 1000, exact.amount, 0)),
                (over, rules.Decision(rules.CREDIT, 500, over.amount - excess, excess)),
                (pending, rules.Decision(rules.CREDIT, 300, pending.amount, 0))]
    nodes = []
    loops: list[asyncio.Task] = []
    custody = SubstrateCustody(cfg)  # the test's own reader of the committee account
    try:
        for i in range(3):
            node = await make_node(tmp_path, i, chain="polkadot", token="DOT", watcher=SubstrateWatcher(cfg),
                                   custody=SubstrateCustody(cfg), treasury=treasury, settlement=settlement,
                                   min_refund=UNIT // 10,
                                   approvers={"polkadot": SignerApprovals(cfg, member_seed(i))})
            await learn(node, "polkadot", end, deposits)
            nodes.append(node)
        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits[:2], block)
        await settlement.mine(5)
        assert [await n.sweeper.step() for n in nodes] == [1, 1, 1]
        earned = exact.amount + over.amount - excess
        views = [await n.sweeper.view() for n in nodes]
        assert len({(v["sweeps"][0]["release_id"], v["sweeps"][0]["amount"], v["sweeps"][0]["to"])
                    for v in views}) == 1
        (sweep,) = views[0]["sweeps"]
        assert sweep["amount"] == str(earned) and sweep["to"] == "0x" + treasury.hex()
        assert {d["sequence"] for d in sweep["deposits"]} == {exact.sequence, over.sequence}  # not the pending one
        rid = bytes.fromhex(sweep["release_id"][2:])
        refund_id = refunds.release_id(over.source, over.sequence, "excess")
        # nothing for the refund worker: Asset Hub releases are approved on chain by the nodes
        assert all(r["purpose"] != "sweep" for r in await nodes[0].releases_after(0, 100))

        before = await chain.head()
        committee_before = await custody.balance(before)
        # two of the three members approve: the sweep (and the excess refund) execute
        loops = [asyncio.create_task(n._approval_loop(interval=0.2)) for n in nodes[:2]]
        async def closed():
            return await states(nodes[0], rid) == "closed" and await states(nodes[0], refund_id) == "closed"

        await blocks_until(chain, closed, pause=0.3)
        assert await free(chain, treasury) == earned
        after = await chain.head()
        assert committee_before - await custody.balance(after) == earned + excess  # the members paid the fees
        assert await custody.released(after, {rid, refund_id, os.urandom(32)}) == {rid, refund_id}
        assert await free(chain, COMMITTEE_ID) == await custody.balance(after)
        # the sweepers find it paid; nothing more is swept
        for n in nodes:
            await processed(n, "polkadot", after)
        assert [await n.sweeper.step() for n in nodes] == [0, 0, 0]
        assert (await nodes[0].sweeper.view())["sweeps"][0]["state"] == "paid"
        # the third member comes late: its scan finds the execution, it approves nothing
        loops.append(asyncio.create_task(nodes[2]._approval_loop(interval=0.2)))
        for _ in range(20):
            await asyncio.sleep(0.3)
            await chain.new_block()
            if await states(nodes[2], rid) == "closed":
                break
        assert await states(nodes[2], rid) == "closed"
        await chain.new_block()
        assert await free(chain, treasury) == earned  # not executed twice
        async with nodes[2].db.begin() as s:
            by_chain, failed = await rel_repo.refund_summary(s)
        # the refund is counted in the refunds view; the sweep (done too) in the treasury view
        assert failed == [] and by_chain["polkadot"].get("done") == 1
        assert await states(nodes[2], rid) == "closed"
        assert not any(a == "create" or a == "execute" for a, _, _ in nodes[2].approvers["polkadot"].refunder.submitted)
    finally:
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for n in nodes:
            await n.approvers["polkadot"].aclose()
            for w in n.watchers.values():
                await w.aclose()
        await close(nodes)
        await custody.aclose()
        await probe.aclose()
        chain.forget_nonces()  # members' nonces moved behind the helper's back


async def test_the_custody_reads_the_committee_account_from_genesis(chain):
    """A custody configured from block 0 (the devnet's) reads every block but the genesis, which
    has no events; its balance is the committee account's free balance."""
    custody = SubstrateCustody(chain_config(chain.url))
    try:
        head = await chain.head()
        executed = await custody.released(head)
        assert isinstance(executed, set)
        assert await custody.balance(head) == await free(chain, COMMITTEE_ID)
    finally:
        await custody.aclose()
