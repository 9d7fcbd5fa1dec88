"""EvmSettlement against a real CreditLedger on anvil, with batches signed by the test
committee through bridge.committee.digest (domain = deployed address + chain id).

Each test deploys its own ledger (4 signers, threshold 3), so no state is shared.
"""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio
from eth_account import Account

from bridge.committee import digest as dg
from bridge.errors import TransactionFailed
from bridge.hashing import keccak256, source_id
from bridge.types import Attestation, Credit, CreditMessage, SettlementDomain
from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.contracts import LEDGER, deploy
from relayers.evm.rpc import RpcPool
from relayers.evm.settlement import EvmSettlement
from tests.integration.evm.helpers import evm_config, head, set_automine, wait_for

CHAIN_ID = DEFAULT_CHAIN_ID
THRESHOLD = 3
DEPLOYER, PROVIDER, SUBMITTER, SUBMITTER_2 = DEV_PRIVATE_KEYS[0], DEV_PRIVATE_KEYS[4], DEV_PRIVATE_KEYS[5], DEV_PRIVATE_KEYS[6]
SOURCE = source_id("evm", 1, b"\x42" * 20)
ALICE, BOB = b"\xa1" * 20, b"\xb0" * 20

_CLOSE: list = []


@pytest_asyncio.fixture(autouse=True)
async def close_clients():
    yield
    while _CLOSE:
        await _CLOSE.pop().aclose()


@pytest_asyncio.fixture
async def ledger(w3, committee) -> str:
    return await deploy(
        w3, LEDGER, [committee.checksum_addresses, THRESHOLD, Account.from_key(PROVIDER).address], DEPLOYER
    )


def settlement(anvil: AnvilNode, ledger: str, key: str | None = SUBMITTER, **kw) -> EvmSettlement:
    max_block_range = kw.pop("max_block_range", 1000)
    cfg = evm_config(
        anvil.rpc_url, chain_id=CHAIN_ID, credits=ledger, name="settlement", token=None, max_block_range=max_block_range
    )
    pool = RpcPool.from_config(cfg, retry_wait=0.01, retry_wait_max=0.05)
    st = EvmSettlement(cfg, bytes.fromhex(key[2:]) if key else None, pool, **kw)
    _CLOSE.append(pool)
    return st


def credit(seq: int, beneficiary: bytes = ALICE, amount: int = 1000, source: bytes = SOURCE) -> Credit:
    return Credit(source=source, sequence=seq, beneficiary=beneficiary, credits=amount + seq,
                  quote_id=keccak256(b"quote-%d" % seq))


def domain(ledger: str, chain_id: int = CHAIN_ID) -> SettlementDomain:
    return SettlementDomain(chain_id=chain_id, contract=bytes.fromhex(ledger[2:]))


def attest(committee, ledger: str, msg: CreditMessage, members=(0, 1, 2), *, chain_id: int = CHAIN_ID) -> list[Attestation]:
    d = dg.credit_digest(domain(ledger, chain_id), msg)
    return [
        Attestation(signer=dg.address_of(committee.keys[i]), message=msg, signature=dg.sign_digest(committee.keys[i], d))
        for i in members
    ]


async def nonce_of(anvil: AnvilNode, key: str) -> int:
    return int(await anvil.rpc("eth_getTransactionCount", Account.from_key(key).address, "pending"), 16)


async def test_committee_and_height(anvil, ledger, committee):
    st = settlement(anvil, ledger)
    assert await st.committee() == (0, committee.addresses, THRESHOLD)
    assert await st.height() == await head(anvil)  # finality 0 in this config


async def test_submit_credits_then_resubmit_changes_nothing(anvil, ledger, committee):
    st = settlement(anvil, ledger, max_block_range=2)
    start = await head(anvil) + 1
    msg = CreditMessage(0, (credit(0), credit(1, BOB), credit(2)))
    # all four sign; the submitter sends only three (the threshold), in ascending order
    tx_hash = await st.submit(msg, attest(committee, ledger, msg, members=(3, 1, 0, 2)))
    assert len(tx_hash) == 32
    receipt = await anvil.rpc("eth_getTransactionReceipt", "0x" + tx_hash.hex())
    assert receipt["status"] == "0x1"
    tx = await anvil.rpc("eth_getTransactionByHash", "0x" + tx_hash.hex())
    assert tx["from"].lower() == Account.from_key(SUBMITTER).address.lower()

    for c in msg.credits:
        assert await st.is_settled(c.source, c.sequence)
    assert not await st.is_settled(SOURCE, 3)
    await anvil.mine(4)  # credited() reads in chunks of 2 blocks over this span
    records = await st.credited(start, await head(anvil))
    assert [r.credit for r in records] == list(msg.credits)
    assert {r.tx_hash for r in records} == {tx_hash}
    assert {r.block_number for r in records} == {int(receipt["blockNumber"], 16)}
    assert await st.credits_of(ALICE) == credit(0).credits + credit(2).credits
    assert await st.credits_of(BOB) == credit(1, BOB).credits

    # the same batch again: nothing to do, no transaction, balances unchanged
    nonce = await nonce_of(anvil, SUBMITTER)
    h = await head(anvil)
    assert await st.submit(msg, attest(committee, ledger, msg)) == b""
    assert await nonce_of(anvil, SUBMITTER) == nonce
    assert await head(anvil) == h
    assert await st.credits_of(ALICE) == credit(0).credits + credit(2).credits
    assert await st.credits_of(BOB) == credit(1, BOB).credits


async def test_partly_settled_batch_credits_only_new_items(anvil, ledger, committee):
    st = settlement(anvil, ledger)
    first = CreditMessage(0, (credit(10),))
    assert await st.submit(first, attest(committee, ledger, first))
    both = CreditMessage(0, (credit(10), credit(11)))
    block = await head(anvil) + 1
    tx_hash = await st.submit(both, attest(committee, ledger, both, members=(1, 2, 3)))
    assert tx_hash
    records = await st.credited(block, await head(anvil))
    assert [r.credit for r in records] == [credit(11)]
    assert await st.credits_of(ALICE) == credit(10).credits + credit(11).credits


@pytest.mark.parametrize("case", ["outsiders", "two-of-four", "wrong-chain-id", "wrong-contract"])
async def test_bad_signatures_fail_without_retry(anvil, ledger, committee, committee_factory, case):
    st = settlement(anvil, ledger)
    msg = CreditMessage(0, (credit(20),))
    if case == "outsiders":
        atts = attest(committee_factory.make(4, "outsiders"), ledger, msg, members=(0, 1, 2, 3))
    elif case == "two-of-four":
        atts = attest(committee, ledger, msg, members=(0, 3))
    elif case == "wrong-chain-id":
        atts = attest(committee, ledger, msg, chain_id=CHAIN_ID + 1)
    else:
        atts = attest(committee, "0x" + "77" * 20, msg)
    nonce = await nonce_of(anvil, SUBMITTER)
    with pytest.raises(TransactionFailed) as e:
        await st.submit(msg, atts)
    assert e.value.retryable is False
    assert "BelowThreshold" in str(e.value)  # the contract's custom error, decoded
    if case == "two-of-four":
        assert "BelowThreshold(2, 3)" in str(e.value)
    assert not await st.is_settled(SOURCE, 20)
    assert await nonce_of(anvil, SUBMITTER) == nonce  # nothing was sent


async def test_signatures_over_another_message_are_dropped(anvil, ledger, committee):
    """Attestations whose signatures were made over another batch (same deposit, other
    beneficiary) do not count: nothing is credited and nothing is retried."""
    st = settlement(anvil, ledger)
    msg = CreditMessage(0, (credit(25),))
    other = CreditMessage(0, (credit(25, BOB),))  # same deposit, another beneficiary
    atts = [Attestation(a.signer, msg, a.signature) for a in attest(committee, ledger, other)]
    with pytest.raises(TransactionFailed) as e:
        await st.submit(msg, atts)
    assert e.value.retryable is False
    assert not await st.is_settled(SOURCE, 25)


async def test_wrong_committee_index_is_not_retryable(anvil, ledger, committee):
    st = settlement(anvil, ledger)
    msg = CreditMessage(1, (credit(30),))
    with pytest.raises(TransactionFailed) as e:
        await st.submit(msg, attest(committee, ledger, msg))
    assert e.value.retryable is False and "committee" in str(e.value)


async def test_concurrent_submissions_settle_once(anvil, ledger, committee):
    st = settlement(anvil, ledger)
    msg = CreditMessage(0, (credit(40), credit(41)))
    atts = attest(committee, ledger, msg)
    results = await asyncio.gather(st.submit(msg, atts), st.submit(msg, atts))
    assert sorted(len(r) for r in results) == [0, 32]
    assert await st.credits_of(ALICE) == credit(40).credits + credit(41).credits


async def test_competitor_mined_first_is_harmless(anvil, ledger, committee):
    """Two aggregators send the same batch into one block: one credits it, the other's
    transaction reverts NothingToSettle on chain, which submit reports as b"".

    Both must have estimated before either transaction is in the pool: anvil estimates against
    the pending block, so a submitter estimating after the other's send sees NothingToSettle and
    sends nothing (the race a loaded machine lost). Each send waits until both got there."""
    a = settlement(anvil, ledger, key=SUBMITTER, receipt_poll=0.02)
    b = settlement(anvil, ledger, key=SUBMITTER_2, receipt_poll=0.02)
    at_send: list[object] = []
    both_at_send = asyncio.Event()
    for st in (a, b):
        def gated(send):
            async def send_when_both_estimated(raw):
                at_send.append(send)
                if len(at_send) == 2:
                    both_at_send.set()
                await asyncio.wait_for(both_at_send.wait(), 30)
                return await send(raw)
            return send_when_both_estimated
        st.pool.send_raw_transaction = gated(st.pool.send_raw_transaction)
    msg = CreditMessage(0, (credit(50),))
    atts = attest(committee, ledger, msg)
    await set_automine(anvil, False)
    try:
        tasks = [asyncio.create_task(a.submit(msg, atts)), asyncio.create_task(b.submit(msg, atts))]

        async def both_pending() -> bool:
            status = await anvil.rpc("txpool_status")
            return int(status["pending"], 16) >= 2

        await wait_for(both_pending)
        await anvil.mine(1)
        results = await asyncio.gather(*tasks)
    finally:
        await set_automine(anvil, True)
    assert sorted(len(r) for r in results) == [0, 32]
    block = await anvil.rpc("eth_getBlockByNumber", "latest", False)
    statuses = sorted(
        [(await anvil.rpc("eth_getTransactionReceipt", t))["status"] for t in block["transactions"]]
    )
    assert statuses == ["0x0", "0x1"]  # the loser really reverted on chain
    assert await a.credits_of(ALICE) == credit(50).credits


async def test_unmined_transaction_times_out_retryable_then_recovers(anvil, ledger, committee):
    st = settlement(anvil, ledger, receipt_timeout=0.3, receipt_poll=0.05)
    msg = CreditMessage(0, (credit(60),))
    await set_automine(anvil, False)
    try:
        with pytest.raises(TransactionFailed) as e:
            await st.submit(msg, attest(committee, ledger, msg))
        assert e.value.retryable is True
    finally:
        await set_automine(anvil, True)
    await anvil.mine(1)  # the stuck transaction gets mined after all
    assert await st.is_settled(SOURCE, 60)
    # the nonce is re-read after the failure: the next batch goes through
    msg2 = CreditMessage(0, (credit(61),))
    assert len(await st.submit(msg2, attest(committee, ledger, msg2))) == 32
    assert await st.is_settled(SOURCE, 61)


async def test_read_only_settlement_cannot_submit(anvil, ledger, committee):
    from bridge.errors import ConfigError

    st = settlement(anvil, ledger, key=None)
    msg = CreditMessage(0, (credit(70),))
    assert await st.is_settled(SOURCE, 70) is False
    with pytest.raises(ConfigError):
        await st.submit(msg, attest(committee, ledger, msg))


async def test_transaction_lost_from_mempool_is_rebroadcast(anvil, ledger, committee):
    st = settlement(anvil, ledger, receipt_poll=0.02)
    msg = CreditMessage(0, (credit(80),))

    async def one_pending() -> bool:
        return int((await anvil.rpc("txpool_status"))["pending"], 16) == 1

    await set_automine(anvil, False)
    try:
        task = asyncio.create_task(st.submit(msg, attest(committee, ledger, msg)))
        await wait_for(one_pending)
        await anvil.rpc("anvil_dropAllTransactions")  # the node forgets it (a restart, say)
        await wait_for(one_pending)  # ... and the submitter sends it again
        await anvil.mine(1)
        tx_hash = await task
    finally:
        await set_automine(anvil, True)
    assert len(tx_hash) == 32
    assert await st.is_settled(SOURCE, 80)
