"""Run long-lived components (each an ``async run()``) under one supervisor.

A component that crashes is logged and restarted with capped exponential back-off; a
configuration error stops the process (restarting cannot fix it). SIGINT/SIGTERM cancel
every component and run the clean-ups in reverse order.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Awaitable, Callable

from bridge.errors import ConfigError, KeystoreError
from bridge.gctune import service_gc

log = logging.getLogger("creditbridge.supervisor")


class Supervisor:
    def __init__(self, name: str) -> None:
        self.name = name
        self._components: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self.restarts: dict[str, int] = {}

    def add(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._components.append((name, run))

    def on_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        self._cleanups.append(cleanup)

    async def _keep(self, name: str, run) -> None:
        delay = 0.5
        while True:
            try:
                await run()
                log.info("%s: component %s finished", self.name, name)
                return
            except asyncio.CancelledError:
                raise
            except (ConfigError, KeystoreError):
                raise
            except Exception:
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log.exception("%s: component %s crashed; restarting in %.1fs", self.name, name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def run(self) -> None:
        """Run every component until a signal or a fatal error; the clean-ups after. The
        process is wired by now: its start-up heap is frozen out of the collector's full
        scans while it runs (``bridge.gctune``)."""
        with service_gc():
            await self._run()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        tasks = [asyncio.create_task(self._keep(n, r), name=n) for n, r in self._components]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise t.exception()
        finally:
            for t in [*tasks, stopper]:
                t.cancel()
            await asyncio.gather(*tasks, stopper, return_exceptions=True)
            for cleanup in reversed(self._cleanups):
                try:
                    await cleanup()
                except Exception:
                    log.exception("%s: clean-up failed", self.name)
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.remove_signal_handler(sig)
                except (NotImplementedError, RuntimeError):
                    pass
