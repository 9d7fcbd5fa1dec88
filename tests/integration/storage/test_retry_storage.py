"""The signer's retry bookkeeping on real SQLite and PostgreSQL (migration 0007): only due
deposits are read, the longest waiting first; Asset Hub approvals likewise."""

from __future__ import annotations

from datetime import datetime, timezone

from bridge.storage import observations as obs_repo
from bridge.storage import releases as rel_repo
from bridge.types import Observation

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


def obs(seq: int) -> Observation:
    return Observation(chain="ethereum", source=b"\x05" * 32, sequence=seq, tx_id=bytes([seq]) * 32, event_index=0,
                       block_number=seq, block_hash=bytes([seq]) * 32, timestamp=1_700_000_000 + seq, token="ETH",
                       amount=10**18, payer=b"\x01" * 32, reference=bytes([seq]) * 32)


async def test_only_due_deposits_are_read_longest_waiting_first(db):
    async with db.begin() as s:
        await obs_repo.add_observations(s, [obs(i) for i in range(1, 5)])
        rows = {o.observation.sequence: o for o in await obs_repo.observations_due(s, "new", 1000)}
        assert sorted(rows) == [1, 2, 3, 4] and all(o.attempts == 0 and o.next_attempt_at == 0 for o in rows.values())
        await obs_repo.set_retry(s, rows[1].id, 3, 1010, "retrying (rpc-unavailable): timeout")
        await obs_repo.set_retry(s, rows[2].id, 1, 1002, "retrying (late-pending)")
    async with db.begin() as s:
        assert [o.observation.sequence for o in await obs_repo.observations_due(s, "new", 1000, limit=2)] == [3, 4]
        assert [o.observation.sequence for o in await obs_repo.observations_due(s, "new", 1005)] == [3, 4, 2]
        due = await obs_repo.observations_due(s, "new", 1010)
        assert [o.observation.sequence for o in due] == [3, 4, 2, 1]
        assert (due[-1].attempts, due[-1].next_attempt_at, due[-1].detail) == (
            3, 1010, "retrying (rpc-unavailable): timeout")


async def test_approvals_rotate_and_back_off(db):
    async with db.begin() as s:
        for i in range(3):
            await rel_repo.add_release(s, source=b"\x05" * 32, sequence=i, chain="polkadot", purpose="excess",
                                       to=b"\x01" * 32, amount=10**10, release_id=bytes([i]) * 32, signature=b"",
                                       payment_id="", now=NOW)
        await rel_repo.set_next_attempt(s, bytes([0]) * 32, 0, 1000)  # just stepped: to the back
        await rel_repo.set_next_attempt(s, bytes([1]) * 32, 2, 1004)  # failing: backing off
    async with db.begin() as s:
        assert [r.sequence for r in await rel_repo.open_approvals(s, ["polkadot"], now=1000)] == [2, 0]
        assert [r.sequence for r in await rel_repo.open_approvals(s, ["polkadot"], now=1004)] == [2, 0, 1]
        assert [r.sequence for r in await rel_repo.open_approvals(s, ["polkadot"])] == [2, 0, 1]
