"""Custody per (chain, token) in the repositories, on SQLite and PostgreSQL (the shared ``db``
fixture): an EVM lock holding ETH and an ERC-20 keeps separate treasury facts and sweeps per
token (a sweep epoch is unique per token, not per chain), releases carry the token they pay,
dust is summed per token, never across tokens; and migration 0013 copies each tracked deposit's
token from its observation."""

from __future__ import annotations

from datetime import datetime, timezone


from sqlalchemy import text

from bridge.payments import refunds
from bridge.payments import treasury as tr
from bridge.storage import observations as obs_repo
from bridge.storage import releases as rel_repo
from bridge.storage import treasury as repo
from bridge.types import Observation

NOW = datetime(2026, 12, 6, 22, 0, tzinfo=timezone.utc)
SRC = b"\x41" * 32
PAYER = bytes(12) + b"\x77" * 20


def obs(seq: int, token: str, amount: int) -> Observation:
    return Observation(chain="ethereum", source=SRC, sequence=seq, tx_id=bytes([seq]) * 32, event_index=0,
                       block_number=10 + seq, block_hash=bytes([seq]) * 32, timestamp=1_700_000_000, token=token,
                       amount=amount, payer=PAYER, reference=b"\x01" * 32)


async def test_facts_and_sweeps_are_per_token(db):
    async with db.begin() as s:
        await obs_repo.add_observations(s, [obs(1, "ETH", 10**18), obs(2, "USDC", 5_000_000), obs(3, "USDC", 7)])
        assert await repo.track_new_deposits(s, "ethereum") == 3
    async with db.begin() as s:
        assert sorted(f.key[1] for f in await repo.facts(s, "ethereum", "USDC")) == [2, 3]
        assert [f.amount for f in await repo.facts(s, "ethereum", "ETH")] == [10**18]
        assert len(await repo.facts(s, "ethereum")) == 3  # no token: the whole chain
        # the same epoch is swept once per token
        for token, rid in (("ETH", tr.sweep_release_id(SRC, 4)), ("USDC", tr.sweep_release_id(SRC, 4, "USDC"))):
            assert await repo.add_sweep(s, release_id=rid, chain="ethereum", token=token, epoch=4, cutoff=40,
                                        amount=1, to=b"\x0b" * 20, items={}, now=NOW)
        assert not await repo.add_sweep(s, release_id=b"\x0c" * 32, chain="ethereum", token="USDC", epoch=4,
                                        cutoff=40, amount=1, to=b"\x0b" * 20, items={}, now=NOW)
    async with db.begin() as s:
        assert [w.token for w in await repo.sweeps(s, "ethereum", token="USDC")] == ["USDC"]
        assert await repo.last_epoch(s, "ethereum", "USDC") == 4
        assert await repo.last_epoch(s, "ethereum", "USDT") == 0


def test_sweep_ids_are_per_token_and_native_ids_unchanged():
    assert tr.sweep_release_id(SRC, 9) == refunds.release_id(SRC, 9, "sweep")  # ids signed before 0013
    ids = {tr.sweep_release_id(SRC, 9), tr.sweep_release_id(SRC, 9, "USDC"), tr.sweep_release_id(SRC, 9, "USDT")}
    assert len(ids) == 3


async def test_releases_carry_their_token_and_dust_is_summed_per_token(db):
    async with db.begin() as s:
        assert await rel_repo.add_release(s, source=SRC, sequence=1, chain="ethereum", purpose="excess", to=PAYER[12:],
                                          amount=3, release_id=b"\x01" * 32, signature=b"\x05" * 65, payment_id="p",
                                          now=NOW)
        assert await rel_repo.add_release(s, source=SRC, sequence=2, chain="ethereum", purpose="excess", to=PAYER[12:],
                                          amount=4, release_id=b"\x02" * 32, signature=b"\x05" * 65, payment_id="p",
                                          now=NOW, token="USDT")
        for i, token in ((3, None), (4, "USDT"), (5, "USDT")):
            assert await rel_repo.add_dust(s, source=SRC, sequence=i, chain="ethereum", purpose="excess",
                                           to=PAYER[12:], amount=10 * i, release_id=bytes([i]) * 32, payment_id="p",
                                           now=NOW, token=token)
    async with db.begin() as s:
        rows = await rel_repo.releases_after(s, 0, 10)
        assert [(r.release_id[0], r.token, r.ledger) for r in rows] == [(1, None, "ethereum"),
                                                                        (2, "USDT", "USDT@ethereum")]
        dust, _ = await rel_repo.dust_summary(s)
        assert dust == {"ethereum": {"count": 1, "amount": 30}, "USDT@ethereum": {"count": 2, "amount": 90}}


async def test_migration_0013_copies_the_token_of_tracked_deposits(tmp_path):
    """Real Alembic on a real SQLite file: a database at 0012 with a tracked deposit and a sweep
    upgrades to 0013 with the deposit's token copied from its observation and native releases
    (token NULL) untouched."""
    from alembic import command
    from sqlalchemy import create_engine

    from bridge.storage.db import _alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0012")
        conn.execute(text(
            "INSERT INTO observations (chain, source, sequence, tx_id, event_index, block_number, block_hash, "
            "timestamp, token, amount, payer, reference, status, status_detail, attempts, next_attempt_at, created_at) VALUES "
            "('ethereum', :src, 7, :tx, 0, 1, :tx, 0, 'ETH', '5', :payer, :ref, 'attested', '', 0, 0, '2026-12-06 00:00:00')"),
            {"src": SRC, "tx": b"\x02" * 32, "payer": PAYER, "ref": b"\x01" * 32})
        conn.execute(text(
            "INSERT INTO treasury_deposits (source, sequence, chain, reference, amount, credits, counted, refundable) "
            "VALUES (:src, 7, 'ethereum', :ref, '5', '0', '0', '0')"), {"src": SRC, "ref": b"\x01" * 32})
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0013")
        assert conn.execute(text("SELECT token FROM treasury_deposits")).scalar_one() == "ETH"
    engine.dispose()


