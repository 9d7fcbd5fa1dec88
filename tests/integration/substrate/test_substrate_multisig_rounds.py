"""Blocks per multisig round with the devnet's shape of committee: t = 3 of n = 4 members
(``relayers/substrate/refund.py``, rule 2: every approval carries the call).

A real chopsticks node runs the Asset Hub runtime in Manual block mode; the test builds every
block, and what it asserts -- which block executes, what the payer received, which extrinsics a
member signed -- is read from the chain. The chaos harness measured rounds of 14 blocks (p50)
and operations left at the threshold with no execution while a signer was down; here a round
is the creation block and the next one.
"""

from __future__ import annotations

import asyncio
import os

import pytest_asyncio

from bridge.config import SubstrateChainConfig
from relayers.substrate.decode import account_bytes, blake2_256
from relayers.substrate.multisig import committee_account_id, ss58
from relayers.substrate.networks import CHOPSTICKS_GENESIS
from relayers.substrate.refund import REMARK_PREFIX, MultisigRefunder, Progress, RefundOrder
from tests.integration.substrate.helpers import UNIT, batch, committee_cfg, member_keypair, ref, remark, transfer
from tests.integration.substrate.test_substrate_refund import events, free, member_seed, sent_since

NONE = Progress("none")
QUORUM = tuple(range(6, 10))  # member indices of this module's committee (keys no other test uses)
KEYS = {i: member_keypair(i) for i in QUORUM}


def quorum_config(url: str) -> SubstrateChainConfig:
    return SubstrateChainConfig(family="substrate", name="polkadot", rpc=[url], token="DOT", ss58_prefix=0,
                                genesis_hash=CHOPSTICKS_GENESIS, request_timeout=20,
                                committee=committee_cfg([KEYS[i] for i in QUORUM], threshold=3))


COMMITTEE_ID = committee_account_id(quorum_config("ws://x").committee)


@pytest_asyncio.fixture(scope="module")
async def quorum(chain):
    """The four members' refunders (each its own connection, as four signer nodes), members and
    committee account funded from //Alice."""
    funded = await chain.send("//Alice", lambda si: batch(si, [
        *(transfer(si, KEYS[i].ss58_address, 1000 * UNIT) for i in QUORUM),
        transfer(si, ss58(COMMITTEE_ID, 42), 1000 * UNIT), remark(si, ref())]))
    await chain.new_block([funded])
    assert funded.receipt["success"], funded.receipt
    rs = {i: MultisigRefunder(quorum_config(chain.url), member_seed(i)) for i in QUORUM}
    yield rs
    for r in rs.values():
        await r.aclose()
    chain.forget_nonces()  # members' nonces moved behind the helper's back


async def multisig(chain, block_hash: str, name: str) -> list[dict]:
    return [a for m, e, a, _ in await events(chain, block_hash) if (m, e) == ("Multisig", name)
            and account_bytes(a["multisig"]) == COMMITTEE_ID]


def order_to(amount: int, deposit_block: int) -> RefundOrder:
    return RefundOrder(release_id=os.urandom(32), to=os.urandom(32), amount=amount, deposit_block=deposit_block)


async def test_three_of_four_approving_in_the_block_after_the_creation_execute_there(chain, quorum):
    a, b, c, d = (quorum[i] for i in QUORUM)
    order = order_to(3 * UNIT, await chain.head())
    marks = {r: len(r.submitted) for r in (a, b, c, d)}

    pa = await a.step(order, NONE)
    assert pa.state == "proposed"
    created = await chain.new_block()
    (new,) = await multisig(chain, created, "NewMultisig")
    assert account_bytes(new["approving"]) == KEYS[QUORUM[0]].public_key

    # the three others step concurrently before the next block, each seeing one approval; one
    # that finds the two approvals still missing in the pool already holds back (rule 5: a
    # third approval would land after the execution), whether it does depends on the order the
    # three steps read the pool and submit
    pb, pc, pd = await asyncio.gather(*(r.step(order, NONE) for r in (b, c, d)))
    states = [p.state for p in (pb, pc, pd)]
    assert states.count("approved") >= 2 and set(states) <= {"approved", "none"}
    assert all("in the pool" in p.detail for p in (pb, pc, pd) if p.state == "none")
    nxt = await chain.new_block()
    # whichever approval is the third executes, in this block (hash-only approvals left the
    # operation at three approvals here, waiting a block for someone to send the call)
    (executed,) = await multisig(chain, nxt, "MultisigExecuted")
    assert "Ok" in str(executed["result"])
    assert await free(chain, order.to) == order.amount
    for i, r, p in zip(QUORUM[1:], (b, c, d), (pb, pc, pd)):
        approved = p.state == "approved"
        assert await signed_by_key(chain, nxt, KEYS[i]) == (["Multisig.as_multi"] if approved else [])
        assert [x for x, _, _ in sent_since(r, marks[r])] == (["approve"] if approved else [])

    height = await chain.head()
    outs = await asyncio.gather(*(r.step(order, p) for r, p in ((a, pa), (b, pb), (c, pc), (d, pd))))
    assert {(o.state, o.block) for o in outs} == {("done", height)}
    after = await chain.new_block()
    assert not [e for e in await events(chain, after) if e[0] == "Multisig"]
    assert await free(chain, order.to) == order.amount


async def test_with_a_member_down_the_other_three_execute_in_the_block_after_the_creation(chain, quorum):
    a, b, c = (quorum[i] for i in QUORUM[:3])  # the fourth is down (the chaos run's kill_signer)
    order = order_to(2 * UNIT, await chain.head())

    pa = await a.step(order, NONE)
    await chain.new_block()
    pb, pc = await asyncio.gather(b.step(order, NONE), c.step(order, NONE))
    nxt = await chain.new_block()
    assert len(await multisig(chain, nxt, "MultisigExecuted")) == 1
    assert await free(chain, order.to) == order.amount
    height = await chain.head()
    for r, p in ((a, pa), (b, pb), (c, pc)):
        assert (await r.step(order, p)).state == "done"
    assert (await quorum[QUORUM[3]].step(order, NONE)).block == height  # back up: finds it done


async def test_an_operation_at_the_threshold_without_execution_is_executed_by_an_approver(chain, quorum):
    """Approvals without the call (``approve_as_multi``: an older version of the refunder, or
    an operator by hand) can leave an operation at three approvals and unexecuted. Members among
    its approvals send the call; the pallet executes it once and adds no approval."""
    a, b, c, d = (quorum[i] for i in QUORUM)
    order = order_to(4 * UNIT, await chain.head())
    pa = await a.step(order, NONE)
    await chain.new_block()
    pa = await a.step(order, pa)
    assert pa.state == "approved"
    call_hash = await chain.run(lambda si: "0x" + blake2_256(bytes(si.compose_call("Utility", "batch_all", {"calls": [
        si.compose_call("Balances", "transfer_keep_alive", {"dest": ss58(order.to, 42), "value": order.amount}),
        si.compose_call("System", "remark", {"remark": "0x" + (REMARK_PREFIX + order.release_id).hex()}),
    ]}).data.data)).hex())
    sent = []
    for i in QUORUM[1:3]:
        others = sorted("0x" + KEYS[j].public_key.hex() for j in QUORUM if j != i)
        sent.append(await chain.send(KEYS[i], lambda si, others=others: si.compose_call("Multisig", "approve_as_multi", {
            "threshold": 3, "other_signatories": others, "call_hash": call_hash,
            "maybe_timepoint": {"height": pa.timepoint[0], "index": pa.timepoint[1]},
            "max_weight": 10**10})))  # spec 900: Weight v1, a plain u64
    stuck = await chain.new_block(sent)
    assert all(s.receipt["success"] for s in sent), [s.receipt for s in sent]
    assert len(await multisig(chain, stuck, "MultisigApproval")) == 2
    assert not await multisig(chain, stuck, "MultisigExecuted") and await free(chain, order.to) == 0

    # all three approvers step before the next block: one execution, the other calls fail on chain
    marks = {r: len(r.submitted) for r in (a, b, c)}
    outs = await asyncio.gather(a.step(order, pa), b.step(order, NONE), c.step(order, NONE))
    assert all(o.state == "approved" and o.timepoint == pa.timepoint for o in outs)
    assert all([x for x, _, _ in sent_since(r, marks[r])] == ["execute"] for r in (a, b, c))
    nxt = await chain.new_block()
    (executed,) = await multisig(chain, nxt, "MultisigExecuted")
    assert "Ok" in str(executed["result"]) and not await multisig(chain, nxt, "MultisigApproval")
    assert await free(chain, order.to) == order.amount
    for r, p in ((a, pa), (b, outs[1]), (c, outs[2]), (d, NONE)):
        assert (await r.step(order, p)).state == "done"
    await chain.new_block()
    assert await free(chain, order.to) == order.amount


async def signed_by_key(chain, block_hash: str, kp) -> list[str]:
    def job(si):
        block = si.get_block(block_hash)
        return [f"{x.value['call']['call_module']}.{x.value['call']['call_function']}" for x in block["extrinsics"]
                if account_bytes(x.value.get("address")) == kp.public_key]

    return await chain.run(job)
