"""The quotes' group-commit writer on SQLite and PostgreSQL: concurrent quotes share commits,
``add`` returns only once its quote is committed (a new session sees it), a bad row fails
alone, a database failure reaches every caller, and stopping writes what was queued."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bridge.pricing.quotes import QuoteSigner, verify_quote
from bridge.storage import quotes as repo
from bridge.types import Quote, utcnow

SIGNER = QuoteSigner.from_secret(bytes(range(1, 33)))


def quote(**kw) -> Quote:
    now = utcnow().replace(microsecond=0)
    q = Quote(id=str(uuid.uuid4()), token="ETH", chain="ethereum", amount=10**18 + 7, credits=300_000,
              rate=Decimal("3000.5"), credit_price_usd=Decimal("0.0101"), created_at=now,
              expires_at=now + timedelta(minutes=15), sources=("a", "b"))
    return SIGNER.sign_quote(replace(q, **kw))


async def stored(db, quote_id: str) -> Quote | None:
    async with db.begin() as s:
        return await repo.get_quote(s, quote_id)


async def test_concurrent_quotes_share_commits_and_are_durable_on_return(db):
    writer = repo.QuoteWriter(db)
    writer.start()
    try:
        quotes = [quote() for _ in range(200)]

        async def add_then_read(q: Quote) -> Quote | None:
            await writer.add(q)
            return await stored(db, q.id)  # committed: another session sees it at once

        got = await asyncio.gather(*(add_then_read(q) for q in quotes))
        assert got == quotes  # every field reads back identical, Decimals and times included
        assert writer.written == 200 and writer.batches < 200
        verify_quote(got[0], SIGNER.public_key)
    finally:
        await writer.stop()


async def test_a_bad_row_fails_alone(db):
    writer = repo.QuoteWriter(db)
    writer.start()
    try:
        first = quote()
        await writer.add(first)
        duplicate = replace(quote(), id=first.id)
        good = [quote() for _ in range(5)]
        results = await asyncio.gather(*(writer.add(q) for q in [*good[:2], duplicate, *good[2:]]),
                                       return_exceptions=True)
        assert isinstance(results[2], IntegrityError)
        assert [r for i, r in enumerate(results) if i != 2] == good  # signed already: stored as given
        for q in good:
            assert await stored(db, q.id) == q
        assert await stored(db, first.id) == first
    finally:
        await writer.stop()


async def test_without_the_task_quotes_are_written_directly_and_stop_flushes(db):
    writer = repo.QuoteWriter(db)
    q = quote()
    await writer.add(q)  # not started: written in place
    assert await stored(db, q.id) == q
    writer.start()
    queued = [quote() for _ in range(3)]
    waiting = [asyncio.ensure_future(writer.add(x)) for x in queued]
    await writer.stop()  # the task stops; what was queued is still written
    await asyncio.gather(*waiting)
    for x in queued:
        assert await stored(db, x.id) == x


async def test_a_database_failure_reaches_every_caller(tmp_path):
    from bridge.storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.sqlite")  # no quotes table
    writer = repo.QuoteWriter(db)
    writer.start()
    try:
        results = await asyncio.gather(*(writer.add(quote()) for _ in range(4)), return_exceptions=True)
        assert all(isinstance(r, SQLAlchemyError) for r in results)
        await db.migrate()
        q = quote()
        await writer.add(q)  # the writer recovers once the database is usable
        assert await stored(db, q.id) == q
    finally:
        await writer.stop()
        await db.dispose()


@pytest.mark.parametrize("n", [1, 3])
async def test_add_quotes_matches_add_quote(db, n):
    quotes = [quote() for _ in range(n)]
    async with db.begin() as s:
        await repo.add_quotes(s, quotes)
    for q in quotes:
        assert await stored(db, q.id) == q


async def test_unsigned_quotes_are_signed_by_batch_and_returned_as_stored(db):
    """With ``sign``, the quotes waiting together share one signature over their Merkle root;
    each caller gets its quote as stored, which verifies, and reads back identical. A bad row
    fails alone: the others are signed again, each a batch of one, and stored."""
    writer = repo.QuoteWriter(db, sign=SIGNER.sign_quotes)
    writer.start()
    try:
        unsigned = [replace(quote(), signature=b"", merkle_root=b"", merkle_path=()) for _ in range(50)]
        got = await asyncio.gather(*(writer.add(q) for q in unsigned))
        assert [g.id for g in got] == [q.id for q in unsigned]
        for g in got:
            verify_quote(g, SIGNER.public_key)
            assert len(g.merkle_root) == 32 and await stored(db, g.id) == g
        assert len({g.signature for g in got}) < len(got)  # signatures are shared by batches
        assert len({g.signature for g in got}) == len({g.merkle_root for g in got})  # one signature a root
        first = got[0]
        results = await asyncio.gather(*(writer.add(q) for q in [
            replace(quote(), signature=b""), replace(quote(), id=first.id, signature=b""),
            replace(quote(), signature=b"")]), return_exceptions=True)
        assert isinstance(results[1], IntegrityError)
        for r in (results[0], results[2]):
            verify_quote(r, SIGNER.public_key)
            assert await stored(db, r.id) == r
    finally:
        await writer.stop()


async def _sqlite_writer(tmp_path):
    from bridge.storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/quotes.sqlite")
    await db.migrate()
    writer = repo.QuoteWriter(db, sign=SIGNER.sign_quotes)
    writer.start()
    return db, writer


async def test_the_sqlite_store_process_that_dies_mid_batch_is_replaced_and_nothing_is_lost(tmp_path):
    """On a SQLite file the batches are committed by a store process of the writer's own
    (``quote_store_worker.py``). Killed while a batch waits in it, the batch's callers are not
    told it is stored: the batch fails and is retried (quote by quote) in a new process."""
    import os
    import signal

    db, writer = await _sqlite_writer(tmp_path)
    try:
        first = await writer.add(replace(quote(), signature=b""))
        proc = writer._sqlite._proc
        assert proc is not None and proc.returncode is None
        os.kill(proc.pid, signal.SIGSTOP)  # the next request waits in the pipe, unread
        pending = [asyncio.ensure_future(writer.add(replace(quote(), signature=b""))) for _ in range(5)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if writer._sqlite._replies:
                break
        assert writer._sqlite._replies and not any(p.done() for p in pending)
        proc.kill()
        got = await asyncio.gather(*pending)
        assert writer._sqlite._proc is not None and writer._sqlite._proc.pid != proc.pid
        for g in [first, *got]:
            verify_quote(g, SIGNER.public_key)
            assert await stored(db, g.id) == g
    finally:
        await writer.stop()
        await db.dispose()


async def test_a_cancelled_caller_does_not_put_the_store_process_out_of_step(tmp_path):
    db, writer = await _sqlite_writer(tmp_path)
    try:
        await writer.add(quote())
        tasks = [asyncio.ensure_future(writer.add(quote())) for _ in range(20)]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        # the cancelled callers' quotes may or may not be stored; the others are, and every
        # later quote is answered with its own reply
        for r in results[1::2]:
            assert await stored(db, r.id) == r
        later = await asyncio.gather(*(writer.add(quote()) for _ in range(10)))
        for q in later:
            assert await stored(db, q.id) == q
    finally:
        await writer.stop()
        await db.dispose()


async def test_the_store_process_checkpoints_the_wal_beside_its_commits(tmp_path):
    """Its own commits never checkpoint (``wal_autocheckpoint=0``: a checkpoint's fsyncs stalled
    every quote waiting for the commit); its checkpointer thread copies the WAL into the
    database every ``CHECKPOINT_EVERY`` seconds."""
    import sqlite3

    from bridge.storage import quote_store_worker

    db, writer = await _sqlite_writer(tmp_path)
    try:
        await asyncio.gather(*(writer.add(quote()) for _ in range(300)))
        await asyncio.sleep(quote_store_worker.CHECKPOINT_EVERY * 3)
        # the database file alone (its WAL left behind) already holds every quote
        import shutil

        shutil.copyfile(tmp_path / "quotes.sqlite", tmp_path / "main-only.sqlite")
        conn = sqlite3.connect(tmp_path / "main-only.sqlite")
        try:
            assert conn.execute("SELECT count(*) FROM quotes").fetchone()[0] == 300
        finally:
            conn.close()
    finally:
        await writer.stop()
        await db.dispose()
