"""Watcher of a CreditLock contract on one EVM chain (implements ``bridge.chains.Watcher``).

Deposits are ``Locked(uint64 indexed nonce, address indexed sender, uint256 amount,
bytes32 indexed ref)`` events. They are read with raw ``eth_getLogs`` in chunks of at most
``max_block_range`` blocks and decoded with ``eth_abi`` (web3's log decoding is ~30x slower).

No node here sends ``removed: true`` logs, and a load-balanced or lagging endpoint may serve
logs of a block that is no longer canonical. So every log is re-checked before it becomes an
Observation: its transaction's receipt exists, has status 1, contains the very same log, and
the receipt's block hash, the log's block hash and the canonical block hash at that height
are equal. Any mismatch raises ``ReorgDetected`` (retryable: the caller rescans the range);
a suspicious log is never emitted.

Plain transfers (issue 14) reach the lock through ``collect(ref, fundingTx)``: its ``Locked``
names the payment's deposit address as sender (``bridge.payments.evm_deposit``) and the same
receipt holds ``Collected(nonce, fundingTx)``. The payer (the refund address) is then the
``from`` of the funding transaction, once this node's own chain view proves it: the
transaction exists, was sent to the deposit address with a value, succeeded, and sits in a
canonical block no later than the collect's. Without a hint (an internal transfer) or with one
that does not verify, the payer is 32 zero bytes: the signers keep such amounts instead of
refunding them. Every honest node reads the same final chain, so all derive the same payer.

ERC-20 deposits (issue 15) are ``LockedToken(uint64 indexed nonce, address indexed sender,
uint256 amount, bytes32 indexed ref, address token)`` events of the same lock and nonce stream
(``lockToken`` after ``approve``, or ``collectToken`` of a plain ``transfer`` to the deposit
address); ``amount`` is what the lock's balance grew by. The token contract is mapped to its
symbol through the chain's configured non-native ``PayableToken``s (``tokens``); a deposit of
an unconfigured token is no deposit: no Observation (a WARNING), never credited nor refunded,
and it stays in the lock. A collected token deposit's payer is the ``from`` of a ``Transfer``
of that token to the deposit address in the named funding transaction (checked as for ETH:
succeeded, canonical, no later than the collect), else 32 zero bytes.
"""

from __future__ import annotations

import asyncio
import logging
import operator
import re
from typing import Any, Iterable, NamedTuple

from eth_utils import keccak

from bridge.chains import PENDING_LOOKBACK, BlockRef, WatcherDefaults
from bridge.config import EvmChainConfig, PayableToken
from bridge.errors import ChainError, ConfigError, ReorgDetected
from bridge.hashing import source_id
from bridge.payments.evm_deposit import deposit_address, deposit_addresses
from bridge.types import Observation
from relayers.evm.rpc import BlockHeader, JsonRpcError, RpcPool, hex_bytes, hex_int

log = logging.getLogger(__name__)

LOCKED_TOPIC = keccak(text="Locked(uint64,address,uint256,bytes32)")
_LOCKED_TOPIC_HEX = "0x" + LOCKED_TOPIC.hex()
COLLECTED_TOPIC = keccak(text="Collected(uint64,bytes32)")
_COLLECTED_TOPIC_HEX = "0x" + COLLECTED_TOPIC.hex()
LOCKED_TOKEN_TOPIC = keccak(text="LockedToken(uint64,address,uint256,bytes32,address)")
_LOCKED_TOKEN_TOPIC_HEX = "0x" + LOCKED_TOKEN_TOPIC.hex()
TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")
_TRANSFER_TOPIC_HEX = "0x" + TRANSFER_TOPIC.hex()
NO_PAYER = b"\x00" * 32  # a collected deposit whose funding transaction is not proven

# eth_getLogs answers that mean "ask for a smaller range" (the range is then halved).
_RANGE_TOO_LARGE = re.compile(
    r"more than \d+ (?:results|logs)|too many (?:results|logs)|range (?:is )?too (?:large|wide|big)|"
    r"exceed(?:s|ed)? (?:the )?(?:maximum|max|limit)|response size|block range",
    re.IGNORECASE,
)

_LOCK_TOPICS = (_LOCKED_TOPIC_HEX, _LOCKED_TOKEN_TOPIC_HEX)
_ZERO24, _ZERO12 = bytes(24), bytes(12)


def _drop_piece(task: asyncio.Future) -> None:
    """Done callback of a dropped piece (``_piece``): its headers request is dropped too."""
    if task.cancelled():
        return
    if task.exception() is not None:
        log.debug("piece read ahead failed: %s", task.exception())
        return
    headers = task.result()[2]
    if headers is not None:
        headers.cancel()
        headers.add_done_callback(_consume)


def _consume(task: asyncio.Future) -> None:
    """Done callback of a dropped request: retrieve its outcome (no 'never retrieved' noise)."""
    if not task.cancelled():
        task.exception()


_BY_POSITION = operator.attrgetter("block_number", "event_index")  # a deposit's place in the chain


class LockedLog(NamedTuple):
    """A decoded ``Locked`` log, not yet re-checked. (A named tuple: a catch-up scan decodes
    one per deposit, and a frozen dataclass cost ~4x as much to build.)"""

    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    nonce: int
    sender: bytes  # 20 bytes
    amount: int
    ref: bytes
    raw: dict
    token: bytes | None = None  # 20-byte ERC-20 contract of a LockedToken (None: ETH)


class EvmWatcher(WatcherDefaults):
    """Reads final ``Locked`` deposits of ``cfg.contracts["lock"]``."""

    def __init__(
        self,
        cfg: EvmChainConfig,
        pool: RpcPool | None = None,
        *,
        registry: Any = None,
        tokens: dict[str, PayableToken] | None = None,
    ) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required to watch deposits")
        if not cfg.token:
            raise ConfigError(f"chain {cfg.name}: token is required to watch deposits")
        self.cfg = cfg
        self.chain = cfg.name
        self.token = cfg.token
        self.lock = bytes.fromhex(cfg.contracts["lock"][2:])
        self._lock_hex = "0x" + self.lock.hex()
        self.source = source_id("evm", cfg.chain_id, self.lock)
        self.tokens = token_symbols(cfg.name, tokens)
        self.max_range = cfg.max_block_range
        self._own_pool = pool is None
        self.pool = pool if pool is not None else RpcPool.from_config(cfg, registry=registry)

    # ------------------------------------------------------------------ Watcher protocol
    async def finalized_height(self) -> int:
        return await self.pool.finalized_height(self.cfg.finality)

    async def fetch_deposits(self, start: int, end: int) -> list[Observation]:
        """The final deposits of ``start..end``, checked (``_checked``). A long range is read in
        pieces (``_pieces``) as a pipeline: the next piece's ``eth_getLogs`` is sent when the
        previous one's answer arrives, and each piece's block headers as soon as its logs are
        read, so the node computes them while this process decodes and checks the piece it has.
        At most three requests are in flight: this piece's headers, the next piece's logs, then
        its headers."""
        if start < 0:
            raise ValueError("start must be >= 0")
        pieces = self._pieces(start, end)
        out: list[Observation] = []
        ahead: asyncio.Future | None = None
        try:
            for i, (a, b) in enumerate(pieces):
                if ahead is None:
                    piece = await self._piece(a, b)
                else:
                    piece = await ahead
                    ahead = None
                if i + 1 < len(pieces):
                    ahead = asyncio.ensure_future(self._piece(*pieces[i + 1]))
                out.extend(await self._checked(*piece))
        finally:
            if ahead is not None:  # failed or cancelled mid-way: the piece read ahead is dropped
                ahead.cancel()
                ahead.add_done_callback(_drop_piece)
        out.sort(key=_BY_POSITION)
        return out

    # a range is read in up to PIPELINE_PIECES pieces: its length / PIPELINE_PIECES blocks each,
    # at least PIPELINE_MIN_PIECE (a short range is one piece), at most max_range
    PIPELINE_MIN_PIECE = 64
    PIPELINE_PIECES = 4

    def _pieces(self, start: int, end: int) -> list[tuple[int, int]]:
        size = min(self.max_range, max(self.PIPELINE_MIN_PIECE, -(-(end - start + 1) // self.PIPELINE_PIECES)))
        return [(a, min(a + size - 1, end)) for a in range(start, end + 1, size)]

    async def _piece(self, start: int, end: int) -> tuple[list[dict], dict[str, int], asyncio.Future | None]:
        """One piece's raw logs, their block numbers, and the request of their blocks' headers,
        sent as soon as the logs are read (the node computes it while earlier pieces are
        checked): ``_checked`` awaits it."""
        numbers: dict[str, int] = {}
        raw_logs = await self._raw_locked_logs(start, end, numbers)
        if not raw_logs:
            return raw_logs, numbers, None
        return raw_logs, numbers, asyncio.ensure_future(self._headers(sorted(set(numbers.values()))))

    async def reobserve(self, tx_id: bytes) -> list[Observation]:
        """The transaction's deposits if it is final and canonical; ``[]`` only when this endpoint
        proves it has none: its receipt is in the canonical final block of its height and failed
        (status 0) or has no ``Locked`` log. Anything this endpoint cannot answer for sure -- no
        receipt (momentarily missing, or a lagging endpoint), not final yet here, the block header
        missing, or a receipt from a block that is not the canonical one -- raises ChainError
        (retryable): the signer asks again later."""
        where = f"chain {self.chain}: tx 0x{bytes(tx_id).hex()}"
        receipt = await self.pool.get_receipt(tx_id)
        if receipt is None:
            raise ChainError(f"{where}: no receipt on this endpoint (missing or not indexed yet)")
        number = hex_int(receipt.get("blockNumber"), "block number")
        final = await self.finalized_height()
        if number > final:
            raise ChainError(f"{where}: block {number} is not final on this endpoint (final: {final})")
        hdr = await self.pool.get_block(number)
        if hdr is None:
            raise ChainError(f"{where}: block {number} header not available")
        block_hash = hex_bytes(receipt.get("blockHash"), "block hash")
        if hdr.hash != block_hash:
            raise ReorgDetected(f"{where}: receipt in block 0x{block_hash.hex()[:12]}.. but the canonical block "
                                f"{number} is 0x{hdr.hash.hex()[:12]}.. (inconsistent endpoint)")
        if hex_int(receipt.get("status"), "status") != 1:
            return []  # proved: the final canonical receipt failed
        logs = []
        for raw in receipt.get("logs") or []:
            if self._is_locked(raw):
                lg = self._decode(raw)
                if lg.block_hash != hdr.hash or lg.tx_hash != bytes(tx_id):
                    raise ReorgDetected(f"{where}: receipt log of another block or transaction (inconsistent endpoint)")
                logs.append(lg)
        payers = await self._collected_payers([(lg, receipt) for lg in logs])
        out = []
        for lg in logs:
            obs = self._observation(lg, hdr.timestamp, payers.get((lg.tx_hash, lg.log_index)))
            if obs is not None:
                out.append(obs)
        return sorted(out, key=lambda o: o.event_index)

    async def block_ref(self, number: int) -> BlockRef:
        hdr = await self.pool.get_block(number)
        if hdr is None:
            raise ChainError(f"chain {self.chain}: block {number} is not available yet")
        return BlockRef(hdr.number, hdr.hash)

    # ------------------------------------------------------------------ optional abilities
    async def head_height(self) -> int:
        """The chain's newest block (for the operator's lag figures)."""
        return await self.pool.block_number()

    async def block_time(self, number: int) -> int:
        hdr = await self.pool.get_block(number)
        if hdr is None:
            raise ChainError(f"chain {self.chain}: block {number} is not available yet")
        return hdr.timestamp

    async def pending_deposits(self, after: int | None = None) -> list[Observation]:
        """Locked logs not stored as final yet, up to the head (``WatcherDefaults``): best effort,
        not re-checked against receipts (for a payment's ``seen`` state only; never attested)."""
        final = await self.finalized_height()
        head = await self.pool.block_number()
        out: list[Observation] = []
        a = final + 1 if after is None else max(min(final, after) + 1, final + 1 - PENDING_LOOKBACK)
        while a <= head:
            b = min(a + self.max_range - 1, head)
            logs = await self._get_locked_logs(a, b)
            headers = await self._headers({lg.block_number for lg in logs})
            for lg in logs:
                hdr = headers.get(lg.block_number)
                if hdr is None or hdr.hash != lg.block_hash:
                    continue  # already reorged out, or not yet on this endpoint
                obs = self._observation(lg, hdr.timestamp)
                if obs is not None:
                    out.append(obs)
            a = b + 1
        out.sort(key=lambda o: (o.block_number, o.event_index))
        return out

    async def aclose(self) -> None:
        if self._own_pool:
            await self.pool.aclose()

    # ------------------------------------------------------------------ internals
    async def _checked(self, raw_logs: list[dict], numbers: dict[str, int],
                       headers_task: asyncio.Future | None) -> list[Observation]:
        """The observations of one piece (``_piece``): its raw logs decoded, each checked to be
        in the canonical block of its height (``headers_task``: the headers of the logs' blocks,
        requested after the logs were read; the node answers while the logs are decoded)."""
        if headers_task is None:
            return []
        try:
            logs = await self._decode_all(raw_logs, numbers)
            # is_collected costs a keccak (CREATE2 address): once per log, a piece's in one call
            addresses = deposit_addresses(self.lock, [lg.ref for lg in logs])
            collected = [lg for lg, a in zip(logs, addresses) if lg.sender == a]
            headers = await headers_task
        except BaseException:
            headers_task.cancel()
            headers_task.add_done_callback(_consume)
            raise
        # A log is kept only when its block hash is the canonical one at its height (below), so
        # it is in the canonical chain; receipts are read here only for collected deposits (their
        # Collected hint). Every deposit's receipt is re-checked where it matters: the signer's
        # ``reobserve`` before it attests or refunds. (Reading a receipt per deposit here made a
        # catch-up scan ~3x slower: bench/relayer_scan.py.)
        for lg in logs:
            hdr = headers.get(lg.block_number)
            if hdr is None:
                raise ChainError(f"chain {self.chain}: block {lg.block_number} not available (lagging endpoint?)")
            if hdr.hash != lg.block_hash:
                raise ReorgDetected(
                    f"chain {self.chain}: log {lg.tx_hash.hex()}:{lg.log_index} is in block "
                    f"{lg.block_number} 0x{lg.block_hash.hex()[:12]}.., canonical is 0x{hdr.hash.hex()[:12]}.."
                )
        payers: dict[tuple[bytes, int], bytes] = {}
        if collected:
            txs = sorted({lg.tx_hash for lg in collected})
            receipts = dict(zip(txs, await self.pool.get_receipts(txs)))
            for lg in logs:
                if lg.tx_hash in receipts:
                    self._check_receipt(lg, receipts[lg.tx_hash])
            payers = await self._collected_payers([(lg, receipts[lg.tx_hash]) for lg in collected])
        out = []
        zeros = b"\x00" * 12
        for lg in logs:
            payer = payers.get((lg.tx_hash, lg.log_index)) if payers else None
            if payer is None:  # not collected: the payer is the sender (as _observation derives it)
                payer = zeros + lg.sender
            obs = self._observation(lg, headers[lg.block_number].timestamp, payer)
            if obs is not None:
                out.append(obs)
        return out

    def _check_receipt(self, lg: LockedLog, receipt: dict | None) -> None:
        where = f"chain {self.chain}: deposit tx 0x{lg.tx_hash.hex()} (block {lg.block_number})"
        if receipt is None:
            raise ReorgDetected(f"{where} has no receipt")
        if hex_int(receipt.get("status"), "status") != 1:
            raise ReorgDetected(f"{where}: receipt status is not 1")
        if hex_bytes(receipt.get("blockHash"), "block hash") != lg.block_hash:
            raise ReorgDetected(f"{where}: receipt is in another block")
        for raw in receipt.get("logs") or []:
            if (
                hex_int(raw.get("logIndex"), "log index") == lg.log_index
                and str(raw.get("address", "")).lower() == self._lock_hex
                and [str(t).lower() for t in raw.get("topics") or []] == [str(t).lower() for t in lg.raw["topics"]]
                and str(raw.get("data", "")).lower() == str(lg.raw.get("data", "")).lower()
            ):
                return
        raise ReorgDetected(f"{where}: receipt does not contain log {lg.log_index}")

    async def _get_locked_logs(self, start: int, end: int) -> list[LockedLog]:
        numbers: dict[str, int] = {}
        return await self._decode_all(await self._raw_locked_logs(start, end, numbers), numbers)

    async def _raw_locked_logs(self, start: int, end: int, numbers: dict[str, int]) -> list[dict]:
        """The lock's raw Locked/LockedToken logs of ``start..end`` (halving a range the node
        finds too large); ``numbers`` collects each log's block number (hex -> int), checked to
        be in the range asked for."""
        try:
            raw_logs = await self.pool.get_logs(start, end, self.lock, [[LOCKED_TOPIC, LOCKED_TOKEN_TOPIC]])
        except JsonRpcError as e:
            if end > start and _RANGE_TOO_LARGE.search(e.rpc_message):
                mid = (start + end) // 2
                log.info("chain %s: eth_getLogs %d..%d too large (%s); splitting", self.chain, start, end, e.rpc_message[:80])
                return (await self._raw_locked_logs(start, mid, numbers)
                        + await self._raw_locked_logs(mid + 1, end, numbers))
            raise
        out = []
        for raw in raw_logs:
            if not isinstance(raw, dict):
                raise ChainError(f"chain {self.chain}: eth_getLogs answered a {type(raw).__name__} as a log")
            if raw.get("removed"):
                raise ReorgDetected(f"chain {self.chain}: node reports a removed log in {start}..{end}")
            if not self._is_locked(raw):
                continue  # not ours (a node ignoring the filter): skip
            hexnum = raw.get("blockNumber")
            number = numbers.get(hexnum) if isinstance(hexnum, str) else None
            if number is None:
                number = hex_int(hexnum, "block number")
                numbers[hexnum] = number
            if not start <= number <= end:
                raise ChainError(f"chain {self.chain}: eth_getLogs {start}..{end} returned a log of block {number}")
            out.append(raw)
        return out

    async def _decode_all(self, raw_logs: list[dict], numbers: dict[str, int], batch: int = 1000) -> list[LockedLog]:
        """Every log decoded (``_decode``), yielding to the event loop every ``batch`` logs (the
        node's answer to a request made meanwhile is read while the rest is decoded)."""
        out: list[LockedLog] = []
        hashes: dict[str, bytes] = {}  # the logs of one block share its hash: converted once
        for i in range(0, len(raw_logs), batch):
            if i:
                await asyncio.sleep(0)
            out.extend([self._decode(raw, numbers, hashes) for raw in raw_logs[i:i + batch]])
        return out

    def _is_locked(self, raw: dict) -> bool:
        topics = raw.get("topics") or []
        address = raw.get("address", "")
        if len(topics) != 4:
            return False
        t0 = topics[0]  # nodes send lowercase hex: compared as sent first, case-folded otherwise
        return ((address == self._lock_hex or str(address).lower() == self._lock_hex)
                and (t0 in _LOCK_TOPICS or str(t0).lower() in _LOCK_TOPICS))

    def _decode(self, raw: dict, numbers: dict[str, int] | None = None, hashes: dict[str, bytes] | None = None) -> LockedLog:
        # the ABI of Locked by hand (eth_abi's generic decoder was most of a catch-up scan's CPU):
        # three indexed 32-byte words and one data word, each checked as strictly. ``numbers``
        # and ``hashes`` cache the conversions of block numbers and hashes shared by the logs of
        # one block (a string converted once maps to the very value converting it again gives).
        try:
            t0, t1, t2, t3 = raw["topics"]
            hexdata = raw["data"]
            # the three topics and the transaction hash in one conversion: each exactly "0x" +
            # 64 hex digits (fromhex skips whitespace, so a shorter result is malformed too)
            tx = raw["transactionHash"]
            if not (type(t1) is str and type(t2) is str and type(t3) is str and type(tx) is str
                    and len(t1) == len(t2) == len(t3) == len(tx) == 66 and t1[:2] == t2[:2] == t3[:2] == tx[:2] == "0x"):
                raise ValueError
            words = bytes.fromhex(t1[2:] + t2[2:] + t3[2:] + tx[2:])
            if type(hexdata) is not str or hexdata[:2] != "0x":
                raise ValueError
            data = bytes.fromhex(hexdata[2:])
        except (KeyError, TypeError, ValueError) as e:
            raise ChainError(f"chain {self.chain}: undecodable Locked log ({e.__class__.__name__})") from None
        # (as sent first: the lower-casing only for a topic that is neither, as nodes send it)
        is_token = t0 == _LOCKED_TOKEN_TOPIC_HEX or (t0 != _LOCKED_TOPIC_HEX
                                                     and str(t0).lower() == _LOCKED_TOKEN_TOPIC_HEX)
        if (len(words) != 128 or len(data) != (64 if is_token else 32)
                or words[:24] != _ZERO24 or words[32:44] != _ZERO12 or (is_token and data[32:44] != _ZERO12)):
            raise ChainError(f"chain {self.chain}: undecodable Locked log (malformed words)")
        hexnum = raw.get("blockNumber")
        number = numbers.get(hexnum) if numbers is not None and isinstance(hexnum, str) else None
        if number is None:
            number = hex_int(hexnum, "block number")
        hexhash = raw.get("blockHash")
        block_hash = hashes.get(hexhash) if hashes is not None and isinstance(hexhash, str) else None
        if block_hash is None:
            block_hash = hex_bytes(hexhash, "block hash")
            if hashes is not None:
                hashes[hexhash] = block_hash
        index = raw.get("logIndex")  # (hex_int, inline: a catch-up decodes 10,000s)
        if type(index) is not str or index[:2] != "0x":
            raise ChainError("malformed log index in RPC answer")
        try:
            index = int(index, 16)
        except ValueError:
            raise ChainError("malformed log index in RPC answer") from None
        return LockedLog(
            number,
            block_hash,
            words[96:128],
            index,
            int.from_bytes(words[24:32], "big"),
            words[44:64],
            int.from_bytes(data[:32], "big"),
            words[64:96],
            raw,
            data[44:64] if is_token else None,
        )

    def is_collected(self, lg: LockedLog) -> bool:
        """The deposit came from ``collect``: its sender is the reference's deposit address."""
        return lg.sender == deposit_address(self.lock, lg.ref)

    async def _collected_payers(self, items: list[tuple[LockedLog, dict]]) -> dict[tuple[bytes, int], bytes]:
        """(tx, log index) -> payer of the collected deposits among ``items`` (a Locked log and
        its checked receipt): the verified funding transaction's sender, else ``NO_PAYER``."""
        hints: dict[tuple[bytes, int], tuple[LockedLog, bytes]] = {}
        for lg, receipt in items:
            if not self.is_collected(lg):
                continue
            hint = self._funding_hint(lg, receipt)
            hints[(lg.tx_hash, lg.log_index)] = (lg, hint)
        wanted = sorted({h for _, h in hints.values() if h != bytes(32)})
        if not wanted:
            return {k: NO_PAYER for k in hints}
        txs = await self.pool.request_many([("eth_getTransactionByHash", ["0x" + h.hex()]) for h in wanted])
        funding = dict(zip(wanted, txs))
        mined = sorted(h for h in wanted if isinstance(funding[h], dict) and funding[h].get("blockNumber"))
        receipts = dict(zip(mined, await self.pool.get_receipts(mined))) if mined else {}
        numbers = {hex_int(funding[h]["blockNumber"], "block number") for h in mined}
        headers = await self._headers(numbers)
        out = {}
        for key, (lg, hint) in hints.items():
            payer, why = self._verify_funding(lg, hint, funding.get(hint), receipts.get(hint), headers)
            if payer == NO_PAYER:
                log.warning("chain %s: collected deposit nonce %d (tx 0x%s) has no provable payer: %s; "
                            "it cannot be refunded and is kept if held", self.chain, lg.nonce, lg.tx_hash.hex(), why)
            out[key] = payer
        return out

    def _funding_hint(self, lg: LockedLog, receipt: dict) -> bytes:
        """The ``fundingTx`` of the ``Collected`` log of ``lg``'s nonce in the same receipt."""
        nonce_topic = "0x" + lg.nonce.to_bytes(32, "big").hex()
        for raw in receipt.get("logs") or []:
            topics = [str(t).lower() for t in raw.get("topics") or []]
            if (str(raw.get("address", "")).lower() == self._lock_hex and len(topics) == 2
                    and topics[0] == _COLLECTED_TOPIC_HEX and topics[1] == nonce_topic):
                data = hex_bytes(raw.get("data"), "log data")
                if len(data) != 32:
                    raise ChainError(f"chain {self.chain}: undecodable Collected log in tx 0x{lg.tx_hash.hex()}")
                return data
        raise ReorgDetected(f"chain {self.chain}: collect tx 0x{lg.tx_hash.hex()} has no Collected log for nonce "
                            f"{lg.nonce} (inconsistent endpoint)")

    def _verify_funding(self, lg: LockedLog, hint: bytes, tx: Any, receipt: Any,
                        headers: dict[int, BlockHeader | None]) -> tuple[bytes, str]:
        """(payer, why not) of a collected deposit: raises only for what this endpoint cannot
        answer for sure (retryable); a hint that is provably not a funding gives ``NO_PAYER``."""
        if hint == bytes(32):
            return NO_PAYER, "no funding transaction named (internal transfer)"
        where = f"chain {self.chain}: funding tx 0x{hint.hex()} of collect 0x{lg.tx_hash.hex()}"
        if not isinstance(tx, dict):
            return NO_PAYER, "the named funding transaction does not exist"
        if not tx.get("blockNumber"):
            return NO_PAYER, "the named funding transaction is not mined"
        if lg.token is None and str(tx.get("to") or "").lower() != "0x" + lg.sender.hex():
            return NO_PAYER, "the named transaction was not sent to the deposit address"
        if lg.token is None and hex_int(tx.get("value"), "value") <= 0:
            return NO_PAYER, "the named transaction carries no value"
        number = hex_int(tx.get("blockNumber"), "block number")
        if number > lg.block_number:
            return NO_PAYER, "the named transaction is later than the collect"
        if not isinstance(receipt, dict):
            raise ChainError(f"{where}: transaction known but no receipt on this endpoint")
        hdr = headers.get(number)
        if hdr is None:
            raise ChainError(f"{where}: block {number} not available (lagging endpoint?)")
        tx_block = hex_bytes(tx.get("blockHash"), "block hash")
        if hex_bytes(receipt.get("blockHash"), "block hash") != tx_block or tx_block != hdr.hash:
            raise ReorgDetected(f"{where}: not in the canonical block {number} (inconsistent endpoint)")
        if hex_int(receipt.get("status"), "status") != 1:
            return NO_PAYER, "the named funding transaction failed"
        if lg.token is not None:
            payer = self._token_payer(lg, receipt)
            if payer is None:
                return NO_PAYER, "the named transaction has no Transfer of the token to the deposit address"
            return b"\x00" * 12 + payer, ""
        sender = hex_bytes(tx.get("from"), "sender")
        if len(sender) != 20:
            raise ChainError(f"{where}: malformed sender")
        return b"\x00" * 12 + sender, ""

    def _token_payer(self, lg: LockedLog, receipt: dict) -> bytes | None:
        """The ``from`` of the (last) non-zero ``Transfer`` of ``lg``'s token to its deposit address
        in ``receipt``'s logs, or None."""
        token_hex = "0x" + bytes(lg.token or b"").hex()
        to_topic = "0x" + (b"\x00" * 12 + lg.sender).hex()
        payer = None
        for raw in receipt.get("logs") or []:
            topics = [str(t).lower() for t in raw.get("topics") or []]
            if (str(raw.get("address", "")).lower() == token_hex and len(topics) == 3
                    and topics[0] == _TRANSFER_TOPIC_HEX and topics[2] == to_topic):
                frm = hex_bytes(topics[1], "topic")
                data = hex_bytes(raw.get("data"), "log data")
                if len(frm) == 32 and not any(frm[:12]) and any(frm) and len(data) == 32 and any(data):
                    payer = frm[12:]
        return payer

    def _observation(self, lg: LockedLog, timestamp: int, payer: bytes | None = None) -> Observation | None:
        """``payer`` is the verified payer of a collected deposit (None: not verified, which
        only ``pending_deposits`` does: a collected deposit then shows no payer)."""
        if lg.amount <= 0:  # the contract's minAmount forbids it; never credit nothing
            log.warning("chain %s: ignoring zero-amount deposit nonce %d", self.chain, lg.nonce)
            return None
        symbol = self.token
        if lg.token is not None:
            symbol = self.tokens.get(lg.token)
            if symbol is None:
                log.warning("chain %s: deposit nonce %d (tx 0x%s) is of the unconfigured token 0x%s: not a deposit "
                            "(never credited; it stays in the lock)", self.chain, lg.nonce, lg.tx_hash.hex(),
                            lg.token.hex())
                return None
        if payer is None:
            payer = NO_PAYER if self.is_collected(lg) else b"\x00" * 12 + lg.sender
        # Observation's checks hold by construction (Observation.unchecked): source is the
        # 32-byte source id, ref a 32-byte word, nonce a uint64 word, amount > 0 (above); the
        # payer is 32 bytes by each path that makes it, checked here as the one computed value
        make = Observation.unchecked if len(payer) == 32 and len(self.source) == 32 else Observation
        return make(self.chain, self.source, lg.nonce, lg.tx_hash, lg.log_index, lg.block_number, lg.block_hash,
                    timestamp, symbol, lg.amount, payer, lg.ref)

    async def _headers(self, numbers: Iterable[int]) -> dict[int, BlockHeader | None]:
        nums = sorted(numbers)
        return dict(zip(nums, await self.pool.get_blocks(nums)))


def token_symbols(chain: str, tokens: dict[str, PayableToken] | None) -> dict[bytes, str]:
    """20-byte ERC-20 contract -> symbol of the chain's configured non-native tokens."""
    out: dict[bytes, str] = {}
    for symbol, t in (tokens or {}).items():
        if t.native or t.chain != chain:
            continue
        if not t.contract:
            raise ConfigError(f"chain {chain}: token {symbol} has no contract address")
        out[bytes.fromhex(t.contract[2:])] = symbol
    return out
