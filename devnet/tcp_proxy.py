"""A TCP proxy on 127.0.0.1 in front of a chain's RPC port that fault tests and the chaos harness
(``bench/chaos.py``) can cut (refuse new connections and abort the open ones, as a node that
died does), restore, or stall (hold answers back so clients time out)."""

from __future__ import annotations

import asyncio
import time


class TcpProxy:
    def __init__(self, name: str, upstream_host: str, upstream_port: int) -> None:
        self.name = name
        self.up = (upstream_host, upstream_port)
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        # stall mode: until ``stall_until`` (monotonic), answers to requests ``stall_when``
        # selects (all if None) are held back, so the clients' reads time out
        self.stall_until = 0.0
        self.stall_when = None
        self.held = 0

    def stall(self, seconds: float, when=None) -> None:
        self.stall_until, self.stall_when = time.monotonic() + seconds, when

    def _stalling(self) -> bool:
        return time.monotonic() < self.stall_until

    async def start(self) -> str:
        from devnet.evm.anvil import free_port

        self.port = self.port or free_port()  # outside the ephemeral range: restore() rebinds it
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, hold: dict | None = None,
                    answers: bool = False) -> None:
        """Copy ``r`` to ``w``. Requests (client to upstream) mark whether their answer is to be
        held (stall mode); answers (upstream to client) of a held request wait until the stall
        ends or the client gives up."""
        try:
            while data := await r.read(65536):
                if hold is not None and not answers and data.strip():
                    hold["on"] = self._stalling() and (self.stall_when is None or self.stall_when(data))
                if hold is not None and answers and hold["on"]:
                    self.held += 1
                    while self._stalling() and not w.is_closing():
                        await asyncio.sleep(0.05)
                    hold["on"] = False
                    if w.is_closing():
                        break
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.up)
        except OSError:
            w.close()
            return
        self._conns.update((w, uw))
        hold = {"on": False}
        try:
            await asyncio.gather(self._pipe(r, uw, hold), self._pipe(ur, w, hold, answers=True))
        finally:
            self._conns.difference_update((w, uw))

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self._conns):
            c.transport.abort()
        self._conns.clear()

    async def restore(self) -> None:
        if self._server is None:
            for _ in range(50):
                try:
                    self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
                    return
                except OSError:  # the port is briefly in TIME_WAIT
                    await asyncio.sleep(0.1)
            raise RuntimeError(f"cannot reopen proxy port {self.port}")
