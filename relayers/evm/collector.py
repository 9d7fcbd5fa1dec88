"""Collects plain ETH transfers sent to per-payment deposit addresses into a CreditLock
(issue 14: any wallet can pay).

A payment's deposit address is ``CreditLock.depositAddress(ref)`` (``bridge.payments.
evm_deposit``): an empty account until ``collect(ref, fundingTx)`` moves what it holds into the
lock as a normal ``Locked`` deposit. The relay runs one collector per EVM lock, paying the gas
with the aggregator's key; anyone else may collect too (the contract pays only into the lock).

Each step:

1. read the final head, then refresh the watched references from the gateway's feed
   (``WatchedReferences``; in that order, so a payment paid in a block at or below the head is
   listed); when the feed cannot be read, nothing is scanned (a payment missing from the set
   would be missed);
2. scan the next *final* blocks with full transactions for successful top-level transactions
   to a watched address: each is a funding (final already, as its block is);
3. once caught up with the final head, every ``balance_every`` blocks, read the final balance
   of every watched address without a known funding: funds sent by a contract (an internal
   transfer, invisible to the scan) are collected with ``fundingTx = 0`` (no payer proven);
4. collect each address with fundings, naming its latest funding: the watchers verify that
   transaction and refund its sender. A balance below the lock's ``minAmount`` is not
   collected: it is kept at the address, logged once (WARNING) and reported by the gauge
   ``creditbridge_collector_uncollected_wei{chain}``; an address already emptied by someone
   else's collect is fine;
5. a collect stays pending until it is final; one dropped by a reorg is sent again.

Persistence: only the scan cursor (a ``CursorStore``; the relay's is its database's ``cursors``
table, component ``collector``, wired in ``bridge/node.py``), saved as
"every funding up to here has a final collect": ``min(block of a pending funding) - 1``, or the
scanned height. A restart rescans from there, finds the pending fundings again and asks the
chain: an address with nothing left (final) is done, one whose collect is still in flight is
waited for. The chain itself refuses to collect an empty address (``NothingToCollect``), so
no restart collects twice; no table of its own is needed.

ERC-20s (issue 15): a payer ``transfer``s a configured token (``tokens``) to the same deposit
address. The scan also reads, with ``eth_getLogs`` filtered by the configured token contracts,
the ``Transfer`` topic and the watched addresses as ``to``, the final token transfers to
watched addresses (direct or internal: a log is emitted either way, so tokens need no balance
poll) and collects each (address, token) with ``collectToken(token, ref, fundingTx)``, naming
the transaction of the latest transfer. Tokens have no lock minimum: any balance is collected
(the signers keep amounts below the token's ``min_refund``). Tokens that are not configured
are never collected: they stay at the deposit address.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import aiohttp
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.config import EvmChainConfig, PayableToken
from bridge.errors import BridgeError, ChainError, ConfigError, TransactionFailed
from bridge.payments.evm_deposit import deposit_address
from bridge.payments.feed import ReferenceFeed, WatchedReferences
from relayers.evm.contracts import LOCK, decode_error, send_transaction
from relayers.evm.rpc import JsonRpcError, RpcPool, hex_bytes, hex_int

log = logging.getLogger("creditbridge.collector")

COMPONENT = "collector"


class CursorStore(Protocol):
    """Where a collector keeps its scan cursor (relayers never touch storage themselves)."""

    async def load(self, chain: str) -> int | None: ...

    async def save(self, chain: str, height: int) -> None: ...
COLLECT = keccak(text="collect(bytes32,bytes32)")[:4]
COLLECT_TOKEN = keccak(text="collectToken(address,bytes32,bytes32)")[:4]
BALANCE_OF = keccak(text="balanceOf(address)")[:4]
TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")
TO_TOPICS_PER_QUERY = 200  # watched addresses per eth_getLogs ``to`` filter
MIN_AMOUNT = keccak(text="minAmount()")[:4]
NO_HINT = bytes(32)
DEFAULT_GAS_CAP = 200_000  # a collect costs ~60k


@dataclass
class Funding:
    """Funds that reached a deposit address and are not collected for sure yet."""

    address: bytes
    reference: bytes
    tx: bytes  # the funding transaction (NO_HINT: found by its balance only)
    block: int
    collect_tx: bytes | None = None
    collect_block: tuple[int, bytes] | None = None  # where our collect was mined
    token: bytes | None = None  # the ERC-20 moved there (None: ETH)

    @property
    def key(self) -> bytes:
        """Its key in ``EvmCollector.pending``."""
        base = self.tx if self.tx != NO_HINT else self.address
        return base if self.token is None else base + self.token


@dataclass
class _Gauge:
    chain: str
    metric: Any = None
    by_address: dict[bytes, int] = field(default_factory=dict)

    def set(self, address: bytes, amount: int) -> None:
        if amount > 0:
            self.by_address[address] = amount
        else:
            self.by_address.pop(address, None)
        if self.metric is not None:
            self.metric.labels(chain=self.chain).set(sum(self.by_address.values()))


def collector_metric(registry: Any):
    from prometheus_client import Gauge

    return Gauge("creditbridge_collector_uncollected_wei",
                 "Wei held at per-payment deposit addresses below the lock's minimum: kept, not collected",
                 ["chain"], registry=registry)


class EvmCollector:
    def __init__(self, cfg: EvmChainConfig, private_key: bytes | str, feed: ReferenceFeed, cursor: CursorStore, *,
                 pool: RpcPool | None = None, interval: float = 2.0, balance_every: int = 20,
                 max_blocks: int = 500, gas_cap: int = DEFAULT_GAS_CAP, timeout: float = 60.0,
                 metric: Any = None, clock: Callable[[], float] = time.time, relay_index: int = 0,
                 relay_count: int = 1, takeover_after: float = 30.0,
                 tokens: dict[str, PayableToken] | None = None) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required to collect deposits")
        self.cfg = cfg
        self.chain = cfg.name
        self.lock = bytes.fromhex(cfg.contracts["lock"][2:])
        self.tokens = {bytes.fromhex(t.contract[2:]): sym for sym, t in (tokens or {}).items()
                       if not t.native and t.chain == cfg.name and t.contract}
        self.watched = WatchedReferences(cfg.name, feed, self.address_of, clock=clock)
        self.cursor_store = cursor
        self._own_pool = pool is None
        self.pool = pool if pool is not None else RpcPool.from_config(cfg)
        self.w3 = AsyncWeb3(AsyncHTTPProvider(cfg.rpc[0], request_kwargs={"timeout": cfg.request_timeout}))
        self._key = private_key
        self._sender = Account.from_key(private_key).address
        self.interval = interval
        self.balance_every = balance_every
        self.max_blocks = max_blocks
        self.gas_cap = gas_cap
        self.timeout = timeout
        self.scanned: int | None = None  # last block scanned for fundings
        self.pending: dict[bytes, Funding] = {}  # Funding.key -> funding
        self.kept = _Gauge(cfg.name, metric)  # deposit address -> uncollected balance below the minimum
        self._warned: set[bytes] = set()
        self._polled_at = -1
        self._min_amount: int | None = None
        self.collects = 0  # collect transactions this collector got mined
        self.last_collect_gas = 0  # gas used by the latest collect (reported by the tests)
        # several relays: this one collects at once the addresses that hash to its index, the
        # others only once they have waited takeover_after s (their relay is down); two collects of
        # one address in one block would cost the loser a reverted transaction
        if not 0 <= relay_index < relay_count:
            raise ConfigError(f"relay_index {relay_index} must be in [0, {relay_count})")
        self.relay_index = relay_index
        self.relay_count = relay_count
        self.takeover_after = takeover_after
        self._waiting_since: dict[bytes, float] = {}  # another relay's address -> first seen collectable

    def address_of(self, reference: bytes) -> bytes:
        return deposit_address(self.lock, reference)

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        delay = self.interval
        while True:
            try:
                await self.step()
                delay = self.interval
            except BridgeError as e:
                log.warning("collector %s: %s", self.chain, e)
                delay = min(delay * 2, 30.0)
            await asyncio.sleep(delay)

    async def step(self) -> None:
        # the final head first, then the feed: a payment funded in a block at or below that head
        # was created before the block, so before the feed read, and is listed (the other way round,
        # one created and paid between the two reads would be scanned unlisted and passed over)
        final = await self.pool.finalized_height(self.cfg.finality)
        await self.watched.refresh()  # raises (the caller retries): never scan with a stale set
        if self.scanned is None:
            self.scanned = await self._load_cursor(final)
        await self._confirm(final)
        end = min(final, self.scanned + self.max_blocks)
        if end > self.scanned:
            await self._scan(self.scanned + 1, end)
            self.scanned = end
        if self.scanned == final and (self._polled_at < 0 or final >= self._polled_at + self.balance_every):
            await self._poll_balances(final)
            self._polled_at = final
        await self._collect(final)
        await self._save_cursor()

    async def aclose(self) -> None:
        if self._own_pool:
            await self.pool.aclose()
        await self.w3.provider.disconnect()

    # ------------------------------------------------------------------ cursor
    async def _load_cursor(self, final: int) -> int:
        got = await self.cursor_store.load(self.chain)
        if got is not None:
            return got
        log.info("collector %s: no cursor yet; scanning from the chain's start_block %d", self.chain,
                 self.cfg.start_block)
        return self.cfg.start_block - 1

    def cursor(self) -> int:
        """Every funding in a block up to here has a final collect (or needs none)."""
        assert self.scanned is not None
        blocks = [f.block - 1 for f in self.pending.values()]
        return max(min([self.scanned, *blocks]), -1)

    async def _save_cursor(self) -> None:
        await self.cursor_store.save(self.chain, self.cursor())

    # ------------------------------------------------------------------ scan
    async def _scan(self, start: int, end: int) -> None:
        watched = self.watched.addresses()
        if not watched:
            return
        if self.tokens:
            await self._scan_tokens(start, end, watched)
        found: list[tuple[dict, int]] = []
        for a in range(start, end + 1, 50):
            numbers = list(range(a, min(a + 50, end + 1)))
            blocks = await self.pool.request_many([("eth_getBlockByNumber", [hex(n), True]) for n in numbers])
            for n, b in zip(numbers, blocks):
                if b is None:
                    raise ChainError(f"chain {self.chain}: final block {n} not available (lagging endpoint?)")
                for tx in b.get("transactions") or []:
                    to = tx.get("to")
                    if isinstance(to, str) and len(to) == 42 and bytes.fromhex(to[2:]) in watched \
                            and hex_int(tx.get("value"), "value") > 0:
                        found.append((tx, n))
        if not found:
            return
        hashes = [hex_bytes(tx["hash"], "tx hash") for tx, _ in found]
        receipts = await self.pool.get_receipts(hashes)
        for (tx, n), h, r in zip(found, hashes, receipts):
            if r is None:
                raise ChainError(f"chain {self.chain}: no receipt for final tx 0x{h.hex()} (lagging endpoint?)")
            if hex_int(r.get("status"), "status") != 1:
                continue
            address = bytes.fromhex(tx["to"][2:])
            self.pending[h] = Funding(address, watched[address], h, n)
            log.info("collector %s: funding 0x%s of %d wei to 0x%s (block %d)", self.chain, h.hex(),
                     hex_int(tx.get("value"), "value"), address.hex(), n)

    async def _scan_tokens(self, start: int, end: int, watched: dict[bytes, bytes]) -> None:
        """Final ``Transfer`` logs of the configured tokens to watched addresses."""
        addresses = sorted(watched)
        tokens = sorted(self.tokens)
        for i in range(0, len(addresses), TO_TOPICS_PER_QUERY):
            to_topics = [bytes(12) + a for a in addresses[i:i + TO_TOPICS_PER_QUERY]]
            for a in range(start, end + 1, self.cfg.max_block_range):
                b = min(a + self.cfg.max_block_range - 1, end)
                for raw in await self.pool.get_logs(a, b, tokens, [TRANSFER_TOPIC, None, to_topics]):
                    topics = raw.get("topics") or []
                    if raw.get("removed") or len(topics) != 3:
                        continue
                    token = hex_bytes(raw.get("address"), "log address")
                    to = hex_bytes(topics[2], "topic")[12:]
                    if token not in self.tokens or to not in watched:
                        continue  # not asked for (a node ignoring the filter)
                    n = hex_int(raw.get("blockNumber"), "block number")
                    if not a <= n <= b:
                        raise ChainError(f"chain {self.chain}: eth_getLogs {a}..{b} returned a log of block {n}")
                    h = hex_bytes(raw.get("transactionHash"), "tx hash")
                    f = Funding(to, watched[to], h, n, token=token)
                    if f.key not in self.pending:
                        self.pending[f.key] = f
                        log.info("collector %s: funding 0x%s of %s to 0x%s (block %d)", self.chain, h.hex(),
                                 self.tokens[token], to.hex(), n)

    async def _token_balance(self, token: bytes, address: bytes, block: int | str) -> int:
        got = await self.pool.call(token, BALANCE_OF + bytes(12) + address, block)
        if len(got) != 32:
            raise ChainError(f"chain {self.chain}: balanceOf of token 0x{token.hex()} answered {len(got)} bytes")
        return int.from_bytes(got, "big")

    async def _poll_balances(self, final: int) -> None:
        """Funds that reached a watched address without a top-level transaction."""
        busy = {f.address for f in self.pending.values() if f.token is None}
        addresses = [(a, r) for a, r in self.watched.addresses().items() if a not in busy]
        if not addresses:
            return
        balances = await self.pool.request_many(
            [("eth_getBalance", ["0x" + a.hex(), hex(final)]) for a, _ in addresses])
        minimum = await self.min_amount()
        for (a, r), raw in zip(addresses, balances):
            amount = hex_int(raw, "balance")
            if amount == 0:
                self.kept.set(a, 0)
            elif amount < minimum:
                self._keep(a, amount, minimum)
            else:
                log.warning("collector %s: 0x%s holds %d wei that no transaction sent (an internal transfer?): "
                            "collecting it without a payer", self.chain, a.hex(), amount)
                f = Funding(a, r, NO_HINT, final)
                self.pending[f.key] = f

    # ------------------------------------------------------------------ collect
    async def min_amount(self) -> int:
        if self._min_amount is None:
            (self._min_amount,) = abi_decode(["uint256"], await self.pool.call(self.lock, MIN_AMOUNT))
        return self._min_amount

    def _keep(self, address: bytes, amount: int, minimum: int) -> None:
        self.kept.set(address, amount)
        if address not in self._warned:
            self._warned.add(address)
            log.warning("collector %s: deposit address 0x%s holds %d wei, below the lock's minimum %d: "
                        "kept there, not collected", self.chain, address.hex(), amount, minimum)

    async def _collect(self, final: int) -> None:
        by_address: dict[tuple[bytes, bytes | None], list[Funding]] = {}
        for f in self.pending.values():
            if f.collect_tx is None:
                by_address.setdefault((f.address, f.token), []).append(f)
        for (address, token), fundings in by_address.items():
            if token is None:
                await self._collect_one(address, fundings, final)
            else:
                await self._collect_token(address, token, fundings, final)

    async def _collect_token(self, address: bytes, token: bytes, fundings: list[Funding], final: int) -> None:
        latest = await self._token_balance(token, address, "latest")
        if latest == 0:
            if await self._token_balance(token, address, final) == 0:
                self._forget(fundings)
            return
        key = address + token
        if not self._mine(address):
            since = self._waiting_since.setdefault(key, time.monotonic())
            if time.monotonic() - since < self.takeover_after:
                return
        hint = max(fundings, key=lambda f: (f.tx != NO_HINT, f.block)).tx
        ref = fundings[0].reference
        data = COLLECT_TOKEN + bytes(12) + token + ref + hint
        call = {"from": self._sender, "to": to_checksum_address(self.lock), "data": "0x" + data.hex()}
        try:
            gas = await self.pool.estimate_gas(call)
        except JsonRpcError as e:
            decoded = decode_error(LOCK, e.revert_data) if e.is_revert else None
            if decoded is not None and decoded[0] == "NothingToCollect":
                return
            raise
        await self._send_collect(call, gas, fundings, address, ref, hint, latest, self.tokens.get(token))

    async def _collect_one(self, address: bytes, fundings: list[Funding], final: int) -> None:
        latest = await self.pool.balance(address, "latest")
        if latest == 0:
            # collected by someone else (or by us before a restart): done once that is final
            if await self.pool.balance(address, final) == 0:
                self._forget(fundings)
            return
        minimum = await self.min_amount()
        if latest < minimum:
            self._keep(address, latest, minimum)
            self._forget(fundings)
            return
        self.kept.set(address, 0)
        if not self._mine(address):
            since = self._waiting_since.setdefault(address, time.monotonic())
            if time.monotonic() - since < self.takeover_after:
                return  # its relay collects it; taken over if still full after the delay
        hint = max(fundings, key=lambda f: (f.tx != NO_HINT, f.block)).tx
        ref = fundings[0].reference
        data = COLLECT + ref + hint
        call = {"from": self._sender, "to": to_checksum_address(self.lock), "data": "0x" + data.hex()}
        try:
            gas = await self.pool.estimate_gas(call)
        except JsonRpcError as e:
            decoded = decode_error(LOCK, e.revert_data) if e.is_revert else None
            if decoded is not None and decoded[0] == "NothingToCollect":
                return  # emptied since we looked: the next step checks it is final
            if decoded is not None and decoded[0] == "AmountTooSmall":
                self._keep(address, decoded[1][0], minimum)
                self._forget(fundings)
                return
            raise
        await self._send_collect(call, gas, fundings, address, ref, hint, latest, "wei")

    async def _send_collect(self, call: dict, gas: int, fundings: list[Funding], address: bytes, ref: bytes,
                            hint: bytes, amount: int, unit: str | None) -> None:
        """Send a collect (ETH or a token) and mark its fundings collected in the mined tx; a
        failed one is tried again at a later step."""
        tx = {**call, "gas": min(self.gas_cap, gas + gas // 5)}
        try:
            receipt = await send_transaction(self.w3, tx, self._key, timeout=self.timeout)
        except TransactionFailed as e:
            log.warning("collector %s: collect of %s at 0x%s failed: %s (tried again later)", self.chain, unit,
                        address.hex(), e)
            return
        except (aiohttp.ClientError, OSError) as e:
            raise ChainError(f"chain {self.chain}: sending a collect failed: {e.__class__.__name__}") from None
        tx_hash = bytes(receipt["transactionHash"])
        mined = (int(receipt["blockNumber"]), bytes(receipt["blockHash"]))
        for f in fundings:
            f.collect_tx, f.collect_block = tx_hash, mined
        self.collects += 1
        self.last_collect_gas = int(receipt["gasUsed"])
        log.info("collector %s: collected %d %s of 0x%s for payment ref 0x%s in tx 0x%s (funding 0x%s)",
                 self.chain, amount, unit, address.hex(), ref.hex()[:16], tx_hash.hex(), hint.hex())

    async def _confirm(self, final: int) -> None:
        """Forget fundings whose collect is final; send again those whose collect was dropped."""
        inflight: dict[bytes, list[Funding]] = {}
        for f in self.pending.values():
            if f.collect_tx is not None:
                inflight.setdefault(f.collect_tx, []).append(f)
        for tx_hash, fundings in inflight.items():
            receipt = await self.pool.get_receipt(tx_hash)
            if receipt is not None:
                number = hex_int(receipt.get("blockNumber"), "block number")
                if number > final:
                    continue
                hdr = await self.pool.get_block(number)
                if hdr is not None and hdr.hash == hex_bytes(receipt.get("blockHash"), "block hash"):
                    if hex_int(receipt.get("status"), "status") == 1:
                        self._forget(fundings)  # collected for good
                    else:  # reverted (emptied by another collect first): the address is checked again
                        for f in fundings:
                            f.collect_tx = f.collect_block = None
                    continue
            mined = fundings[0].collect_block
            if mined is not None and (receipt is None or number != mined[0]
                                      or hex_bytes(receipt.get("blockHash"), "block hash") != mined[1]):
                log.warning("collector %s: collect 0x%s was dropped by a reorg; collecting again", self.chain,
                            tx_hash.hex())
                for f in fundings:
                    f.collect_tx = f.collect_block = None

    def _mine(self, address: bytes) -> bool:
        if self.relay_count == 1:
            return True
        return int.from_bytes(keccak(address)[:8], "big") % self.relay_count == self.relay_index

    def _forget(self, fundings: list[Funding]) -> None:
        for f in fundings:
            self._waiting_since.pop(f.address if f.token is None else f.address + f.token, None)
            self.pending.pop(f.key, None)
