"""Refunds out of the committee's multisig account, one member at a time (``relayers/substrate/refund.py``).

These tests run against a real chopsticks node executing the real Asset Hub runtime (spec 900,
``pallet_multisig``, ``pallet_balances``) in Manual block mode: the test builds every block
(``chain.new_block()``), members sign and submit real extrinsics, and what the tests assert --
balances, ``Multisig`` events, which extrinsics a block holds -- is read back from chain state,
not taken from the refunder's own answers.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_asyncio

from bridge.config import SubstrateCommittee
from bridge.errors import ConfigError, InputError
from relayers.substrate.decode import account_bytes, blake2_256
from relayers.substrate.multisig import ss58
from relayers.substrate.refund import DEFER_BLOCKS, REMARK_PREFIX, MultisigRefunder, Progress, RefundOrder, \
    _Pending
from tests.integration.substrate.helpers import COMMITTEE, COMMITTEE_ID, MEMBERS, UNIT, batch, chain_config, ref, \
    remark, transfer

NONE = Progress("none")


def member_seed(i: int) -> bytes:
    """The seed ``helpers.member_keypair(i)`` derives its Ed25519 key from."""
    return hashlib.blake2b(f"creditbridge-test/member/{i}".encode(), digest_size=32).digest()


def fresh_account() -> bytes:
    """A payer account that holds nothing yet: its balance afterwards is exactly what was refunded."""
    return os.urandom(32)


def order_to(to: bytes, amount: int, deposit_block: int) -> RefundOrder:
    return RefundOrder(release_id=os.urandom(32), to=to, amount=amount, deposit_block=deposit_block)


async def free(chain, account: bytes | str) -> int:
    address = account if isinstance(account, str) else ss58(account, 42)
    return await chain.run(lambda si: si.query("System", "Account", [address]).value["data"]["free"])


async def events(chain, block_hash: str) -> list[tuple[str, str, dict, int | None]]:
    return await chain.run(lambda si: [(e.value["module_id"], e.value["event_id"], e.value["attributes"],
                                        e.value["extrinsic_idx"]) for e in si.get_events(block_hash)])


async def multisig_events(chain, block_hash: str, name: str) -> list[dict]:
    return [a for m, e, a, _ in await events(chain, block_hash) if (m, e) == ("Multisig", name)
            and account_bytes(a["multisig"]) == COMMITTEE_ID]


async def signed_by(chain, block_hash: str, member: int) -> list[str]:
    """Calls (``Module.function``) of the block's extrinsics signed by committee member ``member``."""
    def job(si):
        block = si.get_block(block_hash)
        return [f"{x.value['call']['call_module']}.{x.value['call']['call_function']}" for x in block["extrinsics"]
                if account_bytes(x.value.get("address")) == MEMBERS[member].public_key]

    return await chain.run(job)


def sent_since(r: MultisigRefunder, mark: int) -> list[tuple[str, str, int]]:
    """(action, extrinsic hash, nonce) of what ``r`` submitted after ``mark = len(r.submitted)``."""
    return r.submitted[mark:]


def refund_call_hash(chain_si, order: RefundOrder) -> str:
    """The call hash as the test computes it, independently of the module."""
    call = chain_si.compose_call("Utility", "batch_all", {"calls": [
        chain_si.compose_call("Balances", "transfer_keep_alive", {"dest": ss58(order.to, 42), "value": order.amount}),
        chain_si.compose_call("System", "remark", {"remark": "0x" + (REMARK_PREFIX + order.release_id).hex()}),
    ]})
    return "0x" + blake2_256(bytes(call.data.data)).hex()


@pytest_asyncio.fixture(scope="module")
async def committee_funded(chain):
    if await free(chain, COMMITTEE) < 500 * UNIT:
        paid = await chain.send("//Alice", lambda si: batch(si, [transfer(si, COMMITTEE, 1000 * UNIT), remark(si, ref())]))
        await chain.new_block([paid])
        assert paid.receipt["success"], paid.receipt
    yield
    chain.forget_nonces()  # members' nonces moved behind the helper's back


@pytest_asyncio.fixture(scope="module")
async def members(chain, committee_funded):
    """Three signer nodes' refunders, each with its own connection and memory, living as long as
    a node does (across the tests: each test's orders are new to them)."""
    rs = [MultisigRefunder(chain_config(chain.url), member_seed(i)) for i in range(3)]
    yield rs
    for r in rs:
        await r.aclose()


async def test_two_members_pay_the_refund_once_and_the_third_finds_it_done(chain, members):
    r0, r1, r2 = members
    payer = fresh_account()
    order = order_to(payer, 3 * UNIT, await chain.head())
    committee_before = await free(chain, COMMITTEE)

    p0 = await r0.step(order, NONE)
    assert p0.state == "proposed"
    b1 = await chain.new_block()
    (created,) = await multisig_events(chain, b1, "NewMultisig")
    assert account_bytes(created["approving"]) == MEMBERS[0].public_key
    assert created["call_hash"] == await chain.run(lambda si: refund_call_hash(si, order))
    assert await free(chain, payer) == 0  # one approval moves nothing

    p1 = await r1.step(order, NONE)
    assert p1.state == "approved" and p1.timepoint is not None and p1.timepoint[0] == await chain.head()
    b2 = await chain.new_block()
    (executed,) = await multisig_events(chain, b2, "MultisigExecuted")
    assert "Ok" in str(executed["result"])
    assert (executed["timepoint"]["height"], executed["timepoint"]["index"]) == p1.timepoint
    assert await free(chain, payer) == order.amount
    assert await free(chain, COMMITTEE) == committee_before - order.amount  # members pay the fees

    done0, done1 = await r0.step(order, p0), await r1.step(order, p1)
    height = await chain.head()
    assert (done0.state, done0.block) == (done1.state, done1.block) == ("done", height)

    # the third member never took part (and, as after losing its database, knows nothing)
    balance2, mark2 = await free(chain, MEMBERS[2].ss58_address), len(r2.submitted)
    done2 = await r2.step(order, NONE)
    assert (done2.state, done2.block) == ("done", height)
    b3 = await chain.new_block()
    assert await signed_by(chain, b3, 2) == [] and sent_since(r2, mark2) == []
    assert not [e for e in await events(chain, b3) if e[0] == "Multisig"]
    assert await free(chain, MEMBERS[2].ss58_address) == balance2
    assert await free(chain, payer) == order.amount
    assert await r0.step(order, done0) == done0  # final states stay final


async def test_repeated_steps_before_a_block_submit_one_transaction(chain, members):
    r0, r1, _ = members
    payer = fresh_account()
    order = order_to(payer, 2 * UNIT, await chain.head())
    m0, m1 = len(r0.submitted), len(r1.submitted)

    p = NONE
    for _ in range(3):
        p = await r0.step(order, p)
        assert p.state == "proposed"
    assert len(sent_since(r0, m0)) == 1
    b1 = await chain.new_block()
    assert await signed_by(chain, b1, 0) == ["Multisig.as_multi"]
    assert len(await multisig_events(chain, b1, "NewMultisig")) == 1

    # included: now an approver of its own operation, with nothing more to send
    for _ in range(2):
        p = await r0.step(order, p)
        assert p.state == "approved" and p.timepoint[0] == await chain.head()
    assert len(sent_since(r0, m0)) == 1

    q = NONE
    for _ in range(3):
        q = await r1.step(order, q)
        assert q.state == "approved" and q.timepoint == p.timepoint
    assert len(sent_since(r1, m1)) == 1
    b2 = await chain.new_block()
    assert await signed_by(chain, b2, 0) == [] and await signed_by(chain, b2, 1) == ["Multisig.as_multi"]
    assert len(await multisig_events(chain, b2, "MultisigExecuted")) == 1

    for _ in range(2):
        p, q = await r0.step(order, p), await r1.step(order, q)
        assert p.state == q.state == "done"
    b3 = await chain.new_block()
    assert await signed_by(chain, b3, 0) == await signed_by(chain, b3, 1) == []
    assert len(sent_since(r0, m0)) == len(sent_since(r1, m1)) == 1
    assert await free(chain, payer) == order.amount


async def test_equal_payer_and_amount_with_different_release_ids_are_separate_refunds(chain, members):
    r0, r1, _ = members
    payer = fresh_account()
    deposit_block = await chain.head()
    a, b = order_to(payer, 4 * UNIT, deposit_block), order_to(payer, 4 * UNIT, deposit_block)

    # two creations from one member before a block: consecutive nonces
    mark = len(r0.submitted)
    pa, pb = await r0.step(a, NONE), await r0.step(b, NONE)
    assert pa.state == pb.state == "proposed"
    (_, _, na), (_, _, nb) = sent_since(r0, mark)
    assert nb == na + 1
    b1 = await chain.new_block()
    assert await signed_by(chain, b1, 0) == ["Multisig.as_multi"] * 2
    created = await multisig_events(chain, b1, "NewMultisig")
    hashes = await chain.run(lambda si: {refund_call_hash(si, a), refund_call_hash(si, b)})
    assert len(hashes) == 2 and {e["call_hash"] for e in created} == hashes

    qa, qb = await r1.step(a, NONE), await r1.step(b, NONE)
    assert qa.state == qb.state == "approved" and qa.timepoint != qb.timepoint
    b2 = await chain.new_block()
    executed = await multisig_events(chain, b2, "MultisigExecuted")
    assert {e["call_hash"] for e in executed} == hashes and all("Ok" in str(e["result"]) for e in executed)
    assert await free(chain, payer) == 2 * 4 * UNIT
    for r, o, p in ((r0, a, pa), (r0, b, pb), (r1, a, qa), (r1, b, qb)):
        assert (await r.step(o, p)).state == "done"


async def test_two_members_creating_in_the_same_block_make_one_operation_executed_once(chain, members):
    """Member 1 does not hold back for member 0's pooled creation (rule 5 off, as for a node
    that does not show its pool, or a creation already taken into a block being built)."""
    r0, r1, r2 = members
    payer = fresh_account()
    order = order_to(payer, 5 * UNIT, await chain.head())
    marks = [len(r.submitted) for r in members]

    r1.defer_blocks = 0
    try:
        p0, p1 = await r0.step(order, NONE), await r1.step(order, NONE)
    finally:
        r1.defer_blocks = DEFER_BLOCKS
    assert p0.state == p1.state == "proposed"
    b1 = await chain.new_block()
    assert await signed_by(chain, b1, 0) == await signed_by(chain, b1, 1) == ["Multisig.as_multi"]
    (created,) = await multisig_events(chain, b1, "NewMultisig")
    winner = 0 if account_bytes(created["approving"]) == MEMBERS[0].public_key else 1
    failed = [e for e in await events(chain, b1) if e[:2] == ("System", "ExtrinsicFailed")]
    assert len(failed) == 1  # the pallet refused the second creation (NoTimepoint)

    p0, p1 = await r0.step(order, p0), await r1.step(order, p1)
    assert p0.state == p1.state == "approved" and p0.timepoint == p1.timepoint
    assert [a for a, _, _ in sent_since(members[winner], marks[winner])] == ["create"]
    assert [a for a, _, _ in sent_since(members[1 - winner], marks[1 - winner])] == ["create", "execute"]
    b2 = await chain.new_block()
    assert len(await multisig_events(chain, b2, "MultisigExecuted")) == 1
    assert await free(chain, payer) == order.amount

    for _ in range(2):
        p0, p1, p2 = await r0.step(order, p0), await r1.step(order, p1), await r2.step(order, NONE)
        assert p0.state == p1.state == p2.state == "done"
    b3 = await chain.new_block()
    assert not [e for e in await events(chain, b3) if e[0] == "Multisig"]
    assert await free(chain, payer) == order.amount


async def test_a_crashed_member_whose_creation_never_reached_the_chain_creates_it(chain, committee_funded):
    payer = fresh_account()
    order = order_to(payer, UNIT, await chain.head())
    # member 2 persisted "proposed", then crashed before its extrinsic reached any node
    restarted = MultisigRefunder(chain_config(chain.url), member_seed(2))
    lost_db = MultisigRefunder(chain_config(chain.url), member_seed(0))  # member 0 lost its database
    try:
        p2 = await restarted.step(order, Progress("proposed"))
        assert p2.state == "proposed"
        b1 = await chain.new_block()
        (created,) = await multisig_events(chain, b1, "NewMultisig")
        assert account_bytes(created["approving"]) == MEMBERS[2].public_key
        assert created["call_hash"] == await chain.run(lambda si: refund_call_hash(si, order))

        p0 = await lost_db.step(order, NONE)
        assert p0.state == "approved"
        b2 = await chain.new_block()
        assert len(await multisig_events(chain, b2, "MultisigExecuted")) == 1
        assert await free(chain, payer) == order.amount
        assert (await restarted.step(order, p2)).state == "done"
        assert (await lost_db.step(order, NONE)).state == "done"  # from scratch again: still done
        assert await signed_by(chain, await chain.new_block(), 0) == []
    finally:
        await restarted.aclose()
        await lost_db.aclose()


async def test_an_order_above_the_committee_balance_executes_with_an_error_and_fails(chain, members):
    r0, r1, r2 = members
    payer = fresh_account()
    committee_before = await free(chain, COMMITTEE)
    order = order_to(payer, committee_before + UNIT, await chain.head())

    p0 = await r0.step(order, NONE)
    await chain.new_block()
    p1 = await r1.step(order, NONE)
    assert p1.state == "approved"
    b2 = await chain.new_block()
    (executed,) = await multisig_events(chain, b2, "MultisigExecuted")
    assert "Err" in str(executed["result"])
    assert await free(chain, payer) == 0
    assert await free(chain, COMMITTEE) == committee_before  # fees and deposit are the members'

    height = await chain.head()
    for r, p in ((r0, p0), (r1, p1), (r2, NONE)):
        out = await r.step(order, p)
        assert (out.state, out.block) == ("failed", height) and "Balances.InsufficientBalance" in out.detail
        assert await r.step(order, out) == out  # never retried by itself
    b3 = await chain.new_block()
    assert not [e for e in await events(chain, b3) if e[0] == "Multisig"]
    assert await free(chain, COMMITTEE) == committee_before and await free(chain, payer) == 0


async def test_an_approved_operation_cancelled_without_execution_fails_for_an_operator(chain, members):
    r0, _, r2 = members
    order = order_to(fresh_account(), UNIT, await chain.head())
    p2 = await r2.step(order, NONE)
    await chain.new_block()
    p2 = await r2.step(order, p2)
    assert p2.state == "approved"
    call_hash = await chain.run(lambda si: refund_call_hash(si, order))
    others = sorted("0x" + m.public_key.hex() for m in MEMBERS[:2])
    cancel = await chain.send(MEMBERS[2], lambda si: si.compose_call("Multisig", "cancel_as_multi", {
        "threshold": 2, "other_signatories": others,
        "timepoint": {"height": p2.timepoint[0], "index": p2.timepoint[1]}, "call_hash": call_hash}))
    await chain.new_block([cancel])
    assert cancel.receipt["success"], cancel.receipt

    out = await r2.step(order, p2)
    assert out.state == "failed" and "gone without an execution event" in out.detail
    # a member that never approved it may start a new operation: nothing was paid
    assert (await r0.step(order, NONE)).state == "proposed"
    await chain.new_block()
    assert await free(chain, order.to) == 0
    # the member that approved the cancelled one refuses the new one (and submits nothing)
    mark = len(r2.submitted)
    again = await r2.step(order, p2)
    assert again.state == "failed" and "another multisig operation for this refund exists" in again.detail
    assert sent_since(r2, mark) == [] and await signed_by(chain, await chain.new_block(), 2) == []


async def lost_remark(chain, member: int, nonce: int, head: int, *, corrupt: bool = False) -> _Pending:
    """A real signed ``System.remark`` of ``member`` at ``nonce``, recorded as that member's
    transaction in flight but never sent: as if the node's pool had lost it. ``corrupt`` flips a
    signature byte, so the node refuses the copy."""
    def job(si):
        call = si.compose_call("System", "remark", {"remark": "0x" + ref().hex()})
        xt = si.create_signed_extrinsic(call=call, keypair=MEMBERS[member], nonce=nonce)
        raw = str(xt.data)
        if corrupt:
            sig = xt.value["signature"]
            sig = (sig.get("Ed25519") or next(iter(sig.values()))) if isinstance(sig, dict) else sig
            i = raw.index(sig[2:])
            raw = raw[:i] + ("00" if raw[i:i + 2] != "00" else "01") + raw[i + 2:]
        return "0x" + blake2_256(bytes.fromhex(raw[2:])).hex(), raw

    xhash, raw = await chain.run(job)
    return _Pending("remark", xhash, nonce, head - 1, head + 32, extrinsic=raw)


async def test_a_lost_transaction_is_sent_again_unchanged_and_the_one_behind_it_lands_too(chain, members):
    """A transaction of the member (nonce k) left the pool without being included. The next
    order's creation waits behind it (k + 1); both are sent again as they were, in nonce order,
    and land in one block: nothing is composed twice, no nonce is used twice."""
    r0 = members[0]
    head = await chain.head()
    order = order_to(fresh_account(), UNIT, head)
    k = await chain.run(lambda si: si.get_account_nonce(MEMBERS[0].ss58_address))
    lost = await lost_remark(chain, 0, k, head)
    r0._inflight[k] = lost
    mark = len(r0.submitted)
    p = await r0.step(order, NONE)  # the remark is sent again; the creation takes k + 1
    assert p.state == "proposed" and [n for _, _, n in sent_since(r0, mark)] == [k + 1]
    b = await chain.new_block()
    assert await signed_by(chain, b, 0) == ["System.remark", "Multisig.as_multi"]
    (created,) = await multisig_events(chain, b, "NewMultisig")
    assert account_bytes(created["approving"]) == MEMBERS[0].public_key
    p = await r0.step(order, p)
    assert p.state == "approved" and len(sent_since(r0, mark)) == 1 and not r0._inflight


async def test_a_transaction_above_a_lost_nonce_is_dropped_and_its_order_composed_again(chain, members):
    """The member's transaction at nonce k was lost and the node refuses its copy (a bad
    signature here): nothing of the member will ever hold k, so the creation sent at k + 1 can
    never be included (chopsticks discards it when it builds a block). It is dropped, and its
    order reads the state afresh and creates again on nonce k, once."""
    r0 = members[0]
    head = await chain.head()
    order = order_to(fresh_account(), UNIT, head)
    k = await chain.run(lambda si: si.get_account_nonce(MEMBERS[0].ss58_address))
    lost = await lost_remark(chain, 0, k, head + 1, corrupt=True)  # not lost yet at this head
    r0._inflight[k] = lost
    mark = len(r0.submitted)
    p = await r0.step(order, NONE)
    assert p.state == "proposed" and [n for _, _, n in sent_since(r0, mark)] == [k + 1]
    assert await signed_by(chain, await chain.new_block(), 0) == []  # k + 1 is above a gap
    p = await r0.step(order, p)  # the copy of k is refused: k is dropped; k + 1 waits once more
    assert k not in r0._inflight and len(sent_since(r0, mark)) == 1
    assert await signed_by(chain, await chain.new_block(), 0) == []
    p = await r0.step(order, p)  # k + 1 lies above a nonce nobody holds: dropped, created on k
    assert p.state == "proposed" and [n for _, _, n in sent_since(r0, mark)] == [k + 1, k]
    b = await chain.new_block()
    assert await signed_by(chain, b, 0) == ["Multisig.as_multi"]
    assert len(await multisig_events(chain, b, "NewMultisig")) == 1
    assert (await r0.step(order, p)).state == "approved" and len(sent_since(r0, mark)) == 2


async def test_copies_of_a_transaction_in_the_pool_do_not_make_the_next_one_skip_a_nonce(chain, members):
    """Two copies of the member's transaction at nonce k in the pool (a copy sent again while
    the first was being built into a block): chopsticks' ``system_accountNextIndex`` counts both
    (k + 2). The next transaction still takes k + 1, so it lands in the same block instead of
    waiting above a nonce nothing holds (seen in a chaos run)."""
    r0 = members[0]
    head = await chain.head()
    order = order_to(fresh_account(), UNIT, head)
    k = await chain.run(lambda si: si.get_account_nonce(MEMBERS[0].ss58_address))
    mine = await lost_remark(chain, 0, k, head + 1)  # in flight, not lost: both copies are pooled
    for _ in range(2):
        await chain.run(lambda si: si.rpc_request("author_submitExtrinsic", [mine.extrinsic]))
    def next_index(si) -> int:  # chopsticks counts pooled transactions by the runtime's own SS58 format
        prefix = si.get_constant("System", "SS58Prefix").value
        return si.rpc_request("system_accountNextIndex", [ss58(MEMBERS[0].public_key, prefix)])["result"]

    assert await chain.run(next_index) == k + 2
    r0._inflight[k] = mine
    mark = len(r0.submitted)
    p = await r0.step(order, NONE)
    assert p.state == "proposed" and [n for _, _, n in sent_since(r0, mark)] == [k + 1]
    b = await chain.new_block()
    assert await signed_by(chain, b, 0) == ["System.remark", "Multisig.as_multi"]
    assert (await r0.step(order, p)).state == "approved" and not r0._inflight


async def test_a_member_sends_nothing_while_other_members_pooled_transactions_suffice(chain, members):
    """Rule 5 on a real pool: member 1 steps while member 0's creation is pooled, then member 2
    while member 1's executing approval is pooled; neither sends anything (a second creation
    would fail with NoTimepoint, a third approval with UnexpectedTimepoint), and the refund is
    paid once, with every transaction of the round succeeding."""
    r0, r1, r2 = members
    order = order_to(fresh_account(), 2 * UNIT, await chain.head())
    marks = [len(r.submitted) for r in members]
    assert (await r0.step(order, NONE)).state == "proposed"
    p1 = await r1.step(order, NONE)
    assert p1.state == "none" and "in the pool" in p1.detail and sent_since(r1, marks[1]) == []
    b1 = await chain.new_block()
    assert await signed_by(chain, b1, 0) == ["Multisig.as_multi"] and await signed_by(chain, b1, 1) == []
    assert len(await multisig_events(chain, b1, "NewMultisig")) == 1

    p1 = await r1.step(order, p1)
    assert p1.state == "approved" and [a for a, _, _ in sent_since(r1, marks[1])] == ["execute"]
    p2 = await r2.step(order, NONE)
    assert p2.state == "none" and "in the pool" in p2.detail and sent_since(r2, marks[2]) == []
    b2 = await chain.new_block()
    assert await signed_by(chain, b2, 2) == [] and len(await multisig_events(chain, b2, "MultisigExecuted")) == 1
    failed = [e for m, e, _, _ in await events(chain, b1) + await events(chain, b2) if (m, e) == ("System", "ExtrinsicFailed")]
    assert failed == [] and await free(chain, order.to) == order.amount
    assert (await r2.step(order, p2)).state == "done" and sent_since(r2, marks[2]) == []


async def test_a_member_holds_back_only_while_the_pooled_transaction_can_land(chain, members):
    """Member 0's creation sits above a nonce nobody holds (chopsticks discards it when it
    builds the block): member 1 holds back while it is pooled, and creates itself once it is
    gone, rather than waiting for a transaction that never lands."""
    r0, r1, _ = members
    order = order_to(fresh_account(), UNIT, await chain.head())
    k = await chain.run(lambda si: si.get_account_nonce(MEMBERS[0].ss58_address))
    r0._inflight[k] = await lost_remark(chain, 0, k, await chain.head() + 1, corrupt=True)  # never sent
    assert (await r0.step(order, NONE)).state == "proposed"  # on k + 1: can never be included
    mark = len(r1.submitted)
    p1 = await r1.step(order, NONE)
    assert p1.state == "none" and "in the pool" in p1.detail
    assert await signed_by(chain, await chain.new_block(), 0) == []  # discarded
    p1 = await r1.step(order, p1)
    assert p1.state == "proposed" and [a for a, _, _ in sent_since(r1, mark)] == ["create"]
    b = await chain.new_block()
    assert await signed_by(chain, b, 1) == ["Multisig.as_multi"]
    assert len(await multisig_events(chain, b, "NewMultisig")) == 1
    p0 = Progress("proposed")
    for _ in range(2):  # member 0 drops its stranded creation and joins the operation
        p0 = await r0.step(order, p0)
        await chain.new_block()
    assert await free(chain, order.to) == order.amount
    assert (await r0.step(order, p0)).state == (await r1.step(order, p1)).state == "done"


async def test_a_member_seed_outside_the_committee_is_a_config_error(chain):
    cfg = chain_config(chain.url)
    with pytest.raises(ConfigError, match="not one of the committee's members"):
        MultisigRefunder(cfg, hashlib.blake2b(b"not a member", digest_size=32).digest())
    with pytest.raises(ConfigError):
        MultisigRefunder(cfg, member_seed(0)[:31])
    one_of_three = cfg.model_copy(update={"committee": SubstrateCommittee(members=cfg.committee.members, threshold=1)})
    with pytest.raises(ConfigError, match="threshold"):
        MultisigRefunder(one_of_three, member_seed(0))
    r = MultisigRefunder(cfg, member_seed(1))
    try:
        with pytest.raises(InputError):
            await r.step(RefundOrder(b"x" * 31, fresh_account(), UNIT, 0), NONE)
        with pytest.raises(InputError):
            await r.step(RefundOrder(ref(), COMMITTEE_ID, UNIT, 0), NONE)
        with pytest.raises(InputError):
            await r.step(RefundOrder(ref(), fresh_account(), 0, 0), NONE)
    finally:
        await r.aclose()
