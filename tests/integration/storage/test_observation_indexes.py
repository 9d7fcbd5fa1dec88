"""Migration 0014 (issue 16, item 4): ``ix_observations_status`` is dropped, on SQLite and
(under ``make test``) PostgreSQL. The migration round-trips (head -> 0013 -> head), and the
queries that used the dropped index are still served by ``ix_observations_due``: the signer's
window (``observations_due``) and the lookup by status (``observations_by_status``), checked with
EXPLAIN on the very SQL the repository functions send."""

from __future__ import annotations

from sqlalchemy import event, inspect

from bridge.storage.db import _alembic_config
from bridge.storage.observations import add_observations, observations_by_status, observations_due
from bridge.types import Observation


def _obs(i: int) -> Observation:
    return Observation(
        chain="ethereum", source=b"\x07" * 32, sequence=i, tx_id=i.to_bytes(32, "big"), event_index=0,
        block_number=1000 + i, block_hash=i.to_bytes(32, "big"), timestamp=1_700_000_000 + i,
        token="ETH", amount=10**18 + i, payer=b"\x00" * 12 + (i + 1).to_bytes(20, "big"),
        reference=(i + 7).to_bytes(32, "big"),
    )


async def _indexes(db) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda c: {ix["name"] for ix in inspect(c).get_indexes("observations")})


async def _alembic(db, verb: str, revision: str) -> None:
    from alembic import command

    def run(sync_conn) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = sync_conn
        getattr(command, verb)(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def test_migration_0014_drops_the_duplicate_status_index_and_round_trips(db):
    assert "ix_observations_due" in await _indexes(db)
    assert "ix_observations_status" not in await _indexes(db)
    async with db.begin() as s:
        await add_observations(s, [_obs(i) for i in range(3)])
    await _alembic(db, "downgrade", "0013")
    assert {"ix_observations_status", "ix_observations_due"} <= await _indexes(db)
    await _alembic(db, "upgrade", "head")
    assert "ix_observations_status" not in await _indexes(db)
    async with db.begin() as s:  # the rows survived both ways
        assert [o.observation for o in await observations_by_status(s, "new")] == [_obs(i) for i in range(3)]


async def _plan(db, call) -> str:
    """The query plan of the one SELECT ``call(session)`` sends, as the database explains it."""
    sent: list = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", capture)
    try:
        async with db.begin() as s:
            await call(s)
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", capture)
    [(statement, parameters)] = sent
    async with db.engine.begin() as conn:
        if db.is_postgres:
            # a handful of rows: the planner would rightly scan the table; what is checked is
            # that an index serves the query when the table is large
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        else:
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(" ".join(str(v) for v in r) for r in rows.all())


async def test_status_queries_are_still_served_by_an_index(db):
    async with db.begin() as s:
        await add_observations(s, [_obs(i) for i in range(20)])
    due = await _plan(db, lambda s: observations_due(s, "new", 1_700_000_000, 100))
    by_status = await _plan(db, lambda s: observations_by_status(s, "attested", 100))
    for plan in (due, by_status):
        assert "ix_observations_due" in plan, plan
    if not db.is_postgres:
        # the signer's window comes out of the index in its order: no sort
        assert "TEMP B-TREE" not in due, due
