"""The deposit follower: moves a watcher's final deposits into storage, exactly once.

Chain-agnostic core: it knows only the ``bridge.chains.Watcher`` Protocol, never web3 or
``relayers/``. One step:

1. read the cursor (last fully handled block and its hash);
2. check the stored hash against ``watcher.block_ref(height)``. A mismatch is a reorg below
   the finality point, which a sound finality rule excludes: log an error and rewind the
   cursor by ``max_range`` blocks (rescanning is harmless, inserts are idempotent);
3. fetch ``cursor+1 .. min(finalized, cursor+max_range)``;
4. store the new observations AND advance the cursor in one transaction, so that a crash can
   neither skip nor duplicate a deposit; the cursor moves by compare-and-set from the height
   read in 1., so two processes following one chain into one database never both advance it;
5. after the commit, hand the newly stored observations to ``on_new``.

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

        observations = await self.watcher.fetch_deposits(height + 1, end)
        end_ref = await self.watcher.block_ref(end)

        try:
            async with self.db.begin() as s:
                # the cursor first: its row lock orders two processes racing for this step
                expected = None if height == self.start_block - 1 and await get_cursor(
                    s, self.component, self.chain) is None else height
                if not await advance_cursor(s, self.component, self.chain, expected, end, end_ref.hash):
                    raise _CursorMoved()
                new = await add_observations(s, observations,
                                             due_at=int(self.clock()) if self.clock is not None else 0)
        except _CursorMoved:
            # another instance moved the cursor meanwhile: this step's work is rolled back
            log.warning("%s/%s: cursor moved under us; retrying", self.component, self.chain)
            return 0

        self.height = end
        self.caught_up = end >= finalized
        if self._metrics is not None:
            self._metrics[0].labels(chain=self.chain).set(end)
        if new:
            log.info("%s/%s: %d new deposit(s) in blocks %d..%d", self.component, self.chain, len(new), height + 1, end)
            await self._publish(new)
        return len(new)

    async def _rewind(self, height: int, stored: bytes, canonical: bytes) -> None:
        to = max(self.start_block - 1, height - self.max_range)
        log.error(
            "%s/%s: block %d changed below the finality point (stored 0x%s, chain 0x%s): "
            "the finality rule is unsound for this chain; rewinding to %d and rescanning",
            self.component, self.chain, height, stored.hex()[:16], canonical.hex()[:16], to,
        )
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
