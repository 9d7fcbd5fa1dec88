"""The follower's observation insert sent as driver SQL (issue 16, item 4), on SQLite and
(under ``make test``) PostgreSQL: the rows are what a Core insert of ``_row_values`` stores,
a batch of any size is one COPY on PostgreSQL (one ``unnest`` statement when some rows are
stored already), SQLite's chunks are plain inserts (sent again skipping the stored rows when
one fails on a constraint), and idempotence holds across a batch boundary."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import event, insert, text

from bridge.storage.models import ObservationRow
from bridge.storage.observations import _CHUNK, _row_values, add_observations, observations_by_status
from bridge.types import Observation


def _obs(i: int) -> Observation:
    return Observation(
        chain="ethereum", source=b"\x07" * 32, sequence=i, tx_id=i.to_bytes(32, "big"), event_index=i % 5,
        block_number=1000 + i // 10, block_hash=(i // 10).to_bytes(32, "big"), timestamp=1_700_000_000 + i,
        token="ETH", amount=10**24 + i, payer=b"\x00" * 12 + (i + 1).to_bytes(20, "big"),
        reference=(i + 7).to_bytes(32, "big"),
    )


async def test_fast_insert_stores_what_a_core_insert_stores(db):
    now = datetime(2026, 12, 6, 22, 0, 0, 123456, tzinfo=timezone.utc)
    async with db.begin() as s:
        assert await add_observations(s, [_obs(1)]) == [_obs(1)]
        await s.execute(insert(ObservationRow.__table__), [_row_values(_obs(2), now)])
    cols = [c.name for c in ObservationRow.__table__.columns if c.name not in ("id", "sequence", "tx_id",
                                                                            "event_index", "block_number",
                                                                            "block_hash", "timestamp", "amount",
                                                                            "payer", "reference", "created_at")]
    async with db.begin() as s:
        if db.is_postgres:
            types = "pg_typeof"
        else:
            types = "typeof"
        q = ", ".join(f"{types}({c})" for c in [c.name for c in ObservationRow.__table__.columns])
        fast, core = (await s.execute(text(f"SELECT {q} FROM observations ORDER BY sequence"))).all()
        assert fast == core  # every column stored with the same type
        plain = ", ".join(cols + ["amount"])
        fast_v, core_v = (await s.execute(text(f"SELECT {plain} FROM observations ORDER BY sequence"))).all()
        assert fast_v[:-1] == core_v[:-1] and fast_v[-1] == str(10**24 + 1) and core_v[-1] == str(10**24 + 2)
        stored = await observations_by_status(s, "new")
    assert [r.observation for r in stored] == [_obs(1), _obs(2)]
    assert all(r.created_at.tzinfo is not None for r in stored)


async def test_batches_across_chunks_are_idempotent_and_pg_uses_one_statement(db, monkeypatch):
    inserts: list[str] = []
    copies: list[int] = []

    def count(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO OBSERVATIONS"):
            inserts.append(statement)

    if db.is_postgres:  # the COPY goes to asyncpg directly: counted there
        import asyncpg

        copy = asyncpg.Connection.copy_records_to_table

        async def counted(self, table, *, records, **kw):
            records = list(records)
            copies.append(len(records))
            return await copy(self, table, records=records, **kw)

        monkeypatch.setattr(asyncpg.Connection, "copy_records_to_table", counted)
    event.listen(db.engine.sync_engine, "before_cursor_execute", count)
    try:
        n = 2 * _CHUNK + 17
        async with db.begin() as s:
            if not db.is_postgres:  # SQLite's chunks go to aiosqlite directly: SQLite's own trace
                raw = await (await s.connection()).get_raw_connection()
                await raw.driver_connection.set_trace_callback(lambda sql: count(None, None, sql, None, None, False))
            new = await add_observations(s, [_obs(i) for i in range(n)])
            if not db.is_postgres:
                await raw.driver_connection.set_trace_callback(None)
        assert [o.sequence for o in new] == list(range(n))
        # PostgreSQL: one COPY whatever the batch, no INSERT; SQLite: one plain INSERT a chunk
        if db.is_postgres:
            assert (copies, inserts) == ([n], [])
        else:
            assert len(inserts) == -(-n // _CHUNK)
            assert not any("ON CONFLICT" in sql or "RETURNING" in sql for sql in inserts)
        inserts.clear()
        async with db.begin() as s:  # a rescan overlapping the end: only the new ones come back
            if not db.is_postgres:
                raw = await (await s.connection()).get_raw_connection()
                await raw.driver_connection.set_trace_callback(lambda sql: count(None, None, sql, None, None, False))
            new = await add_observations(s, [_obs(i) for i in range(n - 5, n + 5)])
            if not db.is_postgres:
                await raw.driver_connection.set_trace_callback(None)
        assert [o.sequence for o in new] == list(range(n, n + 5))
        # the plain attempt (PostgreSQL: a COPY of the ten) failed on the stored five and was taken
        # back; then one statement that skips what is stored
        assert len([sql for sql in inserts if "ON CONFLICT DO NOTHING RETURNING" in sql]) == 1
        if db.is_postgres:
            assert copies == [n, 10]
        async with db.begin() as s:
            assert len(await observations_by_status(s, "new", limit=10 * n)) == n + 5
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count)


async def test_a_conflict_in_a_middle_chunk_stores_every_other_row_once(db):
    """A batch of three chunks whose middle one holds a stored deposit: the first and last
    chunks go in as plain inserts, the middle one fails on the constraint, is taken back and sent
    again skipping the stored row (on PostgreSQL the whole COPY is taken back and the batch sent
    once more): every other row is stored once, in the batch's order, and only those come back."""
    n = 2 * _CHUNK + 17
    stored = _CHUNK + 7  # in the middle chunk
    async with db.begin() as s:
        assert await add_observations(s, [_obs(stored)]) == [_obs(stored)]
    async with db.begin() as s:
        new = await add_observations(s, [_obs(i) for i in range(n)])
    assert [o.sequence for o in new] == [i for i in range(n) if i != stored]
    async with db.begin() as s:
        rows = await observations_by_status(s, "new", limit=10 * n)
    assert sorted(r.observation.sequence for r in rows) == list(range(n))
    # stored in the batch's order after the one stored first (ids follow the insert order)
    assert [r.observation.sequence for r in sorted(rows, key=lambda r: r.id)] == (
        [stored] + [i for i in range(n) if i != stored])


async def test_a_mixed_batch_returns_exactly_its_new_rows(db):
    """Several sources, chains and tokens in one batch (so no column is sent once for all rows on
    PostgreSQL, and the inserted rows come back as (source, sequence)), with a stored deposit
    and an event already stored under another deposit id: only the new ones come back, stored
    as given."""
    from dataclasses import replace

    a = [_obs(i) for i in range(4)]
    b = [replace(_obs(i), chain="ton", source=b"\x09" * 32, token="TON", tx_id=(100 + i).to_bytes(32, "big"))
         for i in range(4)]
    async with db.begin() as s:
        assert await add_observations(s, [a[0], b[1]]) == [a[0], b[1]]
    clash = replace(_obs(9), tx_id=a[0].tx_id, event_index=a[0].event_index)  # a[0]'s event, another deposit id
    async with db.begin() as s:
        new = await add_observations(s, a + b + [clash])
    assert new == [a[1], a[2], a[3], b[0], b[2], b[3]]
    async with db.begin() as s:
        stored = {(r.observation.source, r.observation.sequence): r.observation
                  for r in await observations_by_status(s, "new", limit=100)}
    assert stored == {(o.source, o.sequence): o for o in a + b}


async def test_the_fast_insert_is_part_of_the_callers_transaction(db):
    """Sent below SQLAlchemy (SQLite: aiosqlite's connection), the insert still belongs to the
    session's transaction, even as its first statement: a rollback takes it back."""

    class Boom(Exception):
        pass

    try:
        async with db.begin() as s:
            assert len(await add_observations(s, [_obs(i) for i in range(_CHUNK + 3)])) == _CHUNK + 3
            raise Boom()
    except Boom:
        pass
    async with db.begin() as s:
        assert await observations_by_status(s, "new") == []
        assert len(await add_observations(s, [_obs(i) for i in range(3)])) == 3


async def test_a_driver_failure_is_a_storage_error_the_follower_retries(db):
    """The insert runs on the drivers' own connections, whose errors SQLAlchemy does not wrap: a
    failure other than a constraint comes out as StorageError (retryable, as
    ``DepositFollower.run`` treats it: backed off and retried), never as a bare driver
    exception that would end the follower. Real faults: on PostgreSQL another connection holds
    the table locked and the session gives up waiting (``lock_timeout``) in the COPY; on SQLite
    the session's connection is read-only (``PRAGMA query_only``)."""
    import pytest
    from sqlalchemy.ext.asyncio import AsyncSession

    from bridge.errors import StorageError

    async with db.engine.connect() as conn, db.engine.connect() as other:
        if db.is_postgres:
            await other.exec_driver_sql("LOCK TABLE observations IN ACCESS EXCLUSIVE MODE")
            await conn.exec_driver_sql("SET lock_timeout = '200ms'")
        else:
            await conn.exec_driver_sql("PRAGMA query_only=ON")
        try:
            with pytest.raises(StorageError) as caught:
                async with AsyncSession(bind=conn) as s:
                    await add_observations(s, [_obs(i) for i in range(3)])
            assert caught.value.retryable
            assert ("LockNotAvailableError" if db.is_postgres else "OperationalError") in str(caught.value)
        finally:
            await other.rollback()
            if db.is_postgres:
                await conn.rollback()
                await conn.exec_driver_sql("SET lock_timeout = 0")
            else:
                await conn.exec_driver_sql("PRAGMA query_only=OFF")
            await conn.rollback()
    async with db.begin() as s:  # nothing was stored, and the database serves the next batch
        assert await observations_by_status(s, "new") == []
        assert len(await add_observations(s, [_obs(i) for i in range(3)])) == 3
