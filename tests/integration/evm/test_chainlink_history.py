"""Chainlink history on a real anvil (contracts/ethereum/PriceFeed.sol): the round in force at a
past time, found with getRoundData through several rounds, a carried-over round and a phase
change; times that are not settled history yet, stale rounds and times before the first round
are "cannot tell" (retryable), never a price."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from bridge.errors import PriceUnavailable
from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.chainlink import (
    PHASE_SHIFT,
    ChainlinkHistory,
    deploy_price_feed,
    new_phase,
    start_round,
    submit_answer,
)
from relayers.evm.rpc import RpcPool

OWNER = DEV_PRIVATE_KEYS[0]
USD = 10**8


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def at_time(anvil: AnvilNode, t: int) -> None:
    await anvil.rpc("evm_setNextBlockTimestamp", hex(t))


@pytest.fixture(scope="module")
async def history(anvil: AnvilNode):
    """A feed with rounds at T0+100 .. T0+700: answers 1000, 2000, 3000, (carried 3000), 5000,
    then a new phase with 6000 and 7000."""
    head = await anvil.rpc("eth_getBlockByNumber", "latest", False)
    t0 = int(head["timestamp"], 16) + 1000
    await at_time(anvil, t0)
    feed = await deploy_price_feed(anvil.rpc_url, OWNER, decimals=8, description="ETH / USD")
    steps = [(100, 1000), (200, 2000), (300, 3000), (400, None), (500, 5000), (550, "phase"), (600, 6000),
             (700, 7000)]
    for dt, what in steps:
        await at_time(anvil, t0 + dt)
        if what is None:
            await start_round(anvil.rpc_url, OWNER, feed)
        elif what == "phase":
            await new_phase(anvil.rpc_url, OWNER, feed)
        else:
            await submit_answer(anvil.rpc_url, OWNER, feed, what * USD)
    pool = RpcPool([anvil.rpc_url], chain_id=DEFAULT_CHAIN_ID, name="ethereum")
    clock = Clock(t0 + 700)
    h = ChainlinkHistory(pool, feed, timedelta(hours=1), symbol="ETH", tolerance=Decimal("0.03"), clock=clock)
    try:
        yield h, t0, clock
    finally:
        await pool.aclose()


@pytest.mark.parametrize("dt, round_id, answer", [
    (100, 1, 1000),  # exactly at an update: that round
    (199, 1, 1000),
    (250, 2, 2000),
    (450, 3, 3000),  # round 4 carries round 3's answer: the answer's own round
    (599, 5, 5000),  # the new phase has no round before its first: the previous phase's last
    (650, (1 << PHASE_SHIFT) | 1, 6000),
    (700, (1 << PHASE_SHIFT) | 2, 7000),
])
async def test_round_in_force_at_a_time(history, dt, round_id, answer):
    h, t0, _ = history
    rnd, decimals = await h.round_at(t0 + dt)
    assert (rnd.round_id, rnd.answer, decimals) == (round_id, answer * USD, 8)
    assert rnd.updated_at <= t0 + dt


async def test_reference_is_the_exact_answer(history):
    h, t0, _ = history
    r = await h.reference("ETH", t0 + 250)
    assert r.price == Fraction(2000) and r.tolerance == Fraction(3, 100) and "round 2" in r.basis


async def test_what_cannot_be_told(history):
    h, t0, clock = history
    with pytest.raises(PriceUnavailable) as e:
        await h.round_at(t0 + 50)  # before the feed's first round
    assert e.value.retryable
    clock.t = t0 + 720  # the chain's head is at t0+700: t0+710 is not settled history yet
    with pytest.raises(PriceUnavailable, match="not settled history") as e:
        await h.round_at(t0 + 710)
    assert e.value.retryable
    clock.t = t0 + 710 + 61  # past it by more than the clock skew: no later round can predate it
    rnd, _ = await h.round_at(t0 + 710)
    assert rnd.answer == 7000 * USD
    clock.t = t0 + 700 + 3600 + 100
    with pytest.raises(PriceUnavailable, match="heartbeat") as e:  # the round in force was stale then
        await h.round_at(t0 + 700 + 3601)
    assert e.value.retryable
