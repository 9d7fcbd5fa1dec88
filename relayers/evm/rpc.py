"""A pool of JSON-RPC endpoints for one EVM chain, with failover and retries.

One ``AsyncWeb3(AsyncHTTPProvider)`` per configured URL. A call goes to the first endpoint in
configured order that is not backing off; a connection error, a timeout, an HTTP error
status, a malformed body or a JSON-RPC error that says "try later" marks the endpoint down
for a back-off period (doubling, capped) and the call moves on to the next one. When every
endpoint failed, the attempt raises :class:`~bridge.errors.RpcUnavailable`; ``tenacity``
retries whole attempts a bounded number of times with exponential back-off, but only for
retryable errors.

This module is the SDK boundary: aiohttp, web3 and JSON errors never leave it. Callers see
``bridge.errors`` only:

- :class:`RpcUnavailable` (retryable): no endpoint answered;
- :class:`JsonRpcError` (a ``ChainError``, not retryable): the node answered with a JSON-RPC
  error, e.g. ``execution reverted`` (``rpc_code``, ``rpc_message`` and ``rpc_data`` keep
  the node's words, ``revert_data`` the revert payload if any);
- :class:`~bridge.errors.ConfigError`: an endpoint serves another chain than configured. It
  is raised every time that endpoint's turn comes, never skipped silently.

Requests are sent raw (one aiohttp POST on the endpoint's keep-alive session, parsed with
orjson) and results returned as the node's JSON: web3's result formatters and request path
cost far more than the request (see LOCAL_CHAINS.md) and would add a second error path;
batch answers are matched to their calls by id. Typed helpers parse the few fields the watcher and submitter need.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, NamedTuple, Sequence
from urllib.parse import urlsplit

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.config import EvmChainConfig
from bridge.errors import ChainError, ConfigError, RpcUnavailable

try:  # orjson (installed with the pinned dependency set) parses node answers ~4x faster
    import orjson as _orjson

    _loads: Callable[[bytes], Any] = _orjson.loads
    _dumps: Callable[[Any], bytes] = _orjson.dumps
except ImportError:  # pragma: no cover - the stdlib is the fallback
    import json as _json

    _loads = _json.loads

    def _dumps(v: Any) -> bytes:
        return _json.dumps(v, separators=(",", ":")).encode()

log = logging.getLogger(__name__)
_JSON_HEADERS = {"Content-Type": "application/json"}

BlockId = int | str  # a number or a tag: "latest", "pending", "safe", "finalized", "earliest"
_TAGS = frozenset({"latest", "pending", "safe", "finalized", "earliest"})


class JsonRpcError(ChainError):
    """The node answered with a JSON-RPC error."""

    code = "rpc-error"
    retryable = False

    def __init__(self, method: str, rpc_code: int | None, rpc_message: str, rpc_data: Any = None, *, retryable: bool = False) -> None:
        super().__init__(f"{method}: {rpc_message} (code {rpc_code})", retryable=retryable)
        self.method = method
        self.rpc_code = rpc_code
        self.rpc_message = rpc_message
        self.rpc_data = rpc_data

    @property
    def is_revert(self) -> bool:
        return self.rpc_code == 3 or "revert" in self.rpc_message.lower()

    @property
    def revert_data(self) -> bytes | None:
        """The revert payload (selector + args) when the node returned one."""
        d = self.rpc_data
        if isinstance(d, dict):  # some nodes nest it: {"data": "0x..."} or {"originalError": {...}}
            d = d.get("data") or (d.get("originalError") or {}).get("data")
        if isinstance(d, str) and d.startswith("0x"):
            try:
                return bytes.fromhex(d[2:])
            except ValueError:
                return None
        return None


class BlockHeader(NamedTuple):
    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int


# JSON-RPC errors that mean "this endpoint cannot answer now", not "your request is wrong".
_RETRYABLE_RPC_CODES = frozenset({-32005, 429})
_RETRYABLE_RPC_TEXT = re.compile(
    r"rate.?limit|too many requests|header not found|unknown block|block ?out ?of ?range|"
    r"beyond (?:the )?current head|timed? ?out|temporar|busy|try again|unavailable|overloaded",
    re.IGNORECASE,
)


def _classify_rpc_error(method: str, err: Any) -> JsonRpcError:
    if not isinstance(err, dict):
        return JsonRpcError(method, None, str(err)[:200], retryable=True)
    code = err.get("code")
    message = str(err.get("message", ""))[:500]
    retryable = "revert" not in message.lower() and (
        code in _RETRYABLE_RPC_CODES or bool(_RETRYABLE_RPC_TEXT.search(message))
    )
    return JsonRpcError(method, code if isinstance(code, int) else None, message, err.get("data"), retryable=retryable)


def redact_url(url: str) -> str:
    """``scheme://host:port`` only: providers put API keys in paths and queries."""
    p = urlsplit(url)
    host = p.hostname or "?"
    return f"{p.scheme}://{host}:{p.port}" if p.port else f"{p.scheme}://{host}"


@dataclass
class _Endpoint:
    url: str
    label: str
    w3: AsyncWeb3
    verified: bool = False
    mismatch: ConfigError | None = None
    failures: int = 0
    down_until: float = 0.0
    last_error: str = ""
    session: aiohttp.ClientSession | None = None
    session_loop: Any = None

    def is_up(self, now: float) -> bool:
        return now >= self.down_until


_COUNTERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _error_counter(registry: Any):
    c = _COUNTERS.get(registry)
    if c is None:
        from prometheus_client import Counter

        c = Counter(
            "creditbridge_rpc_errors_total",
            "RPC endpoint failures (transport errors, timeouts, HTTP errors, retryable RPC errors)",
            ["chain", "endpoint"],
            registry=registry,
        )
        _COUNTERS[registry] = c
    return c


class _BatchRefused(Exception):
    """The node does not take JSON-RPC batches (internal signal)."""


def _result(method: str, resp: Any) -> Any:
    if not isinstance(resp, dict):
        raise ValueError("answer is not a JSON object")
    if resp.get("error") is not None:
        raise _classify_rpc_error(method, resp["error"])
    if "result" not in resp:
        raise ValueError("answer without result")
    return resp["result"]


def _is_retryable(e: BaseException) -> bool:
    return isinstance(e, ChainError) and e.retryable


def _hex_int(v: Any, what: str) -> int:
    try:
        if not isinstance(v, str) or not v.startswith("0x"):
            raise ValueError
        return int(v, 16)
    except ValueError:
        raise ChainError(f"malformed {what} in RPC answer") from None


def _hex_bytes(v: Any, what: str) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise ChainError(f"malformed {what} in RPC answer")
    try:
        return bytes.fromhex(v[2:])
    except ValueError:
        raise ChainError(f"malformed {what} in RPC answer") from None


def block_param(block: BlockId) -> str:
    if isinstance(block, bool):
        raise ValueError("block must be a number or a tag")
    if isinstance(block, int):
        if block < 0:
            raise ValueError("block number must be >= 0")
        return hex(block)
    if block in _TAGS:
        return block
    raise ValueError(f"unknown block tag {block!r}")


def _0x(b: bytes) -> str:
    return "0x" + bytes(b).hex()


@dataclass
class RpcPool:
    """Failover pool over the RPC URLs of one chain (all must serve ``chain_id``)."""

    urls: Sequence[str]
    chain_id: int
    name: str = "evm"
    timeout: float = 10.0
    attempts: int = 4  # whole passes over the endpoints
    retry_wait: float = 0.2  # first wait between passes (doubles)
    retry_wait_max: float = 5.0
    down_base: float = 1.0  # first back-off of a failed endpoint (doubles per failure)
    down_max: float = 60.0
    batch_size: int = 50  # calls per JSON-RPC batch (providers cap batches at 50-1000)
    batching: bool = True
    concurrency: int = 16  # parallel single requests when batches are refused
    registry: Any = None
    _endpoints: list[_Endpoint] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError(f"chain {self.name}: no rpc url")
        eps = []
        for url in self.urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"chain {self.name}: the EVM RPC pool speaks HTTP(S) only, got {redact_url(url)}")
            provider = AsyncHTTPProvider(
                url,
                request_kwargs={"timeout": aiohttp.ClientTimeout(total=self.timeout)},
                exception_retry_configuration=None,  # retries and failover are ours
            )
            eps.append(_Endpoint(url=url, label=redact_url(url), w3=AsyncWeb3(provider)))
        self._endpoints = eps
        self._checked = False
        self._ids = 0  # JSON-RPC request ids (unique per pool)
        self._errors = _error_counter(self.registry) if self.registry is not None else None

    @classmethod
    def from_config(cls, cfg: EvmChainConfig, **kwargs: Any) -> "RpcPool":
        return cls(urls=list(cfg.rpc), chain_id=cfg.chain_id, name=cfg.name, timeout=cfg.request_timeout, **kwargs)

    # ------------------------------------------------------------------ core
    @property
    def endpoints(self) -> list[str]:
        """Redacted endpoint labels, in configured order."""
        return [e.label for e in self._endpoints]

    def web3(self, index: int = 0) -> AsyncWeb3:
        """The AsyncWeb3 of one endpoint (no failover: prefer the pool's methods)."""
        return self._endpoints[index].w3

    def healthy(self) -> list[bool]:
        now = time.monotonic()
        return [e.is_up(now) for e in self._endpoints]

    async def request(self, method: str, params: list | None = None) -> Any:
        """One JSON-RPC call with failover and bounded retries; returns ``result``."""
        return await self._retrying(self._once, method, params or [])

    async def request_many(self, calls: Sequence[tuple[str, list]]) -> list[Any]:
        """Many calls, as JSON-RPC batches of ``batch_size`` (one HTTP request each, ~15x
        faster than single calls); results in call order. Falls back to single calls if
        the node refuses batches."""
        calls = list(calls)
        out: list[Any] = []
        for i in range(0, len(calls), self.batch_size):
            chunk = calls[i : i + self.batch_size]
            if self.batching:
                try:
                    out.extend(await self._retrying(self._batch_once, chunk))
                    continue
                except _BatchRefused as e:
                    self.batching = False
                    log.warning("rpc %s: batch requests refused (%s); using single requests", self.name, e)
            out.extend(await self._gather_single(chunk))
        return out

    async def _gather_single(self, calls: Sequence[tuple[str, list]]) -> list[Any]:
        sem = asyncio.Semaphore(self.concurrency)

        async def one(method: str, params: list) -> Any:
            async with sem:
                return await self.request(method, params)

        tasks = [asyncio.ensure_future(one(m, p)) for m, p in calls]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _retrying(self, fn, *args: Any) -> Any:
        if not self._checked:  # first use: every reachable endpoint's chain id, at once
            await self.verify()
            self._checked = True
        result: Any = None
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.retry_wait, max=self.retry_wait_max),
            retry=retry_if_exception(_is_retryable),
            reraise=True,
        ):
            with attempt:
                result = await fn(*args)
        return result

    def _candidates(self) -> list[_Endpoint]:
        now = time.monotonic()
        up = [e for e in self._endpoints if e.is_up(now)]
        down = sorted((e for e in self._endpoints if not e.is_up(now)), key=lambda e: e.down_until)
        return up + down  # all backing off: try them anyway, soonest first

    async def _ensure_session(self, ep: _Endpoint) -> None:
        """Give the provider a keep-alive session (web3's default closes the connection
        after every request, ~3x slower) bound to the running loop."""
        loop = asyncio.get_running_loop()
        if ep.session is not None and not ep.session.closed and ep.session_loop is loop:
            return
        session = aiohttp.ClientSession(
            raise_for_status=True,
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=15),
        )
        got = await ep.w3.provider.cache_async_session(session)
        if got is not session:  # the provider had one for this loop already: keep it
            await session.close()
        ep.session, ep.session_loop = got, loop

    async def _post(self, ep: _Endpoint, payload: Any) -> Any:
        """POST one JSON-RPC request or batch on the endpoint's keep-alive session; the parsed
        answer. Sent and parsed here rather than by web3's provider: its request path (request
        middlewares, caching wrapper, stdlib JSON) cost more than the node's answer on a
        catch-up scan (bench/relayer_scan.py). Errors are aiohttp's or ValueError (not JSON),
        which ``_failover`` classifies as before."""
        await self._ensure_session(ep)
        assert ep.session is not None
        body = _dumps(payload)
        for attempt in (0, 1):
            try:
                async with ep.session.post(ep.url, data=body, headers=_JSON_HEADERS) as r:
                    raw = await r.read()
                break
            except aiohttp.ServerDisconnectedError:
                if attempt:  # a pooled keep-alive connection the server had closed: one fresh try
                    raise
        return _loads(raw)

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def _raw(self, ep: _Endpoint, method: str, params: list) -> Any:
        return await self._post(ep, {"jsonrpc": "2.0", "method": method, "params": params, "id": self._next_id()})

    async def _verify(self, ep: _Endpoint) -> None:
        raw = _result("eth_chainId", await self._raw(ep, "eth_chainId", []))
        if not isinstance(raw, str) or not raw.startswith("0x"):
            raise ValueError("malformed chain id")
        got = int(raw, 16)
        if got != self.chain_id:
            ep.mismatch = ConfigError(
                f"chain {self.name}: rpc endpoint {ep.label} serves chain id {got}, configured {self.chain_id}"
            )
            log.error("%s", ep.mismatch)
            raise ep.mismatch
        ep.verified = True

    def _mark_down(self, ep: _Endpoint, why: str) -> None:
        ep.failures += 1
        ep.down_until = time.monotonic() + min(self.down_max, self.down_base * 2 ** (ep.failures - 1))
        ep.last_error = why
        if self._errors is not None:
            self._errors.labels(chain=self.name, endpoint=ep.label).inc()
        log.warning("rpc %s %s failed (%s); backing off %.1fs", self.name, ep.label, why, ep.down_until - time.monotonic())

    def _mark_up(self, ep: _Endpoint) -> None:
        if ep.failures:
            log.info("rpc %s %s is back", self.name, ep.label)
        ep.failures = 0
        ep.down_until = 0.0

    async def _failover(self, what: str, send: Callable[[_Endpoint], Awaitable[Any]]) -> Any:
        """One pass over the endpoints: the first that answers wins; transport failures and
        retryable RPC errors mark an endpoint down and move on."""
        last = ""
        for ep in self._candidates():
            if ep.mismatch is not None:
                raise ep.mismatch
            try:
                if not ep.verified:
                    await self._verify(ep)
                value = await send(ep)
            except aiohttp.ClientResponseError as e:  # HTTP 4xx/5xx
                why = f"HTTP {e.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                why = e.__class__.__name__
            except (ValueError, UnicodeDecodeError) as e:  # not JSON, wrong shape
                why = f"malformed answer ({e.__class__.__name__})"
            except JsonRpcError as e:
                if not e.retryable:
                    self._mark_up(ep)  # it answered: the request is at fault
                    raise
                why = e.rpc_message[:80]
            else:
                self._mark_up(ep)
                return value
            last = f"{ep.label}: {why}"
            self._mark_down(ep, why)
        raise RpcUnavailable(f"chain {self.name}: no endpoint answered {what} (last: {last})")

    async def _once(self, method: str, params: list) -> Any:
        async def send(ep: _Endpoint) -> Any:
            return _result(method, await self._raw(ep, method, params))

        return await self._failover(method, send)

    async def _batch_once(self, calls: Sequence[tuple[str, list]]) -> list[Any]:
        async def send(ep: _Endpoint) -> list[Any]:
            ids = [self._next_id() for _ in calls]
            resp = await self._post(ep, [{"jsonrpc": "2.0", "method": m, "params": p, "id": i}
                                         for (m, p), i in zip(calls, ids)])
            if isinstance(resp, dict):  # one error for the whole batch
                err = _classify_rpc_error("batch", resp.get("error"))
                if err.retryable:
                    raise err
                raise _BatchRefused(err.rpc_message[:80])
            if not isinstance(resp, list) or len(resp) != len(calls):
                raise ValueError("batch answer does not match the request")
            # a node may answer a batch in any order (JSON-RPC 2.0): match the answers by id
            by_id = {item.get("id"): item for item in resp if isinstance(item, dict)}
            if len(by_id) != len(calls) or any(i not in by_id for i in ids):
                raise ValueError("batch answer does not match the request")
            return [_result(m, by_id[i]) for (m, _), i in zip(calls, ids)]

        return await self._failover(f"a batch of {len(calls)} ({calls[0][0]} ...)", send)

    async def verify(self) -> None:
        """Check every reachable endpoint's chain id (done once on the pool's first use);
        unreachable ones are marked down and checked when their turn comes. Raises
        ConfigError on a mismatch, then and on every later use of that endpoint."""
        for ep in self._endpoints:
            if ep.mismatch is not None:
                raise ep.mismatch
            if ep.verified:
                continue
            try:
                await self._verify(ep)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
                self._mark_down(ep, e.__class__.__name__)
            except JsonRpcError as e:
                self._mark_down(ep, e.rpc_message[:80])

    async def aclose(self) -> None:
        for ep in self._endpoints:
            try:
                await ep.w3.provider.disconnect()
                if ep.session is not None and not ep.session.closed:
                    await ep.session.close()
            except (aiohttp.ClientError, OSError) as e:  # closing is best effort
                log.debug("closing %s: %s", ep.label, e.__class__.__name__)
            ep.session = None

    async def __aenter__(self) -> "RpcPool":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ typed helpers
    async def get_chain_id(self) -> int:
        return _hex_int(await self.request("eth_chainId"), "chain id")

    async def block_number(self) -> int:
        return _hex_int(await self.request("eth_blockNumber"), "block number")

    async def get_block_raw(self, block: BlockId, full: bool = False) -> dict | None:
        return await self.request("eth_getBlockByNumber", [block_param(block), full])

    async def get_block(self, block: BlockId) -> BlockHeader | None:
        """(number, hash, parent_hash, timestamp) of a block, or None if the node has none."""
        b = await self.get_block_raw(block)
        return None if b is None else parse_header(b)

    async def finalized_height(self, finality: str | int) -> int:
        """Highest final block under a finality rule: a block tag (``"finalized"``,
        ``"safe"``) or a number N of confirmations (head - N, at least 0)."""
        if isinstance(finality, str):
            hdr = await self.get_block(finality)
            if hdr is None:
                raise ChainError(f"chain {self.name}: node has no {finality!r} block yet")
            return hdr.number
        return max(await self.block_number() - finality, 0)

    async def get_blocks(self, numbers: Sequence[int]) -> list[BlockHeader | None]:
        """Headers of many blocks (batched), in the given order; None where missing."""
        raw = await self.request_many([("eth_getBlockByNumber", [block_param(n), False]) for n in numbers])
        return [None if b is None else parse_header(b) for b in raw]

    async def get_receipts(self, tx_hashes: Sequence[bytes]) -> list[dict | None]:
        """Raw receipts of many transactions (batched), in the given order."""
        return await self.request_many([("eth_getTransactionReceipt", [_0x(h)]) for h in tx_hashes])

    async def base_fee(self) -> int | None:
        """The latest block's base fee (None before London / on legacy chains)."""
        b = await self.get_block_raw("latest")
        if b is None:
            raise ChainError(f"chain {self.name}: no latest block")
        v = b.get("baseFeePerGas")
        return None if v is None else _hex_int(v, "base fee")

    async def get_logs(
        self,
        from_block: BlockId,
        to_block: BlockId,
        address: bytes | Sequence[bytes] | None = None,
        topics: Sequence[bytes | Sequence[bytes] | None] | None = None,
    ) -> list[dict]:
        """Raw ``eth_getLogs`` (hex strings as the node sent them)."""
        flt: dict[str, Any] = {"fromBlock": block_param(from_block), "toBlock": block_param(to_block)}
        if address is not None:
            flt["address"] = _0x(address) if isinstance(address, (bytes, bytearray)) else [_0x(a) for a in address]
        if topics is not None:
            flt["topics"] = [
                None if t is None else _0x(t) if isinstance(t, (bytes, bytearray)) else [_0x(x) for x in t]
                for t in topics
            ]
        logs = await self.request("eth_getLogs", [flt])
        if not isinstance(logs, list):
            raise ChainError(f"chain {self.name}: eth_getLogs answered {type(logs).__name__}")
        return logs

    async def get_receipt(self, tx_hash: bytes) -> dict | None:
        """Raw receipt, or None if the node knows no mined transaction with that hash."""
        return await self.request("eth_getTransactionReceipt", [_0x(tx_hash)])

    async def get_transaction(self, tx_hash: bytes) -> dict | None:
        return await self.request("eth_getTransactionByHash", [_0x(tx_hash)])

    async def call(self, to: bytes, data: bytes, block: BlockId = "latest", *, sender: bytes | None = None) -> bytes:
        tx: dict[str, Any] = {"to": _0x(to), "data": _0x(data)}
        if sender is not None:
            tx["from"] = _0x(sender)
        return _hex_bytes(await self.request("eth_call", [tx, block_param(block)]), "call result")

    async def estimate_gas(self, tx: dict[str, Any]) -> int:
        """``tx`` uses JSON-RPC field names with hex values (``from``, ``to``, ``data``, ``value``)."""
        return _hex_int(await self.request("eth_estimateGas", [tx]), "gas estimate")

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        return _hex_bytes(await self.request("eth_sendRawTransaction", [_0x(raw)]), "transaction hash")

    async def nonce(self, address: bytes, block: BlockId = "pending") -> int:
        return _hex_int(await self.request("eth_getTransactionCount", [_0x(address), block_param(block)]), "nonce")

    async def balance(self, address: bytes, block: BlockId = "latest") -> int:
        return _hex_int(await self.request("eth_getBalance", [_0x(address), block_param(block)]), "balance")

    async def gas_price(self) -> int:
        return _hex_int(await self.request("eth_gasPrice"), "gas price")

    async def max_priority_fee(self) -> int:
        return _hex_int(await self.request("eth_maxPriorityFeePerGas"), "priority fee")


def parse_header(b: dict) -> BlockHeader:
    return BlockHeader(
        number=_hex_int(b.get("number"), "block number"),
        hash=_hex_bytes(b.get("hash"), "block hash"),
        parent_hash=_hex_bytes(b.get("parentHash"), "parent hash"),
        timestamp=_hex_int(b.get("timestamp"), "timestamp"),
    )


def hex_int(v: Any, what: str = "value") -> int:
    """Parse a JSON-RPC quantity; malformed answers raise ChainError."""
    return _hex_int(v, what)


def hex_bytes(v: Any, what: str = "value") -> bytes:
    """Parse JSON-RPC data; malformed answers raise ChainError."""
    return _hex_bytes(v, what)
