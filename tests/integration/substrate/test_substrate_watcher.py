"""SubstrateWatcher against chopsticks running the real Asset Hub runtime (spec 900).

One module-scoped block holds every case, signed by real keys and executed by the runtime
(fees, balances, events): valid payments of each accepted shape, and extrinsics that fail
(``ExtrinsicFailed``), are interrupted (``BatchInterrupted``, a proxied call that errs) or pay another account. Transfers to the
committee that name no single payment (not batched, no remark, a short remark, two different
remarks, a 64-byte remark) are unattributed deposits (reference = 32 zero bytes, refunded by
the signers after a delay); an operator's top-up of the committee account is no deposit. The runtime's own
receipts prove each failure really happened before the watcher is asked about it.
This runtime (spec 900) predates ``force_batch`` and ``transfer_allow_death``: those shapes
are covered against the current Polkadot and Kusama metadata in
``tests/unit/substrate/test_substrate_metadata.py``.
"""

from __future__ import annotations

import asyncio
import socket

import pytest
import pytest_asyncio

from bridge.errors import ChainError, ConfigError, RpcUnavailable
from bridge.hashing import source_id
from bridge.storage.db import Database
from bridge.storage.observations import get_cursor, observations_by_status
from bridge.watch import DepositFollower
from devnet.tcp_proxy import TcpProxy
from relayers.substrate.client import SubstrateClient
from relayers.substrate.decode import TOP_UP_REMARK, ZERO_REFERENCE
from relayers.substrate.networks import CHOPSTICKS_GENESIS, POLKADOT_HUB
from relayers.substrate.wallet import keypair
from relayers.substrate.watcher import SubstrateWatcher, sequence_of, tx_id_of
from tests.integration.substrate.helpers import (
    COMMITTEE,
    COMMITTEE_ID,
    POOR,
    UNIT,
    batch,
    chain_config,
    proxy,
    ref,
    remark,
    transfer,
)

ALICE, BOB, CHARLIE, DAVE, EVE, FERDIE = (keypair(s) for s in
                                          ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve", "//Ferdie"))
TOO_MUCH = 10**30


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


@pytest_asyncio.fixture(scope="module")
async def cases(chain):
    """Build the blocks of every case; returns {label: Sent} plus the block range."""
    start = await chain.head() + 1
    # Eve lets Ferdie act for her (a block of its own, before the cases)
    await chain.send("//Eve", lambda si: si.compose_call(
        "Proxy", "add_proxy", {"delegate": FERDIE.ss58_address, "proxy_type": "Any", "delay": 0}))
    await chain.new_block()
    c = COMMITTEE
    specs = [
        # label, signer, builder(si, r), amount, should count
        ("batch_all", "//Alice", lambda si, r: batch(si, [transfer(si, c, 3 * UNIT), remark(si, r)]), 3 * UNIT),
        ("batch, remark first", "//Bob", lambda si, r: batch(
            si, [remark(si, r), transfer(si, c, 2 * UNIT)], "batch"), 2 * UNIT),
        ("transfer+remark", "//Charlie", lambda si, r: batch(
            si, [transfer(si, c, UNIT, "transfer"), remark(si, r, "remark")]), UNIT),
        ("proxy", "//Ferdie", lambda si, r: proxy(si, EVE.ss58_address, batch(
            si, [transfer(si, c, 4 * UNIT), remark(si, r)])), 4 * UNIT),
        ("underpaid", "//Dave", lambda si, r: batch(si, [transfer(si, c, 7), remark(si, r)]), None),
        ("batch interrupted after a transfer", "//Alice", lambda si, r: batch(
            si, [remark(si, r), transfer(si, c, 5 * UNIT), transfer(si, c, TOO_MUCH)], "batch"), 5 * UNIT),
        # must not count
        ("failed batch_all", POOR, lambda si, r: batch(si, [transfer(si, c, 10 * UNIT), remark(si, r)]), 0),
        ("interrupted batch", "//Bob", lambda si, r: batch(
            si, [transfer(si, c, TOO_MUCH), remark(si, r)], "batch"), 0),
        ("interrupted batch, remark first", "//Charlie", lambda si, r: batch(
            si, [remark(si, r), transfer(si, c, TOO_MUCH)], "batch"), 0),
        ("failed proxied call", "//Ferdie", lambda si, r: proxy(si, EVE.ss58_address, batch(
            si, [transfer(si, c, TOO_MUCH), remark(si, r)])), 0),
        ("no remark", "//Dave", lambda si, r: batch(si, [transfer(si, c, UNIT)]), 0),
        ("other account", "//Alice", lambda si, r: batch(si, [transfer(si, BOB.ss58_address, UNIT), remark(si, r)]), 0),
        ("not batched", "//Bob", lambda si, r: transfer(si, c, UNIT), 0),
        ("short remark", "//Charlie", lambda si, r: batch(si, [transfer(si, c, UNIT), remark(si, r[:31])]), 0),
        ("two remarks", "//Dave", lambda si, r: batch(
            si, [transfer(si, c, 2 * UNIT), remark(si, r), remark(si, bytes(reversed(r)))]), 2 * UNIT),
        ("64-byte remark", "//Alice", lambda si, r: batch(si, [transfer(si, c, 3 * UNIT), remark(si, r + r)]),
         3 * UNIT),
        ("top-up", "//Eve", lambda si, r: batch(si, [transfer(si, c, UNIT), remark(si, TOP_UP_REMARK)]), 0),
    ]
    sent = {}
    for label, seed, build, amount in specs:
        r = ref()
        s = await chain.send(seed, lambda si, b=build, r=r: b(si, r), label, r, 7 if amount is None else amount)
        sent[label] = s
    await chain.new_block(list(sent.values()))
    return {"sent": sent, "start": start, "end": await chain.head()}


@pytest_asyncio.fixture(scope="module")
async def watcher(chain):
    w = SubstrateWatcher(chain_config(chain.url))
    yield w
    await w.aclose()


COUNTED = ("batch_all", "batch, remark first", "transfer+remark", "proxy", "underpaid",
           "batch interrupted after a transfer")
# deposits naming no payment: reference = 32 zero bytes (refunded after a delay); their payers
UNATTRIBUTED = {"no remark": DAVE, "not batched": BOB, "short remark": CHARLIE, "two remarks": DAVE,
                "64-byte remark": ALICE}


async def test_the_runtime_really_failed_what_must_not_count(cases):
    s = cases["sent"]
    events = {k: [(m, e) for m, e, _ in v.receipt["events"]] for k, v in s.items()}
    assert not s["failed batch_all"].receipt["success"]
    assert ("Utility", "BatchInterrupted") in events["interrupted batch"] and s["interrupted batch"].receipt["success"]
    assert ("Utility", "BatchInterrupted") in events["interrupted batch, remark first"]
    assert ("Utility", "BatchInterrupted") in events["batch interrupted after a transfer"]
    proxied = [a for m, e, a in s["failed proxied call"].receipt["events"] if (m, e) == ("Proxy", "ProxyExecuted")]
    assert proxied and "Err" in str(proxied[0]) and s["failed proxied call"].receipt["success"]
    for label in ("other account", "top-up", *UNATTRIBUTED):
        assert s[label].receipt["success"], label
    for label in COUNTED:
        assert s[label].receipt["success"], label


async def test_only_confirmed_payments_are_observed_with_exact_fields(chain, cases, watcher):
    obs = await watcher.fetch_deposits(cases["start"], cases["end"])
    by_ref = {o.reference: o for o in obs if o.reference != ZERO_REFERENCE}
    s = cases["sent"]
    assert set(by_ref) == {s[k].reference for k in COUNTED}
    assert len(obs) == len(COUNTED) + len(UNATTRIBUTED)  # the top-up is no deposit
    zero = {o.event_index: o for o in obs if o.reference == ZERO_REFERENCE}
    assert set(zero) == {s[k].index for k in UNATTRIBUTED}
    for label, payer in UNATTRIBUTED.items():
        o = zero[s[label].index]
        assert (o.payer, o.amount) == (payer.public_key, UNIT if label in ("no remark", "not batched",
                                                                          "short remark") else s[label].amount), label
    block = bytes.fromhex(s["batch_all"].block_hash[2:])
    number = cases["end"]
    ts = await chain.run(lambda si: si.query("Timestamp", "Now", block_hash=s["batch_all"].block_hash).value)
    source = source_id("substrate", f"{CHOPSTICKS_GENESIS}/DOT", COMMITTEE_ID)
    payers = {"batch_all": ALICE, "batch, remark first": BOB, "transfer+remark": CHARLIE,
              "proxy": EVE, "underpaid": DAVE, "batch interrupted after a transfer": ALICE}
    for label in COUNTED:
        o = by_ref[s[label].reference]
        i = s[label].index
        assert (o.chain, o.token, o.source, o.amount) == ("polkadot", "DOT", source, s[label].amount), label
        assert o.payer == payers[label].public_key, label
        assert (o.block_number, o.block_hash, o.event_index) == (number, block, i)
        assert o.tx_id == tx_id_of(block, i) == block + i.to_bytes(4, "big")
        assert o.sequence == sequence_of(number, i) == (number << 16) | i
        assert o.timestamp == ts // 1000
    assert by_ref[s["underpaid"].reference].amount == 7  # observed with what was really paid
    assert await watcher.block_time(number) == ts // 1000


async def test_reobserve_returns_the_same_deposit_only(cases, watcher):
    obs = await watcher.fetch_deposits(cases["start"], cases["end"])
    for o in obs:
        assert await watcher.reobserve(o.tx_id) == [o]
    s = cases["sent"]
    no_payment = bytes.fromhex(s["other account"].block_hash[2:])
    assert await watcher.reobserve(tx_id_of(no_payment, s["other account"].index)) == []
    assert await watcher.reobserve(tx_id_of(no_payment, s["top-up"].index)) == []
    assert await watcher.reobserve(tx_id_of(no_payment, 999)) == []
    assert await watcher.reobserve(b"\x11" * 32) == []  # malformed id
    # (an unknown block hash is not asked here: chopsticks' genesis mode answers any unknown
    # hash with the genesis header and then serves that hash as block 0; the replay tests
    # and the reorg tests cover unknown and orphaned blocks)


async def test_heights_and_block_refs(chain, cases, watcher):
    head = await chain.head()
    assert await watcher.finalized_height() == head  # chopsticks finalizes every block at once
    assert await watcher.head_height() == head  # the best block, for operators' lag view
    ref_ = await watcher.block_ref(cases["end"])
    assert ref_.number == cases["end"] and "0x" + ref_.hash.hex() == cases["sent"]["batch_all"].block_hash
    with pytest.raises(ChainError) as e:
        await watcher.block_ref(head + 100)
    assert e.value.retryable
    assert await watcher.fetch_deposits(0, 1) == []  # genesis and the funding block
    assert await watcher.pending_deposits() == []


async def test_follower_stores_each_deposit_once(tmp_path, chain, cases, watcher):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/f.sqlite")
    await db.migrate()
    try:
        f = DepositFollower(watcher, db, "signer", start_block=cases["start"], max_range=2, poll_interval=0.01)
        while await f.step() or not f.caught_up:
            pass
        again = DepositFollower(watcher, db, "signer", start_block=0, max_range=100)
        assert await again.step() == 0  # resumes from the stored cursor
        async with db.begin() as s:
            stored = await observations_by_status(s, "new", 100)
            cursor = await get_cursor(s, "signer", "polkadot")
        assert sorted(x.observation.reference for x in stored) == sorted(
            [cases["sent"][k].reference for k in COUNTED] + [ZERO_REFERENCE] * len(UNATTRIBUTED))
        assert cursor[0] == await chain.head()
    finally:
        await db.dispose()


async def test_failover_to_the_next_endpoint(chain, cases):
    w = SubstrateWatcher(chain_config([closed_port_url(), chain.url]))
    try:
        obs = await w.fetch_deposits(cases["end"], cases["end"])
        assert len(obs) == len(COUNTED) + len(UNATTRIBUTED)
        assert w.client.url == chain.url
    finally:
        await w.aclose()


async def test_a_kept_connection_the_endpoint_closed_is_reopened_not_reported_down(chain, cases):
    """One endpoint. The connection the client kept from its last call is closed under it (a node
    restart, an idle timeout): the next call reconnects to the same endpoint and answers. Before,
    that call failed with RpcUnavailable, and a treasury sweeper backing off on it held up every
    other chain's sweeps for minutes (chaos run, CI of 2026-12-07)."""
    host, port = chain.url.split("://", 1)[1].rsplit(":", 1)
    relay = TcpProxy("polkadot", host, int(port))
    url = (await relay.start()).replace("http://", "ws://")
    w = SubstrateWatcher(chain_config(url))
    try:
        first = await w.finalized_height()
        assert w.client.connects == 1
        await relay.cut()  # the node restarts: its open connections are gone ...
        await relay.restore()  # ... and it listens again
        await asyncio.sleep(0.2)  # the closes reach the client's socket
        assert await w.finalized_height() >= first
        assert w.client.connects == 2
        # an endpoint that stays down still fails at once (one endpoint: nothing to fail over to)
        await relay.cut()
        with pytest.raises(RpcUnavailable):
            await w.finalized_height()
    finally:
        await w.aclose()
        await relay.cut()


async def test_no_endpoint_is_a_retryable_error():
    w = SubstrateWatcher(chain_config([closed_port_url(), closed_port_url()]))
    try:
        with pytest.raises(RpcUnavailable) as e:
            await w.finalized_height()
        assert e.value.retryable
    finally:
        await w.aclose()


async def test_wrong_genesis_is_a_config_error(chain):
    w = SubstrateWatcher(chain_config(chain.url, genesis_hash="0x" + "12" * 32))
    try:
        with pytest.raises(ConfigError):
            await w.finalized_height()
    finally:
        await w.aclose()
    # a real network's genesis with the wrong token is refused before connecting
    with pytest.raises(ConfigError):
        SubstrateWatcher(chain_config(chain.url, token="KSM", ss58_prefix=2, genesis_hash=POLKADOT_HUB.genesis_hash))


async def test_without_configured_genesis_the_node_tells_it(chain, cases):
    w = SubstrateWatcher(chain_config(chain.url, genesis_hash=None))
    try:
        obs = await w.fetch_deposits(cases["end"], cases["end"])
        assert w.client.genesis == CHOPSTICKS_GENESIS
        assert obs[0].source == source_id("substrate", f"{CHOPSTICKS_GENESIS}/DOT", COMMITTEE_ID)
    finally:
        await w.aclose()


async def test_sdk_runs_off_the_event_loop(chain, cases, watcher):
    """The event loop keeps running while the watcher reads blocks on its own thread."""
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.create_task(ticker())
    try:
        await watcher.fetch_deposits(cases["start"], cases["end"])
    finally:
        t.cancel()
    assert ticks > 10
    client = SubstrateClient("x", [chain.url], timeout=5, ss58_format=0)
    await client.aclose()
    with pytest.raises(ChainError):
        await client.call(lambda si: None, "after close")
