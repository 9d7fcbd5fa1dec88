"""The watcher, through the DepositFollower, over a replayed real chopsticks session.

``tests/data/chopsticks_session.json`` was recorded from a live chopsticks node running the
Asset Hub runtime by ``scripts/record_chopsticks_session.py`` (real JSON-RPC frames: the
runtime metadata, blocks, events, and a ``chain_subscribeFinalizedHeads`` subscription).
chopsticks finalizes every block at once, so finality lag cannot be produced live; the
replay server (``replay.py``) serves edited copies of that recording -- finalized heads
skipped and delayed, the socket dropped mid-session -- and the real decoding path
(substrate-interface + scalecodec on the recorded metadata) runs unchanged. In each case the
follower must end with exactly the deposits the live watcher saw: no gaps, no duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_asyncio

from bridge.config import SubstrateChainConfig
from bridge.errors import ChainError
from bridge.storage.db import Database
from bridge.storage.observations import get_cursor, observations_by_status
from bridge.watch import DepositFollower
from relayers.substrate.watcher import SubstrateWatcher
from tests.integration.substrate.replay import edit_heads, finalized_notifications, load, started

FIXTURE = Path(__file__).resolve().parents[2] / "data" / "chopsticks_session.json"


@pytest.fixture(scope="module")
def session() -> dict:
    return load(FIXTURE)


def observation_json(o) -> dict:
    return {"chain": o.chain, "source": o.source.hex(), "sequence": o.sequence, "tx_id": o.tx_id.hex(),
            "event_index": o.event_index, "block_number": o.block_number, "block_hash": o.block_hash.hex(),
            "timestamp": o.timestamp, "token": o.token, "amount": str(o.amount), "payer": o.payer.hex(),
            "reference": o.reference.hex()}


def config(session: dict, url: str) -> SubstrateChainConfig:
    return SubstrateChainConfig(family="substrate", name=session["chain"], rpc=[url], token=session["token"],
                                ss58_prefix=session["ss58_prefix"], genesis_hash=session["genesis_hash"],
                                committee=session["committee"], request_timeout=10)


@pytest_asyncio.fixture
async def db(tmp_path):
    d = Database(f"sqlite+aiosqlite:///{tmp_path}/replay.sqlite")
    await d.migrate()
    yield d
    await d.dispose()


async def follow_to_the_end(session: dict, db: Database, watcher: SubstrateWatcher, max_range: int = 3,
                            limit: int = 500) -> tuple[list, int]:
    """Step like ``DepositFollower.run`` (retryable chain errors are retried) until the
    cursor reaches the recorded end; return the stored observations and the failures."""
    f = DepositFollower(watcher, db, "signer", start_block=session["start_block"], max_range=max_range)
    failures = 0
    for _ in range(limit):
        try:
            await f.step()
        except ChainError as e:
            assert e.retryable, e
            failures += 1
            continue
        if f.height == session["end_block"]:
            break
    async with db.begin() as s:
        stored = [x.observation for x in await observations_by_status(s, "new", 1000)]
        cursor = await get_cursor(s, "signer", session["chain"])
    assert cursor[0] == session["end_block"], "the follower did not reach the recorded end"
    return stored, failures


def expected(session: dict) -> list[dict]:
    """What the watcher observes over the recording: the live watcher's deposits (recorded
    before issue 14) plus the recorded transfer to the committee without a remark ("no-remark",
    by //Dave), which is now an unattributed deposit (reference = 32 zero bytes, refunded)."""
    from relayers.substrate.wallet import keypair

    out = list(session["observed"])
    for p in session["payments"]:
        if p["label"] == "no-remark":
            twin = next(o for o in out if o["block_number"] == p["block"])  # same block: same hash, time
            out.append({**twin, "sequence": (p["block"] << 16) | p["index"], "event_index": p["index"],
                        "tx_id": twin["block_hash"] + p["index"].to_bytes(4, "big").hex(), "amount": p["amount"],
                        "payer": keypair("//Dave").public_key.hex(), "reference": "00" * 32})
    return sorted(out, key=lambda o: o["sequence"])


def recorded_heads(session: dict) -> list[int]:
    return [int(h["number"], 16) for h in finalized_notifications(session)]


def test_the_recording_is_small_real_and_consistent(session):
    assert FIXTURE.stat().st_size < 1024 * 1024
    heads = recorded_heads(session)
    assert heads == list(range(heads[0], heads[-1] + 1))  # live: every block, in order
    counted = sorted(p["reference"] for p in session["payments"] if p["counts"])
    assert counted == sorted(o["reference"] for o in session["observed"])
    assert any(not p["counts"] for p in session["payments"])
    assert any('"state_getMetadata"' in f["data"] for f in session["frames"])


async def test_plain_replay_gives_the_live_deposits(session, db):
    server = await started(session)
    w = SubstrateWatcher(config(session, server.url))
    try:
        stored, failures = await follow_to_the_end(session, db, w)
        assert failures == 0
        assert sorted(map(observation_json, stored), key=lambda o: o["sequence"]) == expected(session)
        for o in stored:
            assert await w.reobserve(o.tx_id) == [o]
        assert server.misses == []
    finally:
        await w.aclose()
        await server.stop()


async def test_skipped_and_delayed_finalized_heads_leave_no_gap(session, db):
    heads = recorded_heads(session)
    first, last = heads[0], heads[-1]
    # stuck for a while, then jumps over several numbers, lags again, jumps to the end
    edited = edit_heads(session, [first, first, first, first + 3, first + 3, last - 3, last - 3, last - 3,
                                  last, last])
    assert sorted(set(recorded_heads(edited))) != heads  # numbers really are skipped
    server = await started(edited)
    w = SubstrateWatcher(config(session, server.url))
    try:
        stored, _ = await follow_to_the_end(session, db, w, max_range=2)
        assert sorted(map(observation_json, stored), key=lambda o: o["sequence"]) == expected(session)
        assert len({o.deposit_id for o in stored}) == len(stored)
        assert set(range(session["start_block"], session["end_block"] + 1)) <= server.block_numbers_asked()
        assert server.misses == []
    finally:
        await w.aclose()
        await server.stop()


async def test_dropped_sockets_are_reconnected_without_loss(session, db):
    heads = recorded_heads(session)
    edited = edit_heads(session, [heads[0], heads[2], heads[2], heads[5], heads[-1]])
    # cut the socket during the first connection's set-up, mid-walk and near the end
    server = await started(edited, drop_after=[3, 20, 45, 70])
    w = SubstrateWatcher(config(session, server.url))
    try:
        stored, failures = await follow_to_the_end(session, db, w)
        assert server.drops == 4 and failures >= 1
        assert w.client.connects == server.connections >= 5
        assert sorted(map(observation_json, stored), key=lambda o: o["sequence"]) == expected(session)
        assert len({o.deposit_id for o in stored}) == len(stored)
        assert server.misses == []
    finally:
        await w.aclose()
        await server.stop()


async def test_deposits_above_a_lagging_finalized_head_are_pending_not_final(session):
    heads = recorded_heads(session)
    lag = heads[len(heads) // 2]
    server = await started(edit_heads(session, [lag]))
    w = SubstrateWatcher(config(session, server.url))
    try:
        assert await w.finalized_height() == lag
        above = [o for o in expected(session) if o["block_number"] > lag]
        assert above, "the recording should have deposits above the middle"
        pending = await w.pending_deposits()
        assert sorted(map(observation_json, pending), key=lambda o: o["sequence"]) == above
        for o in pending:  # not final yet: the node cannot tell (a signer asks again later)
            with pytest.raises(ChainError, match="not final"):
                await w.reobserve(o.tx_id)
        with pytest.raises(ChainError, match="unknown to this node"):  # a block the node does not know
            await w.reobserve(b"\x11" * 36)
    finally:
        await w.aclose()
        await server.stop()


async def test_an_undecodable_payment_is_skipped_and_alerted_not_a_stall(session):
    """A payment whose bytes the SDK cannot decode (truncated: its length prefix lies) used to
    make its whole block a non-retryable error, stalling the chain; now it is skipped, the
    other deposits are found, and the alert counts it as a candidate (it moved funds)."""
    from prometheus_client import CollectorRegistry

    target = next(p for p in session["payments"] if p["counts"])
    edited = json.loads(json.dumps(session))
    for f in edited["frames"]:
        if f["dir"] != "in" or '"extrinsics"' not in f["data"]:
            continue
        msg = json.loads(f["data"])
        block = msg["result"]["block"]
        if int(block["header"]["number"], 16) == target["block"]:
            x = block["extrinsics"][target["index"]]
            block["extrinsics"][target["index"]] = x[:-20]  # truncated: the length prefix lies
            f["data"] = json.dumps(msg)
    server = await started(edited)
    registry = CollectorRegistry()
    w = SubstrateWatcher(config(session, server.url), registry=registry)
    try:
        found = await w.fetch_deposits(target["block"], target["block"])
        want = [o for o in expected(session) if o["block_number"] == target["block"]
                and o["event_index"] != target["index"]]
        assert sorted(map(observation_json, found), key=lambda o: o["sequence"]) == want
        assert registry.get_sample_value("creditbridge_watcher_undecodable_extrinsics_total",
                                         {"chain": session["chain"], "candidate": "true"}) == 1
    finally:
        await w.aclose()
        await server.stop()
