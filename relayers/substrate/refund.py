"""One committee member's side of refunds on an Asset Hub chain (``pallet_multisig``).

The committee's funds sit in the ``pallet_multisig`` account of its members' Ed25519 keys
with threshold ``t`` (``multisig.py``). To refund (part of) a deposit, each signer node
independently calls :meth:`MultisigRefunder.step` every few seconds with the order and the
:class:`Progress` it persisted after the previous call, until the state is ``done`` or
``failed``. The multisig call of an order is::

    Utility.batch_all([Balances.transfer_keep_alive(dest=order.to, value=order.amount),
                       System.remark(b"creditbridge/refund/v1" + order.release_id)])

so every refund has its own call hash, even for equal payer and amount.

The same rules drive the collection of a per-payment account (``CollectionOrder``, see
``collect.py``): the multisig is then the payment account (the members plus a tag of the
reference), the other signatories include the tag, and the call is ``Utility.batch_all([
Balances.transfer_all(committee, false), System.remark_with_event(reference ++ payer)])``. The
collector shares its node's refunder, so one member key has one nonce sequence per chain.

Rules of one ``step`` (everything is read at one pinned best block, so "no entry" and "not
executed" are facts about the same state):

1. **Executed?** ``System.Events`` are scanned from ``order.deposit_block`` to the pinned head
   for ``Multisig.MultisigExecuted`` with this call hash and the committee account (raw event
   bytes are searched for the call hash first; only blocks that contain it are decoded). A
   per-order cursor in memory remembers how far the *finalized* part was scanned, so repeated
   steps do not rescan; blocks above the finalized head are rescanned every step (they may
   change). An execution in a final block gives ``done`` (``Ok``) or ``failed`` (``Err``: never
   retried automatically, an operator must look); one in a not-yet-final block leaves the
   progress as it was until that block is final.
2. **An operation exists** (``Multisig.Multisigs(committee, call_hash)``): if this member is
   among its approvals -> ``approved`` at the entry's ``when``. Else, if the member's persisted
   progress names another timepoint, it refuses (``failed``: it already approved a different
   operation of this refund). Else it approves with ``as_multi`` and the call -> ``approved``.
   Every approval carries the call, never just its hash (``approve_as_multi``): the pallet
   executes on whichever approval brings the operation to ``t`` (``operate``: the call is
   dispatched when the approvals, this one included, reach the threshold), so approvals that
   land in one block execute in that block. With hash-only approvals, ``t - 1`` members
   approving in the block after the creation left an operation at ``t`` approvals and no
   execution; it then waited a block for a member that had not approved yet to send the call,
   and for ever while that member was down (the chaos run's killed signer). An operation at
   ``t`` approvals that did not execute (hash-only approvals: an older version, or by hand) is
   executed by a member among its approvals: ``as_multi`` with the call at the threshold
   dispatches it and adds no approval (the pallet only adds approvals below the threshold).
   A round therefore takes two blocks when every member steps within a block: the creation,
   then the approvals (a member cannot approve before the creation's timepoint exists).
3. **No operation, not executed**: from ``none``/``proposed`` it creates the operation
   (``as_multi`` with ``maybe_timepoint=None``) -> ``proposed``. From ``approved`` the
   operation this member approved disappeared without an execution event (cancelled by its
   depositor): ``failed`` for an operator.
4. **One transaction in flight per order.** ``step`` submits and returns; it never waits for
   inclusion. While a submitted transaction of the order is neither included (the member's
   on-chain nonce did not pass it) nor dropped, ``step`` submits nothing and returns the
   progress unchanged. The member's transactions in flight are tracked across orders by nonce
   (``_review_inflight``): one that left the node's pool without being included is sent again,
   the same signed bytes, while every nonce below it is ours (it may sit in a block being built,
   or have been lost); it is dropped only when its mortal era of ``MORTAL_PERIOD`` blocks is
   over, when it sits above a nonce nobody of ours holds, or when the node refuses the copy.
   A new transaction takes the lowest nonce from the chain's (``System.Account`` at its best
   block) that none of the member's transactions in flight holds, so two of them never share a
   nonce and none is left above a gap.
5. **Nothing redundant.** Before it creates an operation (from ``none``) or approves one, a
   member looks in the node's pool for other members' transactions of this order (signed by a
   member, carrying the order's remark). If they are enough on their own (one creation; the
   approvals still missing to the threshold), it sends nothing this step and approves what
   they made once it is in a block: a second creation would fail with ``NoTimepoint``, an
   approval past the threshold with ``UnexpectedTimepoint``, each a fee for nothing. It holds
   back at most ``DEFER_BLOCKS`` blocks per phase, so a member whose transaction never lands
   delays the others that long; a node that does not show its pool changes nothing. A
   creation in a block being built is not in the pool any more, so two creations still happen
   (harmless, as below).

**Cost of a step.** A round lasts two blocks only if every member steps each open order
within a block, and a signer steps its orders one after another (the collector's too, sharing
this refunder and the process's SDK lock), so the requests per step bound how many orders fit
in a block. substrate-interface asks the node for its head, that head's header and runtime
version again on every ``compose_call`` left unpinned: a step that approved sent ~40
requests, a creation ~50, a step with nothing to send ~16 (measured on chopsticks). Calls are
therefore composed under the runtime loaded for the pinned head; an order's call hash is kept
per runtime spec version (an unchanged call under an unchanged runtime encodes to the same
bytes; an upgrade changes the version and the hash is recomputed); the raw ``System.Events`` of a block (by block hash) and the hashes of
finalized blocks (by number) are kept for a few hundred blocks, so the open orders' scans of a
new block read it once; the weight the runtime reports is kept per kind of call (refund or
collection, native or asset) and spec version. Measured the same way: 4-7 requests for a step
with nothing to send, ~14 for an approval, ~24 for an order's first creation.

Every action is conditional on chain state the pallet re-checks at inclusion: a creation
fails (``NoTimepoint``) if an operation already exists -- two members creating at once is
harmless, the next step approves the one that won -- and an approval fails
(``UnexpectedTimepoint`` / ``WrongTimepoint``) if the operation is gone or another one. So a
late or duplicated transaction can cost a fee but never pays.

Why a refund is never paid twice: a second payment needs a second execution, i.e. ``t``
approvals of a *second* operation for the same call hash, which can only exist after the first
one executed (the pallet keeps one operation per call hash). An honest member approves at most
one operation per refund: after the first executed, its scan (rule 1) sees the
``MultisigExecuted`` event before it looks at operations, and its persisted timepoint (rule 2)
refuses any other operation. Even if some members lost that protection, two executions need
``2t`` approvals from members approving at most once, impossible when ``2t > n`` (a warning is
logged for committees with ``2t <= n``).

What this does not cover:

* **A member that lost its database** steps with ``Progress("none")``. It could approve a
  second operation only if its scan missed the first execution. The scan starts at
  ``deposit_block``; any execution of this refund happened after the deposit it refunds, so it
  lies between ``deposit_block`` and the head the step pins, and the entry is read at that same
  head: there is no gap. This needs the RPC endpoints to serve old blocks' state (archive
  nodes): a pruned block's events make ``step`` raise ``ChainError``, never read as "nothing".
  A ``deposit_block`` given too high would break this.
* **A runtime upgrade that changes the call's encoding** (pallet or call indices of
  ``Utility``, ``Balances``, ``System``) changes the call hash, i.e. makes a different
  operation. The refunder notices it only within one process (it remembers each order's call
  hash and then fails the order); across restarts, refunds must not span such an upgrade.
* **The same key submitting elsewhere** (another refunder of the same member on the same
  chain) breaks the local nonce tracking: one refunder per member key and chain.
* A creation that stays in the pool for several blocks can land after another member's
  operation was created *and* executed; it then creates a stray operation holding only this
  member's approval (never executed: every other member sees the execution). Its deposit stays
  reserved until the member cancels it with ``cancel_as_multi`` (manual). The short mortal era
  bounds how late a creation can land.
* Threshold 1 is refused: ``as_multi_threshold_1`` emits no ``MultisigExecuted`` event.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, field, replace
from typing import Any

from substrateinterface import Keypair, KeypairType, SubstrateInterface
from substrateinterface.exceptions import BlockNotFound, SubstrateRequestException

from bridge.config import PayableToken, SubstrateChainConfig
from bridge.errors import ChainError, ConfigError, InputError
from relayers.substrate.client import CONNECTION_ERRORS, DecodeFailure, SubstrateClient
from relayers.substrate.decode import EVENTS_STORAGE_KEY, account_bytes, blake2_256, decode_events, raw_extrinsic, \
    signer_of
from relayers.substrate.multisig import committee_account_id, ss58
from relayers.substrate.networks import check_network

log = logging.getLogger(__name__)

REMARK_PREFIX = b"creditbridge/refund/v1"
STATES = ("none", "proposed", "approved", "done", "failed")
MORTAL_PERIOD = 32  # blocks a submitted transaction stays valid (a power of two, >= 4)
# blocks a member holds back an order's creation (or its approval) while other members'
# transactions for it sit in the node's pool and are enough on their own (rule 5)
DEFER_BLOCKS = 2
SCAN_CHUNK = 32  # blocks scanned per client call (the SDK lock is held during one call)
DEFAULT_SCAN_PER_STEP = 2048  # finalized blocks scanned at most per step; the rest next step
WEIGHT_MARGIN = 2  # max_weight = weight the runtime reports for the call, times this
# used when the runtime cannot report the call's weight: far above a transfer and a remark
# (~1.8e8 ref_time on Asset Hub), far below a block's limits
FALLBACK_WEIGHT = {"ref_time": 10**10, "proof_size": 256 * 1024}
# per-refunder caches on the client's thread (see "Cost of a step" in the module doc)
EVENTS_CACHE_BLOCKS = 256  # blocks whose raw System.Events (by block hash) are kept
CALL_HASH_CACHE = 4096  # orders whose call hash (per runtime spec version) is kept


@dataclass(frozen=True)
class RefundOrder:
    release_id: bytes  # 32 bytes, unique per refund (already computed by the caller)
    to: bytes  # 32-byte account id of the payer
    amount: int  # base units (> 0)
    deposit_block: int  # block number of the deposit being refunded: lower bound of event scans
    asset_id: int | None = None  # None: the native token (Balances); else a pallet_assets asset (issue 15)


@dataclass(frozen=True)
class CollectionOrder:
    """The collection of a per-payment account into the committee account (``collect.py``):
    the same step rules as a refund, for the multisig of ``others`` plus this member, with the
    call ``Utility.batch_all([Balances.transfer_all(committee, false),
    System.remark_with_event(reference ++ payer)])``."""

    release_id: bytes  # 32 bytes, unique per collection round (keys the refunder's memory)
    account: bytes  # the payment account (multisig of the members and the reference's tag)
    others: tuple[bytes, ...]  # its signatories but this member, sorted (the tag among them)
    reference: bytes  # 32 bytes
    payer: bytes  # 32 bytes: the first funder since the account's last collection
    deposit_block: int  # the block of that funding: lower bound of the execution scan
    # None: the native token (Balances.transfer_all); else a pallet_assets asset, collected with
    # Assets.transfer(asset_id, committee, amount): pallet_assets (spec 900) has no transfer_all
    asset_id: int | None = None
    amount: int = 0  # asset collections: what the account holds (the whole balance)


@dataclass(frozen=True)
class Progress:
    state: str  # "none" | "proposed" | "approved" | "done" | "failed"
    timepoint: tuple[int, int] | None = None  # (height, index) of the op this member approved / created
    block: int | None = None  # block where it executed (done/failed)
    detail: str = ""


@dataclass
class _Pending:
    """A transaction of this member for one order that may still be included."""

    action: str  # "create" | "approve" | "execute"
    extrinsic_hash: str
    nonce: int
    submitted_at: int  # best block number when submitted
    expires_at: int  # from this best block number on it can no longer be included
    extrinsic: str = ""  # the signed bytes (0x-hex): sent again, unchanged, if the pool lost them


@dataclass(frozen=True)
class _Head:
    hash: str
    number: int
    final: int  # finalized block number (<= number)


@dataclass(frozen=True)
class _Execution:
    block: int
    ok: bool
    detail: str
    final: bool


@dataclass
class _OrderMemory:
    call_hash: bytes | None = None
    weight: Any = None
    scanned_to: int | None = None  # every final block below this was scanned: no execution
    execution: _Execution | None = None  # found in a final block
    committed: tuple[int, int] | None = None  # the operation this member approved
    pending: _Pending | None = None
    deferred_at: dict[str, int] = field(default_factory=dict)  # phase -> head when it first held back


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _short(e: BaseException) -> str:
    text = str(e).replace("\n", " ")
    return f"{e.__class__.__name__}: {text[:200]}" if text else e.__class__.__name__


def _number(header: Any, what: str) -> int:
    try:
        return int(header["number"], 16)
    except (KeyError, TypeError, ValueError):
        raise ChainError(f"malformed header of {what}") from None


class MultisigRefunder:
    """One committee member's side of Asset Hub refunds on one chain."""

    def __init__(self, cfg: SubstrateChainConfig, member_seed: bytes, *, max_weight: int | dict | None = None,
                 client: SubstrateClient | None = None, scan_per_step: int = DEFAULT_SCAN_PER_STEP) -> None:
        if not isinstance(member_seed, (bytes, bytearray)) or len(member_seed) != 32:
            raise ConfigError(f"chain {cfg.name}: a committee member seed is 32 bytes")
        self.cfg = cfg
        self.chain = cfg.name
        self.committee = committee_account_id(cfg.committee)
        self.members = sorted(bytes.fromhex(m[2:]) for m in cfg.committee.members)
        self.threshold = cfg.committee.threshold
        if self.threshold < 2:
            raise ConfigError(f"chain {cfg.name}: refunds need a committee threshold of at least 2 "
                              "(pallet_multisig's threshold-1 path emits no MultisigExecuted event)")
        if 2 * self.threshold <= len(self.members):
            log.warning("chain %s: committee threshold %d of %d members: two disjoint groups could each "
                        "approve an operation (2t <= n)", cfg.name, self.threshold, len(self.members))
        self.keypair = Keypair.create_from_seed(bytes(member_seed).hex(), crypto_type=KeypairType.ED25519,
                                                ss58_format=cfg.ss58_prefix)
        self.me = bytes(self.keypair.public_key)
        if self.me not in self.members:
            raise ConfigError(f"chain {cfg.name}: the member key {_hex(self.me)[:18]}.. is not one of the "
                              "committee's members")
        self.others = [m for m in self.members if m != self.me]
        self._other_members = frozenset(self.others)
        self.defer_blocks = DEFER_BLOCKS  # rule 5; 0 holds nothing back
        if max_weight is not None and not isinstance(max_weight, (int, dict)):
            raise ConfigError("max_weight is an int (ref_time) or {'ref_time': .., 'proof_size': ..}")
        self.max_weight = max_weight
        if scan_per_step < 1:
            raise ConfigError("scan_per_step must be positive")
        self.scan_per_step = scan_per_step
        if cfg.genesis_hash:
            check_network(cfg.name, cfg.genesis_hash, cfg.token, cfg.ss58_prefix)
        self.client = client or SubstrateClient(cfg.name, cfg.rpc, timeout=cfg.request_timeout,
                                                ss58_format=cfg.ss58_prefix, genesis_hash=cfg.genesis_hash)
        self.address = ss58(self.me, cfg.ss58_prefix)
        self._orders: dict[bytes, _OrderMemory] = {}
        # touched only on the client's thread: raw System.Events by block hash (a hash names one
        # block's content for good, final or not), finalized block hashes by number, and call
        # hashes by (order, runtime spec version): every open order scans the same new blocks
        # and recomposing an unchanged call under an unchanged runtime gives the same bytes
        self._raw_events: dict[str, str] = {}
        self._final_hashes: dict[int, str] = {}
        self._call_hashes: dict[tuple[Any, Any], bytes] = {}
        # the weight the runtime reports per kind of call (refund or collection, native or
        # asset) and spec version: amounts and accounts do not change a transfer's weight
        self._weights: dict[tuple[Any, ...], Any] = {}
        # this member's transactions that may still be included, by nonce (rule 4): a new one
        # takes the lowest nonce from the chain's that none of these holds
        self._inflight: dict[int, _Pending] = {}
        self._lock = asyncio.Lock()
        self.submitted: list[tuple[str, str, int]] = []  # (action, extrinsic hash, nonce): observability

    # ------------------------------------------------------------------ public
    async def step(self, order: RefundOrder | CollectionOrder, last: Progress) -> Progress:
        """Advance this member's side of ``order`` by at most one transaction (see module doc)."""
        if isinstance(order, CollectionOrder):
            _check_collection(order, self.committee)
        else:
            _check_order(order, self.committee)
        _check_progress(last)
        if last.state in ("done", "failed"):
            return last
        async with self._lock:
            return await self._step(order, last)

    async def aclose(self) -> None:
        await self.client.aclose()

    # ------------------------------------------------------------------ the rules
    async def _step(self, order: RefundOrder, last: Progress) -> Progress:
        rid = order.release_id
        mem = self._orders.setdefault(rid, _OrderMemory())
        pool: list[bytes] | None = None  # the node's pool, read once a step where it is needed
        if self._inflight:  # read before the head is pinned (see _review_inflight)
            pool = await self.client.call(self._pool, "pending extrinsics")
        head = await self.client.call(self._head, "heads")
        if head.number < order.deposit_block:
            return replace(last, detail=f"the head {head.number} is below the deposit block {order.deposit_block}")

        call_hash = await self.client.call(functools.partial(self._call_hash, order, head.hash), "refund call")
        if mem.call_hash is None:
            mem.call_hash = call_hash
        elif mem.call_hash != call_hash:
            return self._fail(rid, last, f"the refund call's hash changed from {_hex(mem.call_hash)} to "
                                         f"{_hex(call_hash)} (runtime upgrade?): an operator must look")

        # 1. executed?
        if mem.execution is None:
            found = await self._find_execution(order, mem, call_hash, head)
            if isinstance(found, str):
                return replace(last, detail=found)
            if found is not None and not found.final:
                return replace(last, detail=f"executed in block {found.block}; waiting for it to be final")
            mem.execution = found
        if mem.execution is not None:
            ex = mem.execution
            self._orders.pop(rid, None)
            if ex.ok:
                return Progress("done", timepoint=last.timepoint, block=ex.block, detail=ex.detail)
            log.error("chain %s: refund %s executed with an error in block %d: %s", self.chain, _hex(rid),
                      ex.block, ex.detail)
            return Progress("failed", timepoint=last.timepoint, block=ex.block, detail=ex.detail)

        entry, nonce = await self.client.call(functools.partial(self._state, self._multisig_of(order), call_hash, head.hash),
                                              "multisig state")
        if self._inflight:
            await self._review_inflight(nonce, head, pool)
        if mem.pending is not None:
            waiting = self._settle_pending(mem, nonce)
            if waiting:
                return replace(last, detail=waiting)

        # 2. an operation exists
        if entry is not None:
            when, approvals = entry
            if self.me in approvals:
                mem.committed = when
                if len(approvals) < self.threshold:
                    return Progress("approved", timepoint=when,
                                    detail=f"{len(approvals)} of {self.threshold} approvals")
                # at the threshold yet not executed (approvals without the call: see rule 2):
                # this member's as_multi with the call executes it and adds no approval
                sent = await self._submit(order, mem, "execute", when, head)
                return Progress("approved", timepoint=when, detail=sent)
            mine = last.timepoint or mem.committed
            if mine is not None and tuple(mine) != when:
                return self._fail(rid, last, "another multisig operation for this refund exists "
                                             f"({when[0]}, {when[1]}); this member approved ({mine[0]}, {mine[1]})")
            held = await self._hold_back(order, mem, head, pool, "approve", self.threshold - len(approvals))
            if held:
                return replace(last, detail=held)
            mem.committed = when
            action = "execute" if len(approvals) + 1 >= self.threshold else "approve"
            sent = await self._submit(order, mem, action, when, head)
            return Progress("approved", timepoint=when, detail=sent)

        # 3. no operation, not executed
        mine = last.timepoint or mem.committed
        if last.state == "approved" or mine is not None:
            where = f" ({mine[0]}, {mine[1]})" if mine is not None else ""
            return self._fail(rid, last, f"the multisig operation{where} this member approved is gone without "
                                         "an execution event (cancelled?): an operator must look")
        if last.state == "none":
            held = await self._hold_back(order, mem, head, pool, "create", 1)
            if held:
                return replace(last, detail=held)
        sent = await self._submit(order, mem, "create", None, head)
        return Progress("proposed", detail=sent)

    def _fail(self, rid: bytes, last: Progress, detail: str) -> Progress:
        log.error("chain %s: refund %s: %s", self.chain, _hex(rid), detail)
        self._orders.pop(rid, None)
        return Progress("failed", timepoint=last.timepoint, detail=detail)

    def _settle_pending(self, mem: _OrderMemory, nonce: int) -> str:
        """Forget the order's transaction once it is included or dropped (``_review_inflight``
        decides that); else say what it waits for."""
        p = mem.pending
        assert p is not None
        if nonce > p.nonce:
            mem.pending = None  # included (or another transaction took its nonce)
            return ""
        if self._inflight.get(p.nonce) is not p:
            mem.pending = None  # dropped: the order's state is read afresh
            return ""
        return f"waiting for the {p.action} transaction {p.extrinsic_hash} (nonce {p.nonce})"

    async def _review_inflight(self, nonce: int, head: _Head, pool: list[bytes] | None) -> None:
        """Rule 4 for every transaction of this member still in flight, whichever order sent
        it. ``nonce`` is the member's nonce at ``head``; ``pool`` (the node's pool, or None where
        the node does not tell) was read before ``head`` was pinned, so a transaction neither
        in it nor included at ``head`` left the pool without being included at ``head``.

        Such a transaction is not necessarily lost. chopsticks takes a block's transactions out
        of its pool when it *starts* building it, and discards one it cannot apply (a nonce
        above a gap); a real node drops transactions under pressure. Declaring it dropped and
        composing a new one (the old rule) put a second transaction on its nonce while the first
        was still being built in; the loser was discarded, which in turn looked like a drop for
        every later nonce of the member. So:

        * included (``n < nonce``) or its mortal era over: forgotten, for good;
        * gone from the pool with every nonce below it, down to ``nonce``, held by one of ours:
          the same signed bytes are sent again, in nonce order. Nothing new is composed: if the
          first copy is in a block being built, the second is stale and discarded, if it was
          lost, the copy takes its place (and fills the nonce later ones wait for);
        * gone from the pool above a nonce nobody of ours holds (the transaction that held it
          was dropped): it can never be included, so it is dropped, and its order reads the
          state afresh and composes a new one on the lowest free nonce.
        """
        for n in sorted(self._inflight):
            p = self._inflight[n]
            if n < nonce:
                del self._inflight[n]
            elif head.number >= p.expires_at:
                del self._inflight[n]
                log.info("chain %s: %s %s (nonce %d) was not included within its era; its order's state is "
                         "read afresh", self.chain, p.action, p.extrinsic_hash, n)
        if pool is None:
            return
        pooled = {_hex(blake2_256(raw)) for raw in pool if raw}
        expected, resend = nonce, []
        for n in sorted(self._inflight):
            p = self._inflight[n]
            lost = head.number > p.submitted_at and p.extrinsic_hash not in pooled
            if n == expected:
                expected += 1
                if lost and p.extrinsic:
                    resend.append(p)
            elif lost:
                del self._inflight[n]
                log.info("chain %s: %s %s (nonce %d) left the pool above a nonce none of ours holds; its order's "
                         "state is read afresh", self.chain, p.action, p.extrinsic_hash, n)
        if resend:
            refused = await self.client.call(functools.partial(self._resend, resend), "resend")
            for p, why in refused:
                if self._inflight.get(p.nonce) is p:
                    del self._inflight[p.nonce]
                log.info("chain %s: %s %s (nonce %d) was lost and the node refuses it again (%s); its order's "
                         "state is read afresh", self.chain, p.action, p.extrinsic_hash, p.nonce, why)

    async def _hold_back(self, order: RefundOrder | CollectionOrder, mem: _OrderMemory, head: _Head,
                         pool: list[bytes] | None, phase: str, needed: int) -> str:
        """Rule 5: a reason to send nothing this step, or "" to go on. Other members'
        transactions for this order in the node's pool (found by the order's remark in their
        bytes, signed by a member) that are ``needed`` or more make this member's redundant:
        a second creation fails with ``NoTimepoint``, an approval past the threshold with
        ``UnexpectedTimepoint``, each costing its member a fee (617 of 1,426 transactions in a
        chaos run). Held back for at most ``DEFER_BLOCKS`` blocks per phase, counted from the
        first time: a member's transaction that never lands delays the others that long and no
        longer. A node that does not show its pool holds nothing back. ``pool``: as the step read
        it (read here when the step did not need it)."""
        since = mem.deferred_at.get(phase)
        if self.defer_blocks <= 0 or (since is not None and head.number >= since + self.defer_blocks):
            return ""
        if pool is None:
            pool = await self.client.call(self._pool, "pending extrinsics")
        if pool is None:
            return ""
        marker = _marker(order)
        others = {who for raw in pool if marker in raw and (who := signer_of(raw)) in self._other_members}
        if len(others) < needed:
            return ""
        mem.deferred_at.setdefault(phase, head.number)
        return (f"{len(others)} other member(s) have this order's transaction in the pool, enough for the "
                f"{phase}: this member waits for it (at most {self.defer_blocks} blocks)")

    async def _find_execution(self, order: RefundOrder, mem: _OrderMemory, call_hash: bytes,
                              head: _Head) -> _Execution | None | str:
        """The execution of the order's operation up to ``head``; a status text if the scan
        has not reached the head yet (the rest is scanned by the next steps)."""
        start = max(mem.scanned_to if mem.scanned_to is not None else order.deposit_block, order.deposit_block)
        budget = self.scan_per_step
        # finalized blocks: scanned once, the cursor then moves past them
        while start <= head.final:
            if budget <= 0:
                return f"scanning events for the execution: at block {start} of {head.number}"
            end = min(start + SCAN_CHUNK - 1, head.final, start + budget - 1)
            found = await self.client.call(
                functools.partial(self._scan_final, self._multisig_of(order), call_hash, start, end), f"events of blocks {start}-{end}")
            if found is not None:
                return found
            budget -= end - start + 1
            start = mem.scanned_to = end + 1
        # blocks above the finalized head: read on the pinned head's branch, every step
        if head.number > head.final:
            return await self.client.call(
                functools.partial(self._scan_unfinal, self._multisig_of(order), call_hash, max(start, head.final + 1), head),
                "events above the finalized head")
        return None

    async def _submit(self, order: RefundOrder, mem: _OrderMemory, action: str, when: tuple[int, int] | None,
                      head: _Head) -> str:
        result = await self.client.call(functools.partial(self._sign_and_submit, order, mem, action, when, head),
                                        f"submit {action}")
        if isinstance(result, _Pending):
            mem.pending = result
            self._inflight[result.nonce] = result
            self.submitted.append((action, result.extrinsic_hash, result.nonce))
            log.info("chain %s: refund %s: submitted %s %s (nonce %d)", self.chain, _hex(order.release_id),
                     action, result.extrinsic_hash, result.nonce)
            return f"submitted {action} {result.extrinsic_hash} (nonce {result.nonce})"
        log.warning("chain %s: refund %s: %s rejected: %s (retried next step)", self.chain,
                    _hex(order.release_id), action, result)
        return f"{action} rejected by the node: {result}; retried next step"

    # ------------------------------------------------------------------ on the client's thread
    def _head(self, si: SubstrateInterface) -> _Head:
        final_hash = si.rpc_request("chain_getFinalizedHead", []).get("result")
        final = _number(si.rpc_request("chain_getHeader", [final_hash]).get("result"), "the finalized head")
        best = si.rpc_request("chain_getBlockHash", []).get("result")
        if not isinstance(best, str):
            raise ChainError(f"chain {self.chain}: no best block hash")
        number = _number(si.rpc_request("chain_getHeader", [best]).get("result"), "the best block")
        return _Head(best.lower(), number, min(final, number))

    def _pool(self, si: SubstrateInterface) -> list[bytes] | None:
        """The node's pool (raw extrinsics; a malformed one as ``b""``), or None where the node
        does not tell (unsafe RPC)."""
        try:
            xs = si.rpc_request("author_pendingExtrinsics", []).get("result")
        except SubstrateRequestException as e:
            log.debug("chain %s: author_pendingExtrinsics unavailable (%s)", self.chain, _short(e))
            return None
        if not isinstance(xs, list):
            return None
        out = []
        for x in xs:
            try:
                out.append(raw_extrinsic(x) if isinstance(x, str) else b"")
            except ValueError:
                out.append(b"")
        return out

    def _resend(self, pending: list[_Pending], si: SubstrateInterface) -> list[tuple[_Pending, str]]:
        """Send lost transactions again, unchanged, in nonce order; those the node refuses for
        good. A copy the node already holds, or one that is stale because the first copy was
        included meanwhile, is no refusal: inclusion is seen by the nonce at the next step."""
        refused = []
        for p in pending:
            try:
                response = si.rpc_request("author_submitExtrinsic", [p.extrinsic])
            except SubstrateRequestException as e:
                response = {"error": str(e)}
            if "result" in response:
                log.info("chain %s: %s %s (nonce %d) had left the pool without being included; sent again", self.chain,
                         p.action, p.extrinsic_hash, p.nonce)
                continue
            why = str(response.get("error"))[:200]
            if not any(k in why.lower() for k in ("stale", "outdated", "already imported", "temporarily banned")):
                refused.append((p, why))
        return refused

    def _init_runtime(self, si: SubstrateInterface, block_hash: str | None) -> None:
        try:
            si.init_runtime(block_hash=block_hash)
        except (BlockNotFound, SubstrateRequestException, *CONNECTION_ERRORS):
            raise  # converted by the client (retryable)
        except Exception as e:  # metadata or type registry the SDK cannot handle
            raise DecodeFailure(f"chain {self.chain}: cannot load the runtime ({_short(e)})", retryable=False) from None

    def _multisig_of(self, order: RefundOrder | CollectionOrder) -> bytes:
        return order.account if isinstance(order, CollectionOrder) else self.committee

    def _others_of(self, order: RefundOrder | CollectionOrder) -> list[bytes]:
        return list(order.others) if isinstance(order, CollectionOrder) else self.others

    def _compose(self, si: SubstrateInterface, order: RefundOrder | CollectionOrder, at: str):
        """The order's call under the runtime loaded for block ``at`` (every ``compose_call``
        is pinned to it: unpinned, the SDK asks the node for its head and runtime version
        again, three requests per call composed)."""
        compose_call = functools.partial(si.compose_call, block_hash=at)
        if isinstance(order, CollectionOrder):
            try:
                if order.asset_id is not None:  # allow death: the whole balance leaves, no dust stays
                    sweep = compose_call("Assets", "transfer", {"id": order.asset_id, "target": _hex(self.committee),
                                                                "amount": order.amount})
                else:
                    sweep = compose_call("Balances", "transfer_all", {"dest": _hex(self.committee),
                                                                      "keep_alive": False})
                remark = compose_call("System", "remark_with_event", {"remark": _hex(order.reference + order.payer)})
                return compose_call("Utility", "batch_all", {"calls": [sweep, remark]})
            except (ValueError, TypeError, KeyError, NotImplementedError) as e:
                raise ChainError(f"chain {self.chain}: cannot compose the collection call ({_short(e)})",
                                 retryable=False) from None
        try:
            if order.asset_id is not None:  # keep alive: the committee keeps the asset's min_balance
                transfer = compose_call("Assets", "transfer_keep_alive", {"id": order.asset_id,
                                                                          "target": _hex(order.to),
                                                                          "amount": order.amount})
            else:
                transfer = compose_call("Balances", "transfer_keep_alive", {"dest": _hex(order.to),
                                                                            "value": order.amount})
            remark = compose_call("System", "remark", {"remark": _hex(REMARK_PREFIX + order.release_id)})
            return compose_call("Utility", "batch_all", {"calls": [transfer, remark]})
        except (ValueError, TypeError, KeyError, NotImplementedError) as e:
            raise ChainError(f"chain {self.chain}: cannot compose the refund call ({_short(e)})",
                             retryable=False) from None

    def _call_hash(self, order: RefundOrder, block_hash: str, si: SubstrateInterface) -> bytes:
        self._init_runtime(si, block_hash)
        key = (order, si.runtime_version)
        found = self._call_hashes.get(key)
        if found is None:
            found = self._call_hashes[key] = blake2_256(bytes(self._compose(si, order, block_hash).data.data))
            _trim(self._call_hashes, CALL_HASH_CACHE)
        return found

    def _events_of(self, si: SubstrateInterface, multisig: bytes, call_hash: bytes, number: int,
                   block_hash: str) -> _Execution | None:
        raw = self._raw_events.get(block_hash)
        if raw is None:
            raw = si.rpc_request("state_getStorage", [EVENTS_STORAGE_KEY, block_hash]).get("result")
            if not isinstance(raw, str):
                # every Asset Hub block has events (its inherents'): none means the node lacks the state
                raise ChainError(f"chain {self.chain}: no System.Events for block {number} (pruned state? "
                                 "refunds need archive nodes)")
            self._raw_events[block_hash] = raw
            _trim(self._raw_events, EVENTS_CACHE_BLOCKS)
        if call_hash.hex() not in raw.lower():
            return None  # cheap: the call hash's bytes are in every event naming it
        self._init_runtime(si, block_hash)
        try:
            events = decode_events(si.runtime_config, si.metadata, raw)
        except Exception as e:  # scalecodec's many exception types
            raise DecodeFailure(f"chain {self.chain}: cannot decode the events of block {number} ({_short(e)})",
                                retryable=False) from None
        for ev in events:
            if (ev.get("module_id"), ev.get("event_id")) != ("Multisig", "MultisigExecuted"):
                continue
            a = ev.get("attributes")
            if not isinstance(a, dict) or account_bytes(a.get("multisig")) != multisig:
                continue
            if str(a.get("call_hash", "")).lower().removeprefix("0x") != call_hash.hex():
                continue
            ok, detail = self._result(si, a.get("result"))
            tp = a.get("timepoint") or {}
            where = f"operation ({tp.get('height')}, {tp.get('index')})" if isinstance(tp, dict) else "operation"
            return _Execution(number, ok, f"{where} executed in block {number}" + ("" if ok else f": {detail}"),
                              final=True)
        return None

    def _result(self, si: SubstrateInterface, result: Any) -> tuple[bool, str]:
        """(ok, error text) of a decoded ``DispatchResult``."""
        if result == "Ok" or (isinstance(result, dict) and "Ok" in result):
            return True, ""
        err = result.get("Err") if isinstance(result, dict) else result
        if isinstance(err, dict) and isinstance(err.get("Module"), dict):
            m = err["Module"]
            try:
                index = int(m.get("index"))
                e = m.get("error")
                error = bytes.fromhex(e[2:])[0] if isinstance(e, str) else int(e)
                found = si.metadata.get_module_error(index, error)
                pallet = next((p.name for p in si.metadata.pallets if p["index"] == index), str(index))
                name = found.name if found is not None and hasattr(found, "name") else str(found)
                return False, f"{pallet}.{name}"
            except (TypeError, ValueError, IndexError, KeyError, AttributeError):
                pass
        return False, str(err)

    def _scan_final(self, multisig: bytes, call_hash: bytes, start: int, end: int,
                    si: SubstrateInterface) -> _Execution | None:
        for n in range(start, end + 1):
            h = self._final_hashes.get(n)
            if h is None:
                h = si.rpc_request("chain_getBlockHash", [n]).get("result")
                if not isinstance(h, str):
                    raise ChainError(f"chain {self.chain}: finalized block {n} has no hash")
                h = self._final_hashes[n] = h.lower()  # final: the number names this block for good
                _trim(self._final_hashes, EVENTS_CACHE_BLOCKS)
            found = self._events_of(si, multisig, call_hash, n, h)
            if found is not None:
                return found
        return None

    def _scan_unfinal(self, multisig: bytes, call_hash: bytes, start: int, head: _Head,
                      si: SubstrateInterface) -> _Execution | None:
        branch: list[tuple[int, str]] = []
        h, n = head.hash, head.number
        while n >= start:
            header = si.rpc_request("chain_getHeader", [h]).get("result")
            if header is None:
                raise ChainError(f"chain {self.chain}: block {h} vanished while reading")
            branch.append((n, h))
            h, n = str(header["parentHash"]).lower(), n - 1
        for n, h in reversed(branch):
            found = self._events_of(si, multisig, call_hash, n, h)
            if found is not None:
                return replace(found, final=False)
        return None

    def _state(self, multisig: bytes, call_hash: bytes, block_hash: str,
               si: SubstrateInterface) -> tuple[tuple[tuple[int, int], set[bytes]] | None, int]:
        """(the operation's (when, approvals) or None, this member's nonce) at ``block_hash``."""
        entry = si.query("Multisig", "Multisigs", [_hex(multisig), _hex(call_hash)], block_hash=block_hash)
        account = si.query("System", "Account", [self.address], block_hash=block_hash)
        nonce = int(account.value["nonce"])
        v = entry.value if entry is not None else None
        if not v:
            return None, nonce
        try:
            when = (int(v["when"]["height"]), int(v["when"]["index"]))
            approvals = {account_bytes(a) for a in v["approvals"]}
        except (KeyError, TypeError, ValueError):
            raise ChainError(f"chain {self.chain}: malformed Multisig.Multisigs entry", retryable=False) from None
        return (when, approvals), nonce

    def _weight_arg(self, si: SubstrateInterface, order: RefundOrder | CollectionOrder, mem: _OrderMemory, call,
                    type_string: str) -> Any:
        """``max_weight`` in the runtime's own shape (``u64`` before Weight v2, else a struct)."""
        kind = (type(order).__name__, order.asset_id is None, si.runtime_version)
        w = self.max_weight if self.max_weight is not None else mem.weight or self._weights.get(kind)
        if w is None:
            try:
                info = si.get_payment_info(call, self.keypair)
                reported = info["weight"]
                if isinstance(reported, int):
                    w = {"ref_time": reported * WEIGHT_MARGIN}
                else:
                    w = {k: int(v) * WEIGHT_MARGIN for k, v in reported.items()}
            except (SubstrateRequestException, KeyError, TypeError, ValueError, AttributeError) as e:
                log.warning("chain %s: the runtime did not report the refund call's weight (%s); using %s",
                            self.chain, _short(e), FALLBACK_WEIGHT)
                w = dict(FALLBACK_WEIGHT)
            else:
                self._weights[kind] = w
        mem.weight = w
        if isinstance(w, int):
            w = {"ref_time": w}
        fields = getattr(si.runtime_config.create_scale_object(type_string), "type_mapping", None) or []
        names = [f[0] for f in fields if isinstance(f, (list, tuple)) and f]
        if "ref_time" not in names:  # Weight v1: a plain u64
            return int(w.get("ref_time", FALLBACK_WEIGHT["ref_time"]))
        return {n: int(w.get(n, FALLBACK_WEIGHT.get(n, 0))) for n in names}

    def _sign_and_submit(self, order: RefundOrder, mem: _OrderMemory, action: str, when: tuple[int, int] | None,
                         head: _Head, si: SubstrateInterface) -> _Pending | str:
        # the runtime of the pinned best block: the one that executes it, unless an upgrade
        # lands first (see "a runtime upgrade" below the rules: the approval then fails on chain)
        self._init_runtime(si, head.hash)
        call = self._compose(si, order, head.hash)
        if blake2_256(bytes(call.data.data)) != mem.call_hash:
            raise ChainError(f"chain {self.chain}: the refund call's encoding changed under the step", retryable=True)
        pallet = si.metadata.get_metadata_pallet("Multisig")
        function = "as_multi"  # every action carries the call (module doc, rule 2)
        spec = next((c for c in (pallet.calls if pallet else ()) if c.name == function), None)
        if spec is None:
            raise ChainError(f"chain {self.chain}: the runtime has no Multisig.{function}", retryable=False)
        arg_types = {a.name: a.type for a in spec.args}
        args: dict[str, Any] = {
            "threshold": self.threshold,
            "other_signatories": [_hex(m) for m in self._others_of(order)],
            "maybe_timepoint": None if when is None else {"height": when[0], "index": when[1]},
        }
        args["call"] = call
        if "store_call" in arg_types:  # older pallet_multisig (e.g. spec 900)
            args["store_call"] = False
        args["max_weight"] = self._weight_arg(si, order, mem, call, arg_types["max_weight"])
        try:
            multisig_call = si.compose_call("Multisig", function, {k: v for k, v in args.items() if k in arg_types},
                                            block_hash=head.hash)
        except (ValueError, TypeError, KeyError, NotImplementedError) as e:
            raise ChainError(f"chain {self.chain}: cannot compose Multisig.{function} ({_short(e)})",
                             retryable=False) from None

        # the lowest nonce from the chain's (at its best block) that none of ours in flight
        # holds. Not system_accountNextIndex: chopsticks adds every pooled transaction of the
        # signer to it, stale copies sent again included (a chaos run saw it skip two nonces and
        # strand what it sent above them), and it cannot count ours that left the pool for a
        # block being built. A transaction of this member from elsewhere (a process it replaced)
        # still pooled may share the nonce: the node refuses ours or discards one of them, and
        # the order's state is read afresh (rule 4)
        account = si.query("System", "Account", [self.address])
        nonce = int(account.value["nonce"])
        while nonce in self._inflight:
            nonce += 1
        birth = head.final
        try:
            xt = si.create_signed_extrinsic(call=multisig_call, keypair=self.keypair, nonce=nonce,
                                            era={"period": MORTAL_PERIOD, "current": birth})
            receipt = si.submit_extrinsic(xt, wait_for_inclusion=False)
        except SubstrateRequestException as e:
            # the pool refused it (fees, stale or clashing nonce ...): nothing is in flight
            return _short(e)
        return _Pending(action, str(receipt.extrinsic_hash).lower(), nonce, head.number, birth + MORTAL_PERIOD,
                        extrinsic=str(xt.data))


def _marker(order: RefundOrder | CollectionOrder) -> bytes:
    """Bytes only this order's call carries: its remark."""
    if isinstance(order, CollectionOrder):
        return order.reference + order.payer
    return REMARK_PREFIX + order.release_id


def _trim(cache: dict, size: int) -> None:
    """Drop the oldest entries of an insertion-ordered cache beyond ``size``."""
    while len(cache) > size:
        del cache[next(iter(cache))]


# ---------------------------------------------------------------------- validation
def _check_order(order: RefundOrder, committee: bytes) -> None:
    if not isinstance(order, RefundOrder):
        raise InputError("a refund order must be a RefundOrder")
    if not isinstance(order.release_id, bytes) or len(order.release_id) != 32:
        raise InputError("a refund's release id is 32 bytes")
    if not isinstance(order.to, bytes) or len(order.to) != 32:
        raise InputError("a refund's recipient is a 32-byte account id")
    if order.to == committee:
        raise InputError("a refund cannot pay the committee account itself")
    if not isinstance(order.amount, int) or isinstance(order.amount, bool) or order.amount <= 0:
        raise InputError("a refund's amount is a positive integer (base units)")
    if order.amount >= 1 << 128:
        raise InputError("a refund's amount does not fit a u128 balance")
    if not isinstance(order.deposit_block, int) or isinstance(order.deposit_block, bool) or order.deposit_block < 0:
        raise InputError("a refund's deposit block is a non-negative block number")
    _check_asset(order.asset_id)


def _check_asset(asset_id: object) -> None:
    if asset_id is not None and (not isinstance(asset_id, int) or isinstance(asset_id, bool)
                                 or not 0 <= asset_id < 1 << 32):
        raise InputError("an asset id is a u32 or None (the native token)")


def _check_collection(order: CollectionOrder, committee: bytes) -> None:
    for name in ("release_id", "account", "reference", "payer"):
        v = getattr(order, name)
        if not isinstance(v, bytes) or len(v) != 32:
            raise InputError(f"a collection's {name} is 32 bytes")
    if order.account == committee:
        raise InputError("a collection cannot sweep the committee account itself")
    if not isinstance(order.deposit_block, int) or isinstance(order.deposit_block, bool) or order.deposit_block < 0:
        raise InputError("a collection's deposit block is a non-negative block number")
    _check_asset(order.asset_id)
    if order.asset_id is not None and (not isinstance(order.amount, int) or isinstance(order.amount, bool)
                                       or not 0 < order.amount < 1 << 128):
        raise InputError("an asset collection's amount is a positive u128 (what the account holds)")


def _check_progress(last: Progress) -> None:
    if not isinstance(last, Progress) or last.state not in STATES:
        raise InputError(f"unknown refund progress {getattr(last, 'state', last)!r}")
    if last.timepoint is not None and (len(last.timepoint) != 2 or not all(isinstance(x, int) for x in last.timepoint)):
        raise InputError("a refund progress timepoint is (height, index)")


class SignerApprovals:
    """A signer node's side (``bridge.committee.signer.SignerNode.approvers``): the refund as the
    node stores it, its progress as a JSON-able dict, one ``MultisigRefunder`` per chain."""

    def __init__(self, cfg: SubstrateChainConfig, member_seed: bytes, *,
                 tokens: "dict[str, PayableToken] | None" = None) -> None:
        self.refunder = MultisigRefunder(cfg, member_seed)
        self.chain = cfg.name
        self.tokens = dict(tokens or {})  # the chain's non-native tokens: symbol -> token

    def asset_of(self, token: str | None) -> int | None:
        """The pallet_assets asset id a release in ``token`` pays (None: the native token)."""
        if token is None or token == self.refunder.cfg.token:
            return None
        t = self.tokens.get(token)
        if t is None or t.asset_id is None or t.chain != self.chain:
            raise InputError(f"chain {self.chain}: token {token!r} is no pallet_assets token of this chain")
        return t.asset_id

    async def step(self, *, release_id: bytes, payer: bytes, amount: int, sequence: int, progress: dict,
                   token: str | None = None) -> dict:
        # the watcher's deposit sequence is (block number << 16) | extrinsic index
        order = RefundOrder(release_id=release_id, to=payer, amount=amount, deposit_block=sequence >> 16,
                            asset_id=self.asset_of(token))
        tp = progress.get("timepoint")
        last = Progress(progress.get("state", "none"), tuple(tp) if tp else None, progress.get("block"),
                        progress.get("detail", ""))
        new = await self.refunder.step(order, last)
        return {"state": new.state, "timepoint": list(new.timepoint) if new.timepoint else None, "block": new.block,
                "detail": new.detail}

    async def aclose(self) -> None:
        await self.refunder.aclose()
