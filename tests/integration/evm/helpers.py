"""Helpers of the watcher and settlement integration tests: chain configs, deposits made
through anvil's unlocked dev accounts, a stoppable JSON-RPC proxy (to kill an endpoint
mid-run) and a closed local port (a dead endpoint)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
from aiohttp import web
from eth_account import Account
from eth_utils import keccak

from bridge.config import EvmChainConfig
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode

LOCK_SELECTOR = keccak(text="lock(bytes32)")[:4]
MIN_LOCK = 10**15
DEV_ADDRESSES = [Account.from_key(k).address for k in DEV_PRIVATE_KEYS]


def evm_config(
    rpc: str | list[str],
    *,
    chain_id: int,
    lock: str | None = None,
    credits: str | None = None,
    finality: str | int = 0,
    max_block_range: int = 1000,
    name: str = "ethereum",
    token: str | None = "ETH",
    request_timeout: float = 5.0,
) -> EvmChainConfig:
    contracts = {}
    if lock:
        contracts["lock"] = lock
    if credits:
        contracts["credits"] = credits
    return EvmChainConfig(
        family="evm",
        name=name,
        chain_id=chain_id,
        rpc=[rpc] if isinstance(rpc, str) else list(rpc),
        token=token,
        finality=finality,
        contracts=contracts,
        max_block_range=max_block_range,
        request_timeout=request_timeout,
    )


def ref(i: int) -> bytes:
    return keccak(text=f"payment-ref-{i}")


async def head(node: AnvilNode) -> int:
    return int(await node.rpc("eth_blockNumber"), 16)


async def send_lock(
    node: AnvilNode,
    lock: str,
    reference: bytes,
    value: int = MIN_LOCK,
    *,
    sender: int = 1,
    gas: int | None = None,
    wait: bool = True,
) -> bytes:
    """Send ``lock(reference)`` from dev account ``sender``; returns the tx hash. With
    ``wait`` (automine on) it returns once the receipt exists."""
    tx: dict[str, Any] = {
        "from": DEV_ADDRESSES[sender],
        "to": lock,
        "value": hex(value),
        "data": "0x" + (LOCK_SELECTOR + reference).hex(),
    }
    if gas is not None:
        tx["gas"] = hex(gas)
    tx_hash = bytes.fromhex((await node.rpc("eth_sendTransaction", tx))[2:])
    if wait:
        await receipt(node, tx_hash)
    return tx_hash


async def receipt(node: AnvilNode, tx_hash: bytes, timeout: float = 10.0) -> dict:
    """The receipt, polled for: after anvil_reorg, automine can lag the send a little."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        r = await node.rpc("eth_getTransactionReceipt", "0x" + tx_hash.hex())
        if r is not None:
            return r
        if loop.time() > deadline:
            raise AssertionError(f"no receipt for 0x{tx_hash.hex()}")
        await asyncio.sleep(0.01)


async def set_automine(node: AnvilNode, on: bool) -> None:
    await node.rpc("evm_setAutomine", on)


def closed_port_url() -> str:
    """http URL of a local port nobody listens on (connection refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class RpcProxy:
    """A JSON-RPC HTTP proxy in front of a node; ``stop()`` kills it mid-run and
    ``mode = "503"`` makes it answer HTTP 503, ``mode = "nobatch"`` refuses JSON-RPC batches."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "forward"
        self.requests = 0
        self.refused_batches = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.mode == "503":
            return web.Response(status=503, text="unavailable")
        if self.mode == "nobatch" and body.lstrip().startswith(b"["):
            self.refused_batches += 1
            return web.json_response(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch requests are disabled"}}
            )
        assert self._session is not None
        async with self._session.post(self.upstream, data=body, headers={"content-type": "application/json"}) as r:
            return web.Response(status=r.status, body=await r.read(), content_type="application/json")

    async def start(self) -> "RpcProxy":
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None


async def wait_for(cond, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Poll an async or sync predicate until it holds (a guard against hangs, not a timing
    assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(interval)
