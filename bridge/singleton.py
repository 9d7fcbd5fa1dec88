"""Jobs that must run once whatever the number of API replicas, under a database lease.

``Singleton(db, name, job).run()`` is a component like any other (``async run()``): every
replica runs it, and only the one holding the lease ``name`` (``leases`` table,
bridge/storage/leases.py) runs ``job``. The holder renews its lease every ``renew``
seconds; a replica that cannot renew (lost to another holder, or the database away until its
lease would have run out) cancels its job *before* another replica may take over. The
others retry every ``renew`` seconds, so a holder that dies is replaced within
``ttl + renew`` seconds; a holder that stops cleanly releases the lease and is replaced
within ``renew``.

On SQLite (one process, the embedded default) the lease is always free: the job just runs,
with one small write every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Awaitable, Callable

from sqlalchemy.exc import SQLAlchemyError

from bridge.storage import leases as repo
from bridge.storage.db import Database

log = logging.getLogger("creditbridge.singleton")

DEFAULT_TTL = 15.0


def holder_id() -> str:
    """This process's name in the leases table: host, pid and a random suffix."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Singleton:
    def __init__(self, db: Database, name: str, job: Callable[[], Awaitable[None]], *, holder: str | None = None,
                 ttl: float = DEFAULT_TTL, renew: float | None = None) -> None:
        if ttl <= 0:
            raise ValueError("lease ttl must be positive")
        self.db = db
        self.name = name
        self.job = job
        self.holder = holder or holder_id()
        self.ttl = ttl
        self.renew = renew if renew is not None else ttl / 3
        if not 0 < self.renew < ttl:
            raise ValueError("lease renewal interval must be below its ttl")
        self.held = False
        self.acquired = 0  # how many times this replica took the lease (metrics, tests)

    async def _try(self) -> bool:
        async with self.db.begin() as s:
            return await repo.acquire(s, self.name, self.holder, self.ttl)

    async def run(self) -> None:
        try:
            while True:
                valid_until = time.monotonic() + self.ttl
                try:
                    got = await self._try()
                except SQLAlchemyError as e:
                    log.warning("lease %s: database unavailable (%s)", self.name, e.__class__.__name__)
                    got = False
                if got:
                    self.held = True
                    self.acquired += 1
                    log.info("lease %s: taken by %s; running the job here", self.name, self.holder)
                    await self._hold(valid_until)
                    self.held = False
                await asyncio.sleep(self.renew)
        finally:
            if self.held:
                self.held = False
                await self._release()

    async def _hold(self, valid_until: float) -> None:
        """Run the job while the lease is renewed; return when it is lost (job cancelled)."""
        task = asyncio.create_task(self.job(), name=f"singleton-{self.name}")
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=max(0.0, min(self.renew, valid_until - time.monotonic())))
                if task in done:
                    task.result()  # the job ended or crashed: the caller (supervisor) decides
                    log.info("lease %s: job finished", self.name)
                    return
                started = time.monotonic()
                try:
                    ok = await self._try()
                except SQLAlchemyError as e:
                    ok = None
                    log.warning("lease %s: renewal failed (%s)", self.name, e.__class__.__name__)
                if ok:
                    valid_until = started + self.ttl
                elif ok is False:
                    log.warning("lease %s: lost to another replica; stopping the job here", self.name)
                    return
                elif time.monotonic() >= valid_until - self.renew:
                    # cannot confirm the lease: stop before another replica may take it over
                    log.warning("lease %s: could not renew in time; stopping the job here", self.name)
                    return
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _release(self) -> None:
        try:
            async with self.db.begin() as s:
                await repo.release(s, self.name, self.holder)
            log.info("lease %s: released by %s", self.name, self.holder)
        except SQLAlchemyError as e:  # it expires by itself
            log.warning("lease %s: release failed (%s); it expires in %.0fs", self.name, e.__class__.__name__,
                        self.ttl)
