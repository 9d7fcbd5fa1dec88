"""The devnet plug-in's pieces on a real chopsticks chain: the clock keeper reads the
runtime's own ``Timestamp.Now`` and builds a block only when the chain is a slot behind."""

from __future__ import annotations

from devnet.substrate.devchain import SLOT_MS, chain_time_ms, clock_step


async def test_clock_keeper_builds_a_block_only_when_the_chain_is_behind(chain):
    head = await chain.head()
    now = await chain_time_ms(chain.node)
    hash_ = await chain.node.rpc("chain_getBlockHash", head)
    assert now == await chain.run(lambda si: si.query("Timestamp", "Now", block_hash=hash_).value)
    assert not await clock_step(chain.node, now + SLOT_MS - 1)  # less than a slot behind: nothing
    assert await chain.head() == head
    assert await clock_step(chain.node, now + SLOT_MS)  # a slot behind: one empty block
    assert await chain.head() == head + 1
    assert await chain_time_ms(chain.node) == now + SLOT_MS  # chopsticks: parent + one slot
