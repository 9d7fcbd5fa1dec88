"""TonWatcher over the local TON chain (see conftest): real WalletV4R2 transfers to the real lock
contract, executed by the real TVM emulator, read back through an unmodified LiteBalancer or the
toncenter v2 HTTP transport; DepositFollower on SQLite for restarts; committee releases."""

from __future__ import annotations

import asyncio
import os

import pytest
from pytoniq.liteclient.client import LiteServerError
from pytoniq_core import Address, Builder

from bridge.errors import ChainError
from bridge.hashing import source_id
from bridge.storage import observations as obs_repo
from bridge.storage.db import Database
from bridge.watch import DepositFollower
from relayers.ton import lock as L
from relayers.ton import wallet as tw
from devnet.ton.localchain import LOCAL_GLOBAL_ID
from relayers.ton.watcher import TonWatcher, split_tx_id

from tests.integration.ton.conftest import MIN, TON, TonEnv


async def _deposits_between(ton: TonEnv, watcher: TonWatcher, start: int) -> list:
    end = await watcher.finalized_height()
    return await watcher.fetch_deposits(start, end)


async def test_a_signed_wallet_transfer_is_observed(ton: TonEnv):
    w = TonWatcher(ton.config())
    try:
        start = await ton.final_seqno() + 1
        seq = await ton.deposit_count()
        ref = os.urandom(32)
        await ton.pay(0, 3 * TON + 17, L.deposit_body(ref, query_id=9))
        await ton.wait_block()
        obs = [o for o in await _deposits_between(ton, w, start) if o.reference == ref]
        assert len(obs) == 1
        o = obs[0]
        assert (o.chain, o.token, o.amount, o.sequence, o.event_index) == ("ton", "TON", 3 * TON + 17, seq, 0)
        assert o.payer == ton.wallets[0].address.hash_part
        assert o.source == source_id("ton", ton.server.chain.global_id, ton.lock.hash_part)
        h, lt = split_tx_id(o.tx_id)
        rec = ton.server.chain.by_hash[h]
        assert rec.lt == lt and rec.block == o.block_number  # its masterchain block, exactly
        assert o.block_hash == ton.server.chain.blocks[o.block_number].mc.root_hash
        assert o.timestamp == rec.now
        assert await w.reobserve(o.tx_id) == [o]
        fresh = TonWatcher(ton.config())  # a signer's own view, nothing cached
        try:
            assert await fresh.reobserve(o.tx_id) == [o]
            assert await fresh.fetch_deposits(o.block_number, o.block_number) == [o]
            # the liteserver finds no such transaction: it cannot prove there is none (a server
            # without the history says the same), so the watcher says "could not tell"
            with pytest.raises(ChainError):
                await fresh.reobserve(os.urandom(32) + lt.to_bytes(8, "big"))
        finally:
            await fresh.aclose()
    finally:
        await w.aclose()


@pytest.mark.parametrize("amount,body", [
    (MIN - 1, "deposit"),
    (TON, Builder().store_uint(0xABCD, 16).end_cell()),  # an empty body is a deposit since issue 14
    (TON, Builder().store_uint(0x12345678, 32).store_uint(0, 64).store_bytes(b"\x01" * 32).end_cell()),
    (TON, Builder().store_uint(L.OP_DEPOSIT, 32).store_uint(0, 64).end_cell()),
])
async def test_too_small_and_malformed_payments_bounce_and_are_never_observed(ton: TonEnv, amount, body):
    w = TonWatcher(ton.config())
    try:
        wallet = ton.wallets[2]
        start = await ton.final_seqno() + 1
        count = await ton.deposit_count()
        await wallet.update()
        before = wallet.balance
        await ton.pay(2, amount, L.deposit_body(os.urandom(32)) if body == "deposit" else body)
        await ton.wait_block(2)  # the bounce is delivered in the same block; let it settle
        assert await _deposits_between(ton, w, start) == []
        assert await ton.deposit_count() == count
        await wallet.update()
        assert before - wallet.balance < 10**8  # the value came back; only fees were spent
        lock_txs = [t for t in await ton.lb.get_transactions(ton.lock, 3) if t.now >= 0]
        assert lock_txs[0].description.aborted and lock_txs[0].description.bounce is not None
    finally:
        await w.aclose()


async def test_relayer_restart_resumes_without_gaps_or_duplicates(ton: TonEnv, tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/ton.sqlite")
    await db.migrate()
    start = await ton.final_seqno() + 1
    refs = [os.urandom(32) for _ in range(6)]
    first_seq = await ton.deposit_count()
    try:
        for i, ref in enumerate(refs):
            await ton.pay(i % 2, MIN + i, L.deposit_body(ref))
        await ton.wait_block()

        def follower(w):
            return DepositFollower(w, db, "signer", start_block=start, max_range=3, poll_interval=0.05)

        w1 = TonWatcher(ton.config())
        f1 = follower(w1)
        await f1.step()
        await f1.step()
        task = asyncio.create_task(follower(w1).run())  # crash mid-flight: cancelled between steps
        await asyncio.sleep(0.15)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await w1.aclose()

        w2 = TonWatcher(ton.config())  # the restarted relayer: new process state, same database
        f2 = follower(w2)
        while not f2.caught_up or f2.height < await w2.finalized_height() - 1:
            await f2.step()
        await w2.aclose()
        async with db.begin() as s:
            stored = await obs_repo.observations_by_status(s, "new", 1000)
        mine = sorted((o.observation for o in stored if o.observation.reference in refs), key=lambda o: o.sequence)
        assert [o.sequence for o in mine] == list(range(first_seq, first_seq + len(refs)))
        assert [o.reference for o in mine] == refs
        assert [o.amount for o in mine] == [MIN + i for i in range(len(refs))]
        assert len({o.observation.tx_id for o in stored}) == len(stored)
    finally:
        await db.dispose()


async def test_toncenter_transport_gives_the_same_observations(ton: TonEnv):
    start = await ton.final_seqno() + 1
    for i in range(2):
        await ton.pay(i, TON + i, L.deposit_body(os.urandom(32)))
    await ton.wait_block()
    lite = TonWatcher(ton.config())
    http = TonWatcher(ton.config(liteserver_config=None, toncenter=[ton.toncenter]))
    dead = dict(ton.server.global_config())
    dead["liteservers"] = [dict(dead["liteservers"][0], port=1)]  # nothing listens there
    fallback = TonWatcher(ton.config(liteserver_config=dead, toncenter=[ton.toncenter]))
    try:
        end = await lite.finalized_height()
        a = await lite.fetch_deposits(start, end)
        assert len(a) == 2
        assert await http.fetch_deposits(start, end) == a
        assert await fallback.fetch_deposits(start, end) == a
        assert [await http.reobserve(o.tx_id) for o in a] == [[o] for o in a]
        assert await http.block_ref(end) == await lite.block_ref(end)
    finally:
        for w in (lite, http, fallback):
            await w.aclose()


async def test_release_needs_threshold_signatures_and_succeeds_once(ton: TonEnv):
    """The refund path end to end on the local chain: members sign with ``TonRefundSigner``
    (as signer nodes do when they hold a deposit), the aggregator's ``TonLockReleaser`` checks
    each signature against the lock's own committee and sends the release through an unmodified
    LiteBalancer; the lock pays a release id once, whoever submits it and however often."""
    from bridge.errors import TransactionFailed, VerificationError
    from relayers.ton.release import TonLockReleaser, TonRefundSigner

    payer = os.urandom(32)
    dest = L.basechain(payer)
    rid = os.urandom(32)
    members = [TonRefundSigner(ton.lock, seed, global_id=LOCAL_GLOBAL_ID) for seed in ton.seeds]
    releaser = TonLockReleaser(ton.config(), timeout=30)
    try:
        assert await releaser.committee() == (0, sorted(ton.publics), ton.threshold)
        signed = [(m.signer_id, m.sign(payer, TON, rid)) for m in members]
        assert all(to == payer for _, (to, _) in signed)
        sigs = [(k, sig) for k, (_, sig) in signed]
        for k, sig in sigs:
            releaser.verify(payer, TON, rid, k, sig)
        with pytest.raises(VerificationError):  # a signature over another amount
            releaser.verify(payer, TON + 1, rid, sigs[0][0], sigs[0][1])
        with pytest.raises(VerificationError):  # claimed by another member
            releaser.verify(payer, TON, rid, sigs[1][0], sigs[0][1])

        payload = L.release_payload(global_id=LOCAL_GLOBAL_ID, lock=ton.lock, destination=dest, amount=TON, release_id=rid)

        async def send(by_key: dict[bytes, bytes]):
            return await ton.lb.raw_send_message(L.release_message(ton.lock, L.release_body(payload, by_key)).to_boc())

        with pytest.raises(LiteServerError, match=f"exit code {L.ERR_NOT_ENOUGH_SIGNATURES}"):
            await send(dict(sigs[:2]))
        forged = {**dict(sigs[:2]), sigs[2][0]: L.sign_release(payload, os.urandom(32))}
        with pytest.raises(LiteServerError, match=f"exit code {L.ERR_BAD_SIGNATURE}"):
            await send(forged)
        assert not await releaser.released(rid)
        await releaser.release(payer, TON, rid, sigs[1:])  # members 1..3, any t of them
        assert await releaser.released(rid)
        paid = (await ton.lb.get_account_state(dest)).balance
        assert TON - L.RELEASE_FEE_BOUND < paid < TON  # the release paid its fees out of the amount
        # a second worker, other members' signatures: the lock pays the release id once
        with pytest.raises(TransactionFailed, match="ReleaseUsed"):
            await releaser.release(payer, TON, rid, sigs[:3])
        await ton.wait_block(3)  # past the liteserver's duplicate window: a genuine replay
        with pytest.raises(LiteServerError, match=f"exit code {L.ERR_RELEASE_USED}"):
            await send(dict(sigs[:3]))
        await ton.wait_block()
        assert (await ton.lb.get_account_state(dest)).balance == paid
    finally:
        await releaser.aclose()


async def test_refund_worker_pays_what_it_can_and_retries_the_rest(ton: TonEnv):
    """The aggregator's RefundWorker over the real TON lock: a release the lock cannot pay
    (more than its balance: exit 416, refused before acceptance) does not hold up a good one,
    and is tried again later instead of stopping the worker."""
    from bridge.payments.refunds import RefundWorker
    from relayers.ton.release import TonLockReleaser, TonRefundSigner

    class Feed:  # one signer node's GET /v1/releases, as the worker reads it
        def __init__(self, base_url: str, items: list[dict]) -> None:
            self.base_url, self.items = base_url, items

        async def releases(self, after: int) -> list[dict]:
            return [i for i in self.items if i["id"] > after]

    await ton.pay(0, 2 * TON, L.top_up_body())  # the lock can pay the good one whatever ran before
    await ton.wait_block()
    members = [TonRefundSigner(ton.lock, seed, global_id=LOCAL_GLOBAL_ID) for seed in ton.seeds]
    good_payer, big_payer = os.urandom(32), os.urandom(32)
    good = (good_payer, TON, os.urandom(32))
    too_big = (big_payer, 10**6 * TON, os.urandom(32))
    feeds = []
    for n, m in enumerate(members):
        items = []
        for i, (payer, amount, rid) in enumerate((too_big, good), start=1):
            to, sig = m.sign(payer, amount, rid)
            items.append({"id": i, "chain": "ton", "release_id": "0x" + rid.hex(), "to": "0x" + to.hex(),
                          "amount": str(amount), "signature": "0x" + sig.hex(), "signer": "0x" + m.signer_id.hex(),
                          "purpose": "excess", "payment_id": f"p{i}"})
        feeds.append(Feed(f"signer-{n}", items))
    releaser = TonLockReleaser(ton.config(), timeout=30)
    try:
        worker = RefundWorker(signers=feeds, releasers={"ton": releaser})
        assert await worker.step() == 1  # the good one; the big one failed and waits
        assert await releaser.released(good[2]) and not await releaser.released(too_big[2])
        assert TON - L.RELEASE_FEE_BOUND < (await ton.lb.get_account_state(L.basechain(good_payer))).balance < TON
        assert await worker.step() == 0  # the big one is not due again yet, the good one is done
        (pending,) = worker._pending.values()
        assert pending.release_id == too_big[2] and pending.failures == 1 and pending.retry_at > 0
    finally:
        await releaser.aclose()


async def test_watcher_and_releaser_refuse_another_networks_lock_or_config(ton: TonEnv):
    """Issue 11: a lock whose stored global id is not the chain's (here: a testnet-bound lock
    deployed on the local chain), a config naming another network, or a minimum refund the lock
    would refuse are configuration errors at start, before any deposit is read or release sent."""
    from bridge.errors import ChainError, ConfigError
    from relayers.ton.release import TonLockReleaser

    async def refused(cfg, match):
        w = TonWatcher(cfg)
        try:
            with pytest.raises(ConfigError, match=match):
                await w.finalized_height()
        finally:
            await w.aclose()

    # a liteserver config of another network is refused when the config is read (its zero state is
    # not that network's); over toncenter, the chain's own global id is compared at start
    with pytest.raises(ValueError, match="not of TON testnet"):
        ton.config(global_id=L.TESTNET_GLOBAL_ID, allow_unproven=True)
    await refused(ton.config(global_id=L.TESTNET_GLOBAL_ID, allow_unproven=True, liteserver_config=None,
                             toncenter=[ton.toncenter]), "the chain's is -217")
    await refused(ton.config(min_refund=L.DEFAULT_MIN_RELEASE - 1), "min_release")

    si = L.state_init(ton.publics, 3, MIN, global_id=L.TESTNET_GLOBAL_ID)
    testnet_lock = L.lock_address(ton.publics, 3, MIN, global_id=L.TESTNET_GLOBAL_ID)
    assert testnet_lock.hash_part != ton.lock.hash_part
    cfg = ton.config(contracts={"lock": L.bounceable(testnet_lock)})
    w = TonWatcher(cfg)
    try:
        with pytest.raises(ChainError) as e:  # not deployed yet: retryable, not a config error
            await w.finalized_height()
        assert e.value.retryable and not isinstance(e.value, ConfigError)
    finally:
        await w.aclose()
    await tw.transfer(ton.wallets[1], testnet_lock, TON, L.top_up_body(), state_init=si)

    async def deployed():
        try:
            return (await ton.lb.run_get_method(testnet_lock, "get_global_id", []))[0] == L.TESTNET_GLOBAL_ID
        except Exception:  # pytoniq raises while the account is not active
            return False

    await tw.wait_for(deployed, 20)
    await ton.wait_block()
    await refused(cfg, "bound to global id -3")
    await refused(cfg.model_copy(update={"liteserver_config": None, "toncenter": [ton.toncenter]}), "bound to global id -3")
    releaser = TonLockReleaser(cfg, timeout=10)
    try:
        with pytest.raises(ConfigError, match="the lock is bound to -3"):
            await releaser.committee()
    finally:
        await releaser.aclose()
    good = TonWatcher(ton.config())
    try:
        assert await good.finalized_height() >= 0  # the right lock on the right chain passes
    finally:
        await good.aclose()
