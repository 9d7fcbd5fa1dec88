"""Replay a recorded chopsticks WebSocket session from a small aiohttp server.

The recording (``scripts/record_chopsticks_session.py``) holds every text frame the watcher
and a finalized-heads subscriber exchanged with a real chopsticks node. This server answers
the same JSON-RPC requests with the recorded results (matched on method and params; request
ids are rewritten), and drives finality from the recorded ``chain_finalizedHead``
notifications *in order*: each ``chain_getFinalizedHead`` call moves one notification on.
Editing that list makes finalized heads skip numbers (drop notifications) or lag (repeat
them); ``drop_after`` closes the client's socket abruptly after that many requests.

``state_getMetadata`` at a block the session did not ask about is answered with the recorded
metadata of the same runtime version (as a node would: metadata belongs to the runtime). A
block hash or number the session never saw is answered like a node that does not know it
(``null``); any other unrecorded request is a JSON-RPC error. Both are counted in ``misses``.
"""

from __future__ import annotations

import copy
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

UNKNOWN_IS_NULL = {"chain_getHeader", "chain_getBlock", "chain_getBlockHash"}


def load(path: Path) -> dict:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return json.loads(raw)


def _key(method: str, params: Any) -> str:
    return method + json.dumps(params if params is not None else [], sort_keys=True)


def finalized_notifications(session: dict) -> list[dict]:
    """The recorded ``chain_finalizedHead`` headers, in the order they arrived."""
    out = []
    for f in session["frames"]:
        if f["dir"] == "in":
            msg = json.loads(f["data"])
            if msg.get("method") == "chain_finalizedHead":
                out.append(msg["params"]["result"])
    return out


def edit_heads(session: dict, numbers: list[int]) -> dict:
    """An edited copy whose finalized-head notifications are the recorded headers of
    ``numbers`` in this order (skip numbers to skip heads, repeat them to delay)."""
    by_number = {int(h["number"], 16): h for h in finalized_notifications(session)}
    edited = copy.deepcopy(session)
    frames = [f for f in edited["frames"] if not (f["dir"] == "in" and '"chain_finalizedHead"' in f["data"])]
    for n in numbers:
        frames.append({"conn": -1, "t": 0, "dir": "in", "data": json.dumps(
            {"jsonrpc": "2.0", "method": "chain_finalizedHead", "params": {"subscription": "edited",
                                                                        "result": by_number[n]}})})
    edited["frames"] = frames
    return edited


@dataclass
class ReplayServer:
    session: dict
    drop_after: list[int] = field(default_factory=list)  # request counts at which to cut the socket
    answers: dict[str, dict] = field(default_factory=dict)
    heads: list[dict] = field(default_factory=list)
    hashes: dict[int, str] = field(default_factory=dict)
    best: dict | None = None
    requests: list[tuple[str, Any]] = field(default_factory=list)
    misses: list[tuple[str, Any]] = field(default_factory=list)
    connections: int = 0
    drops: int = 0
    _pos: int = 0
    _headers: dict[int, dict] = field(default_factory=dict)
    _metadata: dict[Any, dict] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    url: str = ""

    def __post_init__(self) -> None:
        pending: dict[tuple[int, Any], dict] = {}
        for f in self.session["frames"]:
            msg = json.loads(f["data"])
            if f["dir"] == "out" and "method" in msg:
                pending[(f["conn"], msg.get("id"))] = msg
            elif f["dir"] == "in" and "id" in msg and (f["conn"], msg["id"]) in pending:
                req = pending.pop((f["conn"], msg["id"]))
                answer = {k: v for k, v in msg.items() if k in ("result", "error")}
                self.answers.setdefault(_key(req["method"], req.get("params")), answer)
        self.heads = finalized_notifications(self.session)
        for k, v in self.answers.items():  # number -> hash, from every answer that tells it
            for method in ("chain_getBlockHash", "chain_getHeader"):
                if not k.startswith(method + "["):
                    continue
                params, result = json.loads(k[len(method):]), v.get("result")
                if method == "chain_getBlockHash" and params and isinstance(params[0], int) and result:
                    self.hashes[params[0]] = result
                elif method == "chain_getHeader" and params and isinstance(result, dict):
                    self.hashes.setdefault(int(result["number"], 16), params[0])
                    self._headers.setdefault(int(result["number"], 16), result)
        for k, v in self.answers.items():  # spec version -> metadata
            if k.startswith("state_getMetadata[") and "result" in v:
                params = json.loads(k[len("state_getMetadata"):])
                version = self.answers.get(_key("state_getRuntimeVersion", params), {}).get("result") or {}
                self._metadata.setdefault(version.get("specVersion"), v)
        for h in self.heads:
            self._headers.setdefault(int(h["number"], 16), h)
        # the best block: the chain runs ahead of finality (the last block the session saw)
        self.best = self._headers[max(n for n in self._headers if n in self.hashes)]

    # ------------------------------------------------------------------ finality script
    @property
    def finalized(self) -> dict:
        return self.heads[min(self._pos, len(self.heads) - 1)]

    def _hash_of(self, header: dict) -> str:
        return self.hashes[int(header["number"], 16)]

    def answer(self, method: str, params: Any) -> dict:
        params = params if params is not None else []
        if method == "chain_getFinalizedHead":
            head = self.finalized
            self._pos += 1
            return {"result": self._hash_of(head)}
        if method in ("chain_getHeader", "chain_getBlockHash", "chain_getHead") and params in ([], [None]):
            return {"result": self.best if method == "chain_getHeader" else self._hash_of(self.best)}
        got = self.answers.get(_key(method, params))
        if got is not None:
            return got
        if method == "state_getMetadata" and params:
            # the metadata of a block is its runtime's: any recorded block of the same spec
            version = self.answers.get(_key("state_getRuntimeVersion", params), {}).get("result") or {}
            got = self._metadata.get(version.get("specVersion"))
            if got is not None:
                return got
        self.misses.append((method, params))
        if method in UNKNOWN_IS_NULL:
            return {"result": None}
        return {"error": {"code": -32000, "message": f"{method} is not in the recorded session"}}

    # ------------------------------------------------------------------ server
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.connections += 1
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            req = json.loads(msg.data)
            self.requests.append((req.get("method"), req.get("params")))
            if len(self.requests) in self.drop_after:
                self.drops += 1
                # cut the TCP connection without a close handshake, mid-request
                if request.transport is not None:
                    request.transport.abort()
                break
            body = {"jsonrpc": "2.0", "id": req.get("id"), **self.answer(req.get("method"), req.get("params"))}
            await ws.send_str(json.dumps(body))
        return ws

    async def start(self) -> "ReplayServer":
        app = web.Application()
        app.router.add_get("/", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def block_numbers_asked(self) -> set[int]:
        return {p[0] for m, p in self.requests if m == "chain_getBlockHash" and p and isinstance(p[0], int)}


async def started(session: dict, **kw: Any) -> ReplayServer:
    return await ReplayServer(session, **kw).start()

