"""An unmodified pytoniq LiteBalancer against the local TON chain over ADNL (see conftest: the
real TVM emulator and real wallet / lock contracts; trust_level=2 because the local chain has no
validator-signed proofs)."""

from __future__ import annotations

import pytest
from pytoniq.liteclient.client import LiteServerError, RunGetMethodError
from pytoniq_core import Address

from relayers.ton import lock as L
from relayers.ton import wallet as tw

from tests.integration.ton.conftest import MIN, TON, TonEnv


async def test_litebalancer_reads_blocks_accounts_and_get_methods(ton: TonEnv):
    lb = ton.lb
    info = await lb.get_masterchain_info()
    seqno = info["last"]["seqno"]
    assert seqno >= 1 and info["init"]["root_hash"] == ton.server.chain.blocks[0].mc.root_hash.hex()
    bid, block = await lb.lookup_block(-1, -(2**63), seqno)
    assert bid.root_hash.hex() == info["last"]["root_hash"] and block.info.seqno == seqno
    assert block.global_id == ton.server.chain.global_id
    shards = await lb.get_all_shards_info()
    assert [s.workchain for s in shards] == [0]
    state = await lb.get_account_state(ton.lock)
    assert state.is_active() and state.balance > 0
    assert await lb.run_get_method(ton.lock, "get_min_amount", []) == [MIN]
    threshold, keys = await lb.run_get_method(ton.lock, "get_committee", [])
    assert L.parse_committee(threshold, keys) == (3, sorted(ton.publics))
    assert (await lb.get_time())["now"] > 0 and (await lb.get_version())["version"] > 0
    waited = await lb.wait_masterchain_seqno(seqno + 1, 5000, "getMasterchainInfo")
    assert waited["last"]["seqno"] >= seqno + 1


async def test_transactions_are_the_emulators_own(ton: TonEnv):
    txs = await ton.lb.get_transactions(ton.lock, 16)
    assert txs, "the deploy transaction at least"
    for t in txs:
        rec = ton.server.chain.by_hash[t.cell.hash]
        assert rec.boc == t.cell.to_boc() or rec.cell.hash == t.cell.hash
    for newer, older in zip(txs, txs[1:]):
        assert (newer.prev_trans_lt, newer.prev_trans_hash) == (older.lt, older.cell.hash)


async def test_an_external_sent_to_several_peers_is_applied_once(ton: TonEnv):
    w = ton.wallets[1]
    before_msgs = ton.server.sent_messages
    before_txs = len(ton.server.chain.transactions_of(w.address.hash_part))
    await ton.pay(1, TON, L.deposit_body(b"\x01" * 32))
    assert ton.server.sent_messages - before_msgs >= 2  # LiteBalancer broadcasts to "several" peers
    assert len(ton.server.chain.transactions_of(w.address.hash_part)) == before_txs + 1


async def test_a_funded_never_used_wallet_deploys_and_pays_in_one_message(ton: TonEnv):
    w, _ = await ton.new_wallet(5 * TON, deployed=False)
    await w.update()
    assert w.is_uninitialized and w.balance == 5 * TON
    with pytest.raises((LiteServerError, RunGetMethodError)):
        await w.get_seqno()  # no code yet: the seqno get-method cannot run
    count = await ton.deposit_count()
    await tw.transfer(w, ton.lock, TON, L.deposit_body(b"\x02" * 32))  # state init attached, seqno 0

    async def done():
        await w.update()
        return w.is_active and await ton.deposit_count() == count + 1

    await tw.wait_for(done, 20)
    assert await w.get_seqno() == 1


async def test_rejected_external_messages_are_errors(ton: TonEnv):
    w = ton.wallets[2]
    await w.update()
    stale = w.raw_create_transfer_msg(w.private_key, 12345, w.wallet_id, [])  # wrong seqno: wallet throws
    with pytest.raises(LiteServerError, match="exit code 33"):
        await w.send_external(body=stale)


async def test_transactions_of_an_undeployed_account(ton: TonEnv):
    nobody = Address((0, b"\x5a" * 32))
    account, shard_account = await ton.lb.raw_get_account_state(nobody)
    assert account is None and shard_account is None
    with pytest.raises(AttributeError):  # pytoniq's own behaviour: the watcher never relies on it
        await ton.lb.get_transactions(nobody, 5)
