"""EvmWatcher, RpcPool and DepositFollower against a real anvil.

Every test deploys its own CreditLock, so deposits never leak between tests; tests that
rewrite history (anvil_reorg, evm_revert) only touch blocks above their own deployment.
Storage is SQLite in tmp_path.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
import pytest_asyncio

from bridge.errors import ChainError, ConfigError, ReorgDetected, RpcUnavailable
from bridge.hashing import source_id
from bridge.storage.db import Database
from bridge.storage.observations import (
    add_observations,
    get_cursor,
    observations_by_reference,
    observations_by_status,
    set_cursor,
    set_observation_status,
)
from bridge.types import Observation
from bridge.watch import DepositFollower
from devnet.evm.anvil import DEFAULT_CHAIN_ID, AnvilNode
from relayers.evm.contracts import LOCK, deploy
from relayers.evm.rpc import JsonRpcError, RpcPool
from relayers.evm.watcher import EvmWatcher
from tests.integration.evm.helpers import (
    DEV_ADDRESSES,
    LOCK_SELECTOR,
    MIN_LOCK,
    RpcProxy,
    closed_port_url,
    evm_config,
    head,
    receipt,
    ref,
    send_lock,
    set_automine,
    wait_for,
)

CHAIN_ID = DEFAULT_CHAIN_ID


@pytest_asyncio.fixture
async def lock(w3, committee) -> str:
    """A fresh CreditLock (3 of the 4 committee keys, minimum MIN_LOCK) for each test."""
    return await deploy(w3, LOCK, [committee.checksum_addresses, 3, MIN_LOCK], _deployer_key())


def _deployer_key() -> str:
    from devnet.evm.anvil import DEV_PRIVATE_KEYS

    return DEV_PRIVATE_KEYS[0]


@pytest_asyncio.fixture
async def sdb(tmp_path):
    """SQLite in tmp_path (the follower tests); ``db`` (tests/conftest.py) also runs on
    PostgreSQL under ``make test``."""
    d = Database(f"sqlite+aiosqlite:///{tmp_path}/watch.sqlite")
    await d.migrate()
    yield d
    await d.dispose()


_POOLS: list[RpcPool] = []


@pytest_asyncio.fixture(autouse=True)
async def close_pools():
    yield
    while _POOLS:
        await _POOLS.pop().aclose()


def fast_pool(cfg, **kw) -> RpcPool:
    kw.setdefault("retry_wait", 0.01)
    kw.setdefault("retry_wait_max", 0.05)
    pool = RpcPool.from_config(cfg, **kw)
    _POOLS.append(pool)
    return pool


def make_watcher(anvil: AnvilNode, lock: str, **cfg_kw) -> EvmWatcher:
    cfg = evm_config(anvil.rpc_url, chain_id=CHAIN_ID, lock=lock, **cfg_kw)
    return EvmWatcher(cfg, fast_pool(cfg))


class RangeSpy:
    """Records the block ranges of eth_getLogs calls."""

    def __init__(self, pool: RpcPool) -> None:
        self.ranges: list[tuple[int, int]] = []
        self._orig = pool.get_logs
        pool.get_logs = self._get_logs  # type: ignore[method-assign]

    async def _get_logs(self, from_block, to_block, *a, **kw):
        self.ranges.append((from_block, to_block))
        return await self._orig(from_block, to_block, *a, **kw)


async def all_stored(db: Database) -> list:
    async with db.begin() as s:
        return await observations_by_status(s, "new", limit=10_000)


async def run_until(follower: DepositFollower, target: int, max_steps: int = 1000) -> None:
    """Step until the cursor reaches ``target`` (bounded number of steps)."""
    for _ in range(max_steps):
        await follower.step()
        if follower.height is not None and follower.height >= target:
            return
    raise AssertionError(f"follower stuck at {follower.height}, wanted {target}")


# ------------------------------------------------------------------------------ scanning
async def test_bounded_ranges_find_every_deposit_once(anvil, lock):
    start = await head(anvil) + 1
    txs: list[bytes] = []
    for i in range(24):
        if i % 4 == 0:
            await anvil.mine((i * 7) % 11 + 3)  # gaps of empty blocks
        txs.append(await send_lock(anvil, lock, ref(i), MIN_LOCK + i, sender=1 + i % 3))
    # three deposits in one block
    await set_automine(anvil, False)
    try:
        for i in range(24, 27):
            txs.append(await send_lock(anvil, lock, ref(i), MIN_LOCK + i, sender=1 + i % 3, wait=False))
        await anvil.mine(1)
    finally:
        await set_automine(anvil, True)
    await anvil.mine(5)
    end = await head(anvil)

    watcher = make_watcher(anvil, lock, max_block_range=7)
    spy = RangeSpy(watcher.pool)
    found = await watcher.fetch_deposits(start, end)

    # every getLogs range is at most 7 blocks and together they tile start..end exactly
    assert all(b - a + 1 <= 7 for a, b in spy.ranges)
    assert spy.ranges[0][0] == start and spy.ranges[-1][1] == end
    assert all(spy.ranges[k][1] + 1 == spy.ranges[k + 1][0] for k in range(len(spy.ranges) - 1))

    assert [o.sequence for o in found] == list(range(27))
    assert [o.tx_id for o in found] == txs
    assert len({(o.tx_id, o.event_index) for o in found}) == 27
    lock_bytes = bytes.fromhex(lock[2:])
    for i, o in enumerate(found):
        r = await receipt(anvil, o.tx_id)
        assert o.block_number == int(r["blockNumber"], 16)
        assert o.block_hash.hex() == r["blockHash"][2:]
        assert o.event_index == int(r["logs"][0]["logIndex"], 16)
        assert o.amount == MIN_LOCK + i
        assert o.reference == ref(i)
        assert o.payer == b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[1 + i % 3][2:])
        assert o.token == "ETH" and o.chain == "ethereum"
        assert o.source == source_id("evm", CHAIN_ID, lock_bytes)
        blk = await anvil.rpc("eth_getBlockByNumber", hex(o.block_number), False)
        assert o.timestamp == int(blk["timestamp"], 16)
    same_block = found[24:]
    assert len({o.block_number for o in same_block}) == 1
    assert [o.event_index for o in same_block] == sorted(o.event_index for o in same_block)

    assert await watcher.reobserve(txs[5]) == [found[5]]
    with pytest.raises(ChainError, match="no receipt"):  # no receipt: the endpoint cannot tell
        await watcher.reobserve(b"\x12" * 32)
    await watcher.aclose()


async def test_follower_small_range_stores_each_deposit_once(anvil, lock, sdb):
    start = await head(anvil) + 1
    for i in range(12):
        await anvil.mine(i % 4)
        await send_lock(anvil, lock, ref(100 + i))
    end = await head(anvil)
    watcher = make_watcher(anvil, lock, max_block_range=4)
    seen: list = []

    async def on_new(obs):
        seen.extend(obs)

    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=4, poll_interval=0.01, on_new=on_new)
    await run_until(f, end)
    stored = await all_stored(sdb)
    assert sorted(s.observation.sequence for s in stored) == list(range(12))
    assert [o.sequence for o in seen] == list(range(12))
    # rescanning from scratch (a lost cursor) stores nothing twice
    g = DepositFollower(watcher, sdb, "other-component", start_block=start, max_range=5)
    await run_until(g, end)
    assert len(await all_stored(sdb)) == 12


# ------------------------------------------------------------------------------ finality
async def test_deposit_is_invisible_until_n_confirmations(anvil, lock, sdb):
    n = 5
    start = await head(anvil) + 1
    watcher = make_watcher(anvil, lock, finality=n)
    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=100)
    tx = await send_lock(anvil, lock, ref(200))
    block = int((await receipt(anvil, tx))["blockNumber"], 16)

    for k in range(n):  # head = block + k: fewer than n blocks on top
        assert await head(anvil) == block + k
        assert await watcher.finalized_height() == block + k - n
        await f.step()
        assert await all_stored(sdb) == []
        with pytest.raises(ChainError, match="not final"):  # not final yet: ask again later
            await watcher.reobserve(tx)
        await anvil.mine(1)

    assert await watcher.finalized_height() == block
    assert await f.step() == 1
    [stored] = await all_stored(sdb)
    assert stored.observation.tx_id == tx and stored.observation.reference == ref(200)
    assert [o.tx_id for o in await watcher.reobserve(tx)] == [tx]


async def test_finalized_tag_rule(anvil, lock):
    watcher = make_watcher(anvil, lock, finality="finalized")
    await anvil.mine(70)
    h = await head(anvil)
    assert await watcher.finalized_height() == h - 64  # anvil: finalized = latest - 64
    safe = make_watcher(anvil, lock, finality="safe")
    assert await safe.finalized_height() == h - 32


async def test_pending_deposits_show_unfinal_ones(anvil, lock):
    watcher = make_watcher(anvil, lock, finality=3)
    tx = await send_lock(anvil, lock, ref(300))
    pending = await watcher.pending_deposits()
    assert [o.tx_id for o in pending] == [tx]
    mined_at = pending[0].block_number
    await anvil.mine(3)
    assert await watcher.pending_deposits() == []
    final = await watcher.finalized_height()
    assert [o.tx_id for o in await watcher.fetch_deposits(final - 3, final)] == [tx]
    # final now, but a follower whose cursor is still below its block has not stored it: it
    # stays in view (the API's payment must not drop back from "seen" to "new")
    assert [o.tx_id for o in await watcher.pending_deposits(after=mined_at - 1)] == [tx]
    assert await watcher.pending_deposits(after=mined_at) == []


# ------------------------------------------------------------------------------ restart
async def test_follower_restarted_midway_stores_everything_once(anvil, lock, sdb):
    start = await head(anvil) + 1
    n = 30
    for i in range(n):
        await send_lock(anvil, lock, ref(400 + i))
        await anvil.mine(i % 3)
    end = await head(anvil)
    seen: list = []

    async def on_new(obs):
        seen.extend(obs)

    async def on_new_then_crash(obs):
        seen.extend(obs)
        if len(seen) >= 8:
            task.cancel()  # takes effect at the loop's next await: between two steps

    # first instance: a running task cancelled after it stored some, not all, deposits
    w1 = make_watcher(anvil, lock, max_block_range=3)
    f1 = DepositFollower(
        w1, sdb, "signer", start_block=start, max_range=3, poll_interval=0.01, on_new=on_new_then_crash
    )
    task = asyncio.create_task(f1.run())
    with pytest.raises(asyncio.CancelledError):
        await task
    async with sdb.begin() as s:
        mid, _ = await get_cursor(s, "signer", "ethereum")
    assert start <= mid < end

    # a new instance on the same database carries on from the stored cursor
    w2 = make_watcher(anvil, lock, max_block_range=3)
    f2 = DepositFollower(w2, sdb, "signer", start_block=start, max_range=3, poll_interval=0.01, on_new=on_new)
    task = asyncio.create_task(f2.run())
    await wait_for(lambda: f2.height is not None and f2.height >= end)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    stored = await all_stored(sdb)
    assert sorted(s.observation.sequence for s in stored) == list(range(n))
    # on_new saw each deposit exactly once, across both instances
    assert sorted(o.sequence for o in seen) == list(range(n))
    async with sdb.begin() as s:
        height, block_hash = await get_cursor(s, "signer", "ethereum")
    assert height >= end
    blk = await anvil.rpc("eth_getBlockByNumber", hex(height), False)
    assert block_hash.hex() == blk["hash"][2:]


async def test_follower_cancelled_between_steps_is_contiguous(anvil, lock, sdb):
    start = await head(anvil) + 1
    for i in range(10):
        await send_lock(anvil, lock, ref(500 + i))
    end = await head(anvil)
    heights = []
    for instance in range(4):  # each instance does two steps, then "crashes"
        w = make_watcher(anvil, lock, max_block_range=2)
        f = DepositFollower(w, sdb, "signer", start_block=start, max_range=2)
        for _ in range(2):
            await f.step()
            heights.append(f.height)
    w = make_watcher(anvil, lock, max_block_range=2)
    f = DepositFollower(w, sdb, "signer", start_block=start, max_range=2)
    await run_until(f, end)
    heights.append(f.height)
    # the cursor advanced in contiguous steps of at most max_range from start - 1
    prev = start - 1
    for h in heights:
        assert 0 <= h - prev <= 2
        prev = h
    assert sorted(s.observation.sequence for s in await all_stored(sdb)) == list(range(10))


async def test_a_long_range_is_read_as_a_pipeline_of_pieces_with_the_same_deposits(anvil, lock):
    """``fetch_deposits`` reads a long range in pieces, the next piece's logs (and this
    piece's headers) requested while a piece is checked: the pieces tile the range, and the
    deposits are exactly those of one request a range. A piece that fails fails the call and
    leaves no request running."""
    start = await head(anvil) + 1
    for i in range(14):
        await anvil.mine(i % 3)
        await send_lock(anvil, lock, ref(450 + i), MIN_LOCK + i)
    end = await head(anvil)

    whole = make_watcher(anvil, lock, max_block_range=1000)
    whole.PIPELINE_PIECES = 1  # one request for the range: the reference
    expected = await whole.fetch_deposits(start, end)
    assert [o.sequence for o in expected] == list(range(14))

    piped = make_watcher(anvil, lock, max_block_range=1000)
    piped.PIPELINE_MIN_PIECE = 2
    spy = RangeSpy(piped.pool)
    assert await piped.fetch_deposits(start, end) == expected
    size = -(-(end - start + 1) // piped.PIPELINE_PIECES)
    assert len(spy.ranges) == piped.PIPELINE_PIECES
    assert spy.ranges[0][0] == start and spy.ranges[-1][1] == end
    assert all(b - a + 1 <= size for a, b in spy.ranges)
    assert all(spy.ranges[k][1] + 1 == spy.ranges[k + 1][0] for k in range(len(spy.ranges) - 1))

    # the third piece's logs fail: the call raises, and nothing it started is left running
    calls = []
    get_logs = piped.pool.get_logs

    async def failing(from_block, to_block, *a, **kw):
        calls.append(from_block)
        if len(calls) == 3:
            raise ChainError("this endpoint lost the logs")
        return await get_logs(from_block, to_block, *a, **kw)

    piped.pool.get_logs = failing
    before = asyncio.all_tasks()
    with pytest.raises(ChainError, match="lost the logs"):
        await piped.fetch_deposits(start, end)
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not {t for t in asyncio.all_tasks() - before if not t.done()}
    await whole.aclose()
    await piped.aclose()


async def test_follower_stores_a_long_range_piece_by_piece(anvil, lock, sdb):
    """A step's range is stored in pieces (``DepositFollower.PIECES``), each with the cursor
    in one transaction, the next piece fetched meanwhile: a failure while fetching a later
    piece keeps the pieces stored before it (the cursor at a piece's end, holding exactly that
    piece's deposits), and the next step goes on from there; nothing is stored twice."""
    start = await head(anvil) + 1
    for i in range(16):
        await send_lock(anvil, lock, ref(470 + i))  # one block each
    end = await head(anvil)
    assert end - start + 1 == 16
    watcher = make_watcher(anvil, lock, max_block_range=16)
    seen: list = []

    async def on_new(obs):
        seen.extend(obs)

    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=16, on_new=on_new)
    f.MIN_PIECE = 1
    assert f.piece_blocks() == 4
    spy = RangeSpy(watcher.pool)
    get_logs = watcher.pool.get_logs

    async def failing(from_block, to_block, *a, **kw):
        if from_block == start + 8:  # the third piece
            raise ChainError("this endpoint lost the logs")
        return await get_logs(from_block, to_block, *a, **kw)

    watcher.pool.get_logs = failing
    with pytest.raises(ChainError, match="lost the logs"):
        await f.step()
    async with sdb.begin() as s:
        height, block_hash = await get_cursor(s, "signer", "ethereum")
    assert height == start + 7  # two pieces committed
    blk = await anvil.rpc("eth_getBlockByNumber", hex(height), False)
    assert block_hash.hex() == blk["hash"][2:]
    assert sorted(s.observation.sequence for s in await all_stored(sdb)) == list(range(8))
    assert [o.sequence for o in seen] == list(range(8))

    watcher.pool.get_logs = get_logs
    assert await f.step() == 8
    assert f.height == end and f.caught_up
    assert sorted(s.observation.sequence for s in await all_stored(sdb)) == list(range(16))
    assert [o.sequence for o in seen] == list(range(16))
    # the pieces tiled the range: 4 blocks each, in order, the failed one asked again
    assert spy.ranges[:2] == [(start, start + 3), (start + 4, start + 7)]
    assert spy.ranges[-2:] == [(start + 8, start + 11), (start + 12, start + 15)]


# ------------------------------------------------------------------------------ reorgs
async def test_deposit_reorged_out_before_finality_is_never_emitted(anvil, lock, sdb):
    start = await head(anvil) + 1
    watcher = make_watcher(anvil, lock, finality=3)
    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=100)

    gone = await send_lock(anvil, lock, ref(600))  # block h
    await anvil.mine(1)  # h+1: still below 3 confirmations
    stale_logs = await watcher.pool.get_logs(start, await head(anvil), bytes.fromhex(lock[2:]))
    assert len(stale_logs) == 1
    await f.step()
    assert await all_stored(sdb) == []

    await anvil.rpc("anvil_reorg", 2, [])  # blocks h, h+1 replaced by empty blocks
    assert await anvil.rpc("eth_getTransactionReceipt", "0x" + gone.hex()) is None
    kept = await send_lock(anvil, lock, ref(601))
    await anvil.mine(3)
    await run_until(f, await watcher.finalized_height())

    stored = await all_stored(sdb)
    assert [s.observation.tx_id for s in stored] == [kept]
    assert stored[0].observation.reference == ref(601)
    async with sdb.begin() as s:
        assert await observations_by_reference(s, ref(600)) == []
    with pytest.raises(ChainError, match="no receipt"):  # gone before finality: never final, never proved
        await watcher.reobserve(gone)

    # A lagging / load-balanced endpoint serving the orphaned log is caught by the re-check.
    async def stale_get_logs(*a, **kw):
        return stale_logs

    watcher.pool.get_logs = stale_get_logs  # type: ignore[method-assign]
    with pytest.raises(ReorgDetected):
        await watcher.fetch_deposits(start, await watcher.finalized_height())


async def test_revert_to_snapshot_replaces_deposit(anvil, lock, sdb):
    start = await head(anvil) + 1
    watcher = make_watcher(anvil, lock, finality=4)
    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=100)
    snap = await anvil.snapshot()
    await send_lock(anvil, lock, ref(700))
    await anvil.mine(2)
    await f.step()
    await anvil.revert(snap)
    await anvil.mine(1)
    survivor = await send_lock(anvil, lock, ref(701), sender=2)
    await anvil.mine(6)
    await run_until(f, await watcher.finalized_height())
    stored = await all_stored(sdb)
    assert [(s.observation.tx_id, s.observation.reference, s.observation.sequence) for s in stored] == [
        (survivor, ref(701), 0)
    ]


async def test_cursor_block_replaced_below_finality_rewinds(anvil, lock, sdb, caplog):
    """An unsound finality rule (0 confirmations) lets a reorg hit stored blocks: the
    follower notices by the cursor's block hash, logs an error, rewinds and rescans."""
    start = await head(anvil) + 1
    watcher = make_watcher(anvil, lock, finality=0)
    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=3)
    a = await send_lock(anvil, lock, ref(800))
    await run_until(f, await head(anvil))
    assert [s.observation.tx_id for s in await all_stored(sdb)] == [a]

    await anvil.rpc("anvil_reorg", 1, [])  # the cursor's block gets a new hash
    b = await send_lock(anvil, lock, ref(801))  # nonce 0 again: the same deposit id as a
    c = await send_lock(anvil, lock, ref(802))
    with caplog.at_level(logging.ERROR):
        await run_until(f, await head(anvil))
    assert f.rewinds == 1
    assert any("changed below the finality point" in r.message for r in caplog.records)
    assert any("observed again with different facts" in r.message for r in caplog.records)
    stored = await all_stored(sdb)
    # deposit id (source, 0) stays the first one stored; nothing duplicated; c is new
    assert [(s.observation.sequence, s.observation.tx_id) for s in stored] == [(0, a), (1, c)]
    assert b not in {s.observation.tx_id for s in stored}
    async with sdb.begin() as s:
        height, block_hash = await get_cursor(s, "signer", "ethereum")
    assert block_hash.hex() == (await anvil.rpc("eth_getBlockByNumber", hex(height), False))["hash"][2:]


async def test_reverted_lock_is_never_emitted(anvil, lock, sdb):
    start = await head(anvil) + 1
    bad = await send_lock(anvil, lock, ref(900), MIN_LOCK - 1, gas=100_000)  # AmountTooSmall
    assert (await receipt(anvil, bad))["status"] == "0x0"
    good = await send_lock(anvil, lock, ref(901))
    watcher = make_watcher(anvil, lock)
    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=100)
    await run_until(f, await head(anvil))
    assert [s.observation.tx_id for s in await all_stored(sdb)] == [good]
    assert await watcher.reobserve(bad) == []


# ------------------------------------------------------------------------------ RPC pool
async def test_dead_first_endpoint_fails_over(anvil, lock):
    tx = await send_lock(anvil, lock, ref(1000))
    cfg = evm_config([closed_port_url(), anvil.rpc_url], chain_id=CHAIN_ID, lock=lock)
    watcher = EvmWatcher(cfg, fast_pool(cfg))
    h = await head(anvil)
    assert await watcher.finalized_height() == h
    found = await watcher.fetch_deposits(h, h)
    assert [o.tx_id for o in found] == [tx]
    assert watcher.pool.healthy() == [False, True]


async def test_endpoint_dying_mid_run_is_failed_over(anvil, lock, sdb):
    proxy = await RpcProxy(anvil.rpc_url).start()
    try:
        start = await head(anvil) + 1
        cfg = evm_config([proxy.url, anvil.rpc_url], chain_id=CHAIN_ID, lock=lock, max_block_range=2)
        watcher = EvmWatcher(cfg, fast_pool(cfg))
        f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=2, poll_interval=0.01)
        for i in range(6):
            await send_lock(anvil, lock, ref(1100 + i))
        await f.step()
        assert proxy.requests > 0 and watcher.pool.healthy() == [True, True]
        served = proxy.requests
        await proxy.stop()  # the preferred endpoint dies mid-run
        for i in range(6, 10):
            await send_lock(anvil, lock, ref(1100 + i))
        await run_until(f, await head(anvil))
        assert proxy.requests == served
        assert watcher.pool.healthy()[1] is True
        assert sorted(s.observation.sequence for s in await all_stored(sdb)) == list(range(10))
    finally:
        await proxy.stop()


async def test_http_503_endpoint_is_skipped(anvil, lock):
    proxy = await RpcProxy(anvil.rpc_url).start()
    try:
        cfg = evm_config([proxy.url, anvil.rpc_url], chain_id=CHAIN_ID, lock=lock)
        pool = fast_pool(cfg)
        assert await pool.block_number() == await head(anvil)
        proxy.mode = "503"
        assert await pool.block_number() == await head(anvil)
        assert pool.healthy() == [False, True]
    finally:
        await proxy.stop()


async def test_all_endpoints_dead_is_rpc_unavailable():
    cfg = evm_config([closed_port_url(), closed_port_url()], chain_id=CHAIN_ID, lock="0x" + "11" * 20)
    watcher = EvmWatcher(cfg, fast_pool(cfg, attempts=2))
    with pytest.raises(RpcUnavailable) as e:
        await watcher.finalized_height()
    assert e.value.retryable


async def test_chain_id_mismatch_is_config_error(anvil, lock):
    cfg = evm_config(anvil.rpc_url, chain_id=CHAIN_ID + 1, lock=lock)
    watcher = EvmWatcher(cfg, fast_pool(cfg))
    with pytest.raises(ConfigError, match="chain id"):
        await watcher.finalized_height()
    with pytest.raises(ConfigError):  # and again: never silently used later
        await watcher.block_ref(1)


async def test_wrong_chain_backup_endpoint_fails_at_first_use(anvil, lock):
    """A misconfigured backup is found at start-up, not when the primary fails one day."""
    other = await AnvilNode.start(chain_id=CHAIN_ID + 3)
    try:
        cfg = evm_config([anvil.rpc_url, other.rpc_url], chain_id=CHAIN_ID, lock=lock)
        watcher = EvmWatcher(cfg, fast_pool(cfg))
        with pytest.raises(ConfigError, match=f"serves chain id {CHAIN_ID + 3}"):
            await watcher.finalized_height()
    finally:
        await other.stop()


async def test_wrong_chain_endpoint_after_dead_one_is_not_used(anvil, lock):
    other = await AnvilNode.start(chain_id=CHAIN_ID + 7)
    try:
        cfg = evm_config([closed_port_url(), other.rpc_url, anvil.rpc_url], chain_id=CHAIN_ID, lock=lock)
        pool = fast_pool(cfg)
        with pytest.raises(ConfigError):
            await pool.block_number()
        with pytest.raises(ConfigError):
            await pool.verify()
    finally:
        await other.stop()


async def test_json_rpc_errors_are_not_retried(anvil, lock):
    cfg = evm_config(anvil.rpc_url, chain_id=CHAIN_ID, lock=lock)
    pool = fast_pool(cfg)
    with pytest.raises(JsonRpcError) as e:  # lock(0x..) below the minimum: execution reverted
        await pool.call(bytes.fromhex(lock[2:]), LOCK_SELECTOR + ref(1))
    assert not e.value.retryable
    with pytest.raises(JsonRpcError) as e:
        await pool.request("eth_noSuchMethod", [])
    assert not e.value.retryable and e.value.rpc_code == -32601
    assert pool.healthy() == [True]


async def test_node_refusing_batches_is_served_by_single_requests(anvil, lock):
    proxy = await RpcProxy(anvil.rpc_url).start()
    proxy.mode = "nobatch"
    try:
        start = await head(anvil) + 1
        txs = [await send_lock(anvil, lock, ref(1200 + i)) for i in range(5)]
        cfg = evm_config(proxy.url, chain_id=CHAIN_ID, lock=lock)
        watcher = EvmWatcher(cfg, fast_pool(cfg))
        found = await watcher.fetch_deposits(start, await head(anvil))
        assert [o.tx_id for o in found] == txs
        assert proxy.refused_batches == 1 and watcher.pool.batching is False
    finally:
        await proxy.stop()


async def test_metrics(anvil, lock, sdb):
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    dead = closed_port_url()
    start = await head(anvil) + 1
    await send_lock(anvil, lock, ref(1300))
    cfg = evm_config([dead, anvil.rpc_url], chain_id=CHAIN_ID, lock=lock)
    watcher = EvmWatcher(cfg, fast_pool(cfg, registry=registry))
    f = DepositFollower(watcher, sdb, "signer", start_block=start, max_range=100, registry=registry)
    await run_until(f, await head(anvil))
    labels = {"chain": "ethereum", "endpoint": dead}  # redact_url keeps scheme://host:port
    assert registry.get_sample_value("creditbridge_rpc_errors_total", labels) >= 1
    assert registry.get_sample_value("creditbridge_watcher_height", {"chain": "ethereum"}) == f.height
    assert registry.get_sample_value("creditbridge_watcher_finalized", {"chain": "ethereum"}) == f.finalized
    # a second pool and follower on the same registry share the metric families
    cfg2 = evm_config(anvil.rpc_url, chain_id=CHAIN_ID, lock=lock, name="other")
    DepositFollower(EvmWatcher(cfg2, fast_pool(cfg2, registry=registry)), sdb, "signer", registry=registry)


# ------------------------------------------------------------------------------ repository
def _obs(i: int, *, tx: int | None = None, seq: int | None = None) -> Observation:
    return Observation(
        chain="ethereum", source=b"\x01" * 32, sequence=i if seq is None else seq,
        tx_id=bytes([tx if tx is not None else i]) * 32, event_index=i % 3, block_number=100 + i,
        block_hash=b"\x02" * 32, timestamp=1_700_000_000 + i, token="ETH", amount=10**20 + i,
        payer=b"\x00" * 12 + b"\x05" * 20, reference=bytes([i]) * 32,
    )


async def test_observation_repository_is_idempotent(db, caplog):
    """On SQLite and (under `make test`) PostgreSQL: duplicates by event or by deposit id are
    skipped and only new rows come back; cursors and statuses round-trip."""
    async with db.begin() as s:
        assert await get_cursor(s, "signer", "ethereum") is None
        new = await add_observations(s, [_obs(1), _obs(2), _obs(2), _obs(3)])
        assert [o.sequence for o in new] == [1, 2, 3]
    with caplog.at_level(logging.ERROR):
        async with db.begin() as s:
            # 2, 3 again (a rescan); 4 new; (source, 1) again from another tx: a conflict
            new = await add_observations(s, [_obs(2), _obs(3), _obs(4), _obs(5, tx=9, seq=1)])
            assert new == [_obs(4)]
            await set_cursor(s, "signer", "ethereum", 104, b"\x03" * 32)
    assert any("different facts" in r.message for r in caplog.records)
    async with db.begin() as s:
        assert await get_cursor(s, "signer", "ethereum") == (104, b"\x03" * 32)
        rows = await observations_by_status(s, "new", limit=10)
        assert [r.observation for r in rows] == [_obs(1), _obs(2), _obs(3), _obs(4)]
        await set_observation_status(s, rows[0].id, "attested", "x" * 300)
    async with db.begin() as s:
        [att] = await observations_by_status(s, "attested")
        assert att.observation == _obs(1) and att.detail == "x" * 200
        assert [r.observation for r in await observations_by_reference(s, bytes([2]) * 32)] == [_obs(2)]
        assert len(await observations_by_status(s, "new", limit=2)) == 2
