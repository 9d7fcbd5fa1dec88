"""Run a real anvil (Foundry's local EVM node) from the repo's npm tools.

``make setup`` installs ``@foundry-rs/anvil`` into ``node_modules``; this module finds that
binary, starts it on a free local port and waits until it answers JSON-RPC::

    async with await AnvilNode.start(chain_id=31337) as node:
        w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))

The node's ten funded dev accounts come from the well-known mnemonic
``test test test test test test test test test test test junk`` (BIP-44 path
``m/44'/60'/0'/0/i``); their keys are in :data:`DEV_PRIVATE_KEYS`. They are public test keys:
never use them anywhere real.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import aiohttp

from bridge.errors import ChainError, ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
_NPM_BINARY = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")

DEV_MNEMONIC = "test test test test test test test test test test test junk"
# m/44'/60'/0'/0/0 .. 9 of DEV_MNEMONIC: the accounts anvil funds with 10,000 ETH each.
DEV_PRIVATE_KEYS: tuple[str, ...] = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
)
DEFAULT_CHAIN_ID = 31337


def anvil_binary(root: Path | None = None) -> Path:
    """Path of the anvil binary installed by ``make setup`` (npm ``@foundry-rs/anvil``).

    ``CREDITBRIDGE_ANVIL`` overrides it. Raises ConfigError with the fix if it is missing.
    """
    override = os.environ.get("CREDITBRIDGE_ANVIL")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ConfigError(f"CREDITBRIDGE_ANVIL={override} is not an executable file")
        return path
    path = (root or REPO_ROOT) / _NPM_BINARY
    if path.is_file() and os.access(path, os.X_OK):
        return path
    raise ConfigError(
        f"anvil not found at {path}; run `make setup` (it installs the pinned npm tools, "
        "including @foundry-rs/anvil)"
    )


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, chosen *outside* the OS's ephemeral range.

    Devnet components are restarted on the port they had. A port the OS handed out for
    listening (bind to 0) comes from the ephemeral range, the same pool outgoing connections
    take their local ports from: a long-lived connection of another component could then hold
    the port when the component comes back ("address already in use", seen in CI after a
    SIGKILL of the aggregator). Ports below that range are never used for outgoing connections.
    """
    import random

    low, high = _ephemeral_range()
    lo, hi = (10_000, low - 1) if low > 11_000 else (high + 1, 65_535)
    for _ in range(200):
        port = random.randint(lo, hi)
        if _port_is_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # crowded: let the OS pick
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def json_rpc(session: aiohttp.ClientSession, url: str, method: str, params: Sequence[Any] = ()) -> Any:
    """One JSON-RPC call; raises ChainError on transport errors and RPC error answers."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    try:
        async with session.post(url, json=body) as resp:
            answer = await resp.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        raise ChainError(f"{method} at {url} failed: {e.__class__.__name__}") from e
    if not isinstance(answer, dict):
        raise ChainError(f"{method} at {url}: malformed answer")
    if "error" in answer:
        err = answer["error"] or {}
        raise ChainError(f"{method} at {url}: {err.get('message', err)}", retryable=False)
    return answer.get("result")


class _AnvilExited(ChainError):
    """anvil exited before answering (bad arguments, or the port was taken meanwhile)."""


class AnvilNode:
    """A running anvil process. Create it with :meth:`start`; stop it with :meth:`stop`."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, chain_id: int, log: Any) -> None:
        self._process = process
        self.port = port
        self.chain_id = chain_id
        self._log = log  # temp file holding anvil's stdout/stderr (read on failures)
        self._session: aiohttp.ClientSession | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:  # anvil serves HTTP and WebSocket on the same port
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    @classmethod
    async def start(
        cls,
        chain_id: int = DEFAULT_CHAIN_ID,
        port: int | None = None,
        block_time: float | None = None,
        extra_args: Sequence[str] = (),
        *,
        timeout: float = 20.0,
    ) -> "AnvilNode":
        """Launch anvil and wait until ``eth_chainId`` answers ``chain_id``.

        ``port=None`` picks a free port (retrying if another process grabs it first);
        ``block_time`` (seconds) turns on interval mining besides automine.
        Raises ChainError if anvil exits or does not answer within ``timeout`` seconds.
        """
        binary = anvil_binary()
        attempts = 3 if port is None else 1
        last: ChainError | None = None
        for _ in range(attempts):
            p = port if port is not None else free_port()
            # whoever holds the port would answer our readiness probe in anvil's place
            if not _port_is_free(p):
                last = ChainError(f"port {p} on 127.0.0.1 is already in use", retryable=False)
                if port is not None:
                    raise last
                continue
            args = [str(binary), "--host", "127.0.0.1", "--port", str(p), "--chain-id", str(chain_id), "--silent"]
            if block_time is not None:
                args += ["--block-time", _fmt_seconds(block_time)]
            args += [str(a) for a in extra_args]
            log = tempfile.TemporaryFile()
            try:
                process = await asyncio.create_subprocess_exec(
                    *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
                )
            except OSError as e:
                log.close()
                raise ChainError(f"cannot start anvil ({binary}): {e}", retryable=False) from e
            node = cls(process, p, chain_id, log)
            try:
                await node._wait_ready(timeout)
                return node
            except ChainError as e:
                await node.stop()
                last = e
                if not isinstance(e, _AnvilExited):  # only an early exit may be a port race
                    break
            except BaseException:
                await node.stop()
                raise
        assert last is not None
        raise last

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        session = self._get_session()
        while True:
            if self._process.returncode is not None:
                raise _AnvilExited(f"anvil exited with code {self._process.returncode}: {self._log_tail()}")
            try:
                got = await json_rpc(session, self.rpc_url, "eth_chainId")
                if int(got, 16) != self.chain_id:
                    raise ChainError(
                        f"port {self.port} answers chain id {int(got, 16)}, expected {self.chain_id}",
                        retryable=False,
                    )
                if self._process.returncode is None:
                    return
                continue  # answered by someone else and anvil died: report its exit above
            except ChainError as e:
                if not e.retryable:
                    raise
            if time.monotonic() > deadline:
                raise ChainError(f"anvil on port {self.port} did not answer within {timeout:g} s")
            await asyncio.sleep(0.05)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            self._log.seek(0)
            text = self._log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return "(no output)"
        return text[-limit:] or "(no output)"

    async def rpc(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call (``evm_snapshot``, ``evm_revert``, ``anvil_mine`` ...)."""
        return await json_rpc(self._get_session(), self.rpc_url, method, params)

    async def snapshot(self) -> str:
        return await self.rpc("evm_snapshot")

    async def revert(self, snapshot_id: str) -> None:
        if await self.rpc("evm_revert", snapshot_id) is not True:
            raise ChainError(f"evm_revert({snapshot_id}) failed", retryable=False)

    async def mine(self, blocks: int = 1) -> None:
        await self.rpc("anvil_mine", hex(blocks))

    async def stop(self, grace: float = 5.0) -> None:
        """Terminate anvil (SIGTERM), then kill it if it has not exited after ``grace`` s."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._process.returncode is None:
            try:
                self._process.terminate()
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(self._process.wait(), grace)
            except asyncio.TimeoutError:
                try:
                    self._process.kill()
                except ProcessLookupError:
                    pass
                await self._process.wait()
        if not self._log.closed:
            self._log.close()

    async def __aenter__(self) -> "AnvilNode":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else f"exited {self._process.returncode}"
        return f"<AnvilNode chain_id={self.chain_id} {self.rpc_url} pid={self.pid} {state}>"


def _fmt_seconds(s: float) -> str:
    return str(int(s)) if float(s).is_integer() else repr(float(s))

