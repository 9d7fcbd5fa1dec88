"""The few chain reads the TON watcher needs, over two transports with one shape:

* ``LiteTransport``: pytoniq's ``LiteBalancer`` (liteservers over ADNL, config-driven, with the
  configured trust level);
* ``ToncenterTransport``: a toncenter v2 HTTP API (``getMasterchainInfo``, ``lookupBlock``,
  ``getBlockHeader``, ``getAddressInformation?seqno=``, ``getTransactions`` whose items carry
  the raw transaction BOC in ``data`` and ``transaction_id{lt, hash}``);
* ``FallbackTransport``: the first that answers, in order.

Every SDK / HTTP failure is converted here into ``ChainError`` (retryable) so that nothing above
sees pytoniq or aiohttp exceptions.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

import aiohttp
from pytoniq_core import Address, Cell

from bridge.errors import ChainError, RpcUnavailable

log = logging.getLogger("creditbridge.ton.transport")

MC_SHARD = -(2**63)
ZERO_HASH = b"\x00" * 32


@dataclass(frozen=True)
class McBlock:
    seqno: int
    root_hash: bytes
    file_hash: bytes
    gen_utime: int


@dataclass(frozen=True)
class TxPointer:
    lt: int
    hash: bytes


NO_TX = TxPointer(0, ZERO_HASH)


class Transport(Protocol):
    name: str

    async def last_seqno(self) -> int: ...

    async def mc_block(self, seqno: int) -> McBlock: ...

    async def global_id(self) -> int: ...

    async def last_tx(self, address: Address, block: McBlock) -> TxPointer:
        """The account's last transaction as of masterchain block ``block`` (NO_TX if none)."""
        ...

    async def transactions(self, address: Address, start: TxPointer, count: int) -> list[Cell]:
        """Up to ``count`` transaction root cells from ``start`` (inclusive) backwards."""
        ...

    async def account_data(self, address: Address, block: McBlock) -> Cell | None:
        """The account's persistent data (c4) as of masterchain block ``block`` (None if the
        account is not active)."""
        ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------- liteservers
class LiteServerAnswer(ChainError):
    """The liteserver answered the query with an error (``liteServer.error``): retryable for
    reads (a block not there yet), final for a refused external message."""


class LiteTransport:
    """Reads through pytoniq's LiteBalancer, started lazily on first use."""

    name = "liteserver"

    def __init__(self, config: dict, trust_level: int = 2, timeout: float = 15.0) -> None:
        self.config = config
        self.trust_level = trust_level
        self.timeout = timeout
        self._lb = None
        self._starting = asyncio.Lock()
        self._down_until = 0.0  # after a failed start-up, fail fast for a few seconds

    async def _balancer(self):
        from pytoniq import LiteBalancer

        if self._lb is not None and self._lb.alive_peers_num:
            return self._lb
        async with self._starting:
            if self._lb is not None and self._lb.alive_peers_num:
                return self._lb
            if self._lb is not None:
                await self._close_lb()
            loop = asyncio.get_running_loop()
            if loop.time() < self._down_until:
                raise RpcUnavailable("liteservers unreachable (retrying shortly)")
            self._down_until = loop.time() + 3.0
            lb = LiteBalancer.from_config(self.config, trust_level=self.trust_level, timeout=int(self.timeout))
            try:
                await lb.start_up()
            except Exception as e:  # pytoniq raises assorted errors while connecting
                await _close_quietly(lb)
                raise RpcUnavailable(f"liteservers unreachable: {e.__class__.__name__}: {e}") from None
            if not lb.alive_peers_num:
                await _close_quietly(lb)
                raise RpcUnavailable("no liteserver of the config answered")
            self._lb = lb
            self._down_until = 0.0
            return lb

    async def _call(self, what: str, method: str, *args, **kwargs):
        from pytoniq.liteclient.client import LiteClientError, LiteServerError

        lb = await self._balancer()
        try:
            return await asyncio.wait_for(getattr(lb, method)(*args, **kwargs), self.timeout * 2)
        except LiteServerError as e:
            raise LiteServerAnswer(f"liteserver {what}: the server answered {e}") from None
        except (LiteClientError, asyncio.TimeoutError, ConnectionError, OSError, AssertionError, KeyError) as e:
            raise ChainError(f"liteserver {what} failed: {e.__class__.__name__}: {e}") from None
        except Exception as e:
            # pytoniq keeps using a peer whose connection it closed (its listener crashed, or a
            # cut connection): AttributeError on a None writer, seen in the chaos harness. That
            # balancer is broken: drop it, the next call connects afresh.
            await self._close_lb()
            raise ChainError(f"liteserver {what} failed: {e.__class__.__name__}: {e}") from None

    async def last_seqno(self) -> int:
        info = await self._call("getMasterchainInfo", "get_masterchain_info")
        return int(info["last"]["seqno"])

    async def mc_block(self, seqno: int) -> McBlock:
        bid, blk = await self._call(f"lookupBlock {seqno}", "lookup_block", -1, MC_SHARD, seqno)
        if bid.seqno != seqno or bid.workchain != -1:
            raise ChainError(f"liteserver answered block {bid.workchain}:{bid.seqno} for masterchain {seqno}")
        return McBlock(seqno, bid.root_hash, bid.file_hash, int(blk.info.gen_utime))

    async def global_id(self) -> int:
        _, blk = await self._call("lookupBlock 0", "lookup_block", -1, MC_SHARD, 0)
        return int(blk.global_id)

    async def last_tx(self, address: Address, block: McBlock) -> TxPointer:
        from pytoniq_core import BlockIdExt

        bid = BlockIdExt(-1, MC_SHARD, block.seqno, block.root_hash, block.file_hash)
        _, shard_account = await self._call("getAccountState", "raw_get_account_state", address, bid)
        if shard_account is None:
            return NO_TX
        return TxPointer(int(shard_account.last_trans_lt), bytes(shard_account.last_trans_hash))

    async def transactions(self, address: Address, start: TxPointer, count: int) -> list[Cell]:
        txs, _ = await self._call("getTransactions", "raw_get_transactions", address, min(count, 16), start.lt, start.hash)
        return [t.cell for t in txs]

    async def account_data(self, address: Address, block: McBlock) -> Cell | None:
        from pytoniq_core import BlockIdExt

        bid = BlockIdExt(-1, MC_SHARD, block.seqno, block.root_hash, block.file_hash)
        account, _ = await self._call("getAccountState", "raw_get_account_state", address, bid)
        state = getattr(getattr(account, "storage", None), "state", None)
        if state is None or getattr(state, "type_", None) != "account_active" or state.state_init is None:
            return None
        return state.state_init.data

    async def run_get_method(self, address: Address, method: str, stack: list, block: McBlock | None = None) -> list:
        """Run a get-method on the account's state at masterchain block ``block`` (the last one
        if None)."""
        if block is None:
            return await self._call(f"runGetMethod {method}", "run_get_method", address, method, stack)
        from pytoniq_core import BlockIdExt

        bid = BlockIdExt(-1, MC_SHARD, block.seqno, block.root_hash, block.file_hash)
        return await self._call(f"runGetMethod {method} at {block.seqno}", "run_get_method", address, method, stack,
                                block=bid)

    async def balance(self, address: Address, block: McBlock) -> int:
        """The account's balance (nanotons) at masterchain block ``block`` (0 if it does not exist)."""
        from pytoniq_core import BlockIdExt

        bid = BlockIdExt(-1, MC_SHARD, block.seqno, block.root_hash, block.file_hash)
        account, _ = await self._call("getAccountState", "raw_get_account_state", address, bid)
        if account is None:
            return 0
        try:
            return int(account.storage.balance.grams)
        except (AttributeError, TypeError, ValueError):
            raise ChainError("liteserver getAccountState: account without a balance") from None

    async def send_message(self, boc: bytes) -> None:
        """Send an external message (BOC); the liteserver refuses it if the contract throws
        before accepting it (ChainError, the exit code in the detail)."""
        try:
            await self._call("sendMessage", "raw_send_message", boc)
        except LiteServerAnswer as e:
            raise ChainError(f"liteserver refused the message: {e.detail}", retryable=False) from None

    async def aclose(self) -> None:
        await self._close_lb()

    async def _close_lb(self) -> None:
        lb, self._lb = self._lb, None
        if lb is not None:
            await _close_quietly(lb)


async def _close_quietly(lb) -> None:
    try:
        if getattr(lb, "_checker", None) is not None:
            await lb.close_all()
        else:
            for p in lb._peers:
                if p.inited:
                    await p.close()
    except Exception as e:  # closing must not mask the error that got us here
        log.debug("closing LiteBalancer: %s", e)


# ---------------------------------------------------------------------------------- toncenter
class ToncenterTransport:
    """A toncenter v2 HTTP API (``<base>/getTransactions`` etc.), several base URLs in order."""

    name = "toncenter"

    def __init__(self, urls: Sequence[str], timeout: float = 15.0, api_key: str | None = None) -> None:
        if not urls:
            raise ValueError("toncenter needs at least one URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self._session: aiohttp.ClientSession | None = None

    async def _get(self, method: str, params: dict) -> object:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        last: Exception | None = None
        for base in self.urls:
            try:
                async with self._session.get(f"{base}/{method}", params={k: str(v) for k, v in params.items()}) as r:
                    body = await r.json(content_type=None)
                if not isinstance(body, dict) or not body.get("ok"):
                    err = body.get("error") if isinstance(body, dict) else None
                    last = ChainError(f"toncenter {method}: HTTP {r.status} {err or body!r:.120}")
                    continue
                return body["result"]
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                last = e
        if isinstance(last, ChainError):
            raise last
        raise RpcUnavailable(f"toncenter {method} failed: {last.__class__.__name__}: {last}")

    async def last_seqno(self) -> int:
        res = await self._get("getMasterchainInfo", {})
        try:
            return int(res["last"]["seqno"])
        except (KeyError, TypeError, ValueError):
            raise ChainError("toncenter getMasterchainInfo: malformed answer") from None

    async def mc_block(self, seqno: int) -> McBlock:
        res = await self._get("getBlockHeader", {"workchain": -1, "shard": MC_SHARD, "seqno": seqno})
        try:
            bid = res["id"]
            if int(bid["seqno"]) != seqno or int(bid["workchain"]) != -1:
                raise ChainError(f"toncenter answered block {bid['workchain']}:{bid['seqno']} for masterchain {seqno}")
            return McBlock(seqno, _b64(bid["root_hash"]), _b64(bid["file_hash"]), int(res["gen_utime"]))
        except (KeyError, TypeError, ValueError):
            raise ChainError("toncenter getBlockHeader: malformed answer") from None

    async def global_id(self) -> int:
        res = await self._get("getBlockHeader", {"workchain": -1, "shard": MC_SHARD, "seqno": 0})
        try:
            return int(res["global_id"])
        except (KeyError, TypeError, ValueError):
            raise ChainError("toncenter getBlockHeader: malformed answer") from None

    async def last_tx(self, address: Address, block: McBlock) -> TxPointer:
        res = await self._get("getAddressInformation", {"address": address.to_str(False), "seqno": block.seqno})
        try:
            tid = res["last_transaction_id"]
            lt = int(tid["lt"])
            return TxPointer(lt, _b64(tid["hash"])) if lt else NO_TX
        except (KeyError, TypeError, ValueError):
            raise ChainError("toncenter getAddressInformation: malformed answer") from None

    async def transactions(self, address: Address, start: TxPointer, count: int) -> list[Cell]:
        res = await self._get("getTransactions", {"address": address.to_str(False), "limit": count, "lt": start.lt,
                                                  "hash": start.hash.hex(), "archival": "true"})
        if not isinstance(res, list):
            raise ChainError("toncenter getTransactions: malformed answer")
        out = []
        for item in res:
            try:
                cell = Cell.one_from_boc(base64.b64decode(item["data"]))
                tid = item["transaction_id"]
                if cell.hash != _b64(tid["hash"]) or int(tid["lt"]) <= 0:
                    raise ChainError("toncenter getTransactions: transaction_id does not match its data")
            except (KeyError, TypeError, ValueError) as e:
                raise ChainError(f"toncenter getTransactions: malformed item ({e.__class__.__name__})") from None
            except ChainError:
                raise
            except Exception as e:  # pytoniq-core's BOC parser raises assorted errors
                raise ChainError(f"toncenter getTransactions: bad BOC ({e.__class__.__name__})") from None
            out.append(cell)
        return out

    async def account_data(self, address: Address, block: McBlock) -> Cell | None:
        res = await self._get("getAddressInformation", {"address": address.to_str(False), "seqno": block.seqno})
        try:
            if res.get("state") != "active" or not res.get("data"):
                return None
            return Cell.one_from_boc(base64.b64decode(res["data"]))
        except (AttributeError, TypeError, ValueError):
            raise ChainError("toncenter getAddressInformation: malformed answer") from None
        except Exception as e:  # pytoniq-core's BOC parser raises assorted errors
            raise ChainError(f"toncenter getAddressInformation: bad data BOC ({e.__class__.__name__})") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _b64(s: str) -> bytes:
    b = base64.b64decode(s.replace("-", "+").replace("_", "/") + "=" * (-len(s) % 4))
    if len(b) != 32:
        raise ValueError("expected a 32-byte hash")
    return b


# ---------------------------------------------------------------------------------- fallback
class FallbackTransport:
    """Tries each transport in order; the first answer wins. Errors of all are reported."""

    def __init__(self, transports: Sequence[Transport]) -> None:
        if not transports:
            raise ValueError("no transport")
        self.transports = list(transports)
        self.name = "+".join(t.name for t in self.transports)

    async def _each(self, method: str, *args):
        errors = []
        for t in self.transports:
            try:
                return await getattr(t, method)(*args)
            except ChainError as e:
                errors.append(f"{t.name}: {e.detail}")
                if len(self.transports) > 1:
                    log.warning("%s %s failed (%s); trying the next transport", t.name, method, e.detail)
        raise ChainError("; ".join(errors))

    async def last_seqno(self) -> int:
        return await self._each("last_seqno")

    async def mc_block(self, seqno: int) -> McBlock:
        return await self._each("mc_block", seqno)

    async def global_id(self) -> int:
        return await self._each("global_id")

    async def last_tx(self, address: Address, block: McBlock) -> TxPointer:
        return await self._each("last_tx", address, block)

    async def transactions(self, address: Address, start: TxPointer, count: int) -> list[Cell]:
        return await self._each("transactions", address, start, count)

    async def account_data(self, address: Address, block: McBlock) -> Cell | None:
        return await self._each("account_data", address, block)

    async def aclose(self) -> None:
        for t in self.transports:
            await t.aclose()
