"""Collecting per-payment accounts into the committee account (one signer's side, issue 14).

A payer with any wallet sends a plain transfer to the payment's own account,
``multisig.payment_account(committee, reference)``: the ``pallet_multisig`` account of the
committee members plus a tag of the reference (nobody holds the tag's key), threshold ``t``.
Each signer runs a :class:`PaymentCollector` that

1. keeps the payments to watch (``bridge.payments.feed.WatchedReferences``, refreshed from the
   gateway's reference feed; every address is recomputed here from the reference, so the
   gateway cannot redirect funds; while the feed cannot be read, the step does nothing, so no
   block is scanned without the payments listed by then);
2. scans *finalized* blocks in order for ``Balances.Transfer`` events touching a watched
   account (the raw event bytes are searched for the account id first; only blocks that
   contain one are decoded) and remembers, per account, the earliest transfer *into* it since
   the last transfer *out of* it (its last collection): that transfer's sender is the payer;
3. reads each funded account's free balance at the finalized head: 0 -> nothing to do (never
   approve a sweep of an empty account); below the chain's ``min_refund`` -> kept and reported
   as uncollected dust (WARNING once per funding, gauge
   ``creditbridge_collector_uncollected_dust{chain}``); else it drives its own approval of
   the collection with the refunder's multisig machinery (``refund.MultisigRefunder.step`` with
   a ``refund.CollectionOrder``): call ``Utility.batch_all([Balances.transfer_all(committee,
   keep_alive=false), System.remark_with_event(reference ++ payer)])``. The first approver
   creates the operation, later ones approve its timepoint with the call, and the approval that
   brings it to t executes (refund.py, rule 2: approvals landing in one block execute there).
   All honest signers derive the same payer from the same final blocks, hence the same call
   hash.

The executed collection is the deposit the watcher sees (``decode.find_collection``).

**Tokens** (issue 15): with ``tokens`` (the chain's ``pallet_assets`` tokens) the collector
tracks each (account, token) on its own, from ``Balances.Transfer`` and ``Assets.Transferred``
events: a payer of a USDT payment sends a plain ``Assets.transfer_keep_alive(1984, account,
amount)``, the account then holds only USDT (the asset is sufficient: no native balance needed;
the approving members pay every fee, the executed call costs the account nothing). Its
collection is ``Utility.batch_all([Assets.transfer(id, committee, balance), System.remark_with_event(
reference ++ payer)])``: ``pallet_assets`` (spec 900) has no ``transfer_all``, so the call names
the balance read at the finalized head, which every honest member reads alike; a changed
balance is a new round (its release id includes the asset and amount). One token per
collection: a payment account that received USDC for a USDT payment is collected twice, two
deposits (the deposit rule refunds the USDC). Dust floor of an asset: its token's ``min_refund``
(at least 1). Assets that are no configured token are
not collected (WARNING once). Limit: an asset transfer into the account that lands after the
balance was read and before the collection executed stays behind with no known payer (the
"payer unknown" WARNING), until an operator looks.

Restart safety: the collector keeps its state in memory. After a restart it rescans from
``start_block`` (default: ``lookback_blocks`` below the finalized head, not below the chain's
configured ``start_block``) and rebuilds the
same funding facts; the refunder's rules then find an operation this member already approved
(nothing submitted again) or its execution (done). A collection is never executed twice for
the same funds: ``transfer_all`` moves everything, the next round starts only with a new
transfer into the account, and an empty account is never approved.

Limits (reported, never guessed): funds that reached a watched account without a
``Balances.Transfer`` event inside the scanned range (older than the rescan, or minted by XCM)
have no known payer: WARNING once, not collected, until an operator looks. That check reads
every watched account's balance in every token, so it runs once per ``unknown_check_seconds``
(it ran every step: one read per payment and token each second, holding the SDK lock the
refunder needs); balances are read ``BALANCES_PER_REQUEST`` keys to a ``state_queryStorageAt``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable

from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import BlockNotFound, SubstrateRequestException
from substrateinterface.storage import StorageKey

from bridge.config import PayableToken, SubstrateChainConfig
from bridge.errors import BridgeError, ChainError
from bridge.payments.feed import ReferenceFeed, WatchedReferences
from relayers.substrate.client import CONNECTION_ERRORS, DecodeFailure
from relayers.substrate.decode import EVENTS_STORAGE_KEY, account_bytes, blake2_256, decode_events
from relayers.substrate.multisig import payment_account, payment_signatories, ss58
from relayers.substrate.refund import CollectionOrder, MultisigRefunder, Progress
from relayers.substrate.watcher import asset_symbols

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_BLOCKS = 14_400  # ~1 day of 6 s blocks rescanned after a start
SCAN_PER_STEP = 256  # finalized blocks scanned at most per step (the rest next step)
BALANCES_PER_REQUEST = 256  # storage keys read per state_queryStorageAt request
# how often the balances of watched accounts without a known funding are read (a WARNING-only
# check of every watched payment: each step, it cost one read per payment and token)
UNKNOWN_CHECK_SECONDS = 60.0
COLLECT_DOMAIN = b"creditbridge/collect/v1"


Key = tuple[bytes, "int | None"]  # (payment account, pallet_assets asset id or None for the native token)


@dataclass(frozen=True)
class Funding:
    block: int  # finalized block of the earliest transfer in since the last collection
    payer: bytes  # its sender (32-byte account id)


@dataclass
class Round:
    order: CollectionOrder
    progress: Progress


_GAUGES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _dust_gauge(registry: Any):
    g = _GAUGES.get(registry)
    if g is None:
        from prometheus_client import Gauge

        g = Gauge("creditbridge_collector_uncollected_dust", "Base units resting at per-payment accounts below "
                  "the chain's min_refund: not collected (kept, reported)", ["chain"], registry=registry)
        _GAUGES[registry] = g
    return g


class PaymentCollector:
    """One signer's collector of per-payment accounts on one Asset Hub chain."""

    def __init__(self, cfg: SubstrateChainConfig, refunder: MultisigRefunder, feed: ReferenceFeed | None, *,
                 registry: Any = None, start_block: int | None = None,
                 lookback_blocks: int = DEFAULT_LOOKBACK_BLOCKS, poll_interval: float = 3.0,
                 clock: Callable[[], float] = time.time, tokens: dict[str, PayableToken] | None = None,
                 unknown_check_seconds: float = UNKNOWN_CHECK_SECONDS) -> None:
        self.cfg = cfg
        # the chain's pallet_assets tokens (issue 15): asset id -> symbol; each (account, token) is
        # funded and collected on its own (one token per collection: one deposit per extrinsic)
        self.assets: dict[int, str] = asset_symbols(cfg.name, tokens)
        # dust floor of an asset collection: the token's min_refund (base units), at least 1
        self.asset_min = {a: max(int(getattr((tokens or {})[sym], "min_refund", 0) or 0), 1)
                          for a, sym in self.assets.items()}
        self.chain = cfg.name
        self.refunder = refunder  # shared with the node's refunds: one nonce sequence per member key
        self.client = refunder.client
        self.committee = refunder.committee
        self.me = refunder.me
        self.min_collect = max(cfg.min_refund, 1)
        self.watched = WatchedReferences(cfg.name, feed if feed is not None else _NoFeed(),
                                         lambda r: payment_account(cfg.committee, r), clock=clock)
        self.has_feed = feed is not None
        self.cursor = start_block
        self.lookback_blocks = lookback_blocks
        self.poll_interval = poll_interval
        # keys are (payment account, asset id or None for the native token)
        self.funded: dict[Key, Funding] = {}
        self.rounds: dict[Key, Round] = {}
        self.dust: dict[Key, int] = {}  # balance below min_refund (reported)
        self._warned: set[tuple[bytes, int | None, str]] = set()
        self._feed_down = False  # warned once per outage
        self._dust_gauge = _dust_gauge(registry) if registry is not None else None
        self.clock = clock
        self.unknown_check_seconds = unknown_check_seconds
        self._unknown_checked = float("-inf")

    # ------------------------------------------------------------------ running
    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except BridgeError as e:
                log.warning("chain %s: collector step failed (%s); retried", self.chain, e)
            await asyncio.sleep(self.poll_interval)

    async def step(self) -> None:
        """Read the finalized head, refresh the watched payments, scan the new final blocks up to
        that head, then advance every collection. The head is read *before* the feed: a payment
        funded in a block at or below it was created before that block, so before the feed read,
        and is listed (read the other way round, a payment created and paid between the two reads
        would have its block scanned without it, and its funding passed over for good)."""
        final, final_hash = await self.client.call(self._final, "finalized head")
        if self.has_feed:
            try:
                await self.watched.refresh()
            except BridgeError as e:
                # the gateway is trusted for liveness only: without a fresh list, new blocks are not
                # scanned (a funding of a payment not listed yet would be passed over): wait for it
                log.log(logging.DEBUG if self._feed_down else logging.WARNING,
                        "chain %s: reference feed unavailable (%s); collections wait", self.chain, e)
                self._feed_down = True
                return
            if self._feed_down:
                log.info("chain %s: reference feed readable again; collections resume", self.chain)
                self._feed_down = False
        if self.cursor is None:
            self.cursor = max(self.cfg.start_block, final - self.lookback_blocks, 0)
        end = min(final, self.cursor + SCAN_PER_STEP - 1)
        if self.cursor <= end and len(self.watched):
            accounts = self.watched.addresses()
            for n, account, asset, frm, to in await self.client.call(
                    functools.partial(self._transfers, set(accounts), self.cursor, end), "collector scan"):
                key = (account, asset)
                if asset is not None and asset not in self.assets:
                    if to == account:
                        self._warn_once(account, n, f"asset {asset}",
                                        "chain %s: payment account %s (reference 0x%s) received asset %d, which is no "
                                        "configured token: not collected (an operator must look)", self.chain,
                                        ss58(account, self.cfg.ss58_prefix), accounts[account].hex(), asset)
                    continue
                if to == account and key not in self.funded and frm is not None:
                    self.funded[key] = Funding(n, frm)
                elif frm == account:
                    self.funded.pop(key, None)  # collected (or otherwise emptied)
        if self.cursor <= end:
            self.cursor = end + 1
        if end < final:
            return  # catch up first: a funding fact may still change
        await self._collect(final_hash)

    async def _collect(self, at: str) -> None:
        accounts = self.watched.addresses()
        funded = [k for k in self.funded if k[0] in accounts]
        balances = await self.client.call(functools.partial(self._balances, funded, at), "balances") if funded else {}
        self.dust = {}
        for key in funded:
            account, asset = key
            reference, funding, balance = accounts[account], self.funded[key], balances.get(key, 0)
            if balance == 0:
                self.rounds.pop(key, None)
                continue
            floor = self.min_collect if asset is None else self.asset_min[asset]
            if balance < floor:
                self.dust[key] = balance
                self._warn_once(account, funding.block, f"dust {asset}",
                                "chain %s: payment account %s (reference 0x%s) holds %d of %s, below min_refund %d: "
                                "not collected (kept and reported as dust)", self.chain,
                                ss58(account, self.cfg.ss58_prefix), reference.hex(), balance,
                                self.cfg.token if asset is None else self.assets[asset], floor)
                continue
            r = self.rounds.get(key)
            # an asset collection moves an exact amount (pallet_assets has no transfer_all): a
            # changed balance is a new round, every honest member reads it at the same final head
            amount = 0 if asset is None else balance
            if r is None or r.order.deposit_block != funding.block or r.order.amount != amount:
                others = tuple(s for s in payment_signatories(self.cfg.committee, reference) if s != self.me)
                tag = b"" if asset is None else asset.to_bytes(4, "big") + amount.to_bytes(16, "big")
                rid = blake2_256(COLLECT_DOMAIN + account + funding.block.to_bytes(8, "big") + tag)
                r = self.rounds[key] = Round(CollectionOrder(release_id=rid, account=account, others=others,
                                                             reference=reference, payer=funding.payer,
                                                             deposit_block=funding.block, asset_id=asset,
                                                             amount=amount), Progress("none"))
            if r.progress.state in ("done", "failed"):
                continue  # done: the transfer out is scanned next; failed: logged by the refunder, for an operator
            try:
                r.progress = await self.refunder.step(r.order, r.progress)
            except BridgeError as e:
                log.warning("chain %s: collection of %s: %s (retried next step)", self.chain,
                            ss58(account, self.cfg.ss58_prefix), e)
        for key in list(self.rounds):
            if key not in self.funded or key[0] not in accounts:
                self.rounds.pop(key, None)
        unknown = []
        if self.clock() >= self._unknown_checked + self.unknown_check_seconds:
            self._unknown_checked = self.clock()
            unknown = [(a, t) for a in accounts for t in (None, *self.assets) if (a, t) not in self.funded]
        if unknown:
            for (account, asset), balance in (await self.client.call(functools.partial(self._balances, unknown, at),
                                                                     "balances")).items():
                if balance > 0:
                    self._warn_once(account, None, f"unknown {asset}",
                                    "chain %s: payment account %s (reference 0x%s) holds %d %s but no transfer into "
                                    "it was seen in the scanned blocks: payer unknown, not collected (an operator "
                                    "must look)", self.chain, ss58(account, self.cfg.ss58_prefix),
                                    accounts[account].hex(), balance,
                                    self.cfg.token if asset is None else self.assets[asset])
        if self._dust_gauge is not None:
            # native base units only (the gauge has no token label); asset dust is in the warnings
            self._dust_gauge.labels(chain=self.chain).set(sum(v for (_, t), v in self.dust.items() if t is None))

    def _warn_once(self, account: bytes, block: int | None, kind: str, msg: str, *args: Any) -> None:
        key = (account, block, kind)
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    # ------------------------------------------------------------------ on the client's thread
    def _init_runtime(self, si: SubstrateInterface, block_hash: str) -> None:
        try:
            si.init_runtime(block_hash=block_hash)
        except (BlockNotFound, SubstrateRequestException, *CONNECTION_ERRORS):
            raise  # converted by the client (retryable)
        except Exception as e:  # metadata or type registry the SDK cannot handle
            raise DecodeFailure(f"chain {self.chain}: cannot load the runtime ({e.__class__.__name__})",
                                retryable=False) from None

    def _final(self, si: SubstrateInterface) -> tuple[int, str]:
        h = si.rpc_request("chain_getFinalizedHead", []).get("result")
        header = si.rpc_request("chain_getHeader", [h]).get("result") if isinstance(h, str) else None
        try:
            return int(header["number"], 16), h.lower()
        except (KeyError, TypeError, ValueError):
            raise ChainError(f"chain {self.chain}: malformed finalized head") from None

    def _transfers(self, accounts: set[bytes], start: int, end: int,
                   si: SubstrateInterface) -> list[tuple[int, bytes, int | None, bytes | None, bytes | None]]:
        """(block, watched account, asset id or None, from, to) of every successful
        ``Balances.Transfer`` / ``Assets.Transferred`` touching a watched account in blocks
        ``start..end``, in chain order."""
        out = []
        for n in range(start, end + 1):
            h = si.rpc_request("chain_getBlockHash", [n]).get("result")
            if not isinstance(h, str):
                raise ChainError(f"chain {self.chain}: finalized block {n} has no hash")
            raw = si.rpc_request("state_getStorage", [EVENTS_STORAGE_KEY, h]).get("result")
            if not isinstance(raw, str):
                raise ChainError(f"chain {self.chain}: no System.Events for block {n} (pruned state?)")
            text = raw.lower()
            hit = [a for a in accounts if a.hex() in text]
            if not hit:
                continue
            self._init_runtime(si, h)
            try:
                events = decode_events(si.runtime_config, si.metadata, raw)
            except Exception as e:  # scalecodec's many exception types
                raise DecodeFailure(f"chain {self.chain}: cannot decode the events of block {n} "
                                    f"({e.__class__.__name__})", retryable=False) from None
            for ev in events:
                name = (ev.get("module_id"), ev.get("event_id"))
                if name not in (("Balances", "Transfer"), ("Assets", "Transferred")):
                    continue
                a = ev.get("attributes")
                if not isinstance(a, dict):
                    continue
                asset = None
                if name[0] == "Assets":
                    asset = a.get("asset_id")
                    if not isinstance(asset, int) or isinstance(asset, bool):
                        continue
                frm, to = account_bytes(a.get("from")), account_bytes(a.get("to"))
                for account in hit:
                    if account in (frm, to):
                        out.append((n, account, asset, frm, to))
        return out

    def _balances(self, keys: list[Key], block_hash: str, si: SubstrateInterface) -> dict[Key, int]:
        """Free native balance (asset None) or ``Assets.Account(asset, account).balance`` (0 when
        the account holds none) of each (account, asset) at ``block_hash``: read by
        ``state_queryStorageAt``, ``BALANCES_PER_REQUEST`` keys a request (one request per key
        held the process's SDK lock, which the refunder and the watchers share, for seconds)."""
        self._init_runtime(si, block_hash)
        out = {}
        for i in range(0, len(keys), BALANCES_PER_REQUEST):
            chunk = keys[i:i + BALANCES_PER_REQUEST]
            # keys made under the runtime loaded for block_hash (the SDK's create_storage_key would
            # load the head's runtime first: three requests a key)
            storage = [StorageKey.create_from_storage_function(
                           *(("System", "Account", ["0x" + account.hex()]) if asset is None
                             else ("Assets", "Account", [asset, "0x" + account.hex()])),
                           runtime_config=si.runtime_config, metadata=si.metadata)
                       for account, asset in chunk]
            values = {sk.to_hex(): v for sk, v in si.query_multi(storage, block_hash=block_hash)}
            for (account, asset), sk in zip(chunk, storage):
                if sk.to_hex() not in values:
                    raise ChainError(f"chain {self.chain}: state_queryStorageAt left out a requested key")
                v = values[sk.to_hex()]
                v = v.value if v is not None else None
                try:
                    out[(account, asset)] = (int(v["data"]["free"]) if asset is None
                                             else (int(v["balance"]) if v else 0))
                except (KeyError, TypeError, ValueError):
                    raise ChainError(f"chain {self.chain}: malformed {'System' if asset is None else 'Assets'}"
                                     ".Account entry", retryable=False) from None
        return out


class _NoFeed:
    """No gateway configured: only references added directly are watched."""

    async def references(self, chain: str, after: int, limit: int) -> list:
        return []
