"""The treasury repository on SQLite and PostgreSQL (the shared ``db`` fixture): deposits tracked
from the node's observations, decided once, joined with the credits the ledger recorded; sweeps
with their audit trail, one per chain and epoch; exact U256 amounts."""

from __future__ import annotations

from datetime import datetime, timezone

from bridge.chains import CreditRecord
from bridge.payments import rules
from bridge.storage import observations as obs_repo
from bridge.storage import treasury as repo
from bridge.types import Credit, Observation

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
SRC = b"\x41" * 32
BIG = 2**256 - 1


def obs(seq: int, amount: int, ref: bytes = b"\x01" * 32) -> Observation:
    return Observation(chain="ethereum", source=SRC, sequence=seq, tx_id=bytes([seq]) * 32, event_index=0,
                       block_number=10 + seq, block_hash=bytes([seq]) * 32, timestamp=1_700_000_000, token="ETH",
                       amount=amount, payer=bytes(12) + b"\x77" * 20, reference=ref)


async def test_deposits_decisions_credits_and_sweeps(db):
    async with db.begin() as s:
        await obs_repo.add_observations(s, [obs(1, 7), obs(2, BIG)])
        assert await repo.track_new_deposits(s, "ethereum") == 2
        assert await repo.track_new_deposits(s, "ethereum") == 0
        assert [st for _, st in await repo.undecided(s, "ethereum")] == ["new", "new"]
        await repo.set_decision(s, SRC, 1, outcome=rules.CREDIT, credits=3, counted=5, refundable=2,
                                refund_id=b"\x09" * 32)
        await repo.set_decision(s, SRC, 1, outcome=rules.EXCESS, credits=0, counted=0, refundable=7,
                                refund_id=None)  # decided once: ignored
        await repo.record_credits(s, [CreditRecord(Credit(SRC, 1, b"\x42" * 20, 3, b"\x00" * 32), b"\x01" * 32, 40)])
        await repo.record_credits(s, [CreditRecord(Credit(SRC, 1, b"\x42" * 20, 3, b"\x00" * 32), b"\x02" * 32, 41)])
        await repo.record_credits(s, [CreditRecord(Credit(SRC, 2, b"\x42" * 20, 1, b"\x00" * 32), b"\x03" * 32, 44)])
    async with db.begin() as s:
        facts = sorted(await repo.facts(s, "ethereum"), key=lambda f: f.key)
        assert [(f.outcome, f.counted, f.refundable, f.refund_id, f.credited_at, f.amount) for f in facts] == [
            (rules.CREDIT, 5, 2, b"\x09" * 32, 40, 7), (None, 0, 0, None, 44, BIG)]
        assert await repo.credited_undecided(s, SRC, 43) == []
        assert await repo.credited_undecided(s, SRC, 44) == [2]
        assert await repo.credit_blocks(s, SRC) == [40, 44]
        assert await repo.last_epoch(s, "ethereum") == 0
        assert await repo.add_sweep(s, release_id=b"\x0a" * 32, chain="ethereum", token="ETH", epoch=5, cutoff=50,
                                    amount=BIG, to=b"\x0b" * 20, items={(SRC, 1): 5, (SRC, 2): BIG - 5}, now=NOW)
        assert not await repo.add_sweep(s, release_id=b"\x0c" * 32, chain="ethereum", token="ETH", epoch=5,
                                        cutoff=50, amount=1, to=b"\x0b" * 20, items={}, now=NOW)
    async with db.begin() as s:
        (w,) = await repo.sweeps(s, "ethereum")
        assert (w.epoch, w.amount, w.state, w.to) == (5, BIG, "signed", b"\x0b" * 20)
        assert await repo.sweep_items(s, w.release_id) == [(SRC, 1, 5), (SRC, 2, BIG - 5)]
        assert await repo.last_epoch(s, "ethereum") == 5
        assert await repo.mark_paid(s, {b"\x0a" * 32}, NOW) == 1
    async with db.begin() as s:
        assert [w.state for w in await repo.sweeps(s)] == ["paid"]
        # a recorded credit that differs from this signer's decision does not count as credited
        await repo.set_decision(s, SRC, 2, outcome=rules.CREDIT, credits=2, counted=BIG, refundable=0, refund_id=None)
    async with db.begin() as s:
        assert [f.credited_at for f in sorted(await repo.facts(s, "ethereum"), key=lambda f: f.key)] == [40, None]
