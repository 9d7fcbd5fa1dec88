"""Run a real Asset Hub runtime offline with chopsticks (npm ``@acala-network/chopsticks``).

``make setup`` installs the pinned npm packages; the raw chain spec with the runtime's wasm
(``rococo_v2_2_asset_hub``: Rococo Asset Hub, spec 900, metadata V14, Aura) ships inside
``@substrate/connect-known-chains`` as a JavaScript module. :func:`asset_hub_genesis`
extracts its JSON once into ``node_modules/.cache/creditbridge/`` (``scripts/setup.sh`` does
it at set-up time; the runtime is never committed).

chopsticks runs the real runtime: real signed extrinsics, fees, events, ``dev_newBlock``,
``dev_setHead`` (rewind: a reorg). Its limits: every block is final at once (no GRANDPA lag),
the genesis hash it reports is a fixed ``0x4545..45`` for every chain spec, and the chain's
token has the runtime's 12 decimals whatever the devnet calls it ("DOT" or "KSM").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Mapping

import aiohttp

from bridge.errors import ChainError, ConfigError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
CHOPSTICKS_CLI = Path("node_modules/@acala-network/chopsticks/chopsticks.cjs")
GENESIS_MODULE = Path("node_modules/@substrate/connect-known-chains/dist/commonjs/specs/rococo_v2_2_asset_hub.js")
GENESIS_CACHE = Path("node_modules/.cache/creditbridge/rococo_v2_2_asset_hub.json")


def _root(root: Path | None) -> Path:
    return root or REPO_ROOT


def chopsticks_cli(root: Path | None = None) -> Path:
    p = _root(root) / CHOPSTICKS_CLI
    if not p.is_file():
        raise ConfigError(f"chopsticks not found at {p}; run `make setup` (it installs the pinned npm tools, "
                          "including @acala-network/chopsticks)")
    return p


def asset_hub_genesis(root: Path | None = None) -> Path:
    """Absolute path of the raw Asset Hub chain spec JSON (extracted on first use)."""
    r = _root(root)
    out = r / GENESIS_CACHE
    module = r / GENESIS_MODULE
    if out.is_file() and (not module.is_file() or out.stat().st_mtime >= module.stat().st_mtime):
        return out
    if not module.is_file():
        raise ConfigError(f"{module} not found; run `make setup` (npm @substrate/connect-known-chains)")
    script = "process.stdout.write(require(process.argv[1]).chainSpec)"
    try:
        spec = subprocess.run(["node", "-e", script, str(module)], check=True, capture_output=True, timeout=60).stdout
        json.loads(spec)  # refuse to cache garbage
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        raise ConfigError(f"cannot extract the Asset Hub chain spec from {module}: {e}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(spec)
    tmp.replace(out)
    return out


def free_port() -> int:
    from devnet.evm.anvil import free_port as _free

    return _free()


async def rpc(url: str, method: str, *params: Any, timeout: float = 30.0) -> Any:
    """One JSON-RPC call over HTTP (chopsticks serves HTTP and WebSocket on one port)."""
    http = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.post(http, json=body) as r:
                answer = await r.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
        raise ChainError(f"{method} at {url} failed: {e.__class__.__name__}") from None
    if not isinstance(answer, dict):
        raise ChainError(f"{method} at {url}: malformed answer")
    if "error" in answer:
        raise ChainError(f"{method} at {url}: {answer['error']}", retryable=False)
    return answer.get("result")


def funded_accounts_storage(balances: Mapping[str, int], assets: Mapping[int, "DevAsset"] | None = None) -> dict:
    """``import-storage`` content that sets ``System.Account`` of SS58 addresses and, with
    ``assets``, creates real ``pallet_assets`` assets (``Assets.Asset``, ``Assets.Metadata``)
    held by those addresses (``Assets.Account``, reason ``Sufficient``; each holder's
    ``System.Account.sufficients`` counts its assets, as the pallet keeps it)."""
    assets = dict(assets or {})
    sufficients: dict[str, int] = {}
    for a in assets.values():
        for addr in a.holders:
            sufficients[addr] = sufficients.get(addr, 0) + 1
    accounts = []
    for addr in sorted(set(balances) | set(sufficients)):
        entry: dict[str, Any] = {"providers": 1 if balances.get(addr) else 0, "data": {"free": str(balances.get(addr, 0))}}
        if sufficients.get(addr):
            entry["sufficients"] = sufficients[addr]
        accounts.append([[addr], entry])
    out: dict[str, Any] = {"System": {"Account": accounts}}
    if assets:
        out["Assets"] = {
            "Asset": [[[asset_id], a.details()] for asset_id, a in sorted(assets.items())],
            "Metadata": [[[asset_id], {"deposit": "0", "name": a.name, "symbol": a.symbol, "decimals": a.decimals,
                                       "isFrozen": False}] for asset_id, a in sorted(assets.items())],
            "Account": [[[asset_id, addr], {"balance": str(amount), "isFrozen": False, "reason": "Sufficient",
                                            "extra": None}]
                        for asset_id, a in sorted(assets.items()) for addr, amount in sorted(a.holders.items())],
        }
    return out


@dataclass(frozen=True)
class DevAsset:
    """A ``pallet_assets`` asset created in a chopsticks chain's genesis state (sufficient, so an
    account holding only it needs no native balance, as for USDT 1984 and USDC 1337 on Polkadot Hub)."""

    symbol: str
    name: str
    owner: str  # SS58: owner, issuer, admin and freezer
    holders: Mapping[str, int]  # SS58 -> base units
    decimals: int = 6
    min_balance: int = 70_000  # Polkadot Hub's USDT / USDC: 0.07 tokens

    def details(self) -> dict:
        return {"owner": self.owner, "issuer": self.owner, "admin": self.owner, "freezer": self.owner,
                "supply": str(sum(self.holders.values())), "deposit": "0", "minBalance": str(self.min_balance),
                "isSufficient": True, "accounts": len(self.holders), "sufficients": len(self.holders),
                "approvals": 0, "isFrozen": False}


class ChopsticksNode:
    """A running chopsticks process. Create it with :meth:`start`; stop it with :meth:`stop`."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, name: str, log_path: Path) -> None:
        self._process = process
        self.port = port
        self.name = name
        self.log_path = log_path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.returncode is None

    @classmethod
    async def start(
        cls,
        directory: Path,
        name: str,
        *,
        balances: Mapping[str, int] | None = None,
        assets: Mapping[int, DevAsset] | None = None,
        build_block_mode: str = "Instant",
        port: int | None = None,
        timeout: float = 90.0,
        root: Path | None = None,
    ) -> "ChopsticksNode":
        """Start chopsticks on the offline Asset Hub runtime and wait until it answers.

        ``balances`` funds SS58 addresses (``import-storage``, which builds block 1); ``assets``
        (asset id -> :class:`DevAsset`) creates ``pallet_assets`` assets held by addresses.
        Writes ``<directory>/<name>.yml`` (its config) and ``<directory>/<name>.log``.
        """
        if build_block_mode not in ("Instant", "Batch", "Manual"):
            raise ConfigError(f"unknown chopsticks build-block-mode {build_block_mode!r}")
        cli = chopsticks_cli(root)
        genesis = await asyncio.to_thread(asset_hub_genesis, root)
        directory.mkdir(parents=True, exist_ok=True)
        attempts = 3 if port is None else 1
        last: ChainError | None = None
        for _ in range(attempts):
            p = port if port is not None else free_port()
            cfg: dict[str, Any] = {"genesis": str(genesis.resolve()), "host": "127.0.0.1", "port": p,
                                   "build-block-mode": build_block_mode}
            if balances or assets:
                cfg["import-storage"] = funded_accounts_storage(balances or {}, assets)
            cfg_path = directory / f"{name}.yml"
            cfg_path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
            log_path = directory / f"{name}.log"
            logf = open(log_path, "ab")
            try:
                process = await asyncio.create_subprocess_exec(
                    "node", str(cli), "-c", str(cfg_path), cwd=str(_root(root)),
                    stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf,
                )
            except OSError as e:
                raise ChainError(f"cannot start chopsticks ({cli}): {e}", retryable=False) from None
            finally:
                logf.close()
            node = cls(process, p, name, log_path)
            try:
                await node._wait_ready(timeout)
                log.info("chopsticks %s on %s (pid %d)", name, node.ws_url, node.pid)
                return node
            except ChainError as e:
                await node.stop()
                last = e
                if node._process.returncode in (None, 0) or "EADDRINUSE" not in node.log_tail():
                    break
            except BaseException:
                await node.stop()
                raise
        assert last is not None
        raise last

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._process.returncode is not None:
                raise ChainError(f"chopsticks {self.name} exited with code {self._process.returncode}: "
                                 f"{self.log_tail()}", retryable=False)
            try:
                if await rpc(self.http_url, "chain_getFinalizedHead", timeout=5) and self._process.returncode is None:
                    return
            except ChainError:
                pass
            if time.monotonic() > deadline:
                raise ChainError(f"chopsticks {self.name} on port {self.port} did not answer within {timeout:g} s")
            await asyncio.sleep(0.2)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:].strip() or "(no output)"
        except OSError:
            return "(no output)"

    async def rpc(self, method: str, *params: Any) -> Any:
        return await rpc(self.http_url, method, *params)

    async def new_block(self, count: int = 1) -> str:
        return await self.rpc("dev_newBlock", {"count": count})

    async def set_head(self, number_or_hash: int | str) -> str:
        """Rewind the head (``dev_setHead``): later blocks are forgotten, new ones replace them."""
        return await self.rpc("dev_setHead", number_or_hash)

    async def head(self) -> int:
        header = await self.rpc("chain_getHeader")
        return int(header["number"], 16)

    async def stop(self, grace: float = 5.0) -> None:
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

    async def __aenter__(self) -> "ChopsticksNode":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
