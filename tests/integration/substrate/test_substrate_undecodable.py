"""An extrinsic the SDK cannot decode must not stop a chain's deposits (issue 11, item 7).

The real Asset Hub runtime (spec 900, chopsticks) executes a ``Utility.batch`` nested 150 deep
(its call decoder allows 256 levels), while scalecodec 1.2.12 decodes nested calls
recursively and raises ``RecursionError`` near 60 levels. Before the fix one such extrinsic
anywhere in a block made the whole block a non-retryable error, and the follower retried the
same range for ever; now only candidates (extrinsics carrying the committee's account id)
are decoded, and an unreadable candidate is skipped with an alert instead of a stall.
"""

from __future__ import annotations

import logging

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from relayers.substrate.decode import decode_extrinsic, is_candidate, raw_extrinsic
from relayers.substrate.wallet import keypair, nested_batch, signed_raw_extrinsic
from relayers.substrate.watcher import SubstrateWatcher, sequence_of
from tests.integration.substrate.helpers import COMMITTEE, COMMITTEE_ID, UNIT, Sent, batch, chain_config, ref, remark, transfer

METRIC = "creditbridge_watcher_undecodable_extrinsics_total"


async def send_raw(chain, seed: str, build, label: str) -> Sent:
    """Sign the encoded call ``build(si)`` returns and submit it as raw bytes."""
    kp = keypair(seed)

    def job(si):
        nonce = chain._nonces.get(kp.ss58_address)
        if nonce is None:
            nonce = si.get_account_nonce(kp.ss58_address)
        raw = signed_raw_extrinsic(si, kp, build(si), nonce)
        chain._nonces[kp.ss58_address] = nonce + 1
        return raw

    raw = await chain.run(job)
    h = await chain.node.rpc("author_submitExtrinsic", "0x" + raw.hex())
    return Sent(label, h)


async def locate(chain, block_hash: str, sent: list[Sent]) -> None:
    """Where each raw extrinsic landed and its events (substrate-interface's own receipt
    decodes the whole block, which fails on these very extrinsics)."""
    from relayers.substrate.decode import blake2_256

    block = await chain.node.rpc("chain_getBlock", block_hash)
    hashes = ["0x" + blake2_256(raw_extrinsic(x)).hex() for x in block["block"]["extrinsics"]]
    events = await chain.run(lambda si: [e.value for e in si.get_events(block_hash)])
    for s in sent:
        assert s.extrinsic_hash in hashes, f"{s.label} was not included"
        s.block_hash, s.index = block_hash, hashes.index(s.extrinsic_hash)
        mine = [e for e in events if e["extrinsic_idx"] == s.index]
        s.receipt = {"success": any((e["module_id"], e["event_id"]) == ("System", "ExtrinsicSuccess") for e in mine),
                     "events": [(e["module_id"], e["event_id"], e["attributes"]) for e in mine]}


@pytest_asyncio.fixture(scope="module")
async def blocks(chain):
    """Block 1: a payment, an undecodable extrinsic that does not name the committee, one that
    names it but pays nothing, and an undecodable payment; block 2: another payment."""
    start = await chain.head() + 1
    r1, r2, r_lost = ref(), ref(), ref()
    paid1 = await chain.send("//Alice", lambda si: batch(si, [transfer(si, COMMITTEE, 3 * UNIT), remark(si, r1)]),
                             "payment 1", r1, 3 * UNIT)
    other = await send_raw(chain, "//Bob", lambda si: nested_batch(si, remark(si, b"hello")), "undecodable")
    names = await send_raw(chain, "//Charlie", lambda si: nested_batch(si, remark(si, COMMITTEE_ID)),
                           "undecodable, names the committee")
    lost = await send_raw(chain, "//Dave", lambda si: nested_batch(
        si, batch(si, [transfer(si, COMMITTEE, 2 * UNIT), remark(si, r_lost)])), "undecodable payment")
    block_hash = await chain.new_block()
    await locate(chain, block_hash, [paid1, other, names, lost])
    paid2 = await chain.send("//Eve", lambda si: batch(si, [transfer(si, COMMITTEE, 5 * UNIT), remark(si, r2)]),
                             "payment 2", r2, 5 * UNIT)
    await chain.new_block([paid2])
    return {"start": start, "end": await chain.head(), "paid": [paid1, paid2], "other": other, "names": names,
            "lost": lost}


async def test_the_runtime_ran_them_and_scalecodec_cannot_decode_them(chain, blocks):
    for s in (blocks["other"], blocks["names"], blocks["lost"]):
        assert s.receipt["success"], s.label
    moved = [a for m, e, a in blocks["lost"].receipt["events"] if (m, e) == ("Balances", "Transfer")]
    assert [int(a["amount"]) for a in moved] == [2 * UNIT]  # the lost payment really paid the committee
    block = await chain.node.rpc("chain_getBlock", blocks["other"].block_hash)

    def decode_all(si):
        si.init_runtime(block_hash=blocks["other"].block_hash)
        out = {}
        for s in (blocks["other"], blocks["names"], blocks["lost"]):
            raw = raw_extrinsic(block["block"]["extrinsics"][s.index])
            try:
                decode_extrinsic(si.runtime_config, si.metadata, raw)
                out[s.label] = None
            except RecursionError:  # through the real library path
                out[s.label] = "RecursionError"
            out[s.label + " candidate"] = is_candidate(raw, COMMITTEE_ID)
        return out

    seen = await chain.run(decode_all)
    assert seen == {"undecodable": "RecursionError", "undecodable candidate": False,
                    "undecodable, names the committee": "RecursionError",
                    "undecodable, names the committee candidate": True,
                    "undecodable payment": "RecursionError", "undecodable payment candidate": True}


async def test_deposits_in_and_after_a_block_with_undecodable_extrinsics_are_found(chain, blocks, caplog):
    registry = CollectorRegistry()
    w = SubstrateWatcher(chain_config(chain.url), registry=registry)
    try:
        with caplog.at_level(logging.WARNING, logger="relayers.substrate.watcher"):
            found = await w.fetch_deposits(blocks["start"], blocks["end"])
            again = await w.fetch_deposits(blocks["start"], blocks["end"])  # read twice, alerted once
        want = [(p.reference, p.amount, sequence_of(await block_number(chain, p.block_hash), p.index))
                for p in blocks["paid"]]
        assert [(o.reference, o.amount, o.sequence) for o in found] == want
        assert again == found
        assert registry.get_sample_value(METRIC, {"chain": "polkadot", "candidate": "true"}) == 1
        assert registry.get_sample_value(METRIC, {"chain": "polkadot", "candidate": "false"}) == 1
        lost = blocks["lost"]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and f"extrinsic {lost.index} moved {2 * UNIT} to the committee" in errors[0]
        assert lost.block_hash[2:] in errors[0] and "NOT credited" in errors[0]
        # the SDK is used afresh after the failed decode, and still reads payments
        assert [o.reference for o in await w.reobserve(found[0].tx_id)] == [found[0].reference]
    finally:
        await w.aclose()


async def block_number(chain, block_hash: str) -> int:
    return int((await chain.node.rpc("chain_getHeader", block_hash))["number"], 16)


@pytest.mark.parametrize("max_range", [1, 100])
async def test_the_follower_moves_past_it(chain, blocks, tmp_path, max_range):
    from bridge.storage.db import Database
    from bridge.storage.observations import get_cursor, observations_by_status
    from bridge.watch import DepositFollower

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/f.sqlite")
    await db.migrate()
    w = SubstrateWatcher(chain_config(chain.url))
    try:
        f = DepositFollower(w, db, "test", start_block=blocks["start"], max_range=max_range)
        while True:
            async with db.begin() as s:
                cursor = await get_cursor(s, "test", w.chain)
            if cursor is not None and cursor[0] >= blocks["end"]:
                break
            await f.step()
        async with db.begin() as s:
            stored = await observations_by_status(s, "new", 100)
        assert sorted(o.observation.reference for o in stored) == sorted(p.reference for p in blocks["paid"])
    finally:
        await w.aclose()
        await db.dispose()
