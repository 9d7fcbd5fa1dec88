"""A real HTTP proxy on 127.0.0.1 for fault tests: it forwards every request to an upstream (a
JSON-RPC node, a toncenter API, the gateway) unless a rule says otherwise.

* ``stall_if(path, body)``: the answer is held until ``heal()`` (clients time out meanwhile);
* ``answer_if(path, body)``: returns a ``web.Response`` to send instead of forwarding, or None.

``stalled`` / ``answered`` count the requests each rule caught.
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

import aiohttp
from aiohttp import web

Rule = Callable[[str, bytes], bool]


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.stall_if: Rule | None = None
        self.answer_if: Callable[[str, bytes], web.Response | None] | None = None
        self.stalled = 0
        self.answered = 0
        self.url = ""
        self._healed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def heal(self) -> None:
        """Forward everything again (and let held requests go)."""
        self.stall_if = None
        self.answer_if = None
        self._healed.set()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path_qs
        if self.answer_if is not None:
            resp = self.answer_if(path, body)
            if resp is not None:
                self.answered += 1
                return resp
        if self.stall_if is not None and self.stall_if(path, body):
            self.stalled += 1
            self._healed.clear()
            await self._healed.wait()
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        async with self._session.request(request.method, self.upstream + path, data=body or None,
                                         headers=headers) as r:
            return web.Response(status=r.status, body=await r.read(),
                                headers={"Content-Type": r.headers.get("Content-Type", "application/json")})

    async def start(self) -> "FaultProxy":
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        self._healed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def rpc_calls(body: bytes) -> list[dict]:
    """The JSON-RPC calls of a request body (one or a batch)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return []
    return [c for c in (doc if isinstance(doc, list) else [doc]) if isinstance(c, dict)]


def rpc_null_result(method: str, param: str | None = None):
    """``answer_if`` rule: answer ``null`` to single ``method`` calls (whose first parameter is
    ``param``, if given), as a node does for a receipt it does not have (yet)."""

    def rule(path: str, body: bytes) -> web.Response | None:
        calls = rpc_calls(body)
        if len(calls) != 1 or calls[0].get("method") != method:
            return None
        params = calls[0].get("params") or []
        if param is not None and (not params or str(params[0]).lower() != param.lower()):
            return None
        return web.json_response({"jsonrpc": "2.0", "id": calls[0].get("id"), "result": None})

    return rule


def rpc_method(method: str, param: str | None = None) -> Rule:
    """``stall_if`` rule: a request with a ``method`` call (first parameter ``param``, if given)."""

    def rule(path: str, body: bytes) -> bool:
        for c in rpc_calls(body):
            params = c.get("params") or []
            if c.get("method") == method and (param is None or (params and str(params[0]).lower() == param.lower())):
                return True
        return False

    return rule
