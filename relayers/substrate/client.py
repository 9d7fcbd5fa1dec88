"""substrate-interface behind one dedicated thread, with endpoint failover and typed errors.

substrate-interface 1.8.1 is synchronous (websocket-client underneath) and its
``SubstrateInterface`` is not thread-safe. Each ``SubstrateClient`` therefore owns a
single-thread executor; the one ``SubstrateInterface`` instance is created, used and closed
only on that thread, and the event loop only ever awaits ``run_in_executor``.

Failover: the configured URLs are tried in order; a connection-level failure (refused,
reset, closed, timed out, garbage on the socket) drops the instance and retries the same
operation on the next URL; a failure on a connection kept from an earlier call (which the
endpoint may have closed meanwhile: a restart, an idle timeout) first gets one fresh
connection to the same URL, so one stale socket never makes a live endpoint look down; when
every URL failed the call raises ``RpcUnavailable`` (retryable). ``auto_reconnect`` is off: reconnecting is this class's job, and a new
instance starts clean (substrate-interface does not restore subscriptions or state).

Error conversion at this boundary:

* connection failures -> ``RpcUnavailable`` (retryable) after trying every URL;
* a JSON-RPC error answer, a block that vanished between two calls -> ``ChainError``
  (retryable);
* a block that cannot be decoded -> ``DecodeFailure`` (``ChainError(retryable=False)``,
  raised by the caller's function, see ``watcher.py``); the connection is dropped with it;
* one extrinsic the SDK cannot decode is not an error here: the watcher skips and reports
  it, and asks (``drop_after_call``) for a fresh connection once its call has returned, so
  scalecodec state a failed decode may have left half-built is never reused;
* a genesis hash other than the configured one, or two URLs of different chains ->
  ``ConfigError``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import BlockNotFound, SubstrateRequestException
from websocket import WebSocketConnectionClosedException, WebSocketException

from bridge.errors import BridgeError, ChainError, ConfigError, RpcUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# what a dead or misbehaving endpoint raises (websocket-client, sockets, garbage frames)
CONNECTION_ERRORS = (WebSocketException, OSError, json.JSONDecodeError)
# what a connection the endpoint closed raises on its next use (a timeout is not one of them:
# a stalled endpoint is not retried on the same URL, which would double the wait)
CLOSED_ERRORS = (WebSocketConnectionClosedException, ConnectionError)


class MetadataCache:
    """substrate-interface's ``cache_region`` protocol (``get``/``set``), kept per client so a
    reconnect (or a failover to another endpoint of the same chain, same genesis) does not
    fetch and decode the runtime metadata again. Keys are ``METADATA_<spec version>``: never
    share one between chains, whose spec versions may coincide."""

    def __init__(self) -> None:
        self._d: dict[str, object] = {}

    def get(self, key: str):
        return self._d.get(key)

    def set(self, key: str, value: object) -> None:
        self._d[key] = value


# scalecodec keeps its type registry and decoder classes in process-wide state that is not
# thread-safe: two chains' watchers (one thread each) loading runtimes at the same time were
# seen to corrupt it ("Decoder class for Compact<u32> not found", then no portable registry
# ever again). All substrate-interface work of a process goes through this lock.
SDK_LOCK = threading.Lock()


class DecodeFailure(ChainError):
    """The SDK could not load a runtime or decode a block. The client drops its connection
    (and with it the SDK's half-built runtime state) so the retry starts afresh."""


def _short(e: BaseException) -> str:
    text = str(e).replace("\n", " ")
    return f"{e.__class__.__name__}: {text[:160]}" if text else e.__class__.__name__


class SubstrateClient:
    """One chain's RPC endpoints, used from one thread."""

    def __init__(self, chain: str, urls: list[str], *, timeout: float, ss58_format: int,
                 genesis_hash: str | None = None) -> None:
        if not urls:
            raise ConfigError(f"chain {chain}: no rpc url")
        self.chain = chain
        self.urls = list(urls)
        self.timeout = timeout
        self.ss58_format = ss58_format
        self.expected_genesis = genesis_hash.lower() if genesis_hash else None
        self.genesis: str | None = None  # 0x hex, once a connection told it
        self._index = 0
        self._si: SubstrateInterface | None = None  # touched only on the executor thread
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"substrate-{chain}")
        self._closed = False
        self._metadata = MetadataCache()
        self.connects = 0  # how many connections were opened (observability, tests)
        self._drop_after = False  # set on the thread by the running function

    @property
    def url(self) -> str:
        return self.urls[self._index]

    async def call(self, fn: Callable[[SubstrateInterface], T], what: str) -> T:
        """Run ``fn(substrate_interface)`` on the client's thread, with failover."""
        if self._closed:
            raise ChainError(f"chain {self.chain}: client is closed", retryable=False)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, fn, what)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._drop)
        finally:
            self._executor.shutdown(wait=False)

    # ------------------------------------------------------------------ on the thread
    def drop_after_call(self) -> None:
        """Called by a running function (on the thread): open a fresh connection next time,
        because the SDK failed to decode something (its runtime state may be half-built)."""
        self._drop_after = True

    def _run(self, fn: Callable[[SubstrateInterface], T], what: str) -> T:
        failures: list[str] = []
        reconnected = False  # a kept connection's closed-socket failure gets one fresh connection a call
        tried = 0
        while tried < len(self.urls):
            url = self.url
            # a connection kept from an earlier call may have been closed by the endpoint since
            # (a restart, a proxy's idle timeout, a network blip): its failure says nothing about
            # the endpoint now, so the same endpoint gets one fresh connection before failover
            reused = self._si is not None
            try:
                with SDK_LOCK:
                    try:
                        return fn(self._connected())
                    finally:
                        if self._drop_after:
                            self._drop_after = False
                            self._drop()
            except DecodeFailure:
                self._drop()
                raise
            except BridgeError:
                raise
            except SubstrateRequestException as e:
                # the next call goes to the next endpoint: this one may lack the state asked for
                self._rotate()
                raise ChainError(f"chain {self.chain}: {what}: {url} answered an error: {_short(e)}") from None
            except BlockNotFound as e:
                raise ChainError(f"chain {self.chain}: {what}: block vanished on {url} ({_short(e)})") from None
            except CONNECTION_ERRORS as e:
                failures.append(f"{url}: {_short(e)}")
                if reused and not reconnected and isinstance(e, CLOSED_ERRORS):
                    reconnected = True  # a dead endpoint still fails over after this one reconnect
                    log.info("chain %s: %s failed on a kept connection to %s (%s); reconnecting", self.chain,
                             what, url, _short(e))
                    self._drop()
                    continue
                log.info("chain %s: %s failed on %s (%s); trying the next endpoint", self.chain, what, url, _short(e))
                self._rotate()
                tried += 1
        raise RpcUnavailable(f"chain {self.chain}: {what}: no endpoint answered ({'; '.join(failures)})")

    def _connected(self) -> SubstrateInterface:
        if self._si is not None:
            return self._si
        url = self.url
        si = SubstrateInterface(url=url, ss58_format=self.ss58_format, auto_discover=False, auto_reconnect=False,
                                ws_options={"timeout": self.timeout}, cache_region=self._metadata)
        self.connects += 1
        try:
            genesis = si.rpc_request("chain_getBlockHash", [0]).get("result")
            if not isinstance(genesis, str) or len(genesis) != 66:
                raise ChainError(f"chain {self.chain}: {url} returned no genesis hash")
            genesis = genesis.lower()
            if self.expected_genesis is not None and genesis != self.expected_genesis:
                raise ConfigError(f"chain {self.chain}: {url} serves genesis {genesis}, "
                                  f"configured genesis_hash is {self.expected_genesis}")
            if self.genesis is not None and genesis != self.genesis:
                raise ConfigError(f"chain {self.chain}: {url} serves genesis {genesis}, "
                                  f"another endpoint served {self.genesis}: the URLs are of different chains")
        except BaseException:
            si.close()
            raise
        self.genesis = genesis
        self._si = si
        log.debug("chain %s: connected to %s", self.chain, url)
        return si

    def _rotate(self) -> None:
        self._drop()
        self._index = (self._index + 1) % len(self.urls)

    def _drop(self) -> None:
        si, self._si = self._si, None
        if si is not None:
            try:
                si.close()
            except CONNECTION_ERRORS:
                pass
