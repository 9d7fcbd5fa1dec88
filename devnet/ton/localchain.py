"""A local TON test chain on the real TVM emulator, for tests and the devnet.

Every transaction is executed by the C++ transaction emulator bundled with pytvm (the same code
validators run), against a realistic blockchain config (``@ton/sandbox``'s). Accounts are real
contracts: the FunC lock contract, pytoniq's WalletV4R2 wallets. Externals are checked the way a
validator would (signatures, ``accept_message``); internal messages, bounces included, are
routed to their destination within the same block; the emulator's own transaction BOCs are kept
byte for byte, so transaction hashes and ``prev_trans_hash`` links are the real ones.

Blocks: each *block* is a masterchain block seqno ``N`` committing one workchain-0 shard block
with the same seqno, produced every ``block_interval`` seconds (empty ones too, so that time and
finality move on an idle chain, as they do on TON). Block headers are real TL-B ``Block`` cells
(``BlockInfo`` with seqno, lt range, time, previous-block reference; ``MERKLE_UPDATE`` of the
state) whose root hash the block id carries; shard states are real ``ShardStateUnsplit`` cells
with the accounts in a ``HashmapAugE``. ``devnet.ton.liteserver`` serves all this over ADNL.

What it does NOT model (read before trusting a test that uses it):
* **proofs**: the Merkle proofs it sends are well-formed but the block headers they hang from
  are not signed by any validator set, and the value-flow, block-extra and masterchain-state
  parts are stand-ins (pruned branches / hashes), so a client must use ``trust_level=2``;
* **validator finality and consensus**: a block is final the moment the chain produces it; no
  forks, no reorgs, no rollbacks;
* **shards and workchains**: one workchain-0 shard; no masterchain accounts (workchain -1),
  no split/merge, no cross-shard message queues (internal messages are delivered at once);
* **fees** beyond what the emulator computes per transaction (no fee/value flow accounting per
  block, no storage phase timing beyond the emulator's), and no special accounts (elector,
  config contract, minter): genesis balances are minted by internal messages from a faucet
  address that exists nowhere;
* **persistence**: the chain lives in memory; restarting it starts a new chain.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytoniq_core import Address, Builder, Cell, begin_cell
from pytoniq_core.tlb.account import Account, StateInit
from pytoniq_core.tlb.transaction import Transaction

from relayers.ton import cells
from devnet.ton.emulator import TxEmulator, chain_config, run_get_method

log = logging.getLogger("creditbridge.ton.localchain")

LOCAL_GLOBAL_ID = -217  # the local chain's global id (mainnet -239, testnet -3)
SHARD = -(2**63)  # the full shard, signed (0x8000000000000000)
SHARD_U = 2**63
FAUCET = Address((-1, b"\xfa" * 32))  # source of genesis / faucet mints (no such account exists)
LT_PER_BLOCK = 1_000_000
MAX_HOPS = 256  # internal messages processed per external, at most


class MessageRejected(Exception):
    """An external message was not accepted (the contract threw before accept_message, or the
    message is malformed)."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class BlockId:
    workchain: int
    seqno: int
    root_hash: bytes
    file_hash: bytes

    @property
    def shard(self) -> int:
        return SHARD

    def tl(self) -> dict:
        return {"workchain": self.workchain, "shard": SHARD, "seqno": self.seqno,
                "root_hash": self.root_hash.hex(), "file_hash": self.file_hash.hex()}


@dataclass
class TxRecord:
    """One transaction exactly as the emulator produced it."""

    account: bytes  # 32-byte hash part (workchain 0)
    lt: int
    hash: bytes
    boc: bytes  # the emulator's transaction BOC, unchanged
    cell: Cell
    prev_lt: int
    prev_hash: bytes
    now: int
    block: int = -1  # seqno of the block that holds it; -1 while pending


@dataclass
class Block:
    seqno: int
    gen_utime: int
    start_lt: int
    end_lt: int
    mc: BlockId
    shard: BlockId
    mc_header: Cell
    shard_header: Cell
    shard_state: Cell
    mc_state_hash: bytes
    shard_hashes: Cell  # ShardHashes (HashmapE 32 ^(BinTree ShardDescr)) as a Maybe-ref cell
    accounts: dict[bytes, Cell]  # snapshot: account hash -> ShardAccount cell
    transactions: list[bytes] = field(default_factory=list)  # tx hashes in this block


def _currency(b: Builder, grams: int) -> Builder:
    return b.store_coins(grams).store_bit(0)


def _shard_ident(b: Builder, workchain: int) -> Builder:
    return b.store_uint(0, 2).store_uint(0, 6).store_int(workchain, 32).store_uint(SHARD_U, 64)


def _ext_blk_ref(b: Builder, end_lt: int, seqno: int, root_hash: bytes, file_hash: bytes) -> Builder:
    return b.store_uint(end_lt, 64).store_uint(seqno, 32).store_bytes(root_hash).store_bytes(file_hash)


def empty_shard_account() -> Cell:
    return begin_cell().store_ref(begin_cell().store_bit(0).end_cell()).store_bytes(b"\x00" * 32).store_uint(0, 64).end_cell()


def account_balance(shard_account: Cell) -> int:
    acc = Account.deserialize(shard_account.refs[0].begin_parse())
    return acc.storage.balance.grams if acc is not None and acc.storage is not None else 0


class LocalChain:
    """The chain's state machine. Not thread-safe: drive it from one thread (the liteserver runs
    every call in its single worker thread)."""

    def __init__(self, global_id: int = LOCAL_GLOBAL_ID) -> None:
        self.global_id = global_id
        self.config = chain_config(global_id)
        self.emulator = TxEmulator(self.config)
        self.accounts: dict[bytes, Cell] = {}  # working state (pending block included)
        self.txs: dict[tuple[bytes, int], TxRecord] = {}
        self.by_hash: dict[bytes, TxRecord] = {}
        self.pending: list[TxRecord] = []
        self.blocks: list[Block] = []
        self.next_lt = LT_PER_BLOCK
        self._rand_counter = 0
        self.recent_externals: dict[bytes, int] = {}  # external message hash -> block seqno
        self.seal_block()  # block 0: the zero state

    # ------------------------------------------------------------------ accounts
    def shard_account(self, addr: bytes, block: Block | None = None) -> Cell | None:
        return (block.accounts if block is not None else self.accounts).get(addr)

    def balance(self, address: Address) -> int:
        sa = self.accounts.get(address.hash_part)
        return account_balance(sa) if sa is not None else 0

    def transactions_of(self, addr: bytes) -> list[TxRecord]:
        return sorted((t for (a, _), t in self.txs.items() if a == addr), key=lambda t: t.lt)

    @property
    def last(self) -> Block:
        return self.blocks[-1]

    def block(self, seqno: int) -> Block | None:
        return self.blocks[seqno] if 0 <= seqno < len(self.blocks) else None

    # ------------------------------------------------------------------ execution
    def _rand_seed(self) -> bytes:
        self._rand_counter += 1
        return hashlib.sha256(b"creditbridge-localchain|%d|%d" % (len(self.blocks), self._rand_counter)).digest()

    def _execute(self, message: Cell, dest: Address, *, created_lt: int = 0) -> tuple[TxRecord | None, dict]:
        if dest.wc != 0:
            raise MessageRejected(f"only workchain 0 is modelled, not {dest.wc}")
        sa = self.accounts.get(dest.hash_part) or empty_shard_account()
        lt = max(self.next_lt, created_lt + 1)
        res = self.emulator.emulate(sa, message, unixtime=int(time.time()), lt=lt, rand_seed=self._rand_seed())
        if not res.get("success"):
            return None, res
        tx_boc = base64.b64decode(res["transaction"])
        tx_cell = Cell.one_from_boc(tx_boc)
        tx = Transaction.deserialize(tx_cell.begin_parse())
        rec = TxRecord(account=dest.hash_part, lt=tx.lt, hash=tx_cell.hash, boc=tx_boc, cell=tx_cell,
                       prev_lt=tx.prev_trans_lt, prev_hash=tx.prev_trans_hash, now=tx.now)
        self.accounts[dest.hash_part] = Cell.one_from_boc(base64.b64decode(res["shard_account"]))
        self.txs[(rec.account, rec.lt)] = rec
        self.by_hash[rec.hash] = rec
        self.pending.append(rec)
        self.next_lt = max(self.next_lt, tx.lt + tx.outmsg_cnt + 2)
        return rec, res

    @staticmethod
    def _out_messages(tx_cell: Cell) -> list[Cell]:
        s = tx_cell.refs[0].begin_parse()
        if s.load_bit():
            s.load_ref()
        out = s.load_dict(15) or {}
        return [out[k].load_ref() for k in sorted(out)]

    def _route(self, first: TxRecord) -> list[TxRecord]:
        """Deliver the internal messages a transaction sent (and theirs, bounces included)."""
        from pytoniq_core.tlb.transaction import MessageAny

        done = [first]
        queue = self._out_messages(first.cell)
        hops = 0
        while queue:
            msg_cell = queue.pop(0)
            msg = MessageAny.deserialize(msg_cell.begin_parse())
            if not msg.is_internal:
                continue  # external-out messages (logs) go nowhere
            hops += 1
            if hops > MAX_HOPS:
                log.warning("message cascade longer than %d hops cut", MAX_HOPS)
                break
            rec, res = self._execute(msg_cell, msg.info.dest, created_lt=msg.info.created_lt)
            if rec is None:
                log.warning("internal message to %s not executed: %s", msg.info.dest, res.get("error"))
                continue
            done.append(rec)
            queue.extend(self._out_messages(rec.cell))
        return done

    def send_external(self, boc: bytes) -> list[TxRecord]:
        """Apply an external-in message now (into the pending block), like a validator would;
        raises MessageRejected if the destination does not accept it. A message identical to one
        in the pending block or the last two blocks is ignored (LiteBalancer sends each external
        to several liteservers; real validators deduplicate by hash too)."""
        from pytoniq_core.tlb.transaction import ExternalMsgInfo, MessageAny

        try:
            cell = Cell.one_from_boc(boc)
            msg = MessageAny.deserialize(cell.begin_parse())
        except Exception as e:  # malformed BOC or message
            raise MessageRejected(f"cannot parse external message: {e.__class__.__name__}") from None
        if not isinstance(msg.info, ExternalMsgInfo) or msg.info.dest is None:
            raise MessageRejected("not an external-in message")
        seen = self.recent_externals.get(cell.hash)
        if seen is not None and seen >= len(self.blocks) - 2:
            return []
        rec, res = self._execute(cell, msg.info.dest)
        if rec is None:
            code = res.get("vm_exit_code")
            raise MessageRejected(f"cannot apply external message to current state: {res.get('error')}"
                                  + (f" (exit code {code})" if code is not None else ""), code)
        self.recent_externals[cell.hash] = len(self.blocks)
        return self._route(rec)

    def mint(self, address: Address, amount: int, state_init: StateInit | None = None, body: Cell | None = None) -> list[TxRecord]:
        """Faucet: an internal message of ``amount`` nanotons from an address that exists nowhere
        (with ``state_init`` it deploys the contract, as a wallet's first top-up would)."""
        return self.send_internal(FAUCET, address, amount, body=body, state_init=state_init, bounce=False)

    def send_internal(self, src: Address, dest: Address, amount: int, *, body: Cell | None = None,
                      state_init: StateInit | None = None, bounce: bool = True, bounced: bool = False) -> list[TxRecord]:
        """Deliver an internal message from ``src`` (any address; nothing is debited there), for
        genesis funding and contract unit tests. Returns the transactions it caused, in order."""
        from pytoniq.contract.contract import Contract

        msg = Contract.create_internal_msg(src=src, dest=dest, value=amount, state_init=state_init, body=body,
                                           bounce=bounce, bounced=bounced, created_lt=self.next_lt,
                                           created_at=int(time.time()))
        rec, res = self._execute(msg.serialize(), dest, created_lt=self.next_lt)
        if rec is None:
            raise MessageRejected(f"internal message to {dest} failed: {res.get('error')}")
        return self._route(rec)

    def get_method(self, block: Block, addr: bytes, method_id: int, stack: Cell) -> dict:
        sa = block.accounts.get(addr)
        if sa is None:
            return {"vm_exit_code": -256, "stack": None}
        acc = Account.deserialize(sa.refs[0].begin_parse())
        state = acc.storage.state if acc is not None else None
        if state is None or state.type_ != "account_active":
            return {"vm_exit_code": -256, "stack": None}
        si = state.state_init
        return run_get_method(si.code, si.data, address=Address((0, addr)).to_str(False), method_id=method_id,
                              stack=stack, unixtime=block.gen_utime, balance=acc.storage.balance.grams,
                              config=self.config, rand_seed=hashlib.sha256(block.mc.root_hash + addr).digest())

    # ------------------------------------------------------------------ blocks
    def seal_block(self) -> Block:
        seqno = len(self.blocks)
        prev = self.blocks[-1] if self.blocks else None
        now = max(int(time.time()), prev.gen_utime if prev else 0)
        start_lt = prev.end_lt if prev else 0
        end_lt = max(self.next_lt, start_lt + 1)
        txs = self.pending
        self.pending = []
        for t in txs:
            t.block = seqno
        snapshot = dict(self.accounts)
        state = self._shard_state(seqno, now, end_lt, snapshot)
        tx_digest = hashlib.sha256(b"".join(t.hash for t in txs)).digest()

        prev_state = prev.shard_state if prev else begin_cell().end_cell()
        shard_header = self._header(
            workchain=0, seqno=seqno, now=now, start_lt=start_lt, end_lt=end_lt,
            prev=(prev.shard if prev else None, prev.end_lt if prev else 0),
            master=(prev.mc if prev else None, prev.end_lt if prev else 0),
            old_state=prev_state, new_state=state, extra_hash=tx_digest, key_block=False)
        shard_id = BlockId(0, seqno, shard_header.get_hash(0), hashlib.sha256(shard_header.to_boc()).digest())

        shard_hashes = self._shard_hashes(seqno, shard_id, start_lt, end_lt, now)
        mc_state = begin_cell().store_uint(seqno, 32).store_ref(shard_hashes).store_ref(self.config).end_cell()
        prev_mc_state = (begin_cell().store_uint(prev.seqno, 32).store_ref(prev.shard_hashes).store_ref(self.config)
                         .end_cell() if prev else begin_cell().end_cell())
        mc_header = self._header(
            workchain=-1, seqno=seqno, now=now, start_lt=start_lt, end_lt=end_lt,
            prev=(prev.mc if prev else None, prev.end_lt if prev else 0), master=None,
            old_state=prev_mc_state, new_state=mc_state, extra_hash=shard_hashes.hash, key_block=seqno == 0)
        mc_id = BlockId(-1, seqno, mc_header.get_hash(0), hashlib.sha256(mc_header.to_boc()).digest())
        block = Block(seqno=seqno, gen_utime=now, start_lt=start_lt, end_lt=end_lt, mc=mc_id, shard=shard_id,
                      mc_header=mc_header, shard_header=shard_header, shard_state=state, mc_state_hash=mc_state.hash,
                      shard_hashes=shard_hashes, accounts=snapshot, transactions=[t.hash for t in txs])
        self.blocks.append(block)
        self.next_lt = max(self.next_lt, (seqno + 1) * LT_PER_BLOCK)
        for h, s in list(self.recent_externals.items()):
            if s < seqno - 2:
                del self.recent_externals[h]
        return block

    def _shard_state(self, seqno: int, now: int, end_lt: int, accounts: dict[bytes, Cell]) -> Cell:
        def store_value(sa: Cell, b: Builder) -> None:
            b.store_cell(sa)

        def store_extra(bal: int, b: Builder) -> None:
            b.store_uint(0, 5)  # split_depth
            _currency(b, bal)

        items = {int.from_bytes(k, "big"): v for k, v in accounts.items()}
        accs = cells.aug_dict(items, 256, store_value, account_balance, lambda x, y: x + y, store_extra, 0)
        total = sum(account_balance(v) for v in accounts.values())
        out_queue = begin_cell().store_bit(0).store_uint(0, 64).store_bit(0).store_bit(0).end_cell()
        misc = _currency(_currency(begin_cell().store_uint(0, 64).store_uint(0, 64), total), 0).store_bit(0).store_bit(0)
        b = begin_cell().store_uint(0x9023AFE2, 32).store_int(self.global_id, 32)
        _shard_ident(b, 0)
        (b.store_uint(seqno, 32).store_uint(0, 32).store_uint(now, 32).store_uint(end_lt, 64).store_uint(seqno, 32)
         .store_ref(out_queue).store_uint(0, 1).store_ref(accs.end_cell()).store_ref(misc.end_cell()).store_bit(0))
        return b.end_cell()

    def _header(self, *, workchain: int, seqno: int, now: int, start_lt: int, end_lt: int,
                prev: tuple[BlockId | None, int], master: tuple[BlockId | None, int] | None,
                old_state: Cell, new_state: Cell, extra_hash: bytes, key_block: bool) -> Cell:
        not_master = workchain != -1
        info = begin_cell().store_uint(0x9BC7A987, 32).store_uint(0, 32)
        (info.store_uint(int(not_master), 1).store_uint(0, 1).store_uint(0, 1).store_uint(0, 1)
         .store_bit(0).store_bit(0).store_bit(int(key_block)).store_uint(0, 1).store_uint(0, 8)
         .store_uint(seqno, 32).store_uint(0, 32))
        _shard_ident(info, workchain)
        (info.store_uint(now, 32).store_uint(start_lt, 64).store_uint(end_lt, 64).store_uint(0, 32).store_uint(0, 32)
         .store_uint(max(seqno - 1, 0), 32).store_uint(0, 32))
        if not_master:
            mref, mlt = master if master is not None else (None, 0)
            info.store_ref(_ext_blk_ref(begin_cell(), mlt, mref.seqno if mref else 0,
                                        mref.root_hash if mref else b"\x00" * 32,
                                        mref.file_hash if mref else b"\x00" * 32).end_cell())
        pref, plt = prev
        info.store_ref(_ext_blk_ref(begin_cell(), plt, pref.seqno if pref else 0, pref.root_hash if pref else b"\x00" * 32,
                                    pref.file_hash if pref else b"\x00" * 32).end_cell())
        value_flow = cells.pruned(hashlib.sha256(b"value-flow|%d|%d" % (workchain, seqno)).digest())
        state_update = cells.merkle_update(cells.pruned_of(old_state), cells.pruned_of(new_state))
        extra = cells.pruned(extra_hash)
        return (begin_cell().store_uint(0x11EF55AA, 32).store_int(self.global_id, 32).store_ref(info.end_cell())
                .store_ref(value_flow).store_ref(state_update).store_ref(extra).end_cell())

    @staticmethod
    def _shard_hashes(seqno: int, shard: BlockId, start_lt: int, end_lt: int, now: int) -> Cell:
        fees = _currency(_currency(begin_cell(), 0), 0).end_cell()
        descr = (begin_cell().store_uint(0, 1)  # bt_leaf$0
                 .store_uint(0xA, 4).store_uint(seqno, 32).store_uint(seqno, 32).store_uint(start_lt, 64)
                 .store_uint(end_lt, 64).store_bytes(shard.root_hash).store_bytes(shard.file_hash)
                 .store_uint(0, 5).store_uint(0, 3).store_uint(0, 32).store_uint(SHARD_U, 64)
                 .store_uint(seqno, 32).store_uint(now, 32).store_bit(0).store_ref(fees).end_cell())
        from pytoniq_core import HashMap

        hm = HashMap(32, value_serializer=lambda src, dest: dest.store_ref(src))
        hm.set_int_key(0, descr)
        return begin_cell().store_maybe_ref(hm.serialize()).end_cell()

    # ------------------------------------------------------------------ lookups for servers
    def find_block(self, workchain: int, seqno: int, root_hash: bytes | None = None) -> tuple[Block, BlockId] | None:
        b = self.block(seqno)
        if b is None:
            return None
        bid = b.mc if workchain == -1 else b.shard if workchain == 0 else None
        if bid is None or (root_hash is not None and bid.root_hash != root_hash):
            return None
        return b, bid

    def block_by_lt(self, lt: int) -> Block | None:
        for b in self.blocks:
            if b.start_lt <= lt < b.end_lt or (b.start_lt == b.end_lt == lt):
                return b
        return self.blocks[-1] if self.blocks and lt >= self.blocks[-1].end_lt else None

    def block_by_utime(self, utime: int) -> Block | None:
        for b in self.blocks:
            if b.gen_utime >= utime:
                return b
        return None

    def history(self, addr: bytes, lt: int, tx_hash: bytes, count: int) -> list[TxRecord]:
        """Up to ``count`` sealed transactions of an account from (lt, hash) backwards."""
        out: list[TxRecord] = []
        rec = self.txs.get((addr, lt))
        if rec is None or rec.hash != tx_hash or rec.block < 0:
            return out
        while rec is not None and len(out) < count:
            out.append(rec)
            if rec.prev_lt == 0:
                break
            rec = self.txs.get((addr, rec.prev_lt))
        return out


# ---------------------------------------------------------------------------------- running it
def global_config(host_ip: str, port: int, server_public_key: bytes, init: BlockId) -> dict:
    """The global config JSON ``LiteBalancer.from_config`` accepts, for one local liteserver."""
    return {
        "@type": "config.global",
        "liteservers": [{"ip": struct.unpack(">i", socket.inet_aton(host_ip))[0], "port": port,
                         "id": {"@type": "pub.ed25519", "key": base64.b64encode(server_public_key).decode()}}],
        "validator": {"@type": "validator.config.global",
                      "zero_state": {"workchain": -1, "shard": SHARD, "seqno": 0,
                                     "root_hash": base64.b64encode(init.root_hash).decode(),
                                     "file_hash": base64.b64encode(init.file_hash).decode()},
                      "init_block": {"workchain": -1, "shard": SHARD, "seqno": 0,
                                     "root_hash": base64.b64encode(init.root_hash).decode(),
                                     "file_hash": base64.b64encode(init.file_hash).decode()},
                      "hardforks": []},
    }


async def serve(*, host: str = "127.0.0.1", port: int = 0, block_interval: float = 0.5,
                genesis: list[dict] | None = None, key: bytes | None = None, toncenter_port: int | None = None,
                ready_file: Path | None = None, stop: asyncio.Event | None = None) -> None:
    """Run a chain with its ADNL liteserver (and optionally a toncenter v2 HTTP API) until
    ``stop`` is set; write ``ready_file`` (JSON: ``liteserver_config``, ports) once listening."""
    from devnet.ton.liteserver import LiteServer

    server = await LiteServer.start(host=host, port=port, block_interval=block_interval, key=key)
    runner = None
    try:
        for g in genesis or []:
            await server.call(server.chain.mint, Address(g["address"]), int(g["amount"]),
                              wallet_state_init(g) if g.get("public_key") else None)
        info = {"liteserver_config": server.global_config(), "port": server.port, "global_id": server.chain.global_id}
        if toncenter_port is not None:
            from devnet.ton.toncenter_server import start_toncenter

            runner, url = await start_toncenter(server, host=host, port=toncenter_port)
            info["toncenter"] = url
        if ready_file is not None:
            tmp = ready_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(info, indent=2))
            tmp.replace(ready_file)
        print(f"ton localchain: liteserver {host}:{server.port}" + (f", toncenter {info['toncenter']}" if runner else ""),
              flush=True)
        await (stop or asyncio.Event()).wait()
    finally:
        if runner is not None:
            await runner.cleanup()
        await server.close()


def wallet_state_init(g: dict) -> StateInit:
    """State init of a genesis wallet (WalletV4R2 of ``public_key``)."""
    from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE, WalletV4

    data = WalletV4.create_data_cell(bytes.fromhex(g["public_key"]), None, 0)
    return StateInit(code=WALLET_V4_R2_CODE, data=data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devnet.ton.localchain",
                                 description="Local TON test chain (real TVM emulator) with an ADNL liteserver.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="liteserver TCP port (0: any free one)")
    ap.add_argument("--toncenter-port", type=int, default=None, help="also serve a toncenter v2 API on this port")
    ap.add_argument("--block-interval", type=float, default=0.5)
    ap.add_argument("--state-dir", type=Path, required=True,
                    help="directory for ready.json (config, ports), genesis.json (input) and key")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    d: Path = args.state_dir
    d.mkdir(parents=True, exist_ok=True)
    genesis = json.loads((d / "genesis.json").read_text()) if (d / "genesis.json").exists() else []
    key_file = d / "liteserver.key"
    if not key_file.exists():
        key_file.write_bytes(os.urandom(32))
        key_file.chmod(0o600)
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(host=args.host, port=args.port, block_interval=args.block_interval, genesis=genesis,
                    key=key_file.read_bytes(), toncenter_port=args.toncenter_port, ready_file=d / "ready.json",
                    stop=stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
