"""Watcher of the TON lock contract (implements ``bridge.chains.Watcher``).

Heights are masterchain seqnos. On TON a masterchain block is final once the liteservers serve
it (validators sign it before it exists), so ``finalized_height`` is the last masterchain seqno.

``fetch_deposits(start, end)`` takes the lock's last transaction as of masterchain blocks
``start - 1`` and ``end`` (account state at those blocks) and walks the account's transaction
chain back from the latter to the former through ``prev_trans_lt``/``prev_trans_hash``, checking
every link by hash, so no transaction in between can be skipped and none outside is included.
Each transaction's masterchain block is the first block whose account state contains it (found
by bisection over the range, a few account-state reads per transaction at most). Transactions
that are aborted, bounced, or whose compute or action phase failed are skipped; a deposit is the
lock's external-out log (``relayers.ton.lock``) of a successful transaction, cross-checked with
the inbound message (sender, value).

Observations: ``source = source_id("ton", global_id, lock hash)`` (the lock must be in
workchain 0), ``sequence`` = the contract's deposit counter from the log, ``tx_id`` = the
transaction hash (32 bytes, the idempotency key) followed by its logical time (8 bytes, big
endian), because liteservers and toncenter v2 can only find a transaction by (lt, hash),
``event_index`` = the log's out-message index, ``payer`` = the sender's 32-byte account id
(workchain 0 or -1; wallets are in 0), ``timestamp`` = the transaction's ``now``.

Jetton deposits (issue 15, TEP-74): the lock logs a ``transfer_notification`` from its own
wallet of a configured master (lock.fc refuses every other sender) as ``CBJ1``: the master, the
amount its wallet credited, the original sender (payer) and the reference. The observation's
``token`` is the symbol of the chain's ``PayableToken`` whose ``jetton_master`` is that master
(``tokens``, symbol -> token); ``amount`` is in the jetton's base units. A jetton the lock logs
but the config does not name is no token deposit: it is not emitted (logged as an error), so it
is neither credited nor refunded (configure the same masters the lock was deployed with).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

from pytoniq_core import Address, Cell
from pytoniq_core.tlb.transaction import Transaction

from bridge.chains import BlockRef, WatcherDefaults
from bridge.config import TON_REAL_NETWORKS, PayableToken, TonChainConfig
from bridge.errors import ChainError, ConfigError, InputError
from bridge.hashing import source_id
from bridge.types import Observation
from relayers.ton import lock as lockc
from relayers.ton.transport import (NO_TX, FallbackTransport, LiteTransport, McBlock, ToncenterTransport,
                                    Transport, TxPointer)

log = logging.getLogger(__name__)

PAGE = 16
CACHE = 4096


def parse_address(s: str) -> Address:
    try:
        return Address(s)
    except Exception:  # pytoniq-core raises bare exceptions on bad addresses
        raise ConfigError(f"not a TON address: {s!r}") from None


def tx_id(tx_hash: bytes, lt: int) -> bytes:
    return tx_hash + lt.to_bytes(8, "big")


def split_tx_id(value: bytes) -> tuple[bytes, int]:
    if len(value) != 40:
        raise InputError("a TON tx id is 40 bytes: hash(32) || lt(8)")
    return bytes(value[:32]), int.from_bytes(value[32:], "big")


class _Lru(OrderedDict):
    def put(self, k, v):
        self[k] = v
        self.move_to_end(k)
        while len(self) > CACHE:
            self.popitem(last=False)


def transport_for(cfg: TonChainConfig) -> Transport:
    ts: list[Transport] = []
    if cfg.liteserver_config is not None:
        ts.append(LiteTransport(cfg.liteserver_config, cfg.trust_level, cfg.request_timeout))
    if cfg.toncenter:
        ts.append(ToncenterTransport(cfg.toncenter, cfg.request_timeout))
    return ts[0] if len(ts) == 1 else FallbackTransport(ts)


class TonWatcher(WatcherDefaults):
    def __init__(self, cfg: TonChainConfig, transport: Transport | None = None, *,
                 tokens: dict[str, PayableToken] | None = None) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required")
        self.cfg = cfg
        self.chain = cfg.name
        self.token = cfg.token
        self.jettons = jetton_symbols(cfg.name, tokens or {})
        self.lock = parse_address(cfg.contracts["lock"])
        if self.lock.wc != 0:
            raise ConfigError(f"chain {cfg.name}: the lock contract must be in workchain 0")
        self.transport = transport if transport is not None else transport_for(cfg)
        self._source: bytes | None = None
        self._blocks: _Lru = _Lru()  # seqno -> McBlock
        self._last_tx: _Lru = _Lru()  # seqno -> TxPointer (facts of final blocks)
        self._tx_block: _Lru = _Lru()  # tx hash -> masterchain seqno
        self._network_checked = False

    # ------------------------------------------------------------------ Watcher protocol
    async def finalized_height(self) -> int:
        if not self._network_checked:
            await self.check_network()
        return await self.transport.last_seqno()

    async def check_network(self) -> None:
        """Once, before the first read: the chain is the configured network, the lock's stored
        global id is the chain's (releases are bound to it), the lock pays the configured
        minimum refund, and a real network is not read without proofs unless allowed. A
        mismatch is a ConfigError (the watch loop stops on it); a lock not deployed yet is a
        retryable ChainError."""
        cfg = self.cfg
        gid = await self.transport.global_id()
        if cfg.global_id is not None and gid != cfg.global_id:
            raise ConfigError(f"chain {self.chain}: global_id {cfg.global_id} configured, the chain's is {gid}")
        network = TON_REAL_NETWORKS.get(gid)
        if network and cfg.liteserver_config is not None and cfg.trust_level == 2 and not cfg.allow_unproven:
            raise ConfigError(f"chain {self.chain}: trust_level 2 reads {network} deposits without liteserver "
                              "proofs: use trust_level 0, or set allow_unproven = true")
        data = await self.transport.account_data(self.lock, await self._mc(await self.transport.last_seqno()))
        if data is None:
            raise ChainError(f"chain {self.chain}: the lock {cfg.contracts['lock']} is not deployed (yet)")
        try:
            stored = lockc.parse_lock_data(data)
        except InputError as e:
            raise ConfigError(f"chain {self.chain}: {cfg.contracts['lock']} is not this version's lock: {e.detail}") from None
        if stored.global_id != gid:
            raise ConfigError(f"chain {self.chain}: the lock is bound to global id {stored.global_id}, "
                              f"the chain's is {gid}: its refunds could not be paid here")
        if cfg.min_refund < stored.min_release:
            raise ConfigError(f"chain {self.chain}: min_refund {cfg.min_refund} is below the lock's min_release "
                              f"{stored.min_release}: such refunds would be refused on chain")
        self._network_checked = True

    async def block_ref(self, number: int) -> BlockRef:
        b = await self._mc(number)
        return BlockRef(b.seqno, b.root_hash)

    async def fetch_deposits(self, start: int, end: int) -> list[Observation]:
        if start < 0 or end < start:
            raise ValueError("need 0 <= start <= end")
        lo = await self._tx_at(start - 1)
        hi = await self._tx_at(end)
        if hi == lo:
            return []
        txs = await self._walk(hi, lo)
        await self._assign(start - 1, lo, end, txs)
        out: list[Observation] = []
        for cell, tx in txs:
            seqno = self._tx_block[cell.hash]
            out.extend(await self._observe(cell, tx, seqno))
        return out

    async def reobserve(self, tx_id_: bytes) -> list[Observation]:
        """The deposit of the lock's transaction ``(lt, hash)``; ``[]`` only when the endpoint
        proves there is none: the transaction it returns at that point is another one, not the
        lock's, or made no deposit (failed, bounced, no deposit log). If the endpoint cannot
        answer for sure -- the lock's final state does not reach ``lt`` yet (a lagging
        liteserver), a timeout, no transaction returned (a liteserver without that history) --
        it raises ChainError (retryable): the signer asks again later."""
        h, lt = split_tx_id(tx_id_)
        final = await self.finalized_height()
        last = await self._tx_at(final)
        if last.lt < lt:
            raise ChainError(f"chain {self.chain}: the lock's state at final block {final} ends at lt {last.lt}, "
                             f"before transaction lt {lt} (lagging endpoint?)")
        cells = await self.transport.transactions(self.lock, TxPointer(lt, h), 1)  # ChainError: could not tell
        if not cells:
            raise ChainError(f"chain {self.chain}: no transaction at lt {lt} on this endpoint (no archive history?)")
        if cells[0].hash != h:
            return []
        tx = _parse_tx(cells[0])
        if tx.lt != lt or tx.account_addr != self.lock.hash_part:
            return []
        seqno = self._tx_block.get(h)
        if seqno is None:
            seqno = await self._first_block_with(lt, final)
            self._tx_block.put(h, seqno)
        return await self._observe(cells[0], tx, seqno)

    async def aclose(self) -> None:
        await self.transport.aclose()

    # ------------------------------------------------------------------ optional abilities
    async def block_time(self, number: int) -> int:
        """Unix time of masterchain block ``number`` (the payment window's chain clock)."""
        return (await self._mc(number)).gen_utime

    async def head_height(self) -> int:
        """The last masterchain block: on TON it is final already."""
        return await self.finalized_height()

    # ------------------------------------------------------------------ internals
    async def source(self) -> bytes:
        if self._source is None:
            gid = await self.transport.global_id()
            self._source = source_id("ton", gid, self.lock.hash_part)
        return self._source

    async def _mc(self, seqno: int) -> McBlock:
        b = self._blocks.get(seqno)
        if b is None:
            b = await self.transport.mc_block(seqno)
            self._blocks.put(seqno, b)
        return b

    async def _tx_at(self, seqno: int) -> TxPointer:
        """The lock's last transaction as of masterchain block ``seqno`` (-1: before genesis)."""
        if seqno < 0:
            return NO_TX
        p = self._last_tx.get(seqno)
        if p is None:
            p = await self.transport.last_tx(self.lock, await self._mc(seqno))
            self._last_tx.put(seqno, p)
        return p

    async def _walk(self, hi: TxPointer, lo: TxPointer) -> list[tuple[Cell, Any]]:
        """Transactions after ``lo`` up to ``hi`` inclusive, oldest first, every link checked."""
        out: list[tuple[Cell, Any]] = []
        expect = hi
        while expect != lo:
            if expect.lt <= lo.lt:
                raise ChainError(f"chain {self.chain}: the lock's transaction chain skips past lt {lo.lt} "
                                 f"(at lt {expect.lt}); the endpoint's history is inconsistent")
            page = await self.transport.transactions(self.lock, expect, PAGE)
            if not page:
                raise ChainError(f"chain {self.chain}: no transaction at lt {expect.lt} (endpoint lacks history?)")
            for cell in page:
                if cell.hash != expect.hash:
                    raise ChainError(f"chain {self.chain}: transaction at lt {expect.lt} has hash "
                                     f"{cell.hash.hex()[:16]}.., expected {expect.hash.hex()[:16]}..")
                tx = _parse_tx(cell)
                if tx.lt != expect.lt or tx.account_addr != self.lock.hash_part:
                    raise ChainError(f"chain {self.chain}: transaction {cell.hash.hex()[:16]}.. is not the lock's at lt {expect.lt}")
                out.append((cell, tx))
                expect = TxPointer(tx.prev_trans_lt, bytes(tx.prev_trans_hash))
                if expect == lo or expect.lt <= lo.lt:
                    break
        out.reverse()
        return out

    async def _assign(self, lo: int, lo_tx: TxPointer, hi: int, txs: list[tuple[Cell, Any]]) -> None:
        """Record the masterchain block of each transaction (all after ``lo``, up to ``hi``)."""
        if not txs:
            return
        if hi == lo + 1:
            for cell, _ in txs:
                self._tx_block.put(cell.hash, hi)
            return
        mid = (lo + hi) // 2
        mid_tx = await self._tx_at(mid)
        left = [t for t in txs if t[1].lt <= mid_tx.lt]
        right = [t for t in txs if t[1].lt > mid_tx.lt]
        await self._assign(lo, lo_tx, mid, left)
        await self._assign(mid, mid_tx, hi, right)

    async def _first_block_with(self, lt: int, final: int) -> int:
        lo, hi = -1, final  # state at lo lacks the tx, state at hi has it
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (await self._tx_at(mid)).lt >= lt:
                hi = mid
            else:
                lo = mid
        return hi

    async def _observe(self, cell: Cell, tx: Any, seqno: int) -> list[Observation]:
        dep = deposit_of(tx, self.lock)
        token = self.token
        if dep is None:
            dep = jetton_deposit_of(tx, self.lock)
            if dep is None:
                return []
            token = self.jettons.get(dep[1].master)
            if token is None:
                log.error("chain %s: jetton deposit %d of master %s, which no [[tokens]] entry names: not "
                          "credited, not refunded", self.chain, dep[1].seq, dep[1].master.hex())
                return []
        index, lg = dep
        block = await self._mc(seqno)
        try:
            return [Observation(
                chain=self.chain, source=await self.source(), sequence=lg.seq, tx_id=tx_id(cell.hash, tx.lt),
                event_index=index, block_number=seqno, block_hash=block.root_hash, timestamp=int(tx.now),
                token=token, amount=lg.amount, payer=lg.sender.hash_part, reference=lg.reference)]
        except InputError as e:
            log.error("chain %s: unusable deposit log in %s: %s", self.chain, cell.hash.hex(), e.detail)
            return []


def _parse_tx(cell: Cell):
    try:
        return Transaction.deserialize(cell.begin_parse())
    except Exception as e:  # pytoniq-core raises assorted errors on malformed data
        raise ChainError(f"undecodable transaction {cell.hash.hex()[:16]}.. ({e.__class__.__name__})") from None


def succeeded(tx) -> bool:
    """An ordinary transaction whose compute and action phases succeeded, not aborted, not
    bouncing its inbound message, and not itself processing a bounced message."""
    d = tx.description
    if getattr(d, "type_", None) != "ordinary" or getattr(d, "aborted", True):
        return False
    cp = getattr(d, "compute_ph", None)
    if cp is None or getattr(cp, "type_", None) != "vm" or not cp.success:
        return False
    act = getattr(d, "action", None)
    if act is not None and not act.success:
        return False
    if getattr(d, "bounce", None) is not None:
        return False
    m = tx.in_msg
    if m is None or not m.is_internal or m.info.bounced:
        return False
    return True


def _one_log(tx, lock: Address, is_dest, parse, what: str):
    """(out-message index, parsed log) of the one external log of kind ``what`` a successful lock
    transaction emitted, or None (no such log, a malformed one, or two of them: all logged)."""
    if not succeeded(tx):
        return None
    found = None
    for i, m in enumerate(tx.out_msgs):
        if not m.is_external_out or not is_dest(m.info.dest):
            continue
        src = m.info.src
        if src is None or src.hash_part != lock.hash_part or src.wc != lock.wc:
            continue
        try:
            lg = parse(m.body)
        except InputError as e:
            log.error("lock transaction with a malformed %s: %s", what, e.detail)
            return None
        if found is not None:
            log.error("lock transaction with two %ss; ignoring it", what)
            return None
        found = (i, lg)
    return found


def deposit_of(tx, lock: Address) -> tuple[int, lockc.DepositLog] | None:
    """(out-message index, log) of the deposit a lock transaction made, if it made one."""
    found = _one_log(tx, lock, lockc.is_deposit_log_dest, lockc.parse_deposit_log, "deposit log")
    if found is None:
        return None
    lg = found[1]
    info = tx.in_msg.info
    if (info.src is None or info.src.hash_part != lg.sender.hash_part or info.src.wc != lg.sender.wc
            or info.value.grams != lg.amount):
        log.error("deposit log %d disagrees with its inbound message; ignoring it", lg.seq)
        return None
    return found


def jetton_symbols(chain: str, tokens: dict[str, PayableToken]) -> dict[bytes, str]:
    """master account id -> symbol of the chain's jettons (``jetton_master`` of its tokens)."""
    out: dict[bytes, str] = {}
    for symbol, t in tokens.items():
        if t.native or t.jetton_master is None:
            continue
        m = parse_address(t.jetton_master)
        if m.wc != 0:
            raise ConfigError(f"chain {chain}: token {symbol}: the jetton master must be in the basechain")
        if m.hash_part in out:
            raise ConfigError(f"chain {chain}: tokens {out[m.hash_part]} and {symbol} name the same jetton master")
        out[m.hash_part] = symbol
    return out


def jetton_deposit_of(tx, lock: Address) -> tuple[int, lockc.JettonDepositLog] | None:
    """(out-message index, log) of the jetton deposit a lock transaction logged, if it did: a
    successful transaction of an inbound ``transfer_notification`` whose amount and sender are
    the log's (lock.fc logs one only for its own wallet of a configured master)."""
    from relayers.ton.jetton import OP_TRANSFER_NOTIFICATION

    found = _one_log(tx, lock, lockc.is_jetton_log_dest, lockc.parse_jetton_deposit_log, "jetton deposit log")
    if found is None:
        return None
    lg = found[1]
    try:
        body = tx.in_msg.body.begin_parse()
        op = body.load_uint(32)
        body.skip_bits(64)
        amount = body.load_coins()
        sender = body.load_address()
    except Exception as e:  # pytoniq-core raises assorted errors on short slices
        log.error("jetton deposit log %d without a readable notification (%s); ignoring it", lg.seq,
                  e.__class__.__name__)
        return None
    if (op != OP_TRANSFER_NOTIFICATION or amount != lg.amount or sender is None
            or sender.hash_part != lg.sender.hash_part or sender.wc != lg.sender.wc):
        log.error("jetton deposit log %d disagrees with its inbound notification; ignoring it", lg.seq)
        return None
    return found
