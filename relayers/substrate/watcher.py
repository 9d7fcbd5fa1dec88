"""Watcher of payments to the committee's multisig account on one Asset Hub chain
(implements ``bridge.chains.Watcher``).

Finality is the chain's own: ``chain_getFinalizedHead`` (GRANDPA on the relay chain for
Polkadot Hub and Kusama Asset Hub). ``fetch_deposits(start, end)`` walks *every* block number
of the range by ``chain_getBlockHash(n)`` -- finalized-head notifications may skip numbers,
so nothing here relies on them -- and checks that each block's parent is the block read
before it (else ``ReorgDetected``, retryable). What counts as a payment is in ``decode.py``.

Identifiers (all derived from chain facts, identical on every signer):

* ``source`` = ``source_id("substrate", "<genesis hash hex>/<token>", committee account id)``.
  The genesis hash alone identifies a real chain; the token is added because chopsticks
  reports the same fixed genesis hash (``0x4545..45``) for every chain it runs from a chain
  spec, and the devnet runs two such chains with the same committee account.
* ``sequence`` = ``(block_number << 16) | extrinsic_index``: unique and deterministic per
  deposit (one deposit per extrinsic at most), fits the settlement contract's ``uint64`` for
  block numbers below 2**48. It is not dense, which only costs the replay bitmap some gas.
* ``tx_id`` = block hash (32 bytes) ++ extrinsic index (4 bytes, big endian). Substrate
  nodes keep no index from extrinsic hash to block, so ``reobserve`` needs the block; the
  extrinsic hash is not unique either (an identical unsigned or immortal extrinsic may be
  included twice).
* ``event_index`` = the extrinsic index; ``timestamp`` = the block's ``Timestamp.set`` in
  seconds (floored); ``payer`` = the signer's (or proxied ``real`` account's) public key.

Only *candidates* are decoded: extrinsics whose encoded bytes carry the committee's 32-byte
account id (every payment does: a ``MultiAddress::Id`` dest is those bytes verbatim), plus the
block's inherents until ``Timestamp.set`` when a candidate pays. Whatever else a block holds
is never decoded, so an extrinsic the SDK cannot read (scalecodec 1.2.12 recurses out on
calls nested about 60 deep, which the runtime accepts up to 256) cannot stop the chain's
deposits. A candidate the SDK cannot decode is skipped too, never a stall, and alerted once
per watcher: ``creditbridge_watcher_undecodable_extrinsics_total{chain,candidate}`` with
``candidate="true"`` and an ERROR log (block, hash, index, payer, amount) when its own events
show a ``Balances.Transfer`` to the committee -- those funds are NOT credited and stay in
custody unattributed until an operator refunds them -- else ``candidate="false"`` and a
warning (it names the committee but moved nothing to it). After such a failure the client
opens a fresh connection (a failed decode may leave the SDK's runtime state half-built).
The events of a block are one SCALE vector: if they cannot be decoded, the block cannot be
read (``DecodeFailure``, not retryable), as before.

What counts as a deposit (``decode.py``): call-based payments (a batch with the reference as a
remark), the signers' collections of per-payment accounts (``collect.py``; payer = the payer
the collection's remark names), and unattributed transfers to the committee (reference = 32
zero bytes: refunded by the signers after a delay); top-ups (``decode.TOP_UP_REMARK``) are not.

Amounts are base units of the deposit's token, whatever its decimals: the chain's native token
(``Balances``; the configured decimals, DOT 10, KSM 12, matter to pricing only) or a
``pallet_assets`` asset (issue 15). ``tokens`` (the chain's non-native ``PayableToken``s, symbol ->
token) maps asset ids to symbols: ``Observation.token`` is the symbol. A confirmed transfer to
the committee of an asset that is no configured token is **not** a deposit: it has no symbol,
price, minimum or release path, and refunding arbitrary assets would have the committee sign
and pay for transfers of whatever asset anyone sends (frozen, non-sufficient, worthless). It is
reported once per extrinsic (ERROR log with block, extrinsic, asset, amount, payer, reference;
``creditbridge_watcher_unconfigured_asset_deposits_total{chain,asset_id}``) and stays in custody
until an operator configures the asset (the deposit is then seen on a rescan) or returns it.
"""

from __future__ import annotations

import functools
import logging
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import BlockNotFound, SubstrateRequestException

from bridge.chains import PENDING_LOOKBACK, BlockRef, WatcherDefaults
from bridge.config import PayableToken, SubstrateChainConfig
from bridge.errors import ChainError, ConfigError, ReorgDetected
from bridge.hashing import source_id
from bridge.types import Observation
from relayers.substrate.client import CONNECTION_ERRORS, DecodeFailure, SubstrateClient
from relayers.substrate.decode import (
    EVENTS_STORAGE_KEY,
    PaymentCall,
    confirmed_amount,
    decode_events,
    decode_extrinsic,
    events_of,
    find_collection,
    find_payment,
    is_candidate,
    is_signed,
    raw_extrinsic,
    timestamp_ms,
    transfers_to,
)
from relayers.substrate.multisig import committee_account_id, payment_account
from relayers.substrate.networks import check_network

log = logging.getLogger(__name__)

TX_ID_LEN = 36
MAX_EXTRINSIC_INDEX = (1 << 16) - 1
MAX_BLOCK_NUMBER = (1 << 48) - 1
PENDING_MAX_BLOCKS = 32  # how far above the finalized head pending_deposits looks


@dataclass(frozen=True)
class Paid:
    index: int  # extrinsic index in its block
    call: PaymentCall
    amount: int  # confirmed by Balances.Transfer events


@dataclass(frozen=True)
class BlockScan:
    number: int
    hash: bytes
    parent: bytes
    timestamp: int  # seconds
    paid: tuple[Paid, ...]


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _bytes32(value: Any, what: str) -> bytes:
    try:
        b = bytes.fromhex(value[2:]) if isinstance(value, str) and value[:2] == "0x" else b""
    except ValueError:
        b = b""
    if len(b) != 32:
        raise ChainError(f"malformed {what} from node: {str(value)[:80]!r}")
    return b


def _number(header: Any) -> int:
    try:
        n = header["number"]
        return int(n, 16) if isinstance(n, str) else int(n)
    except (KeyError, TypeError, ValueError):
        raise ChainError("malformed block header from node") from None


def tx_id_of(block_hash: bytes, index: int) -> bytes:
    return block_hash + index.to_bytes(4, "big")


def sequence_of(block_number: int, index: int) -> int:
    if not 0 <= index <= MAX_EXTRINSIC_INDEX or not 0 <= block_number <= MAX_BLOCK_NUMBER:
        raise ChainError(f"block {block_number} extrinsic {index} does not fit a deposit sequence", retryable=False)
    return (block_number << 16) | index


_COUNTERS: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _undecodable_counter(registry: Any):
    c = _COUNTERS.get(registry)
    if c is None:
        from prometheus_client import Counter

        c = Counter("creditbridge_watcher_undecodable_extrinsics_total",
                    "Extrinsics naming the committee that the SDK could not decode (skipped); candidate=true: "
                    "they moved funds to the committee, which stay unattributed in custody",
                    ["chain", "candidate"], registry=registry)
        _COUNTERS[registry] = c
    return c


def _unconfigured_counter(registry: Any):
    c = _UNCONFIGURED.get(registry)
    if c is None:
        from prometheus_client import Counter

        c = Counter("creditbridge_watcher_unconfigured_asset_deposits_total",
                    "Confirmed transfers to the committee of pallet_assets assets that are no configured token: "
                    "not credited, kept in custody for an operator", ["chain", "asset_id"], registry=registry)
        _UNCONFIGURED[registry] = c
    return c


_UNCONFIGURED: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def asset_symbols(chain: str, tokens: dict[str, PayableToken] | None) -> dict[int, str]:
    """asset id -> symbol of a chain's non-native ``pallet_assets`` tokens (``settings.payable_tokens()``)."""
    out: dict[int, str] = {}
    for symbol, t in (tokens or {}).items():
        if t.native or t.chain != chain or t.asset_id is None:
            continue
        if t.asset_id in out:
            raise ConfigError(f"chain {chain}: asset {t.asset_id} is configured as {out[t.asset_id]} and {symbol}")
        out[t.asset_id] = symbol
    return out


class SubstrateWatcher(WatcherDefaults):
    """Reads final payments to ``cfg.committee``'s multisig account on one Asset Hub chain."""

    def __init__(self, cfg: SubstrateChainConfig, client: SubstrateClient | None = None, *,
                 registry: Any = None, tokens: dict[str, PayableToken] | None = None) -> None:
        self.cfg = cfg
        self.chain = cfg.name
        self.token = cfg.token
        # the chain's non-native tokens (symbol -> token): pallet_assets asset id -> symbol
        self.assets: dict[int, str] = asset_symbols(cfg.name, tokens)
        self.committee = committee_account_id(cfg.committee)
        if cfg.genesis_hash:
            check_network(cfg.name, cfg.genesis_hash, cfg.token, cfg.ss58_prefix)
        self.client = client or SubstrateClient(
            cfg.name, cfg.rpc, timeout=cfg.request_timeout, ss58_format=cfg.ss58_prefix, genesis_hash=cfg.genesis_hash
        )
        self._source: bytes | None = None
        self._undecodable = _undecodable_counter(registry) if registry is not None else None
        self._unconfigured = _unconfigured_counter(registry) if registry is not None else None
        self._reported: OrderedDict[tuple[bytes, int], None] = OrderedDict()  # touched on the client's thread

    # ------------------------------------------------------------------ identity
    @property
    def source(self) -> bytes:
        """The deposit stream id; known once a node told the genesis hash (or configured)."""
        if self._source is None:
            genesis = self.cfg.genesis_hash or self.client.genesis
            if genesis is None:
                raise ChainError(f"chain {self.chain}: genesis hash not known yet (no connection)")
            check_network(self.chain, genesis, self.token, self.cfg.ss58_prefix)
            self._source = source_id("substrate", f"{genesis.lower()}/{self.token}", self.committee)
        return self._source

    # ------------------------------------------------------------------ Watcher protocol
    async def finalized_height(self) -> int:
        return await self.client.call(self._final_number, "finalized head")

    async def head_height(self) -> int:
        """The best block's number (operators' lag view: ``creditbridge status``)."""
        _, head = await self.client.call(self._final_and_head, "heads")
        return head

    async def fetch_deposits(self, start: int, end: int) -> list[Observation]:
        if start < 0:
            raise ValueError("start must be >= 0")
        out: list[Observation] = []
        prev: BlockScan | None = None
        for n in range(start, end + 1):
            scan = await self.client.call(functools.partial(self._scan_number, n), f"block {n}")
            if prev is not None and scan.parent != prev.hash:
                raise ReorgDetected(f"chain {self.chain}: block {n}'s parent is not block {n - 1} as read "
                                    f"(0x{prev.hash.hex()[:12]}..): the chain changed while reading")
            out.extend(self._observations(scan))
            prev = scan
        return out

    async def reobserve(self, tx_id: bytes) -> list[Observation]:
        """The payment of extrinsic ``index`` of block ``hash``; ``[]`` when the node proves there
        is none (the canonical final block at that height has another hash, or the extrinsic is
        no confirmed payment), ChainError (retryable) when it cannot tell (block unknown to this
        node, not final here yet, a timeout)."""
        if len(tx_id) != TX_ID_LEN:
            return []
        block_hash, index = bytes(tx_id[:32]), int.from_bytes(tx_id[32:], "big")
        scan = await self.client.call(functools.partial(self._scan_final, _hex(block_hash)), "reobserve")
        if scan is None:
            return []
        return [o for o in self._observations(scan) if o.event_index == index]

    async def block_ref(self, number: int) -> BlockRef:
        h = await self.client.call(functools.partial(self._hash_at, number), f"block hash {number}")
        if h is None:
            raise ChainError(f"chain {self.chain}: block {number} is not available yet")
        return BlockRef(number, h)

    # ------------------------------------------------------------------ optional abilities
    async def pending_deposits(self, after: int | None = None) -> list[Observation]:
        """Payments in the best chain not stored as final yet (``WatcherDefaults``; for a
        payment's ``seen`` state only; never attested): at most ``PENDING_MAX_BLOCKS`` blocks
        above the finalized head."""
        final, head = await self.client.call(self._final_and_head, "heads")
        out: list[Observation] = []
        first = final + 1 if after is None else max(min(final, after) + 1, final + 1 - PENDING_LOOKBACK)
        for n in range(first, min(head, final + PENDING_MAX_BLOCKS) + 1):
            try:
                scan = await self.client.call(functools.partial(self._scan_number, n), f"block {n}")
            except ChainError as e:
                if e.retryable:
                    break  # the best chain moved; best effort
                raise
            out.extend(self._observations(scan))
        return out

    async def block_time(self, number: int) -> int | None:
        """``Timestamp.set`` of the canonical block ``number`` in seconds (None for genesis)."""
        ms = await self.client.call(functools.partial(self._block_time_ms, number), f"block time {number}")
        return None if ms is None else ms // 1000

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ internals
    def _payment_account(self, reference: bytes) -> bytes:
        return payment_account(self.cfg.committee, reference)

    def _symbol(self, asset_id: int | None) -> str | None:
        return self.token if asset_id is None else self.assets.get(asset_id)

    def _observations(self, scan: BlockScan) -> list[Observation]:
        return [
            Observation(
                chain=self.chain,
                source=self.source,
                sequence=sequence_of(scan.number, p.index),
                tx_id=tx_id_of(scan.hash, p.index),
                event_index=p.index,
                block_number=scan.number,
                block_hash=scan.hash,
                timestamp=scan.timestamp,
                token=self._symbol(p.call.asset_id),
                amount=p.amount,
                payer=p.call.payer,
                reference=p.call.reference,
            )
            for p in scan.paid if self._symbol(p.call.asset_id) is not None
        ]

    # --- these run on the client's thread, with its SubstrateInterface ---------------------------
    def _final_number(self, si: SubstrateInterface) -> int:
        h = si.rpc_request("chain_getFinalizedHead", []).get("result")
        _bytes32(h, "finalized head")
        header = si.rpc_request("chain_getHeader", [h]).get("result")
        if header is None:
            raise ChainError(f"chain {self.chain}: finalized head {h} has no header")
        return _number(header)

    def _final_and_head(self, si: SubstrateInterface) -> tuple[int, int]:
        final = self._final_number(si)
        header = si.rpc_request("chain_getHeader", []).get("result")
        return final, (_number(header) if header is not None else final)

    def _hash_at(self, number: int, si: SubstrateInterface) -> bytes | None:
        h = si.rpc_request("chain_getBlockHash", [number]).get("result")
        return None if h is None else _bytes32(h, "block hash")

    def _block_time_ms(self, number: int, si: SubstrateInterface) -> int | None:
        h = self._hash_at(number, si)
        if h is None:
            raise ChainError(f"chain {self.chain}: block {number} is not available yet")
        if number == 0:
            return None
        res = si.rpc_request("chain_getBlock", [_hex(h)]).get("result")
        if res is None:
            raise ChainError(f"chain {self.chain}: block {number} vanished while reading")
        self._init_runtime(si, _hex(h), number)
        try:
            raws = [raw_extrinsic(x) for x in res["block"]["extrinsics"]]
        except (KeyError, TypeError, ValueError):
            raise ChainError(f"chain {self.chain}: malformed block {number}") from None
        return self._timestamp(si, raws, number)

    def _init_runtime(self, si: SubstrateInterface, block_hash: str, number: int) -> None:
        try:
            si.init_runtime(block_hash=block_hash)
        except (BlockNotFound, SubstrateRequestException, *CONNECTION_ERRORS):
            raise  # converted by the client (retryable)
        except Exception as e:  # metadata or type registry the SDK cannot handle
            raise DecodeFailure(f"chain {self.chain}: cannot load the runtime of block {number} "
                             f"({e.__class__.__name__}: {str(e)[:120]})", retryable=False) from None

    def _scan_number(self, number: int, si: SubstrateInterface) -> BlockScan:
        h = self._hash_at(number, si)
        if h is None:
            raise ChainError(f"chain {self.chain}: block {number} is not available yet")
        scan = self._scan(si, _hex(h))
        if scan is None or scan.number != number:
            raise ChainError(f"chain {self.chain}: block {number} (0x{h.hex()[:12]}..) changed while reading")
        return scan

    def _scan_final(self, block_hash: str, si: SubstrateInterface) -> BlockScan | None:
        """The block, if it is final and canonical (for ``reobserve``); None when the node proves
        it is not (another canonical final block at its height); ChainError when it cannot tell."""
        header = si.rpc_request("chain_getHeader", [block_hash]).get("result")
        if header is None:
            raise ChainError(f"chain {self.chain}: block {block_hash} is unknown to this node (not synced or pruned?)")
        number = _number(header)
        final = self._final_number(si)
        if number > final:
            raise ChainError(f"chain {self.chain}: block {number} is not final on this node yet (final: {final})")
        canonical = si.rpc_request("chain_getBlockHash", [number]).get("result")
        if not isinstance(canonical, str):
            raise ChainError(f"chain {self.chain}: no canonical hash for final block {number} on this node")
        if canonical.lower() != block_hash:
            return None
        scan = self._scan(si, block_hash)
        if scan is None:
            raise ChainError(f"chain {self.chain}: block {block_hash} body not available on this node")
        return scan

    def _scan(self, si: SubstrateInterface, block_hash: str) -> BlockScan | None:
        res = si.rpc_request("chain_getBlock", [block_hash]).get("result")
        if res is None:
            return None
        try:
            block = res["block"]
            header, raw_extrinsics = block["header"], block["extrinsics"]
            number = _number(header)
            parent = _bytes32(header["parentHash"], "parent hash")
            raws = [raw_extrinsic(x) for x in raw_extrinsics]
        except (KeyError, TypeError, ValueError):
            raise ChainError(f"chain {self.chain}: malformed block {block_hash}") from None
        h = _bytes32(block_hash, "block hash")
        if number == 0:  # a genesis block has no extrinsics
            return BlockScan(0, h, parent, 0, ())
        # only candidates (extrinsics carrying the committee's account id) are decoded: what
        # the SDK cannot read elsewhere in the block cannot stop this chain's deposits
        candidates = [i for i, raw in enumerate(raws) if is_candidate(raw, self.committee)]
        if not candidates:
            return BlockScan(number, h, parent, 0, ())
        self._init_runtime(si, block_hash, number)  # metadata of the runtime that built the block
        calls: list[tuple[int, PaymentCall]] = []
        unreadable: list[tuple[int, str]] = []
        for i in candidates:
            try:
                x = decode_extrinsic(si.runtime_config, si.metadata, raws[i])
            except Exception as e:  # scalecodec's many types, RecursionError on deep nesting: reported below
                unreadable.append((i, f"{e.__class__.__name__}: {str(e)[:120]}"))
                continue
            p = find_payment(x, self.committee) or find_collection(x, self.committee, self._payment_account)
            if p is not None:
                calls.append((i, p))
        if unreadable:
            self.client.drop_after_call()  # a fresh SDK runtime for the next call
        if not calls and not unreadable:
            return BlockScan(number, h, parent, 0, ())
        raw_events = si.rpc_request("state_getStorage", [EVENTS_STORAGE_KEY, block_hash]).get("result")
        try:
            events = decode_events(si.runtime_config, si.metadata, raw_events)
        except Exception as e:  # as above; events are one SCALE vector: all or nothing
            raise DecodeFailure(f"chain {self.chain}: cannot decode the events of block {number} "
                                f"({e.__class__.__name__})", retryable=False) from None
        for i, why in unreadable:
            self._report_unreadable(number, h, i, why, events_of(events, i))
        if not calls:
            return BlockScan(number, h, parent, 0, ())
        ts = self._timestamp(si, raws, number)
        paid = []
        for i, call in calls:
            amount = confirmed_amount(call, events_of(events, i), self.committee)
            if amount > 0 and call.asset_id is not None and call.asset_id not in self.assets:
                self._report_unconfigured(number, h, i, call, amount)
            elif amount > 0:
                paid.append(Paid(i, call, amount))
            else:
                log.debug("chain %s: block %d extrinsic %d (%s to the committee) failed or moved nothing: ignored",
                          self.chain, number, i, call.kind)
        return BlockScan(number, h, parent, ts // 1000, tuple(paid))

    def _timestamp(self, si: SubstrateInterface, raws: list[bytes], number: int) -> int:
        """The block's ``Timestamp.set`` (ms): an inherent near the start, decoded until found."""
        for raw in raws:
            try:
                ms = timestamp_ms([decode_extrinsic(si.runtime_config, si.metadata, raw)])
            except Exception as e:  # scalecodec's many exception types
                if is_signed(raw):
                    continue  # a signed extrinsic is never the timestamp inherent
                raise DecodeFailure(f"chain {self.chain}: cannot decode the inherents of block {number} "
                                    f"({e.__class__.__name__})", retryable=False) from None
            if ms is not None:
                return ms
        raise ChainError(f"chain {self.chain}: block {number} has no Timestamp.set", retryable=False)

    def _report_unconfigured(self, number: int, block_hash: bytes, index: int, call: PaymentCall, amount: int) -> None:
        """A confirmed transfer to the committee of a ``pallet_assets`` asset that is no configured
        token of this chain: no deposit (it has no symbol, price, minimum or refund path); reported
        once (ERROR log, ``creditbridge_watcher_unconfigured_asset_deposits_total{chain,asset_id}``)
        for an operator, who may configure the asset or return it by hand."""
        key = (block_hash, index)
        if key in self._reported:
            return
        self._reported[key] = None
        while len(self._reported) > 4096:
            self._reported.popitem(last=False)
        log.error("chain %s: block %d (0x%s) extrinsic %d moved %d of asset %d (not a configured token) to the "
                  "committee from 0x%s (reference 0x%s): NOT credited; it stays in custody until an operator "
                  "returns it", self.chain, number, block_hash.hex(), index, amount, call.asset_id,
                  call.payer.hex(), call.reference.hex())
        if self._unconfigured is not None:
            self._unconfigured.labels(chain=self.chain, asset_id=str(call.asset_id)).inc()

    def _report_unreadable(self, number: int, block_hash: bytes, index: int, why: str, events: list[dict]) -> None:
        """Alert on a candidate the SDK cannot decode (it is skipped, see the module doc)."""
        key = (block_hash, index)
        if key in self._reported:
            return  # the same block is read again (pending, then final; reobserve)
        self._reported[key] = None
        while len(self._reported) > 4096:
            self._reported.popitem(last=False)
        moved = transfers_to(events, self.committee)
        if moved:
            total = sum(a for _, a in moved)
            payers = ", ".join(sorted({"0x" + f.hex() if f else "?" for f, _ in moved}))
            log.error("chain %s: block %d (0x%s) extrinsic %d moved %d to the committee from %s but cannot be "
                      "decoded (%s): NOT credited; the funds stay in custody, unattributed, until an operator "
                      "refunds them", self.chain, number, block_hash.hex(), index, total, payers, why)
        else:
            log.warning("chain %s: block %d (0x%s) extrinsic %d names the committee but cannot be decoded (%s); "
                        "it moved nothing to the committee: skipped", self.chain, number, block_hash.hex(), index, why)
        if self._undecodable is not None:
            self._undecodable.labels(chain=self.chain, candidate="true" if moved else "false").inc()
