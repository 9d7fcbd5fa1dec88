"""The catch-up scan's fast paths (issue 16, item 4) against a real anvil.

* the CREATE2 deposit address (a keccak) is derived once per log, not once per use;
* the pool sends JSON-RPC itself: a node answering a batch out of order (JSON-RPC 2.0 allows
  it) still gets every answer matched to its call by id.
"""

from __future__ import annotations

import json

import aiohttp
import pytest_asyncio
from aiohttp import web

import relayers.evm.watcher as watcher_mod
from devnet.evm.anvil import DEFAULT_CHAIN_ID
from relayers.evm.contracts import LOCK, deploy
from relayers.evm.rpc import RpcPool
from relayers.evm.watcher import EvmWatcher
from tests.integration.evm.helpers import MIN_LOCK, evm_config, head, ref, send_lock

CHAIN_ID = DEFAULT_CHAIN_ID


@pytest_asyncio.fixture
async def lock(w3, committee) -> str:
    from devnet.evm.anvil import DEV_PRIVATE_KEYS

    return await deploy(w3, LOCK, [committee.checksum_addresses, 3, MIN_LOCK], DEV_PRIVATE_KEYS[0])


class ReversingProxy:
    """Forwards JSON-RPC to a node and returns every batch answer in reverse order."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.batches = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._session.post(self.upstream, data=body, headers={"content-type": "application/json"}) as r:
            answer = await r.json()
        if isinstance(answer, list):
            self.batches += 1
            answer = answer[::-1]
        return web.Response(body=json.dumps(answer).encode(), content_type="application/json")

    async def __aenter__(self) -> "ReversingProxy":
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()
        await self._session.close()


async def test_deposit_address_is_derived_once_per_log(anvil, lock, monkeypatch):
    """One CREATE2 address a log, a piece's in one batched call (``deposit_addresses``, equal
    to ``deposit_address`` of each), none derived again one by one."""
    from bridge.hashing import keccak256, keccak256_many
    from bridge.payments.evm_deposit import deposit_address, deposit_addresses

    start = await head(anvil) + 1
    txs = [await send_lock(anvil, lock, ref(1600 + i), MIN_LOCK + i) for i in range(6)]
    single, batched = [], []
    real_one, real_many = watcher_mod.deposit_address, watcher_mod.deposit_addresses

    def counting(lock_address: bytes, reference: bytes) -> bytes:
        single.append(reference)
        return real_one(lock_address, reference)

    def counting_many(lock_address: bytes, references: list[bytes]) -> list[bytes]:
        batched.extend(references)
        out = real_many(lock_address, references)
        assert out == [deposit_address(lock_address, r) for r in references]
        return out

    monkeypatch.setattr(watcher_mod, "deposit_address", counting)
    monkeypatch.setattr(watcher_mod, "deposit_addresses", counting_many)
    cfg = evm_config(anvil.rpc_url, chain_id=CHAIN_ID, lock=lock)
    w = EvmWatcher(cfg, RpcPool.from_config(cfg))
    try:
        found = await w.fetch_deposits(start, await head(anvil))
    finally:
        await w.aclose()
    assert [o.tx_id for o in found] == txs
    assert all(o.payer == b"\x00" * 12 + o.payer[12:] and any(o.payer) for o in found)  # senders, not NO_PAYER
    assert len(batched) == len(found) and single == []  # was 2 a log: the set of collected txs, then _observation
    assert deposit_addresses(bytes(20), []) == []
    items = [b"", b"abc", bytes(range(256)) * 3]
    assert keccak256_many(items) == [keccak256(x) for x in items]


async def test_batch_answers_out_of_order_are_matched_by_id(anvil, lock):
    start = await head(anvil) + 1
    txs = [await send_lock(anvil, lock, ref(1700 + i), MIN_LOCK + i) for i in range(5)]
    end = await head(anvil)
    async with ReversingProxy(anvil.rpc_url) as proxy:
        cfg = evm_config(proxy.url, chain_id=CHAIN_ID, lock=lock)
        pool = RpcPool.from_config(cfg)
        try:
            numbers = list(range(start, end + 1))
            headers = await pool.get_blocks(numbers)
            assert [h.number for h in headers] == numbers
            found = await EvmWatcher(cfg, pool).fetch_deposits(start, end)
            assert [o.tx_id for o in found] == txs
        finally:
            await pool.aclose()
        assert proxy.batches >= 2


async def test_follower_fetches_the_next_range_while_storing(anvil, lock, tmp_path):
    """Catching up, step N fetches range N+1 ahead (while its own range is stored) and step N+1
    uses it instead of asking again; the stored deposits are each there once."""
    from bridge.storage.db import Database
    from bridge.storage.observations import observations_by_status
    from bridge.watch import DepositFollower

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/ahead.sqlite")
    await db.migrate()
    start = await head(anvil) + 1
    txs = [await send_lock(anvil, lock, ref(1800 + i), MIN_LOCK + i) for i in range(6)]  # one block each
    end = await head(anvil)
    cfg = evm_config(anvil.rpc_url, chain_id=CHAIN_ID, lock=lock)
    pool = RpcPool.from_config(cfg)
    ranges: list[tuple[int, int]] = []
    real_get_logs = pool.get_logs

    async def spy(a, b, *args, **kw):
        ranges.append((a, b))
        return await real_get_logs(a, b, *args, **kw)

    pool.get_logs = spy  # type: ignore[method-assign]
    f = DepositFollower(EvmWatcher(cfg, pool), db, "signer", start_block=start, max_range=2)
    try:
        assert await f.step() == 2 and not f.caught_up
        assert ranges == [(start, start + 1), (start + 2, start + 3)]  # the second one fetched ahead
        while not f.caught_up:
            await f.step()
        assert ranges == [(a, min(a + 1, end)) for a in range(start, end + 1, 2)]  # each range asked once
        async with db.begin() as s:
            stored = await observations_by_status(s, "new", limit=100)
        assert [r.observation.tx_id for r in stored] == txs
    finally:
        f.close()
        await pool.aclose()
        await db.dispose()
