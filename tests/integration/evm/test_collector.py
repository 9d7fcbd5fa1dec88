"""Plain ETH transfers to per-payment deposit addresses (issue 14) on a real anvil: the lock's
``collect``/``depositAddress``, the relay's EvmCollector and the watchers' payer rule.

Every test deploys its own CreditLock; a payment is watched through a small list-backed
``ReferenceFeed`` (the protocol the gateway client implements); the collector's database is
SQLite in tmp_path.
"""

from __future__ import annotations

import logging
import os
import time

import pytest
import pytest_asyncio
from eth_abi import decode as abi_decode
from eth_utils import keccak, to_checksum_address
from prometheus_client import CollectorRegistry

from bridge.payments.evm_deposit import FORWARDER_INITCODE_HASH, deposit_address
from bridge.payments.feed import FeedEntry
from bridge.payments.instructions import evm_instructions
from bridge.node import DbCursor
from bridge.storage.db import Database
from bridge.storage.observations import get_cursor
from devnet.evm.anvil import DEV_PRIVATE_KEYS
from relayers.evm.collector import EvmCollector, collector_metric
from relayers.evm.contracts import LOCK, deploy
from relayers.evm.watcher import NO_PAYER, EvmWatcher
from tests.integration.evm.helpers import DEV_ADDRESSES, MIN_LOCK, evm_config, head, receipt, ref

COLLECT = keccak(text="collect(bytes32,bytes32)")[:4]
DEPOSIT_ADDRESS = keccak(text="depositAddress(bytes32)")[:4]
GAS_KEY = DEV_PRIVATE_KEYS[9]


class ListFeed:
    """A real ReferenceFeed over a list (what the gateway serves from its database)."""

    def __init__(self, chain: str = "ethereum") -> None:
        self.chain = chain
        self.entries: list[FeedEntry] = []

    def add(self, reference: bytes, expires_at: int | None = None) -> None:
        self.entries.append(FeedEntry(len(self.entries) + 1, self.chain, reference,
                                      expires_at or int(time.time()) + 3600))

    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        return [e for e in self.entries if e.chain == chain and e.cursor > after][:limit]


@pytest_asyncio.fixture
async def lock(w3, committee) -> str:
    return await deploy(w3, LOCK, [committee.checksum_addresses, 3, MIN_LOCK], DEV_PRIVATE_KEYS[0])


@pytest_asyncio.fixture
async def sdb(tmp_path):
    d = Database(f"sqlite+aiosqlite:///{tmp_path}/relay.sqlite")
    await d.migrate()
    yield d
    await d.dispose()


_CLOSE: list = []


@pytest_asyncio.fixture(autouse=True)
async def close_all():
    yield
    while _CLOSE:
        await _CLOSE.pop().aclose()


def watcher_of(anvil, lock: str, finality: int = 0) -> EvmWatcher:
    w = EvmWatcher(evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock, finality=finality))
    _CLOSE.append(w)
    return w


def collector_of(anvil, lock: str, feed: ListFeed, db, finality: int = 0, **kw) -> EvmCollector:
    cfg = evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock, finality=finality)
    c = EvmCollector(cfg, GAS_KEY, feed, DbCursor(db, "collector"), **kw)
    _CLOSE.append(c)
    return c


async def plain_transfer(anvil, to: bytes, value: int, sender: int = 1) -> bytes:
    """A wallet's plain ETH transfer: empty calldata, from an unlocked dev account."""
    h = await anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[sender], "to": to_checksum_address(to),
                                                "value": hex(value)})
    tx = bytes.fromhex(h[2:])
    r = await receipt(anvil, tx)
    assert int(r["status"], 16) == 1 and (await anvil.rpc("eth_getTransactionByHash", h))["input"] == "0x"
    return tx


async def balance(anvil, address: bytes | str) -> int:
    a = address if isinstance(address, str) else "0x" + address.hex()
    return int(await anvil.rpc("eth_getBalance", a, "latest"), 16)


async def send(anvil, sender: int, to: str, data: bytes) -> dict:
    h = await anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[sender], "to": to, "data": "0x" + data.hex(),
                                                "gas": hex(300_000)})
    return await receipt(anvil, bytes.fromhex(h[2:]))


def lock_bytes(lock: str) -> bytes:
    return bytes.fromhex(lock[2:])


async def deposits(anvil, lock: str, start: int, finality: int = 0):
    w = watcher_of(anvil, lock, finality)
    return await w.fetch_deposits(start, await w.finalized_height())


# ------------------------------------------------------------------------------ contract
async def test_python_deposit_address_equals_the_contract_view(anvil, lock):
    for r in [ref(1), ref(2), bytes(32), b"\xff" * 32, os.urandom(32)]:
        out = await anvil.rpc("eth_call", {"to": lock, "data": "0x" + (DEPOSIT_ADDRESS + r).hex()}, "latest")
        (onchain,) = abi_decode(["address"], bytes.fromhex(out[2:]))
        assert bytes.fromhex(onchain[2:]) == deposit_address(lock_bytes(lock), r)
    got = await anvil.rpc("eth_call", {"to": lock, "data": "0x" + keccak(text="FORWARDER_INITCODE_HASH()")[:4].hex()},
                          "latest")
    assert bytes.fromhex(got[2:]) == FORWARDER_INITCODE_HASH


async def test_collect_twice_at_the_same_address_eip6780(anvil, lock):
    """Created and destroyed in one transaction, the forwarder leaves the address empty: a
    second funding is collected again (anvil's default hardfork; checked here)."""
    r = ref(10)
    addr = deposit_address(lock_bytes(lock), r)
    f1 = await plain_transfer(anvil, addr, 2 * MIN_LOCK)
    before = await balance(anvil, lock)
    rc1 = await send(anvil, 2, lock, COLLECT + r + f1)
    assert int(rc1["status"], 16) == 1
    assert await balance(anvil, addr) == 0 and await balance(anvil, lock) - before == 2 * MIN_LOCK
    assert await anvil.rpc("eth_getCode", "0x" + addr.hex(), "latest") == "0x"
    f2 = await plain_transfer(anvil, addr, 3 * MIN_LOCK, sender=3)
    rc2 = await send(anvil, 2, lock, COLLECT + r + f2)
    assert int(rc2["status"], 16) == 1 and await balance(anvil, lock) - before == 5 * MIN_LOCK
    # nothing left: collecting again reverts
    rc3 = await send(anvil, 2, lock, COLLECT + r + f2)
    assert int(rc3["status"], 16) == 0
    # both deposits: nonces 0 and 1, sender = the deposit address, payers = the two senders
    obs = await deposits(anvil, lock, int(rc1["blockNumber"], 16))
    assert [(o.sequence, o.amount, o.reference, o.payer) for o in obs] == [
        (0, 2 * MIN_LOCK, r, b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[1][2:])),
        (1, 3 * MIN_LOCK, r, b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[3][2:])),
    ]


async def test_instructions_name_the_deposit_address(anvil, lock):
    cfg = evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock)
    r = ref(20)
    got = evm_instructions(cfg, r, 1234, code="CB0123456789AB")
    to = to_checksum_address(deposit_address(lock_bytes(lock), r))
    assert got["transfer"] == {"to": to, "amount": "1234", "comment": None}
    assert got["uri"] == f"ethereum:{to}@{anvil.chain_id}?value=1234"
    assert got["method"] == "lock(bytes32)" and got["contract"] == lock and got["value"] == "1234"


# ------------------------------------------------------------------------------ collector
async def test_plain_transfer_is_collected_and_observed_with_its_sender_as_payer(anvil, lock, sdb):
    feed = ListFeed()
    r = ref(100)
    feed.add(r)
    start = await head(anvil) + 1
    col = collector_of(anvil, lock, feed, sdb)
    await col.step()  # nothing yet
    addr = deposit_address(lock_bytes(lock), r)
    funding = await plain_transfer(anvil, addr, 5 * MIN_LOCK, sender=4)
    await col.step()
    assert col.collects == 1 and await balance(anvil, addr) == 0
    await col.step()  # the collect is final (finality 0): forgotten; nothing collected twice
    assert col.collects == 1 and col.pending == {}
    obs = await deposits(anvil, lock, start)
    assert len(obs) == 1
    o = obs[0]
    assert (o.amount, o.reference, o.payer) == (5 * MIN_LOCK, r, b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[4][2:]))
    # reobserve agrees (the signers' re-check)
    assert await watcher_of(anvil, lock).reobserve(o.tx_id) == [o]
    # the collect names the funding transaction
    rc = await anvil.rpc("eth_getTransactionReceipt", "0x" + o.tx_id.hex())
    collected = [lg for lg in rc["logs"] if lg["topics"][0] == "0x" + keccak(text="Collected(uint64,bytes32)").hex()]
    assert [bytes.fromhex(lg["data"][2:]) for lg in collected] == [funding]
    # the cursor is saved: a restarted collector neither misses nor collects again
    async with sdb.begin() as s:
        assert (await get_cursor(s, "collector", "ethereum"))[0] == await head(anvil)


async def test_second_funding_after_a_collect_is_a_second_deposit(anvil, lock, sdb):
    feed = ListFeed()
    r = ref(110)
    feed.add(r)
    start = await head(anvil) + 1
    col = collector_of(anvil, lock, feed, sdb)
    addr = deposit_address(lock_bytes(lock), r)
    await plain_transfer(anvil, addr, MIN_LOCK, sender=1)
    await col.step()
    await plain_transfer(anvil, addr, 2 * MIN_LOCK, sender=2)
    await col.step()
    await col.step()
    assert col.collects == 2
    obs = await deposits(anvil, lock, start)
    assert [(o.sequence, o.amount, o.payer[12:]) for o in obs] == [
        (0, MIN_LOCK, bytes.fromhex(DEV_ADDRESSES[1][2:])), (1, 2 * MIN_LOCK, bytes.fromhex(DEV_ADDRESSES[2][2:]))]


async def test_restart_resumes_from_the_cursor_without_collecting_twice(anvil, lock, sdb):
    feed = ListFeed()
    r = ref(115)
    feed.add(r)
    col = collector_of(anvil, lock, feed, sdb)
    await col.step()
    addr = deposit_address(lock_bytes(lock), r)
    await plain_transfer(anvil, addr, MIN_LOCK)
    await col.step()
    assert col.collects == 1
    # a new process: the cursor is behind the funding only until its collect is final; either
    # way the chain has nothing left to collect
    again = collector_of(anvil, lock, feed, sdb)
    await again.step()
    await again.step()
    assert again.collects == 0 and again.pending == {}
    second = await plain_transfer(anvil, addr, MIN_LOCK, sender=2)
    await again.step()
    assert again.collects == 1
    assert second in {bytes.fromhex(lg["data"][2:]) for lg in await _collected_logs(anvil, lock)}


async def _collected_logs(anvil, lock: str) -> list[dict]:
    return await anvil.rpc("eth_getLogs", {"fromBlock": "0x0", "toBlock": "latest", "address": lock,
                                          "topics": ["0x" + keccak(text="Collected(uint64,bytes32)").hex()]})


async def test_plain_transfer_reorged_out_before_finality_is_never_collected(anvil, lock, sdb):
    feed = ListFeed()
    r = ref(120)
    feed.add(r)
    start = await head(anvil) + 1
    col = collector_of(anvil, lock, feed, sdb, finality=3)
    await col.step()
    addr = deposit_address(lock_bytes(lock), r)
    gone = await plain_transfer(anvil, addr, 4 * MIN_LOCK)  # block h
    await anvil.mine(1)  # h+1: below 3 confirmations
    await col.step()
    assert col.collects == 0
    await anvil.rpc("anvil_reorg", 2, [])  # h, h+1 replaced by empty blocks
    assert await anvil.rpc("eth_getTransactionReceipt", "0x" + gone.hex()) is None
    assert await balance(anvil, addr) == 0
    await anvil.mine(5)
    for _ in range(3):
        await col.step()
    assert col.collects == 0 and col.pending == {}
    assert await deposits(anvil, lock, start, finality=3) == []


async def test_bogus_funding_hint_gives_no_payer(anvil, lock, sdb):
    """Someone front-runs the relay with a random hint: the deposit is credited all the same
    but has no payer (its held part would be kept, not refunded)."""
    r = ref(130)
    addr = deposit_address(lock_bytes(lock), r)
    start = await head(anvil) + 1
    funding = await plain_transfer(anvil, addr, 2 * MIN_LOCK, sender=1)
    other = await plain_transfer(anvil, bytes.fromhex(DEV_ADDRESSES[5][2:]), MIN_LOCK, sender=1)  # not to addr
    for bogus in (os.urandom(32), other):
        rc = await send(anvil, 6, lock, COLLECT + r + bogus)
        assert int(rc["status"], 16) == 1
        await plain_transfer(anvil, addr, 2 * MIN_LOCK, sender=1)
    rc = await send(anvil, 6, lock, COLLECT + r + bytes(32))  # an internal-transfer style collect
    assert int(rc["status"], 16) == 1
    obs = await deposits(anvil, lock, start)
    assert [o.payer for o in obs] == [NO_PAYER, NO_PAYER, NO_PAYER] and all(o.amount == 2 * MIN_LOCK for o in obs)
    assert [o.payer for o in await watcher_of(anvil, lock).reobserve(obs[0].tx_id)] == [NO_PAYER]
    # a later funding tx named as the hint does not verify either (it is after the collect)
    assert funding  # the real funding exists, but nobody named it


async def test_dust_below_the_minimum_is_not_collected_and_is_reported(anvil, lock, sdb, caplog):
    feed = ListFeed()
    r = ref(140)
    feed.add(r)
    registry = CollectorRegistry()
    col = collector_of(anvil, lock, feed, sdb, metric=collector_metric(registry))
    await col.step()
    addr = deposit_address(lock_bytes(lock), r)
    await plain_transfer(anvil, addr, MIN_LOCK - 1)
    with caplog.at_level(logging.WARNING, logger="creditbridge.collector"):
        await col.step()
        await anvil.mine(30)
        await col.step()  # balance poll: still dust, warned once only
    assert col.collects == 0 and await balance(anvil, addr) == MIN_LOCK - 1
    assert registry.get_sample_value("creditbridge_collector_uncollected_wei", {"chain": "ethereum"}) == MIN_LOCK - 1
    warned = [rec for rec in caplog.records if "below the lock's minimum" in rec.getMessage()]
    assert len(warned) == 1
    # topped up above the minimum: collected, the gauge drops to 0
    await plain_transfer(anvil, addr, MIN_LOCK, sender=2)
    await col.step()
    assert col.collects == 1 and await balance(anvil, addr) == 0
    assert registry.get_sample_value("creditbridge_collector_uncollected_wei", {"chain": "ethereum"}) == 0


async def test_internal_transfer_is_collected_by_the_balance_poll_without_payer(anvil, lock, sdb):
    """A contract's transfer leaves no top-level transaction to the address: the balance poll
    collects it with fundingTx = 0, and the deposit has no payer."""
    feed = ListFeed()
    r = ref(150)
    feed.add(r)
    start = await head(anvil) + 1
    col = collector_of(anvil, lock, feed, sdb, balance_every=5)
    await col.step()
    addr = deposit_address(lock_bytes(lock), r)
    # a contract paying the address: init code `CALLVALUE? no`: SELFDESTRUCT to the address
    # (PUSH20 addr SELFDESTRUCT) with value, i.e. an internal transfer
    initcode = b"\x73" + addr + b"\xff"
    h = await anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[2], "data": "0x" + initcode.hex(),
                                                "value": hex(3 * MIN_LOCK)})
    await receipt(anvil, bytes.fromhex(h[2:]))
    assert await balance(anvil, addr) == 3 * MIN_LOCK
    await anvil.mine(6)
    await col.step()
    assert col.collects == 1 and await balance(anvil, addr) == 0
    obs = await deposits(anvil, lock, start)
    assert [(o.amount, o.payer) for o in obs] == [(3 * MIN_LOCK, NO_PAYER)]


# ------------------------------------------------------------------------------ config
def test_collector_settings_are_validated_with_one_line():
    from bridge.config import AggregatorConfig

    base = {"signers": ["http://127.0.0.1:1"], "key": {"keystore": "k.json", "password_env": "PW"}}
    cfg = AggregatorConfig(**base)
    assert (cfg.gateway_url, cfg.collect_interval, cfg.collect_balance_every_blocks) == (None, 2.0, 20)
    assert AggregatorConfig(**base, gateway_url="http://127.0.0.1:8080").gateway_url == "http://127.0.0.1:8080"
    for bad in ({"gateway_url": "ftp://x"}, {"collect_interval": 0}, {"collect_balance_every_blocks": 0}):
        with pytest.raises(ValueError) as e:
            AggregatorConfig(**base, **bad)
        assert next(iter(bad)) in str(e.value)


async def test_the_relay_runs_one_collector_per_evm_lock_when_a_gateway_is_set(anvil, lock, sdb):
    import aiohttp

    from bridge.config import settings_from_dict
    from bridge.node import collectors
    from bridge.supervisor import Supervisor

    chains = [evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock).model_dump(mode="json"),
              evm_config(anvil.rpc_url, chain_id=anvil.chain_id, name="settle", token=None,
                         credits="0x" + "11" * 20).model_dump(mode="json")]
    agg = {"signers": ["http://127.0.0.1:1"], "key": {"keystore": "k.json", "password_env": "PW"}}
    sup = Supervisor("relay")
    async with aiohttp.ClientSession() as session:
        off = settings_from_dict({"settlement_chain": "settle", "chains": chains, "aggregator": agg})
        assert collectors(off, bytes.fromhex(GAS_KEY[2:]), session, sdb, sup) == []
        on = settings_from_dict({"settlement_chain": "settle", "chains": chains,
                                 "aggregator": {**agg, "gateway_url": "http://127.0.0.1:2"}})
        got = collectors(on, bytes.fromhex(GAS_KEY[2:]), session, sdb, sup, CollectorRegistry())
        assert [name for name, _ in got] == ["collector-ethereum"]
        for close in sup._cleanups:  # the collectors' RPC pools (what the supervisor does at stop)
            await close()


async def test_two_relays_collect_each_address_once_and_take_over_a_stopped_one(anvil, lock, sdb, tmp_path):
    """Relays 0 and 1 of 2 (separate gas keys and databases) watch the same payments: each
    collects only the addresses that hash to it, so no collect reverts; when relay 1 stops,
    relay 0 collects its addresses after the takeover delay."""
    other_db = Database(f"sqlite+aiosqlite:///{tmp_path}/relay-1.sqlite")
    await other_db.migrate()
    feed = ListFeed()
    cfg = evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock)
    cols = [EvmCollector(cfg, key, feed, DbCursor(db, "collector"), relay_index=i, relay_count=2,
                         takeover_after=3600)
            for i, (key, db) in enumerate(((GAS_KEY, sdb), (DEV_PRIVATE_KEYS[7], other_db)))]
    _CLOSE.extend(cols)
    try:
        for c in cols:
            await c.step()
        start = await head(anvil) + 1
        refs = [ref(500 + i) for i in range(8)]
        for r in refs:
            feed.add(r)
            await plain_transfer(anvil, deposit_address(lock_bytes(lock), r), MIN_LOCK)
        for _ in range(2):
            for c in cols:
                await c.step()
        assert sum(c.collects for c in cols) == 8 and all(c.collects for c in cols)
        for n in range(start, await head(anvil) + 1):
            for t in (await anvil.rpc("eth_getBlockByNumber", hex(n), False))["transactions"]:
                assert (await anvil.rpc("eth_getTransactionReceipt", t))["status"] == "0x1"  # none reverted
        assert len(await deposits(anvil, lock, start)) == 8

        # relay 1 stops: relay 0 takes its addresses over once they have waited the delay
        more = [ref(600 + i) for i in range(8)]
        for r in more:
            feed.add(r)
            await plain_transfer(anvil, deposit_address(lock_bytes(lock), r), MIN_LOCK)
        cols[0].takeover_after = 0.3
        before = cols[0].collects
        await cols[0].step()
        own = cols[0].collects - before
        assert 0 < own < 8
        time.sleep(0.4)
        await cols[0].step()
        await cols[0].step()
        assert cols[0].collects - before == 8
        assert all([await balance(anvil, deposit_address(lock_bytes(lock), r)) == 0 for r in more])
    finally:
        await other_db.dispose()


async def test_a_payment_created_and_funded_while_the_feed_is_read_is_collected_with_its_payer(anvil, lock, sdb):
    """The feed is read, then a payment is created and paid, its block final, before the collector
    reads the final head: that block must not be scanned without the payment listed (the head is
    read first, so the block is scanned next step with the payment, and its payer is known)."""

    class RacingFeed(ListFeed):
        race = None

        async def references(self, chain: str, after: int, limit: int):
            listed = await super().references(chain, after, limit)
            if self.race is not None:
                reference, self.race = self.race, None
                self.funding = await plain_transfer(anvil, deposit_address(lock_bytes(lock), reference), MIN_LOCK,
                                                    sender=3)
                self.add(reference)  # committed just after the read: listed from the next one
            return listed

    feed = RacingFeed()
    feed.add(ref(700))
    col = collector_of(anvil, lock, feed, sdb)
    await col.step()
    r = ref(701)
    feed.race = r
    await col.step()
    await col.step()
    assert col.collects == 1, "the funding was scanned before its payment was listed: passed over"
    logs = await _collected_logs(anvil, lock)
    assert feed.funding in {bytes.fromhex(lg["data"][2:]) for lg in logs}  # the collect names the funding
