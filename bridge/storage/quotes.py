"""Repository of signed quotes (the API's database), and their retention.

Every ``POST /v1/quotes`` stores a quote, and the endpoint is public: without retention the
table grows without bound. ``prune_quotes`` deletes quotes whose expiry is older than the
retention period and that nothing references; what an audit needs stays for ever: a quote a
payment uses (``payments.quote_id``), a late deposit's fresh quote (``late_decisions``), and
a quote a recorded credit names (``credits.quote_id``). ``QuotePruner`` runs it periodically
under the API's supervisor, in small batches (one short transaction each).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import pickle
import sqlite3
import struct
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import delete, exists, insert, select, text, tuple_
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bridge.errors import StorageError
from bridge.pricing.quotes import _dumps, _evolve, quote_body, quote_pieces
from bridge.storage.models import CreditRow, LateDecisionRow, PaymentRow, QuoteRow
from bridge.types import Quote, quote_id_bytes, utcnow

log = logging.getLogger("creditbridge.storage")

_WORKER = Path(__file__).with_name("quote_store_worker.py")
_LEN = struct.Struct(">I")  # the store process's message framing (quote_store_worker.py)


def _quote(r: QuoteRow) -> Quote:
    return Quote(
        id=r.id,
        token=r.token,
        chain=r.chain,
        amount=r.amount,
        credits=r.credits,
        rate=Decimal(r.rate),
        credit_price_usd=Decimal(r.credit_price_usd),
        created_at=r.created_at,
        expires_at=r.expires_at,
        key_id=r.key_id,
        signature=bytes(r.signature),
        sources=tuple(x for x in r.sources.split(",") if x),
        **_unpack_proof(r.proof),
    )


def _pack_proof(q: Quote) -> bytes | None:
    """The ``proof`` column: the Merkle root then the path, 32 bytes each (None: no root)."""
    if not q.merkle_root:
        return None
    return bytes(q.merkle_root) + b"".join(q.merkle_path)


def _unpack_proof(blob: bytes | None) -> dict:
    if not blob:
        return {}
    blob = bytes(blob)
    if len(blob) % 32:
        raise StorageError("a stored quote proof is not a whole number of 32-byte hashes")
    return {"merkle_root": blob[:32], "merkle_path": tuple(blob[i:i + 32] for i in range(32, len(blob), 32))}


def _row(q: Quote) -> dict:
    return dict(
        id=q.id, token=q.token, chain=q.chain, amount=q.amount, credits=q.credits, rate=str(q.rate),
        credit_price_usd=str(q.credit_price_usd), sources=",".join(q.sources), created_at=q.created_at,
        expires_at=q.expires_at, key_id=q.key_id, signature=q.signature, proof=_pack_proof(q),
    )


async def add_quote(s: AsyncSession, q: Quote) -> None:
    """Store a signed quote. Decimals are stored with ``str`` so they read back identical."""
    s.add(QuoteRow(**_row(q)))
    await s.flush()


async def add_quotes(s: AsyncSession, quotes: Sequence[Quote]) -> None:
    """Store many signed quotes with one multi-row INSERT (same rows as ``add_quote``)."""
    if quotes:
        await s.execute(insert(QuoteRow), [_row(q) for q in quotes])


class QuoteWriter:
    """Group commit for quotes: ``await writer.add(quote)`` returns once the quote is committed.

    A background task (``start``) takes every quote waiting at that moment (up to
    ``max_batch``) and stores them in one transaction, then wakes their callers; quotes
    arriving meanwhile form the next batch. Under load many quotes share one commit; alone, a
    quote is written at once (no added delay). The durability promise is unchanged: ``add``
    returns only after the quote's transaction committed, and raises the database's error if
    it did not. If a batch fails, each of its quotes is retried in a transaction of its own,
    so one bad row cannot fail the others. Without a running task ``add`` writes directly.

    ``sign`` (the API passes ``QuoteSigner.sign_quotes``) signs the unsigned quotes of a batch
    together just before they are stored -- one signature over the Merkle root of the batch --
    so the quotes waiting while the previous batch committed share a signature as they share
    a commit; ``add`` returns the quote as stored (signed). Quotes given already signed are
    stored as they are.

    On a SQLite file database a batch is one message to a store process of the writer's own
    (``quote_store_worker.py``), which runs BEGIN IMMEDIATE, one ``executemany`` and COMMIT on
    a plain ``sqlite3`` connection and answers after the commit (the rows converted here by
    SQLAlchemy's own bind processors, so they are byte for byte what ``add_quote`` stores;
    errors raised as SQLAlchemy's). The same work in a thread of this process held the event
    loop's GIL for every row's binding and hand-off and cost the endpoint ~35 µs of every
    request; through aiosqlite it cost twice that. A store process that dies fails its batch
    (retried quote by quote, as any failed batch) and is started again. Elsewhere
    (PostgreSQL, where the storing already runs in the server's processes) a held connection
    runs a Core multi-row INSERT.
    """

    def __init__(self, db, *, max_batch: int = 512,
                 sign: Callable[[Sequence[Quote]], Sequence[Quote]] | None = None, signer=None) -> None:
        self.db = db
        self.max_batch = max_batch
        self.sign = sign if sign is not None or signer is None else signer.sign_quotes
        # the quotes waiting for the next batch, and the future the idle task waits on: a plain
        # list, not an asyncio.Queue (whose put/get bookkeeping cost a share of every quote)
        self._waiting: list[tuple[Quote | tuple, asyncio.Future]] = []  # a quote, or add_parts' tuple
        self._wakeup: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the held connection
        self._conn: AsyncConnection | None = None
        # with the gateway's signer on a SQLite file, the store process signs the batches too
        self._sqlite = _SqliteBatch.for_db(db, signer if self.sign is not None else None)
        # a store process that signs takes its batches straight from its replies (_kick, _landed)
        self._direct = self._sqlite is not None and self._sqlite.signs
        self._sent = 0  # direct batches sent and not answered yet
        self._kicking = False  # a _kick is scheduled
        self._answered: set[asyncio.Future] = set()  # one per direct batch in flight, done when answered
        self.batches = 0  # committed batches (for tests and the benchmark)
        self.written = 0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="quote-writer")

    async def stop(self) -> None:
        """Stop the task, write what is still queued, release the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._wakeup = None
        while self._answered:  # direct batches in flight (and their retries) are answered first
            await asyncio.gather(*list(self._answered), return_exceptions=True)
        batch, self._waiting = self._waiting, []
        if batch:
            await self._write(batch)
        await self._release()

    async def add(self, quote: Quote) -> Quote:
        """Store ``quote`` (signed with the batch when it has no signature); the stored quote."""
        return await self._enqueue(quote)

    def add_parts(self, parts: tuple[Quote, str, int, int]) -> Awaitable[bytes]:
        """Sign and store the quote ``QuoteService.quote_parts`` described (``(template, id,
        amount, credits)``: the template with those three fields); its JSON (``quote_body`` of
        the stored quote: ``POST /v1/quotes``'s answer) once it is committed. The writer needs
        a signer (``sign``)."""
        if self.sign is None:
            raise ValueError("add_parts needs a writer that signs")
        return self._enqueue(parts)

    def _enqueue(self, entry) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            return self._write_now(entry, future)
        else:
            self._waiting.append((entry, future))
            if self._direct:
                if not self._kicking and self._sent < self.PIPELINE:  # after this loop pass's quotes
                    self._kicking = True
                    asyncio.get_running_loop().call_soon(self._kick)
                return future
            wakeup = self._wakeup
            if wakeup is not None:  # the task is idle: this quote starts a batch at once
                self._wakeup = None
                if not wakeup.done():
                    wakeup.set_result(None)
        return future

    async def _write_now(self, entry, future: asyncio.Future):
        await self._write([(entry, future)])
        return await future

    def _kick(self) -> None:
        """Direct mode: send the waiting quotes to the store process, up to PIPELINE batches in
        flight. Called after the loop pass that queued them and, synchronously, from the reply
        of the batch before (``_landed``): the next batch leaves the moment one is answered,
        without waiting for the loop passes of a task hand-off."""
        self._kicking = False
        while self._waiting and self._sent < self.PIPELINE:
            batch = self._waiting[:self.max_batch]
            del self._waiting[:self.max_batch]
            answered = asyncio.get_running_loop().create_future()
            self._answered.add(answered)
            answered.add_done_callback(self._answered.discard)
            self._sent += 1
            try:
                sent = self._sqlite.send_store([e for e, _ in batch], functools.partial(self._landed, batch, answered))
            except Exception:  # noqa: BLE001 - written by the task path instead, which reports it
                sent = False
            if not sent:  # no store process running (first batch, or it died): the awaited path starts one
                task = asyncio.ensure_future(self._write(batch))
                task.add_done_callback(functools.partial(self._written, answered))

    def _written(self, answered: asyncio.Future, _task: asyncio.Future) -> None:
        self._sent -= 1
        if not answered.done():
            answered.set_result(None)
        self._kick()

    def _landed(self, batch: list, answered: asyncio.Future, error: BaseException | None, answers) -> None:
        """A direct batch's reply (called by the store process's reader): the next batch goes
        out first, then the callers are answered; a failed batch is retried quote by quote."""
        if error is not None and len(batch) > 1:  # the retries keep this batch's place until done
            retry = asyncio.ensure_future(asyncio.gather(*(self._write([item]) for item in batch)))
            retry.add_done_callback(functools.partial(self._written, answered))
            return
        self._sent -= 1
        self._kick()
        if error is not None:
            _settle(batch[0][1], error)
            answered.set_result(None)
            return
        self.batches += 1
        self.written += len(batch)
        for answer, (_, f) in zip(answers, batch):
            _settle(f, None, answer)
        answered.set_result(None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self._direct:  # batches go from _kick; the task only marks the writer as running
            await loop.create_future()
        # the SQLite store process takes the next batch while it commits one (its replies come
        # in order): up to PIPELINE batches in flight; one elsewhere (one held connection)
        depth = self.PIPELINE if self._sqlite is not None else 1
        inflight: set[asyncio.Future] = set()
        try:
            while True:
                if not self._waiting:
                    self._wakeup = loop.create_future()
                    await self._wakeup
                if len(inflight) >= depth:
                    await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
                    continue  # the quotes that arrived meanwhile join this batch
                batch = self._waiting[:self.max_batch]
                del self._waiting[:self.max_batch]
                if depth == 1:
                    await self._write(batch)
                    continue
                task = asyncio.ensure_future(self._write(batch))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        finally:
            for task in list(inflight):  # stopped: each caller is answered (_write's own handling)
                task.cancel()
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)

    PIPELINE = 2

    async def _insert(self, quotes: list[Quote]) -> None:
        if self._sqlite is not None:  # ordered and pipelined by the store process's protocol
            await self._sqlite.insert(quotes)
            return
        # a connection held across batches (no pool check-out and pre-ping per batch) and a
        # Core multi-row INSERT (no ORM unit of work): the rows are exactly add_quote's
        async with self._lock:
            if self._conn is None:
                self._conn = await self.db.engine.connect()
            try:
                async with self._conn.begin():
                    await self._conn.execute(QuoteRow.__table__.insert(), [_row(q) for q in quotes])
            except BaseException:
                await self._drop()  # a broken connection is not reused
                raise

    async def _release(self) -> None:
        async with self._lock:  # never while a transaction is using it
            await self._drop()
            if self._sqlite is not None:
                await self._sqlite.close()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                await conn.close()

    async def _store(self, entries: list) -> list:
        """Sign what needs it and commit ``entries`` (quotes, or ``add_parts``' tuples); each
        entry's answer: the stored quote, or the tuple's quote JSON."""
        if self._direct:  # the store process signs and serializes
            return await self._sqlite.store(entries)
        quotes = [_evolve(e[0], id=e[1], amount=e[2], credits=e[3]) if type(e) is tuple else e  # noqa: E721
                  for e in entries]
        quotes = self._signed(quotes)
        await self._insert(quotes)
        return [quote_body(q) if type(e) is tuple else q for e, q in zip(entries, quotes)]  # noqa: E721

    def _signed(self, quotes: list[Quote]) -> list[Quote]:
        unsigned = [i for i, q in enumerate(quotes) if not q.signature]
        if not unsigned or self.sign is None:
            return quotes
        signed = self.sign([quotes[i] for i in unsigned])
        out = list(quotes)
        for i, q in zip(unsigned, signed, strict=True):
            out[i] = q
        return out

    async def _write(self, batch: list[tuple[Quote, asyncio.Future]]) -> None:
        try:
            answers = await self._store([e for e, _ in batch])
        except SQLAlchemyError as e:
            if len(batch) == 1:
                _settle(batch[0][1], e)
                return
            for item in batch:  # isolate the failure
                await self._write([item])
            return
        except asyncio.CancelledError:  # stopped mid-write: its callers must not hang
            for _, f in batch:
                _settle(f, StorageError("the quote store stopped before the quote was saved"))
            raise
        except Exception as e:  # a bug: fail these callers, keep serving the next ones
            log.exception("storing %d quote(s) failed", len(batch))
            for _, f in batch:
                _settle(f, e)
            return
        self.batches += 1
        self.written += len(batch)
        for answer, (_, f) in zip(answers, batch):
            _settle(f, None, answer)


class _SqliteBatch:
    """The quote writer's SQLite path: batches committed by a store process of its own
    (``quote_store_worker.py``, one ``sqlite3`` connection), so that SQLite's work and the
    per-row parameter binding run beside the event loop, not under its GIL."""

    def __init__(self, path: str, dialect, signer=None) -> None:
        self.path = path
        table = QuoteRow.__table__
        self.columns = [c.name for c in table.columns]
        self.sql = f"INSERT INTO quotes ({', '.join(self.columns)}) VALUES ({', '.join('?' * len(self.columns))})"
        self.processors = [c.type._cached_bind_processor(dialect) for c in table.columns]
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Future | None = None
        self._replies: collections.deque[asyncio.Future] = collections.deque()  # requests sent, unanswered
        self._starting = asyncio.Lock()
        # the store process signs the batches (``store``) when it has the gateway's key and
        # the table has the columns quote_batch.sign_batch's rows fill
        self.signer = signer if signer is not None and self.columns == self._FAST_COLUMNS else None
        self.signs = self.signer is not None
        p = dict(zip(self.columns, self.processors))
        self._when = (p.get("created_at"), p.get("expires_at"))  # the dates' bind processors

    @classmethod
    def for_db(cls, db, signer=None) -> "_SqliteBatch | None":
        engine = getattr(db, "engine", None)
        if engine is None or engine.dialect.name != "sqlite":
            return None
        path = engine.url.database
        if not path or path == ":memory:" or "mode=memory" in str(engine.url):
            return None  # a private in-memory database: only the engine's own connections see it
        return cls(path, engine.dialect, signer)

    _FAST_COLUMNS = ["id", "token", "chain", "amount", "credits", "rate", "credit_price_usd", "sources", "created_at",
                     "expires_at", "key_id", "signature", "proof"]

    def _rows(self, quotes: list[Quote]) -> list[tuple]:
        if self.columns != self._FAST_COLUMNS:  # the table changed: the generic conversion
            return self._rows_generic(quotes)
        # _row's values through the same processors, without a dict a row: the datetimes repeat
        # within a batch (quotes of one second) and are converted once; bytes go as bytearray
        # (sqlite3 stores bytes, bytearray and the Binary the LargeBinary processor wraps them in
        # alike, as a BLOB, but looks up an adapter for every bytes parameter -- two failed
        # attribute look-ups each -- and for no bytearray); the batch's one signature once
        p = dict(zip(self.columns, self.processors))
        amount, credits, created, expires = p["amount"], p["credits"], p["created_at"], p["expires_at"]
        times: dict = {}
        blobs: dict = {}

        def blob(b):
            v = blobs.get(b)
            if v is None:
                v = blobs[b] = bytearray(b)
            return v

        def when(dt, proc):
            v = times.get((dt, proc))
            if v is None:
                v = times[(dt, proc)] = dt if proc is None else proc(dt)
            return v

        return [(q.id, q.token, q.chain, amount(q.amount) if amount else q.amount,
                 credits(q.credits) if credits else q.credits, str(q.rate), str(q.credit_price_usd),
                 ",".join(q.sources), when(q.created_at, created), when(q.expires_at, expires), q.key_id,
                 blob(q.signature), bytearray().join((q.merkle_root, *q.merkle_path)) if q.merkle_root else None)
                for q in quotes]

    def _rows_generic(self, quotes: list[Quote]) -> list[tuple]:
        """``_row`` of each quote through every column's bind processor (what _rows must equal)."""
        out = []
        for q in quotes:
            d = _row(q)
            out.append(tuple(v if p is None else p(v) for v, p in zip([d[c] for c in self.columns], self.processors)))
        return out

    async def insert(self, quotes: list[Quote]) -> None:
        """Commit ``quotes`` (signed) in the store process; returns once they are committed,
        raises the database's error as SQLAlchemy does."""
        await self._request(("rows", self._rows(quotes)))

    async def store(self, entries: list) -> list:
        """``QuoteWriter._store`` by the store process: the unsigned quotes and ``add_parts``
        tuples go as ``quote_batch`` items (their templates once per batch), signed quotes as
        rows; the process signs the items' Merkle root, commits everything in one transaction
        and answers each tuple's JSON and each quote's proof. The stored quotes (or JSON), in
        order."""
        prepared = self._prepare(entries)
        if prepared is None:
            await self.insert(entries)
            return entries
        message, answers_of = prepared
        return answers_of(await self._request(message))

    def send_store(self, entries: list, landed: Callable) -> bool:
        """``store`` without awaiting: the request is written at once and ``landed(error,
        answers)`` is called by the reader when the reply comes. False (nothing sent) when no
        store process is running; ``store`` then starts one."""
        if not self._running():
            return False
        prepared = self._prepare(entries)
        if prepared is None:
            message, answers_of = ("rows", self._rows(entries)), lambda reply: entries
        else:
            message, answers_of = prepared
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)

        def on_reply(error, reply):
            answers = None
            if error is None:
                try:
                    answers = answers_of(reply)
                except Exception as e:  # noqa: BLE001 - a malformed reply fails its batch, not the reader
                    log.exception("a quote store reply could not be read")
                    error = e
            landed(error, answers)

        self._replies.append(on_reply)
        try:
            self._proc.stdin.write(_LEN.pack(len(data)) + data)
        except OSError as e:  # the process died: the reader fails every pending request
            log.warning("the quote store process failed (%s); it is restarted for the next batch",
                        e.__class__.__name__)
        return True

    def _prepare(self, entries: list):
        """``(message, answers_of)`` for ``entries``, or None when they are all signed already
        (stored as rows); ``answers_of(reply)`` is the stored quotes (or JSON) in order."""
        key_id = self.signer.key_id
        templates: dict[int, tuple] = {}
        numbers: dict[int, int] = {}  # id(template quote) -> its number in this batch
        keep: list = []  # the batch's template quotes, alive while their ids are the keys above
        items: list[tuple] = []
        signed: list[Quote] = []
        for e in entries:
            if type(e) is tuple:  # noqa: E721 - add_parts: (template, id, amount, credits)
                template, quote_id, amount, credits = e
                id_json = _dumps(quote_id)
            elif e.signature:  # stored as it is
                signed.append(e)
                continue
            else:
                template = e if e.key_id == key_id else _evolve(e, key_id=key_id)
                quote_id, amount, credits, id_json = e.id, e.amount, e.credits, None
            n = numbers.get(id(template))
            if n is None:
                n = numbers[id(template)] = len(templates)
                keep.append(template)
                templates[n] = self._template(template)
            items.append((n, quote_id, id_json, int(amount), int(credits)))
        if not items:
            return None

        def answers_of(reply) -> list:
            _, signature, root, out = reply
            answers = []
            i = 0
            for e in entries:
                if type(e) is tuple:  # noqa: E721
                    answers.append(out[i])
                elif e.signature:
                    answers.append(e)
                    continue
                else:
                    answers.append(_evolve(e, key_id=key_id, signature=signature, merkle_root=root,
                                           merkle_path=tuple(out[i])))
                i += 1
            return answers

        return ("sign", templates, items, self._rows(signed)), answers_of

    def _template(self, q: Quote) -> tuple:
        """``quote_batch.Template`` of the quotes sharing ``q``'s template fields, as a plain
        tuple (the store process needs no class to unpickle it); the row's constant columns
        through the same processors as ``_rows``."""
        canonical, body = quote_pieces(q)
        created, expires = self._when
        row = (q.token, q.chain, str(q.rate), str(q.credit_price_usd), ",".join(q.sources),
               q.created_at if created is None else created(q.created_at),
               q.expires_at if expires is None else expires(q.expires_at), q.key_id)
        return canonical, body, row

    async def _request(self, message: tuple):
        """Send one request to the store process (started on first use, again after it died)
        and return its answer once it is committed; raises the database's error as SQLAlchemy
        does. Calls may overlap: each request is written at once and the replies, which come
        in order, are matched to them by one reader task."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if not self._running():
            async with self._starting:  # two batches finding it dead start one process
                if not self._running():
                    await self._start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        reply = asyncio.get_running_loop().create_future()
        self._replies.append(reply)
        try:
            proc.stdin.write(_LEN.pack(len(data)) + data)
            await proc.stdin.drain()
        except OSError as e:  # the process died: the reader fails every pending request
            log.warning("the quote store process failed (%s); it is restarted for the next batch",
                        e.__class__.__name__)
        error, answer = await reply  # (a cancelled caller leaves its future to the reader: no desync)
        if error is not None:
            raise error
        return answer

    def _running(self) -> bool:
        return (self._proc is not None and self._proc.returncode is None
                and self._reader is not None and not self._reader.done())

    async def _start(self) -> None:
        if self._proc is not None:
            await self.close()
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(_WORKER), self.path, self.sql,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read(self._proc, self._replies))
        if self.signer is not None:  # the gateway's key, once, over the pipe (never argv or env)
            reply = asyncio.get_running_loop().create_future()
            self._replies.append(reply)
            data = pickle.dumps(("key", self.signer.private_bytes()), protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.write(_LEN.pack(len(data)) + data)
            error, _ = await reply
            if error is not None:
                raise error

    async def _read(self, proc: asyncio.subprocess.Process, replies: "collections.deque[asyncio.Future]") -> None:
        """Match the store process's replies to the requests in order; when it ends, fail what
        it did not answer (those batches may or may not be committed: their callers get an
        error, never a success that did not happen)."""
        assert proc.stdout is not None
        try:
            while True:
                (n,) = _LEN.unpack(await proc.stdout.readexactly(_LEN.size))
                reply = pickle.loads(await proc.stdout.readexactly(n))
                error = None
                if reply is not None and reply[0] == "error":  # as SQLAlchemy raises it (IntegrityError, ...)
                    _, name, message = reply
                    cls = getattr(sqlite3, name, None)
                    if not (isinstance(cls, type) and issubclass(cls, sqlite3.Error)):
                        cls = sqlite3.Error
                    error = DBAPIError.instance(self.sql, None, cls(message), sqlite3.Error)
                elif reply is not None and reply[0] == "failed":  # not the database: a bug, or no key
                    error = RuntimeError(f"the quote store process could not sign a batch: {reply[1]}")
                _answer(replies.popleft(), error, reply)
        except (asyncio.IncompleteReadError, OSError, IndexError) as e:
            if replies:
                log.warning("the quote store process ended with %d batch(es) unanswered (%s); it is "
                            "restarted for the next batch", len(replies), e.__class__.__name__)
        finally:
            gone = DBAPIError.instance(self.sql, None, sqlite3.OperationalError("the quote store process ended"),
                                       sqlite3.Error)
            while replies:
                _answer(replies.popleft(), gone, None)

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        reader, self._reader = self._reader, None
        if proc is not None:
            await _stop(proc)
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self._replies = collections.deque()


def _answer(waiter, error: BaseException | None, reply) -> None:
    """Give a store-process reply to what waits for it: a future (``_request``) or a callback
    (``send_store``, called here, synchronously, so the writer's next batch leaves at once)."""
    if isinstance(waiter, asyncio.Future):
        if not waiter.done():
            waiter.set_result((error, reply))
        return
    try:
        waiter(error, reply)
    except Exception:  # noqa: BLE001 - one broken callback must not stop the reader
        log.exception("answering a quote store reply failed")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """End a store process: close its stdin (it exits at the end of its input), kill it if it
    does not within 10 s."""
    if proc.returncode is None and proc.stdin is not None and not proc.stdin.is_closing():
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()


def _settle(future: asyncio.Future, error: BaseException | None, result: Quote | None = None) -> None:
    if future.done():  # the caller was cancelled; the quote is stored regardless
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


async def get_quote(s: AsyncSession, quote_id: str) -> Quote | None:
    r = await s.get(QuoteRow, quote_id)
    return None if r is None else _quote(r)


async def ping(s: AsyncSession) -> None:
    """A trivial round trip to the database (health checks)."""
    await s.execute(text("SELECT 1"))


# --- retention ----------------------------------------------------------------------------------
async def prune_quotes(s: AsyncSession, *, expired_before: datetime, limit: int = 1000,
                       after: tuple[datetime, str] | None = None) -> tuple[int, tuple[datetime, str] | None]:
    """Delete up to ``limit`` candidates: quotes that expired before ``expired_before`` and that
    no payment, late decision or recorded credit references. Candidates are taken in
    ``(expires_at, id)`` order after ``after``; returns ``(deleted, cursor)``, the cursor being
    the last candidate looked at (None when there were none left)."""
    q = (select(QuoteRow.id, QuoteRow.expires_at)
         .where(QuoteRow.expires_at < expired_before,
                ~exists().where(PaymentRow.quote_id == QuoteRow.id),
                ~exists().where(LateDecisionRow.fresh_quote_id == QuoteRow.id))
         .order_by(QuoteRow.expires_at, QuoteRow.id).limit(limit))
    if after is not None:
        q = q.where(tuple_(QuoteRow.expires_at, QuoteRow.id) > tuple_(*after))
    rows = (await s.execute(q)).all()
    if not rows:
        return 0, None
    cursor = (rows[-1].expires_at, rows[-1].id)
    # credits name quotes in their on-chain bytes32 form: keep the (rare) candidates one names
    by_bytes = {quote_id_bytes(r.id): r.id for r in rows}
    credited = set(await s.scalars(select(CreditRow.quote_id).where(CreditRow.quote_id.in_(list(by_bytes)))))
    doomed = [qid for b, qid in by_bytes.items() if b not in credited]
    if doomed:
        await s.execute(delete(QuoteRow).where(QuoteRow.id.in_(doomed)).execution_options(synchronize_session=False))
    return len(doomed), cursor


class QuotePruner:
    """Every ``interval`` seconds, delete the quotes ``prune_quotes`` may delete, ``batch`` at a
    time (each batch its own transaction), counting them in ``metric`` (a Counter) if given."""

    def __init__(self, db, *, retention: timedelta, interval: float, batch: int = 1000, metric=None,
                 clock=utcnow) -> None:
        self.db = db
        self.retention = retention
        self.interval = interval
        self.batch = batch
        self.metric = metric
        self.clock = clock

    async def prune(self) -> int:
        """One full pass; returns how many quotes were deleted."""
        cutoff = self.clock() - self.retention
        total, cursor = 0, None
        while True:
            async with self.db.begin() as s:
                deleted, cursor = await prune_quotes(s, expired_before=cutoff, limit=self.batch, after=cursor)
            total += deleted
            if self.metric is not None and deleted:
                self.metric.inc(deleted)
            if cursor is None:
                break
            await asyncio.sleep(0)  # let requests run between batches
        if total:
            log.info("pruned %d unused quote(s) expired before %s", total, cutoff.isoformat())
        return total

    async def run(self) -> None:
        while True:
            try:
                await self.prune()
            except SQLAlchemyError as e:  # the database is away: try again next round
                log.warning("quote pruning failed: %s", e.__class__.__name__)
            await asyncio.sleep(self.interval)
