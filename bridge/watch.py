"""The deposit follower: moves a watcher's final deposits into storage, exactly once.

Chain-agnostic core: it knows only the ``bridge.chains.Watcher`` Protocol, never web3 or
``relayers/``. One step:

1. read the cursor (last fully handled block and its hash);
2. check the stored hash against ``watcher.block_ref(height)``. A mismatch is a reorg below
   the finality point, which a sound finality rule excludes: log an error and rewind the
   cursor by ``max_range`` blocks (rescanning is harmless, inserts are idempotent);
3. fetch ``cursor+1 .. min(finalized, cursor+max_range)``, in pieces (below);
4. for each piece, in order: store its new observations AND advance the cursor to the piece's
   last block in one transaction, so that a crash can neither skip nor duplicate a deposit; the
   cursor moves by compare-and-set from where the previous piece left it (the height read in
   1. for the first), so two processes following one chain into one database never both
   advance it;
5. after each commit, hand the newly stored observations to ``on_new``.

A range longer than ``MIN_PIECE`` blocks is handled in up to ``PIECES`` pieces, and the next
piece is fetched ahead, as a task running while step 4 writes the current one: the chain's RPC,
the decoding and the database work at once (one transaction for a whole 1,000-block range left
the database idle during the fetch and the fetch idle during the write; bench/relayer_scan.py).
While catching up (the range ends below the final height), the next step's first piece is
fetched ahead the same way. A piece fetched ahead is used only if it starts right after the
stored cursor (anything else, a failed commit or a rewind, drops it); it is read from the chain
after the previous one, exactly as a sequential scan reads it, and every step still checks the
cursor's block hash first (2.). No transaction ever waits on the chain's RPC.

``run()`` loops over steps; retryable chain and storage errors are logged in one line and
backed off (capped exponential); cancellation propagates.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from bridge.chains import Watcher
from bridge.errors import ChainError, StorageError
from bridge.storage.db import Database
from bridge.storage.observations import add_observations, advance_cursor, get_cursor, set_cursor
from bridge.types import Observation

log = logging.getLogger(__name__)

OnNew = Callable[[list[Observation]], Awaitable[None]]


class _CursorMoved(Exception):
    """Raised inside the step's transaction to roll it back (compare-and-set lost)."""

_GAUGES: "weakref.WeakKeyDictionary[Any, tuple[Any, Any]]" = weakref.WeakKeyDictionary()


def _gauges(registry: Any) -> tuple[Any, Any]:
    g = _GAUGES.get(registry)
    if g is None:
        from prometheus_client import Gauge

        g = (
            Gauge("creditbridge_watcher_height", "Last block whose deposits are stored", ["chain"], registry=registry),
            Gauge("creditbridge_watcher_finalized", "Chain's final height as last seen", ["chain"], registry=registry),
        )
        _GAUGES[registry] = g
    return g


async def _cancel(task: asyncio.Future) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        if not task.cancelled():  # the caller itself is being cancelled
            raise
    except (ChainError, StorageError, SQLAlchemyError) as e:  # a stale range's failure: not ours
        log.debug("range fetched ahead failed: %s", e)


def _consume(task: asyncio.Future) -> None:
    """Done callback of a dropped prefetch: retrieve its outcome (no 'never retrieved' noise)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("range fetched ahead failed: %s", task.exception())


class DepositFollower:
    def __init__(
        self,
        watcher: Watcher,
        db: Database,
        component: str,
        *,
        start_block: int = 0,
        max_range: int = 1000,
        poll_interval: float = 1.0,
        max_backoff: float = 30.0,
        on_new: OnNew | None = None,
        registry: Any = None,
        clock: Callable[[], float] | None = None,
        fetch_ahead: bool = True,
    ) -> None:
        if max_range <= 0:
            raise ValueError("max_range must be positive")
        if start_block < 0:
            raise ValueError("start_block must be >= 0")
        self.watcher = watcher
        self.db = db
        self.component = component
        self.chain = watcher.chain
        self.start_block = start_block
        self.max_range = max_range
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.on_new = on_new
        # unix-seconds clock: new observations are stored as due from the time they are seen
        # (a signer's retry window, ``observations_due``, then serves them in arrival order
        # among the deposits whose backoff ended); None: due at 0 (components that never retry)
        self.clock = clock
        self.height: int | None = None  # last handled block, once known
        self.finalized: int | None = None
        self.caught_up = False
        self.rewinds = 0
        self._metrics = _gauges(registry) if registry is not None else None
        # catching up, the next range is fetched while the current one is stored (the chain's
        # RPC and the database work at once): ((start, end), task) until the next step takes it
        self.fetch_ahead = fetch_ahead
        self._ahead: tuple[tuple[int, int], asyncio.Future] | None = None

    async def _cursor(self) -> tuple[int, bytes | None]:
        async with self.db.begin() as s:
            cur = await get_cursor(s, self.component, self.chain)
        return cur if cur is not None else (self.start_block - 1, None)

    async def step(self) -> int:
        """One bounded step; returns how many new observations it stored."""
        height, stored_hash = await self._cursor()
        self.height = height

        if stored_hash is not None and height >= 0:
            ref = await self.watcher.block_ref(height)
            if ref.hash != stored_hash:
                await self._rewind(height, stored_hash, ref.hash)
                return 0

        finalized = await self.watcher.finalized_height()
        self.finalized = finalized
        if self._metrics is not None:
            self._metrics[1].labels(chain=self.chain).set(finalized)
        end = min(finalized, height + self.max_range)
        if end <= height:
            self.caught_up = True
            return 0

        # the range in pieces, each stored with the cursor in a transaction of its own, the next
        # piece fetched while one is written (see the module's docstring)
        size = self.piece_blocks() if self.fetch_ahead else self.max_range
        stored, prev, a = 0, height, height + 1
        while a <= end:
            observations, piece_ref, b = await self._fetched(a, min(end, a + size - 1))
            if b < end:
                self._prefetch(b + 1, min(end, b + size))
            elif end < finalized and self.fetch_ahead:  # catching up: the next step's first piece
                self._prefetch(b + 1, min(finalized, b + size))
            new = await self._store(prev, b, piece_ref, observations)
            if new is None:
                return stored
            stored += len(new)
            self.height = b
            if self._metrics is not None:
                self._metrics[0].labels(chain=self.chain).set(b)
            if new:
                log.info("%s/%s: %d new deposit(s) in blocks %d..%d", self.component, self.chain, len(new), a, b)
                await self._publish(new)
            prev, a = b, b + 1
        self.caught_up = end >= finalized
        return stored

    # a step's range is handled in up to PIECES pieces of at least MIN_PIECE blocks
    PIECES = 4
    MIN_PIECE = 64

    def piece_blocks(self) -> int:
        """Blocks a piece: ``max_range / PIECES``, at least ``MIN_PIECE`` (a short range is one
        piece: the step it always was)."""
        return min(self.max_range, max(self.MIN_PIECE, -(-self.max_range // self.PIECES)))

    async def _store(self, height: int, end: int, end_ref: Any,
                     observations: list[Observation]) -> list[Observation] | None:
        """The observations of ``height+1..end`` stored and the cursor moved from ``height`` to
        ``end``, in one transaction; the newly stored observations, or None when another
        instance moved the cursor meanwhile (rolled back; the piece fetched ahead is dropped)."""
        try:
            async with self.db.begin() as s:
                # the cursor first: its row lock orders two processes racing for this piece
                expected = None if height == self.start_block - 1 and await get_cursor(
                    s, self.component, self.chain) is None else height
                if not await advance_cursor(s, self.component, self.chain, expected, end, end_ref.hash):
                    raise _CursorMoved()
                return await add_observations(s, observations,
                                              due_at=int(self.clock()) if self.clock is not None else 0)
        except _CursorMoved:
            # another instance moved the cursor meanwhile: this piece's work is rolled back
            log.warning("%s/%s: cursor moved under us; retrying", self.component, self.chain)
            self._drop_prefetch()
            return None
        except BaseException:
            self._drop_prefetch()
            raise

    async def _fetch(self, start: int, end: int) -> tuple[list[Observation], Any]:
        observations = await self.watcher.fetch_deposits(start, end)
        return observations, await self.watcher.block_ref(end)

    async def _fetched(self, start: int, end: int) -> tuple[list[Observation], Any, int]:
        """``(deposits, block ref of the last block, last block)`` of ``start..end`` or of a
        shorter range from ``start``: the range fetched ahead during the previous step when it
        starts here and ends no later than ``end`` (it was read from the chain after the
        previous range, as a sequential scan reads it), else ``start..end`` fetched now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            (a, b), task = ahead
            if a == start and b <= end:
                observations, ref = await task
                return observations, ref, b
            await _cancel(task)
        observations, ref = await self._fetch(start, end)
        return observations, ref, end

    def _prefetch(self, start: int, end: int) -> None:
        task = asyncio.ensure_future(self._fetch(start, end))
        self._ahead = ((start, end), task)

    def _drop_prefetch(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            task = ahead[1]
            task.cancel()
            task.add_done_callback(_consume)

    def close(self) -> None:
        """Drop a range fetched ahead (``run`` does it when it ends)."""
        self._drop_prefetch()

    async def _rewind(self, height: int, stored: bytes, canonical: bytes) -> None:
        to = max(self.start_block - 1, height - self.max_range)
        log.error(
            "%s/%s: block %d changed below the finality point (stored 0x%s, chain 0x%s): "
            "the finality rule is unsound for this chain; rewinding to %d and rescanning",
            self.component, self.chain, height, stored.hex()[:16], canonical.hex()[:16], to,
        )
        self._drop_prefetch()
        to_hash = (await self.watcher.block_ref(to)).hash if to >= 0 else None
        async with self.db.begin() as s:
            await set_cursor(s, self.component, self.chain, to, to_hash)
        self.height = to
        self.caught_up = False
        self.rewinds += 1

    async def _publish(self, new: list[Observation]) -> None:
        if self.on_new is None:
            return
        try:
            await self.on_new(new)
        except asyncio.CancelledError:
            raise
        except Exception:  # the observations are stored (status "new"): consumers can recover
            log.exception("%s/%s: on_new callback failed", self.component, self.chain)

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._drop_prefetch()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self.step()
            except SQLAlchemyError as e:
                failures += 1
                delay = min(self.max_backoff, self.poll_interval * 2 ** min(failures - 1, 16))
                log.warning("%s/%s: storage failed (%s); retrying in %.1fs", self.component, self.chain,
                            e.__class__.__name__, delay)
                await asyncio.sleep(delay)
                continue
            except (ChainError, StorageError) as e:
                failures += 1
                delay = min(self.max_backoff, self.poll_interval * 2 ** min(failures - 1, 16))
                if not e.retryable:
                    delay = self.max_backoff
                (log.warning if e.retryable else log.error)(
                    "%s/%s: %s; retrying in %.1fs", self.component, self.chain, e, delay
                )
                await asyncio.sleep(delay)
                continue
            failures = 0
            await asyncio.sleep(self.poll_interval if self.caught_up else 0)
