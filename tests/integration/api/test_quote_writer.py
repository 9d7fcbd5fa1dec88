"""The quotes' group-commit writer on SQLite and PostgreSQL: concurrent quotes share commits,
``add`` returns only once its quote is committed (a new session sees it), a bad row fails
alone, a database failure reaches every caller, and stopping writes what was queued."""

from __future__ import annotations

import asyncio
import json
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


# how a writer signs: ``sign`` (the batch signed in this process) or ``signer`` (what the API
# passes: on a SQLite file its store process signs, serializes and stores each batch)
SIGNING = [pytest.param({"sign": SIGNER.sign_quotes}, id="sign"), pytest.param({"signer": SIGNER}, id="signer")]


@pytest.mark.parametrize("signing", SIGNING)
async def test_unsigned_quotes_are_signed_by_batch_and_returned_as_stored(db, signing):
    """With ``sign``, the quotes waiting together share one signature over their Merkle root;
    each caller gets its quote as stored, which verifies, and reads back identical. A bad row
    fails alone: the others are signed again, each a batch of one, and stored."""
    writer = repo.QuoteWriter(db, **signing)
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


async def _sqlite_writer(tmp_path, signing=None):
    from bridge.storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/quotes.sqlite")
    await db.migrate()
    writer = repo.QuoteWriter(db, **(signing or {"sign": SIGNER.sign_quotes}))
    writer.start()
    return db, writer


async def _sent_to_a_stopped_store(writer, add, n: int) -> tuple[list[asyncio.Future], object]:
    """The writer's store process stopped (SIGSTOP), then ``n`` calls of ``add`` sent to it:
    (their futures, none done, and the stopped process)."""
    import os
    import signal

    proc = writer._sqlite._proc
    assert proc is not None and proc.returncode is None
    os.kill(proc.pid, signal.SIGSTOP)  # the next request waits in the pipe, unread
    pending = [asyncio.ensure_future(add()) for _ in range(n)]
    for _ in range(50):
        await asyncio.sleep(0.01)
        if writer._sqlite._replies:
            break
    assert writer._sqlite._replies and not any(p.done() for p in pending)
    return pending, proc


@pytest.mark.parametrize("signing", SIGNING)
async def test_the_sqlite_store_process_that_dies_mid_batch_is_replaced_and_nothing_is_lost(tmp_path, signing):
    """On a SQLite file the batches are committed by a store process of the writer's own
    (``quote_store_worker.py``). Killed while a batch waits in it, the batch's callers are not
    told it is stored: the batch fails and is retried (quote by quote) in a new process."""
    db, writer = await _sqlite_writer(tmp_path, signing)
    try:
        first = await writer.add(replace(quote(), signature=b""))
        pending, proc = await _sent_to_a_stopped_store(
            writer, lambda: writer.add(replace(quote(), signature=b"")), 5)
        proc.kill()
        got = await asyncio.gather(*pending)
        assert writer._sqlite._proc is not None and writer._sqlite._proc.pid != proc.pid
        for g in [first, *got]:
            verify_quote(g, SIGNER.public_key)
            assert await stored(db, g.id) == g
    finally:
        await writer.stop()
        await db.dispose()


@pytest.mark.parametrize("signing", SIGNING)
async def test_a_cancelled_caller_does_not_put_the_store_process_out_of_step(tmp_path, signing):
    db, writer = await _sqlite_writer(tmp_path, signing)
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


async def _parts_service():
    """A QuoteService over a two-source aggregator, signing with SIGNER: its ``quote_parts``."""
    from pathlib import Path

    from prometheus_client import CollectorRegistry

    from bridge.pricing.aggregate import PriceAggregator
    from bridge.pricing.quotes import QuoteService
    from bridge.pricing.sources.fixed import FixedPriceSource
    from tests.integration.api.test_api import make_settings

    settings = make_settings(Path("/nonexistent"), Path("/nonexistent/quote.json"))  # (no file is opened)
    aggregator = PriceAggregator(
        [FixedPriceSource({"ETH": Decimal("3000")}, name="a"), FixedPriceSource({"ETH": Decimal("3001")}, name="b")],
        min_sources=2, max_deviation=Decimal("0.01"), max_age=timedelta(minutes=10),
        registry=CollectorRegistry(), symbols={"ETH"},
    )
    await aggregator.refresh()
    return QuoteService.from_settings(settings, aggregator, SIGNER)


@pytest.mark.parametrize("signing", SIGNING)
async def test_quote_parts_are_signed_stored_and_answered_as_their_quote_json(db, signing):
    """``add_parts`` (``POST /v1/quotes``): the writer answers the quote's JSON once it is
    stored. On a SQLite file with ``signer`` the store process made it: the JSON is byte for
    byte ``quote_body`` of the stored quote, which verifies. Parts, unsigned quotes and signed
    quotes waiting together go in one batch: the parts and unsigned quotes share its root."""
    from bridge.pricing.quotes import quote_body

    service = await _parts_service()
    writer = repo.QuoteWriter(db, **signing)
    writer.start()
    try:
        parts = [service.quote_parts("ETH", credits=100 + i) for i in range(30)]
        parts += [service.quote_parts("ETH", amount=10**15 + i) for i in range(5)]
        unsigned = [replace(quote(), signature=b"", merkle_root=b"", merkle_path=()) for _ in range(3)]
        signed = [quote() for _ in range(2)]
        got = await asyncio.gather(*(writer.add_parts(p) for p in parts), *(writer.add(q) for q in unsigned),
                                   *(writer.add(q) for q in signed))
        bodies, quotes = got[:len(parts)], got[len(parts):]
        roots = set()
        for p, body in zip(parts, bodies):
            template, quote_id, amount, credits = p
            q = await stored(db, quote_id)
            assert (q.amount, q.credits, q.token, q.rate) == (amount, credits, template.token, template.rate)
            verify_quote(q, SIGNER.public_key)
            assert body == quote_body(q)
            assert json.loads(body)["id"] == quote_id and uuid.UUID(quote_id).version == 7
            roots.add(q.merkle_root)
        for q, g in zip(unsigned, quotes):
            verify_quote(g, SIGNER.public_key)
            assert g.id == q.id and await stored(db, q.id) == g
            roots.add(g.merkle_root)
        assert quotes[len(unsigned):] == signed  # stored as they are
        for q in signed:
            assert await stored(db, q.id) == q
        assert len(roots) < len(parts) + len(unsigned)  # batches share a root
    finally:
        await writer.stop()


async def test_quote_parts_survive_the_store_process_dying_and_stop_answers_what_was_sent(tmp_path):
    """The store process (it signs, with ``signer``) killed while direct batches wait in it:
    their callers are not told their quotes are stored; each is retried in a new process and
    answered with a verified, stored quote. ``stop`` answers what was sent before it."""
    from bridge.pricing.quotes import quote_body

    service = await _parts_service()
    db, writer = await _sqlite_writer(tmp_path, {"signer": SIGNER})
    try:
        await writer.add_parts(service.quote_parts("ETH", credits=1))  # starts the process
        parts = [service.quote_parts("ETH", credits=10 + i) for i in range(40)]
        it = iter(parts)
        pending, proc = await _sent_to_a_stopped_store(writer, lambda: writer.add_parts(next(it)), len(parts))
        proc.kill()
        bodies = await asyncio.gather(*pending)
        assert writer._sqlite._proc.pid != proc.pid
        for p, body in zip(parts, bodies):
            q = await stored(db, p[1])
            verify_quote(q, SIGNER.public_key)
            assert body == quote_body(q)
        last = [asyncio.ensure_future(writer.add_parts(service.quote_parts("ETH", credits=7))) for _ in range(20)]
        await asyncio.sleep(0)
        await writer.stop()  # answers the batches in flight, then writes what still waits
        for t in last:
            assert t.done()
            assert json.loads(t.result())["credits"] == "7"
    finally:
        await writer.stop()
        await db.dispose()
