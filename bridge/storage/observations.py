"""Repository of observed deposits and of the components' chain cursors.

Inserting observations is idempotent: a deposit already stored under the same
``(chain, tx_id, event_index)`` or the same deposit id ``(source, sequence)`` is skipped, so a
rescan after a restart or a rewind never duplicates anything. On SQLite and PostgreSQL a batch
is sent as driver SQL (``_insert_new``): plain multi-row ``INSERT`` statements on SQLite, a
binary ``COPY`` on PostgreSQL (nothing of it stored yet: the common case) and, where that fails
on a constraint, ``INSERT .. ON CONFLICT DO NOTHING .. RETURNING`` (race-free); other dialects
fall back to check-then-insert inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Sequence

import asyncpg
from sqlalchemy import LargeBinary, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from bridge.errors import NotFound, StorageError
from bridge.storage.models import CursorRow, ObservationRow
from bridge.types import Observation, utcnow

log = logging.getLogger(__name__)

_CHUNK = 400  # rows per statement (SQLite bound-parameter limits)

# _insert_new works on the drivers' own connections (aiosqlite's, asyncpg's), whose errors reach
# it unwrapped by SQLAlchemy: a constraint is handled there, any other failure is StorageError
_DRIVER_ERRORS = (sqlite3.Error, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


@dataclass(frozen=True)
class StoredObservation:
    id: int
    observation: Observation
    status: str
    detail: str
    created_at: datetime
    attempts: int = 0
    next_attempt_at: int = 0  # unix seconds; 0: due now


# --- cursors ---------------------------------------------------------------------------------
async def get_cursor(s: AsyncSession, component: str, chain: str) -> tuple[int, bytes | None] | None:
    """``(height, block hash)`` of the last block ``component`` fully handled on ``chain``."""
    row = await s.get(CursorRow, (component, chain))
    return None if row is None else (row.height, row.block_hash)


def _upsert(s: AsyncSession):
    if s.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


async def set_cursor(
    s: AsyncSession, component: str, chain: str, height: int, block_hash: bytes | None, now: datetime | None = None
) -> None:
    """Set the cursor: one atomic upsert (two processes setting it at once never collide)."""
    now = now or utcnow()
    table = CursorRow.__table__
    ins = _upsert(s)(table).values(component=component, chain=chain, height=height, block_hash=block_hash,
                                   updated_at=now)
    await s.execute(ins.on_conflict_do_update(
        index_elements=[table.c.component, table.c.chain],
        set_={"height": ins.excluded.height, "block_hash": ins.excluded.block_hash,
              "updated_at": ins.excluded.updated_at}))


async def advance_cursor(
    s: AsyncSession, component: str, chain: str, expected: int | None, height: int, block_hash: bytes | None,
    now: datetime | None = None,
) -> bool:
    """Compare-and-set: move the cursor to ``height`` only if it still is at ``expected``
    (None: no cursor yet). False when another process moved it first; the caller must then
    roll back what it stored with the step (or drop it, if idempotent)."""
    now = now or utcnow()
    table = CursorRow.__table__
    if expected is None:
        ins = _upsert(s)(table).values(component=component, chain=chain, height=height, block_hash=block_hash,
                                       updated_at=now)
        res = await s.execute(ins.on_conflict_do_nothing().returning(table.c.height))
        return res.first() is not None
    res = await s.execute(update(table).where(table.c.component == component, table.c.chain == chain,
                                              table.c.height == expected)
                          .values(height=height, block_hash=block_hash, updated_at=now))
    return res.rowcount == 1


# --- observations ----------------------------------------------------------------------------
def _row_values(o: Observation, now: datetime, due_at: int = 0) -> dict:
    return {
        "chain": o.chain,
        "source": o.source,
        "sequence": o.sequence,
        "tx_id": o.tx_id,
        "event_index": o.event_index,
        "block_number": o.block_number,
        "block_hash": o.block_hash,
        "timestamp": o.timestamp,
        "token": o.token,
        "amount": o.amount,
        "payer": o.payer,
        "reference": o.reference,
        "status": "new",
        "status_detail": "",
        "created_at": now,
        "next_attempt_at": due_at,
    }


def _observation(r: ObservationRow) -> Observation:
    return Observation(
        chain=r.chain,
        source=r.source,
        sequence=r.sequence,
        tx_id=r.tx_id,
        event_index=r.event_index,
        block_number=r.block_number,
        block_hash=r.block_hash,
        timestamp=r.timestamp,
        token=r.token,
        amount=r.amount,
        payer=r.payer,
        reference=r.reference,
    )


def _stored(r: ObservationRow) -> StoredObservation:
    return StoredObservation(r.id, _observation(r), r.status, r.status_detail, r.created_at, r.attempts or 0,
                             r.next_attempt_at or 0)


def _event_key(o: Observation) -> tuple[str, bytes, int]:
    return (o.chain, bytes(o.tx_id), o.event_index)


def _chunks(items: Sequence, n: int = _CHUNK) -> Iterable[Sequence]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


async def add_observations(s: AsyncSession, observations: Iterable[Observation], *,
                           due_at: int = 0) -> list[Observation]:
    """Store observations; return only the newly inserted ones, in the given order.

    ``due_at`` (unix seconds) is their first attempt time: a signer stamps its deposits with
    the time it observed them, so that ``observations_due`` serves deposits in the order they
    became due -- a deposit backing off after a failed attempt is not overtaken by every deposit
    observed after its retry time (with 0, fresh deposits would always sort first)."""
    unique: list[Observation] = []
    seen_events: set = set()
    seen_ids: set = set()
    for o in observations:  # (_event_key and deposit_id, inline: a catch-up stores 10,000s)
        tx = o.tx_id
        event, deposit = (o.chain, tx if type(tx) is bytes else bytes(tx), o.event_index), (o.source, o.sequence)
        if event in seen_events or deposit in seen_ids:
            continue
        seen_events.add(event)
        seen_ids.add(deposit)
        unique.append(o)
    if not unique:
        return []
    now = utcnow()
    dialect = s.get_bind().dialect.name
    if dialect in ("sqlite", "postgresql"):
        try:
            inserted = await _insert_new(s, unique, now, due_at)
        except _DRIVER_ERRORS as e:  # as a failed SQLAlchemy statement would be: retried by the caller
            raise StorageError(f"storing observations failed ({e.__class__.__name__})") from e
        new = [o for i, o in enumerate(unique) if i in inserted]
        skipped = [o for i, o in enumerate(unique) if i not in inserted] if len(new) < len(unique) else []
    else:  # portable fallback: check, then insert, in the caller's transaction
        existing_events, existing_ids = await _existing(s, unique)
        new, skipped = [], []
        for o in unique:
            if _event_key(o) in existing_events or o.deposit_id in existing_ids:
                skipped.append(o)
                continue
            s.add(ObservationRow(**_row_values(o, now, due_at)))
            new.append(o)
        await s.flush()
    if skipped:
        await _report_conflicts(s, skipped)
    return new


# The fast insert: every column but the autoincrement id, from the observation's attributes or a
# constant (exactly _row_values); a column added to the table must be added here (checked below).
_FROM_OBSERVATION = ("chain", "source", "sequence", "tx_id", "event_index", "block_number", "block_hash",
                     "timestamp", "token", "amount", "payer", "reference")
_CONSTANT = {"status": "new", "status_detail": "", "attempts": 0, "next_attempt_at": 0}
_INSERT_COLUMNS = [c.name for c in ObservationRow.__table__.columns if c.name != "id"]
_PG_TYPE = {"chain": "varchar", "source": "bytea", "sequence": "int8", "tx_id": "bytea", "event_index": "int4",
            "block_number": "int8", "block_hash": "bytea", "timestamp": "int8", "token": "varchar",
            "amount": "varchar", "payer": "bytea", "reference": "bytea", "status": "varchar",
            "status_detail": "varchar", "created_at": "timestamptz", "attempts": "int4", "next_attempt_at": "int8"}
_get_fields = operator.attrgetter(*_FROM_OBSERVATION)
_SQLITE_ROW_ORDER = ("chain", "source", "sequence", "tx_id", "event_index", "block_number", "block_hash",
                     "timestamp", "token", "amount", "payer", "reference")  # what _insert_new's SQLite row spells out
_SOURCE, _SEQUENCE = _FROM_OBSERVATION.index("source"), _FROM_OBSERVATION.index("sequence")


async def _insert_new(s: AsyncSession, unique: Sequence[Observation], now: datetime, due_at: int = 0) -> set[int]:
    """INSERT .. ON CONFLICT DO NOTHING .. RETURNING what identifies the inserted rows; returns
    their positions in ``unique`` (whose deposit ids are distinct). Sent as driver SQL: the values
    converted by the columns' own bind processors (so the rows are exactly what a Core insert of
    ``_row_values`` stores) without SQLAlchemy's per-row statement machinery, which cost ~40 us a
    row on a catch-up scan (bench/relayer_scan.py). SQLite: one multi-row VALUES statement per
    ``_CHUNK`` rows; PostgreSQL: the whole batch in one binary ``COPY`` (asyncpg's own, on the
    session's connection and so in its transaction).

    A catch-up stores deposits never seen: every row is new. So the rows go in first without
    ``ON CONFLICT`` arbitration (PostgreSQL probes each unique index before a speculative
    insert; a COPY took ~40% less of the server's time than ``INSERT .. ON CONFLICT ..
    RETURNING`` over ``unnest`` arrays, bench/relayer_scan.py) and without ``RETURNING`` rows to
    send back (on SQLite, sqlite3 takes the GIL back for each of them while the event loop
    decodes the next piece; ~6% of a SQLite scan). A statement that fails on a constraint has
    stored nothing (SQLite backs a failed statement out; the COPY runs in a savepoint) and its
    rows are sent again as ``INSERT .. ON CONFLICT DO NOTHING RETURNING``, which tells which of
    them it stored: on PostgreSQL one statement over ``unnest`` arrays, a column whose value is
    the same in every row (the constants, and a batch's one chain, source and token) sent once
    rather than as an array. A batch of one source returns just the inserted sequences (ints)
    instead of the (source, sequence) pairs."""
    unknown = set(_INSERT_COLUMNS) - set(_FROM_OBSERVATION) - set(_CONSTANT) - {"created_at"}
    if unknown:
        raise RuntimeError(f"observations: the fast insert does not know column(s) {sorted(unknown)}")
    conn = await s.connection()
    dialect = conn.dialect
    table = ObservationRow.__table__
    order = list(_FROM_OBSERVATION) + [c for c in _INSERT_COLUMNS if c not in _FROM_OBSERVATION]
    procs = [table.c[c].type._cached_bind_processor(dialect) for c in order]
    tail = [v if p is None else p(v) for c, p in zip(order[len(_FROM_OBSERVATION):], procs[len(_FROM_OBSERVATION):])
            for v in [now if c == "created_at" else due_at if c == "next_attempt_at" else _CONSTANT[c]]]
    # bytes need no SQLAlchemy conversion: sqlite3 stores bytes, bytearray and its Binary (what
    # the LargeBinary processor wraps them in) as the same BLOB; asyncpg has no processor for
    # them. On SQLite they go as bytearray: for every bytes parameter sqlite3 looks for an
    # adapter first -- two failed attribute look-ups, each formatting an AttributeError -- and
    # for a bytearray it does not (callgrind, bench/relayer_scan.py: ~9k instructions a bytes
    # parameter, five a row, 14% of the insert thread's work)
    converters = [(i, p) for i, (c, p) in enumerate(zip(_FROM_OBSERVATION, procs))
                  if p is not None and not isinstance(table.c[c].type, LargeBinary)]
    if dialect.name == "sqlite":
        converters += [(i, bytearray) for i, c in enumerate(_FROM_OBSERVATION)
                       if isinstance(table.c[c].type, LargeBinary)]

    def row(o: Observation) -> list:
        v = list(_get_fields(o))
        for i, p in converters:
            v[i] = p(v[i])
        return v

    converted = [_FROM_OBSERVATION[i] for i, p in converters if p is not bytearray]
    if converted == ["amount"] and dialect.name != "sqlite":
        # the one converted column (U256: checked, then str): a row without the loop
        (i_amount, convert), = converters

        def row(o: Observation) -> list:  # noqa: F811
            v = list(_get_fields(o))
            v[i_amount] = convert(v[i_amount])
            return v
    elif converted == ["amount"] and _FROM_OBSERVATION == _SQLITE_ROW_ORDER:
        # the same values as the loop (amount converted, the five BLOBs as bytearray), in one
        # expression: a catch-up builds 10,000s of rows
        convert = procs[_FROM_OBSERVATION.index("amount")]

        def row(o: Observation) -> tuple:  # noqa: F811
            return (o.chain, bytearray(o.source), o.sequence, bytearray(o.tx_id), o.event_index, o.block_number,
                    bytearray(o.block_hash), o.timestamp, o.token, convert(o.amount), bytearray(o.payer),
                    bytearray(o.reference))

    one_source = all(o.source == unique[0].source for o in unique)
    position = ({o.sequence: i for i, o in enumerate(unique)} if one_source
                else {(bytes(o.source), o.sequence): i for i, o in enumerate(unique)})
    ret = " ON CONFLICT DO NOTHING RETURNING " + ("sequence" if one_source else "source, sequence")
    inserted: set[int] = set()

    def collect(rows) -> None:
        if one_source:
            inserted.update(position[seq] for (seq,) in rows)
        else:
            inserted.update(position[(bytes(src), seq)] for src, seq in rows)

    cols = ", ".join(order)
    if dialect.name == "postgresql":
        rows = [row(o) for o in unique]
        # the common case, nothing stored yet: the rows COPYed in (binary; see the docstring),
        # in a savepoint: a conflict fails the COPY, rolled back to it
        driver = (await conn.get_raw_connection()).driver_connection
        try:
            # (the connection's savepoint: it is emitted at once, beginning the session's
            # transaction if this is its first statement; the session's own would wait for a
            # statement sent through it, and the COPY is not)
            async with conn.begin_nested():
                await driver.copy_records_to_table("observations", columns=order,
                                                   records=[r + tail for r in rows])
            return set(range(len(unique)))
        except asyncpg.IntegrityConstraintViolationError:  # some are stored (a rescan): sent again, skipping them
            pass
        columns = [list(a) for a in zip(*rows)] + [[v] for v in tail]
        params: list = []
        select: list[str] = []
        arrays: list[str] = []
        for i, (c, values) in enumerate(zip(order, columns)):
            if c != "sequence" and (len(values) == 1 or values.count(values[0]) == len(values)):
                params.append(values[0])
                select.append(f"${len(params)}::{_PG_TYPE[c]}")
            else:  # one array at least (sequence): unnest gives the rows
                params.append(values)
                arrays.append(f"${len(params)}::{_PG_TYPE[c]}[]")
                select.append(f"u.c{i}")
        names = ", ".join(f"c{i}" for i, (c, values) in enumerate(zip(order, columns))
                          if select[i].startswith("u."))
        sql = (f"INSERT INTO observations ({cols}) SELECT {', '.join(select)} "
               f"FROM unnest({', '.join(arrays)}) AS u({names})" + ret)
        result = await conn.exec_driver_sql(sql, tuple(params))
        collect(result.all())
        return inserted
    # SQLite: each chunk goes to aiosqlite's thread in one hop (``execute_fetchall``, on the
    # session's own connection, so in its transaction) and the next chunk is built meanwhile:
    # sqlite3 releases the GIL while SQLite works, so the two overlap. A chunk is a plain insert
    # (see the docstring); one that fails on a constraint is undone by SQLite alone (a failed
    # statement's changes are backed out, the transaction goes on) and sent again skipping the
    # stored rows.
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    one = "(" + ", ".join("?" * len(order)) + ")"
    pending: tuple[asyncio.Future, range, str, list] | None = None

    async def settle(job: tuple[asyncio.Future, range, str, list]) -> None:
        task, positions, sql, flat = job
        try:
            await task
        except sqlite3.IntegrityError:  # some are stored (a rescan): the chunk again, skipping them
            collect(await driver.execute_fetchall(sql + ret, flat))
        else:
            inserted.update(positions)

    try:
        for offset in range(0, len(unique), _CHUNK):
            part = unique[offset:offset + _CHUNK]
            flat: list = []
            for o in part:
                flat.extend(row(o))
                flat.extend(tail)
            sql = f"INSERT INTO observations ({cols}) VALUES " + ", ".join([one] * len(part))
            if pending is not None:
                await settle(pending)
            pending = (asyncio.ensure_future(driver.execute_fetchall(sql, flat)), range(offset, offset + len(part)),
                       sql, flat)
            await asyncio.sleep(0)  # queued to the thread now, not when this coroutine next waits
        if pending is not None:
            await settle(pending)
            pending = None
    finally:
        # failed or cancelled mid-way: the statement queued last still runs in the thread, before
        # the rollback that follows (one queue, in order); only its outcome is left to retrieve
        if pending is not None and not pending[0].done():
            pending[0].add_done_callback(_retrieve)
    return inserted


def _retrieve(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


async def _existing(s: AsyncSession, obs: Sequence[Observation]) -> tuple[set, set]:
    events: set = set()
    ids: set = set()
    for part in _chunks(obs, _CHUNK // 2):
        rows = await s.execute(
            select(ObservationRow.chain, ObservationRow.tx_id, ObservationRow.event_index,
                   ObservationRow.source, ObservationRow.sequence).where(
                tuple_(ObservationRow.source, ObservationRow.sequence).in_([o.deposit_id for o in part])
                | tuple_(ObservationRow.chain, ObservationRow.tx_id, ObservationRow.event_index).in_(
                    [_event_key(o) for o in part]
                )
            )
        )
        for chain, tx_id, ev, source, seq in rows.all():
            events.add((chain, bytes(tx_id), ev))
            ids.add((bytes(source), seq))
    return events, ids


async def _report_conflicts(s: AsyncSession, skipped: Sequence[Observation]) -> None:
    """A skipped observation should be the very deposit already stored (a rescan). If the
    stored one differs, the chain changed below the finality rule: say so loudly."""
    for part in _chunks(skipped, _CHUNK // 2):
        rows = await s.scalars(
            select(ObservationRow).where(
                tuple_(ObservationRow.source, ObservationRow.sequence).in_([o.deposit_id for o in part])
            )
        )
        stored = {(bytes(r.source), r.sequence): _observation(r) for r in rows}
        for o in part:
            old = stored.get(o.deposit_id)
            if old is not None and old != o:
                log.error(
                    "chain %s: deposit %s/%d observed again with different facts (stored tx 0x%s block %d, "
                    "now tx 0x%s block %d): the finality rule was broken; the stored one is kept",
                    o.chain, o.source.hex()[:16], o.sequence, old.tx_id.hex(), old.block_number,
                    o.tx_id.hex(), o.block_number,
                )


async def observations_by_status(s: AsyncSession, status: str, limit: int = 100) -> list[StoredObservation]:
    """Observations in ``status``, oldest first (tests and tools; the signer reads
    ``observations_due``). Served by ``ix_observations_due``, then sorted by id (0014 dropped the
    status-only index, which gave id order for free but cost every stored deposit an index
    update)."""
    rows = await s.scalars(
        select(ObservationRow).where(ObservationRow.status == status).order_by(ObservationRow.id).limit(limit)
    )
    return [_stored(r) for r in rows]


async def observations_due(s: AsyncSession, status: str, now: int, limit: int = 100) -> list[StoredObservation]:
    """Observations in ``status`` whose next attempt time (unix seconds) has come, the longest
    waiting first: a deposit in backoff leaves its place in the window to the others."""
    rows = await s.scalars(
        select(ObservationRow)
        .where(ObservationRow.status == status, ObservationRow.next_attempt_at <= now)
        .order_by(ObservationRow.next_attempt_at, ObservationRow.id)
        .limit(limit)
    )
    return [_stored(r) for r in rows]


async def set_retry(s: AsyncSession, id: int, attempts: int, next_attempt_at: int, detail: str = "") -> None:
    """Leave an observation undecided: tried again from ``next_attempt_at`` (unix seconds)."""
    row = await s.get(ObservationRow, id)
    if row is None:
        raise NotFound(f"observation {id} does not exist")
    row.attempts, row.next_attempt_at, row.status_detail = attempts, next_attempt_at, detail[:200]
    await s.flush()


async def set_observation_status(s: AsyncSession, id: int, status: str, detail: str = "") -> None:
    row = await s.get(ObservationRow, id)
    if row is None:
        raise NotFound(f"observation {id} does not exist")
    row.status, row.status_detail = status, detail[:200]
    await s.flush()


async def observations_by_reference(s: AsyncSession, reference: bytes) -> list[StoredObservation]:
    rows = await s.scalars(
        select(ObservationRow).where(ObservationRow.reference == reference).order_by(ObservationRow.id)
    )
    return [_stored(r) for r in rows]


async def observation_by_deposit(s: AsyncSession, source: bytes, sequence: int) -> StoredObservation | None:
    row = await s.scalar(
        select(ObservationRow).where(ObservationRow.source == source, ObservationRow.sequence == sequence)
    )
    return None if row is None else _stored(row)
