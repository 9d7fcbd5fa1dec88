"""The settlement submitter's fee policy on a real anvil (relayers/evm/fees.py): a transaction
left unmined (mining off, or a full block) is replaced with bumped fees under the same nonce
and mined once; the cap is respected (a transaction priced above it
is not sent, a bump above it is not sent); a stuck settle whose batch a competitor settled is
replaced by a no-op instead of being bumped into a revert."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from eth_account import Account

from bridge.committee.digest import pack_signatures
from bridge.committee.http import AggregatorMetrics
from bridge.types import CreditMessage
from relayers.evm.fees import FeeAboveCap, FeePolicy
from relayers.evm.settlement import encode_settle
from tests.integration.evm.helpers import set_automine, wait_for
from tests.integration.evm.test_settlement import (ALICE, SOURCE, SUBMITTER, SUBMITTER_2, attest,  # noqa: F401
                                                   close_clients, credit, ledger, nonce_of, settlement)


async def pending(anvil) -> list[dict]:
    content = await anvil.rpc("txpool_content")
    return [tx for by_nonce in content["pending"].values() for tx in by_nonce.values()]


async def base_fee(anvil) -> int:
    return int((await anvil.rpc("eth_getBlockByNumber", "latest", False))["baseFeePerGas"], 16)


def counted(metrics: AggregatorMetrics, name: str) -> float:
    return getattr(metrics, name)._value.get()


async def test_a_stuck_settle_is_replaced_with_bumped_fees_and_mined_once(anvil, ledger, committee):
    metrics = AggregatorMetrics(CollectorRegistry())
    st = settlement(anvil, ledger, receipt_poll=0.05, metrics=metrics,
                    fees=FeePolicy(priority_fee=1, bump_after=0.3, bump_percent=12, max_bumps=3))
    msg = CreditMessage(0, (credit(300),))
    nonce = await nonce_of(anvil, SUBMITTER)
    await set_automine(anvil, False)
    try:
        task = asyncio.create_task(st.submit(msg, attest(committee, ledger, msg)))
        await wait_for(lambda: _count(anvil, 1))
        (first,) = await pending(anvil)  # not mined (mining is off): stuck

        async def replaced() -> bool:
            txs = await pending(anvil)
            return len(txs) == 1 and txs[0]["hash"] != first["hash"]

        await wait_for(replaced)
        (second,) = await pending(anvil)
        assert second["nonce"] == first["nonce"]
        assert int(second["maxFeePerGas"], 16) >= int(first["maxFeePerGas"], 16) * 112 // 100
        assert int(second["maxPriorityFeePerGas"], 16) >= 2  # 1 wei raised by at least 1
        await anvil.mine(1)
        tx_hash = await asyncio.wait_for(task, 10)
    finally:
        await set_automine(anvil, True)
    assert "0x" + tx_hash.hex() == second["hash"]
    assert await anvil.rpc("eth_getTransactionReceipt", first["hash"]) is None
    assert await nonce_of(anvil, SUBMITTER) == nonce + 1  # one transaction mined for the batch
    assert await st.is_settled(SOURCE, 300)
    assert await st.credits_of(ALICE) == credit(300).credits
    assert counted(metrics, "fee_bumps") >= 1


async def _count(anvil, n: int) -> bool:
    return len(await pending(anvil)) == n


async def test_a_price_above_the_cap_is_not_sent(anvil, ledger, committee):
    metrics = AggregatorMetrics(CollectorRegistry())
    cap = await base_fee(anvil) // 2
    st = settlement(anvil, ledger, metrics=metrics, fees=FeePolicy(max_fee_per_gas=cap, priority_fee=1))
    msg = CreditMessage(0, (credit(310),))
    nonce = await nonce_of(anvil, SUBMITTER)
    with pytest.raises(FeeAboveCap) as e:
        await st.submit(msg, attest(committee, ledger, msg))
    assert e.value.retryable is True and f"cap of {cap} wei" in e.value.detail
    assert await nonce_of(anvil, SUBMITTER) == nonce  # nothing sent
    assert not await st.is_settled(SOURCE, 310)
    assert counted(metrics, "fee_cap_refusals") == 1


async def test_the_cap_clamps_the_fee_and_a_bump_above_it_is_not_sent(anvil, ledger, committee):
    metrics = AggregatorMetrics(CollectorRegistry())
    base = await base_fee(anvil)
    cap = base + 10  # room for the tip, not for the usual 2x base headroom
    st = settlement(anvil, ledger, receipt_poll=0.05, metrics=metrics,
                    fees=FeePolicy(max_fee_per_gas=cap, priority_fee=1, bump_after=0.2, max_bumps=2))
    msg = CreditMessage(0, (credit(320),))
    await set_automine(anvil, False)
    try:
        task = asyncio.create_task(st.submit(msg, attest(committee, ledger, msg)))
        await wait_for(lambda: _count(anvil, 1))
        (first,) = await pending(anvil)
        assert int(first["maxFeePerGas"], 16) == cap
        await wait_for(lambda: _refusals(metrics, 2))  # both bumps were refused by the cap
        assert [t["hash"] for t in await pending(anvil)] == [first["hash"]]
        await anvil.mine(1)
        tx_hash = await asyncio.wait_for(task, 10)
    finally:
        await set_automine(anvil, True)
    assert "0x" + tx_hash.hex() == first["hash"]
    assert counted(metrics, "fee_bumps") == 0
    assert await st.is_settled(SOURCE, 320)


async def _refusals(metrics, n: int) -> bool:
    return counted(metrics, "fee_cap_refusals") >= n


async def test_a_stuck_settle_made_pointless_by_a_competitor_is_replaced_by_a_no_op(anvil, ledger, committee):
    st = settlement(anvil, ledger, receipt_poll=0.05, fees=FeePolicy(priority_fee=1, bump_after=1.0, max_bumps=3))
    msg = CreditMessage(0, (credit(330),))
    atts = attest(committee, ledger, msg)
    limit = (await anvil.rpc("eth_getBlockByNumber", "latest", False))["gasLimit"]
    await set_automine(anvil, False)
    try:
        task = asyncio.create_task(st.submit(msg, atts))
        await wait_for(lambda: _count(anvil, 1))
        (ours,) = await pending(anvil)
        # the rival sends the same batch with a higher tip (as is: its estimate, which sees
        # our pending transaction, would say NothingToSettle)
        data = encode_settle(msg.credits, pack_signatures(sorted((a.signer, a.signature) for a in atts)))
        rival_hash = await anvil.rpc("eth_sendTransaction", {
            "from": Account.from_key(SUBMITTER_2).address, "to": ledger, "data": "0x" + data.hex(),
            "gas": ours["gas"], "maxFeePerGas": hex(10**11), "maxPriorityFeePerGas": hex(10**10)})
        # a block with room for one settle: the rival's (the higher tip) is mined, ours is not
        await anvil.rpc("evm_setBlockGasLimit", hex(int(ours["gas"], 16) + 1000))
        await anvil.mine(1)
        assert (await anvil.rpc("eth_getTransactionReceipt", rival_hash))["status"] == "0x1"
        assert [t["hash"] for t in await pending(anvil)] == [ours["hash"]]

        # its bump finds the batch settled: a 21k-gas transfer to ourselves replaces it
        async def no_op_pending() -> bool:
            return any(t["input"] in ("0x", "") and (t["to"] or "").lower() == ours["from"].lower()
                       for t in await pending(anvil))

        await wait_for(no_op_pending)
        await anvil.mine(1)
        assert await asyncio.wait_for(task, 10) == b""
    finally:
        await anvil.rpc("evm_setBlockGasLimit", limit)
        await set_automine(anvil, True)
    assert await anvil.rpc("eth_getTransactionReceipt", ours["hash"]) is None  # never mined: no revert paid
    assert await st.credits_of(ALICE) == credit(330).credits
