"""Rewinding the head (``dev_setHead``) on chopsticks, with the DepositFollower.

chopsticks finalizes every block at once, so a rewind always rewinds "final" blocks; the
tests place it relative to the watcher's cursor:

* above the cursor (blocks the watcher has not taken as final yet, as with GRANDPA lag):
  the orphaned block's deposit is never observed, the canonical replacements are, and a
  payment re-included after the rewind is credited once -- nothing is lost;
* below the cursor (a finality violation no sound chain makes): the follower notices the
  changed block hash, rewinds and rescans; new deposits are found, none is duplicated, and
  the orphaned deposit it had already stored no longer re-observes, so no signer attests it.
  (A new deposit at the very same block number and extrinsic index as an orphaned stored one
  has the same sequence: storage keeps the stored one and logs an error. Only a broken
  finality rule can cause that; the test places the new deposit at another index.)
"""

from __future__ import annotations

import pytest_asyncio

from bridge.storage.db import Database
from bridge.storage.observations import observations_by_status
from bridge.watch import DepositFollower
from relayers.substrate.watcher import SubstrateWatcher
from tests.integration.substrate.helpers import COMMITTEE, UNIT, batch, chain_config, ref, remark, transfer


@pytest_asyncio.fixture
async def follow(tmp_path, chain):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/reorg.sqlite")
    await db.migrate()
    w = SubstrateWatcher(chain_config(chain.url))
    f = DepositFollower(w, db, "signer", start_block=await chain.head() + 1, max_range=4, poll_interval=0.01)
    f.watcher_ = w
    yield f
    await w.aclose()
    await db.dispose()


async def catch_up(f: DepositFollower) -> None:
    await f.step()
    while not f.caught_up:
        await f.step()


async def stored(f: DepositFollower) -> list:
    async with f.db.begin() as s:
        return [x.observation for x in await observations_by_status(s, "new", 100)]


def pay(amount: int, r: bytes):
    return lambda si: batch(si, [transfer(si, COMMITTEE, amount), remark(si, r)])


async def test_rewind_above_the_cursor_loses_nothing(chain, follow):
    await catch_up(follow)
    base = await chain.head()
    assert follow.height == base
    rx, ry = ref(), ref()
    x_hex, x_hash = await chain.signed_hex("//Alice", pay(2 * UNIT, rx))
    await chain.node.rpc("author_submitExtrinsic", x_hex)
    orphan = await chain.new_block()
    await chain.node.set_head(base)  # X's block is gone before the watcher took it as final
    chain.forget_nonces()
    y = await chain.send("//Bob", pay(3 * UNIT, ry))
    await chain.new_block([y])
    await chain.node.rpc("author_submitExtrinsic", x_hex)  # the payer's wallet re-sends X
    x_again = await chain.new_block()
    assert x_again != orphan
    await catch_up(follow)
    obs = await stored(follow)
    assert sorted((o.reference, o.amount) for o in obs) == sorted([(rx, 2 * UNIT), (ry, 3 * UNIT)])
    assert all("0x" + o.block_hash.hex() != orphan for o in obs)
    assert {"0x" + o.block_hash.hex() for o in obs if o.reference == rx} == {x_again}
    assert follow.rewinds == 0
    for o in obs:
        assert await follow.watcher_.reobserve(o.tx_id) == [o]


async def test_rewind_below_the_cursor_is_detected_and_rescanned(chain, follow):
    await catch_up(follow)
    base = await chain.head()
    rz, rw = ref(), ref()
    z = await chain.send("//Charlie", pay(UNIT, rz))
    await chain.new_block([z])
    await catch_up(follow)
    (z_obs,) = await stored(follow)
    assert z_obs.reference == rz
    await chain.node.set_head(base)  # below the cursor: a "final" block changes
    chain.forget_nonces()
    filler = await chain.send("//Eve", lambda si: remark(si, b"not a payment"))
    w = await chain.send("//Dave", pay(4 * UNIT, rw))
    await chain.new_block([filler, w])
    assert w.index != z.index
    await chain.new_block()
    await catch_up(follow)
    assert follow.rewinds == 1
    obs = await stored(follow)
    assert sorted(o.reference for o in obs) == sorted([rz, rw])
    assert len({o.deposit_id for o in obs}) == len(obs) == 2
    # the orphaned deposit does not re-observe: signers reject it instead of attesting
    assert await follow.watcher_.reobserve(z_obs.tx_id) == []
    (w_obs,) = [o for o in obs if o.reference == rw]
    assert await follow.watcher_.reobserve(w_obs.tx_id) == [w_obs]
