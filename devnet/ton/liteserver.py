"""An ADNL-over-TCP liteserver for ``LocalChain``, speaking the ``lite_api`` TL schema that
ships with pytoniq-core, so that an unmodified ``LiteBalancer.from_config(cfg, trust_level=2)``
(or ``LiteClient``) can read blocks, accounts and transactions, run get-methods and send
external messages.

Protocol (what pytoniq's client does, mirrored): the client opens TCP and sends a 256-byte
handshake ``server key id | client ed25519 key | sha256(rand) | aes-ctr(rand)`` keyed by the
x25519 shared secret; both sides then AES-CTR the stream with keys cut from ``rand``. Every
packet is ``len(LE u32) | nonce(32) | payload | sha256(nonce | payload)``; payloads are TL:
``tcp.ping``/``tcp.pong`` and ``adnl.message.query{query_id, liteServer.query{data}}`` answered
by ``adnl.message.answer{query_id, answer}``. TL ``int256`` values travel as the hex strings the
TL codec produces (the answer's ``query_id`` is echoed as received).

Methods served: getMasterchainInfo(Ext), getTime, getVersion, getBlockHeader, lookupBlock,
getAllShardsInfo, getAccountState, runSmcMethod, getTransactions, getOneTransaction,
sendMessage and the ``waitMasterchainSeqno`` prefix. Others answer ``liteServer.error``.
Proofs are structurally valid but unsigned: clients must use ``trust_level=2``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from nacl.signing import SigningKey
from pytoniq_core import Cell
from pytoniq_core.crypto.ciphers import aes_ctr_decrypt, aes_ctr_encrypt, create_aes_ctr_cipher, get_shared_key
from pytoniq_core.tl.generator import TlGenerator

from relayers.ton import cells
from devnet.ton.localchain import Block, BlockId, LocalChain, MessageRejected, global_config

log = logging.getLogger("creditbridge.ton.liteserver")

ERR_NOT_READY = 651  # LS error codes as the real liteserver uses them
ERR_TIMEOUT = 652
ERR_PROTOCOL = 400  # unknown or malformed query
ERR_FAILURE = 500

_schemas = None


def schemas():
    global _schemas
    if _schemas is None:
        _schemas = TlGenerator.with_default_schemas().generate()
    return _schemas


class LsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _tl_error(code: int, message: str) -> bytes:
    """``liteServer.error`` by hand: pytoniq-core's TL codec does not serialize ``string``."""
    raw = message.encode()[:4000]
    body = (bytes([len(raw)]) if len(raw) <= 253 else b"\xfe" + len(raw).to_bytes(3, "little")) + raw
    body += b"\x00" * (-len(body) % 4)
    return schemas().get_by_name("liteServer.error").little_id() + code.to_bytes(4, "little", signed=True) + body


def _blk(b: BlockId) -> dict:
    return b.tl()


class LiteServer:
    """ADNL liteserver over a LocalChain that produces a block every ``block_interval`` s.
    All chain work (emulation, state serialization) runs in one worker thread, off the loop."""

    def __init__(self, chain: LocalChain, key: bytes, block_interval: float, executor: ThreadPoolExecutor) -> None:
        self.chain = chain
        self.signing_key = SigningKey(key)
        self.public_key = bytes(self.signing_key.verify_key)
        self.key_id = hashlib.sha256(b"\xc6\xb4\x13\x48" + self.public_key).digest()
        self._x25519 = self.signing_key.to_curve25519_private_key().encode()
        self.block_interval = block_interval
        self.executor = executor
        self.server: asyncio.base_events.Server | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._new_block = asyncio.Condition()
        self._producer: asyncio.Task | None = None
        self._conns: set[asyncio.Task] = set()
        self.sent_messages = 0
        self.handlers: dict[str, Callable[[dict], Any]] = {
            "liteServer.getMasterchainInfo": self._masterchain_info,
            "liteServer.getMasterchainInfoExt": self._masterchain_info_ext,
            "liteServer.getTime": lambda q: {"@type": "liteServer.currentTime", "now": int(time.time())},
            "liteServer.getVersion": lambda q: {"@type": "liteServer.version", "mode": 0, "version": 0x101,
                                                "capabilities": 7, "now": int(time.time())},
            "liteServer.getBlockHeader": self._block_header,
            "liteServer.lookupBlock": self._lookup_block,
            "liteServer.getAllShardsInfo": self._all_shards,
            "liteServer.getAccountState": self._account_state,
            "liteServer.runSmcMethod": self._run_method,
            "liteServer.getTransactions": self._transactions,
            "liteServer.getOneTransaction": self._one_transaction,
            "liteServer.sendMessage": self._send_message,
        }

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    async def start(cls, *, host: str = "127.0.0.1", port: int = 0, block_interval: float = 0.5,
                    key: bytes | None = None, chain: LocalChain | None = None) -> "LiteServer":
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ton-localchain")
        if chain is None:
            chain = await asyncio.get_running_loop().run_in_executor(executor, LocalChain)
        self = cls(chain, key or os.urandom(32), block_interval, executor)
        self.server = await asyncio.start_server(self._serve_conn, host, port)
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        if block_interval > 0:
            self._producer = asyncio.create_task(self._produce())
        return self

    async def close(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            await asyncio.gather(self._producer, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self.server.wait_closed()
        self.executor.shutdown(wait=True)

    def global_config(self) -> dict:
        return global_config(self.host, self.port, self.public_key, self.chain.blocks[0].mc)

    async def call(self, fn: Callable, *args):
        """Run ``fn(*args)`` on the chain's worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def seal(self) -> Block:
        block = await self.call(self.chain.seal_block)
        async with self._new_block:
            self._new_block.notify_all()
        return block

    async def _produce(self) -> None:
        while True:
            await asyncio.sleep(self.block_interval)
            try:
                await self.seal()
            except Exception:  # keep producing; a failed seal is a bug worth a log line
                log.exception("sealing a block failed")

    async def wait_seqno(self, seqno: int, timeout: float) -> bool:
        async with self._new_block:
            try:
                await asyncio.wait_for(self._new_block.wait_for(lambda: self.chain.last.seqno >= seqno), timeout)
                return True
            except TimeoutError:
                return False

    # ------------------------------------------------------------------ ADNL transport
    async def _serve_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns.add(task)
        try:
            hs = await reader.readexactly(256)
            if hs[:32] != self.key_id:
                return
            client_pub, checksum, enc = hs[32:64], hs[64:96], hs[96:256]
            from nacl.signing import VerifyKey

            shared = get_shared_key(self._x25519, VerifyKey(client_pub).to_curve25519_public_key().encode())
            init = create_aes_ctr_cipher(shared[0:16] + checksum[16:32], checksum[0:4] + shared[20:32])
            rand = aes_ctr_decrypt(init, enc)
            if hashlib.sha256(rand).digest() != checksum:
                return
            send_c = create_aes_ctr_cipher(rand[0:32], rand[64:80])
            recv_c = create_aes_ctr_cipher(rand[32:64], rand[80:96])
            lock = asyncio.Lock()

            async def send(payload: bytes) -> None:
                nonce = os.urandom(32)
                body = nonce + payload
                packet = (len(body) + 32).to_bytes(4, "little") + body + hashlib.sha256(body).digest()
                async with lock:
                    writer.write(aes_ctr_encrypt(send_c, packet))
                    await writer.drain()

            await send(b"")  # handshake answer: an empty packet
            pending: set[asyncio.Task] = set()
            while True:
                n = int.from_bytes(aes_ctr_decrypt(recv_c, await reader.readexactly(4)), "little")
                if not 64 <= n <= 1 << 24:
                    return
                data = aes_ctr_decrypt(recv_c, await reader.readexactly(n))
                if hashlib.sha256(data[:-32]).digest() != data[-32:]:
                    return
                payload = data[32:-32]
                if not payload:
                    continue
                t = asyncio.create_task(self._packet(payload, send))
                pending.add(t)
                t.add_done_callback(pending.discard)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _packet(self, payload: bytes, send) -> None:
        s = schemas()
        try:
            msg, _ = s.deserialize(payload, boxed=True)
        except Exception:
            log.debug("undecodable packet dropped")
            return
        kind = msg.get("@type") if isinstance(msg, dict) else None
        try:
            if kind == "tcp.ping":
                await send(s.serialize("tcp.pong", {"random_id": msg["random_id"]}))
            elif kind == "adnl.message.query":
                await send(s.serialize("adnl.message.answer", {"query_id": msg["query_id"],
                                                               "answer": await self._answer(msg.get("query"))}))
        except ConnectionError:
            pass  # the client went away; nothing to answer

    async def _answer(self, query: Any) -> bytes:
        try:
            return await self._query(query)
        except LsError as e:
            return _tl_error(e.code, e.message)
        except Exception as e:  # a bug in this server: answer it rather than hang the client
            log.exception("liteserver query failed")
            return _tl_error(ERR_FAILURE, f"{e.__class__.__name__}: {e}")

    async def _query(self, query: Any) -> bytes:
        if not isinstance(query, dict) or query.get("@type") != "liteServer.query":
            raise LsError(ERR_PROTOCOL, "expected liteServer.query")
        data = query.get("data")
        parts = data if isinstance(data, list) else [data]
        if not parts or not isinstance(parts[0], dict):
            raise LsError(ERR_PROTOCOL, "undecodable query")
        if parts[0].get("@type") == "liteServer.waitMasterchainSeqno":
            wait = parts.pop(0)
            ok = await self.wait_seqno(int(wait["seqno"]), int(wait["timeout_ms"]) / 1000)
            if not ok:
                raise LsError(ERR_TIMEOUT, "timeout")
            if not parts:
                raise LsError(ERR_PROTOCOL, "waitMasterchainSeqno without a query")
        q = parts[0]
        handler = self.handlers.get(q.get("@type"))
        if handler is None:
            raise LsError(ERR_PROTOCOL, f"unsupported query {q.get('@type')}")
        if q.get("@type") == "liteServer.sendMessage":
            result = await self._send_message(q)
        else:
            result = await self.call(handler, q)
        return schemas().serialize(result["@type"], result)

    # ------------------------------------------------------------------ handlers (worker thread)
    def _find(self, bid: dict) -> tuple[Block, BlockId]:
        root = bytes.fromhex(bid["root_hash"]) if bid.get("root_hash") else None
        found = self.chain.find_block(int(bid["workchain"]), int(bid["seqno"]), root)
        if found is None:
            raise LsError(ERR_NOT_READY, f"block ({bid['workchain']},{bid['seqno']}) not found")
        return found

    def _masterchain_info(self, q: dict) -> dict:
        last = self.chain.last
        return {"@type": "liteServer.masterchainInfo", "last": _blk(last.mc), "state_root_hash": last.mc_state_hash.hex(),
                "init": self._init()}

    def _init(self) -> dict:
        z = self.chain.blocks[0].mc
        return {"workchain": -1, "root_hash": z.root_hash.hex(), "file_hash": z.file_hash.hex()}

    def _masterchain_info_ext(self, q: dict) -> dict:
        last = self.chain.last
        return {"@type": "liteServer.masterchainInfoExt", "mode": 0, "version": 0x101, "capabilities": 7,
                "last": _blk(last.mc), "last_utime": last.gen_utime, "now": int(time.time()),
                "state_root_hash": last.mc_state_hash.hex(), "init": self._init()}

    def _header_answer(self, block: Block, bid: BlockId) -> dict:
        header = block.mc_header if bid.workchain == -1 else block.shard_header
        return {"@type": "liteServer.blockHeader", "id": _blk(bid), "mode": 0,
                "header_proof": cells.merkle_proof(header).to_boc()}

    def _block_header(self, q: dict) -> dict:
        return self._header_answer(*self._find(q["id"]))

    def _lookup_block(self, q: dict) -> dict:
        mode, bid = int(q["mode"]), q["id"]
        wc = int(bid["workchain"])
        if wc not in (-1, 0):
            raise LsError(ERR_NOT_READY, f"workchain {wc} not found")
        if mode & 1:
            block = self.chain.block(int(bid["seqno"]))
        elif mode & 2:
            block = self.chain.block_by_lt(int(q["lt"]))
        elif mode & 4:
            block = self.chain.block_by_utime(int(q["utime"]))
        else:
            raise LsError(ERR_PROTOCOL, "lookupBlock needs a seqno, lt or utime")
        if block is None:
            raise LsError(ERR_NOT_READY, "block not found")
        return self._header_answer(block, block.mc if wc == -1 else block.shard)

    def _all_shards(self, q: dict) -> dict:
        block, bid = self._find(q["id"])
        return {"@type": "liteServer.allShardsInfo", "id": _blk(bid), "proof": b"",
                "data": block.shard_hashes.to_boc()}

    def _account_state(self, q: dict) -> dict:
        block, bid = self._find(q["id"])
        acc = q["account"]
        if int(acc["workchain"]) != 0:
            raise LsError(ERR_NOT_READY, "only workchain 0 is modelled")
        sa = block.accounts.get(bytes.fromhex(acc["id"]))
        proof = cells.boc([cells.merkle_proof(block.shard_header), cells.merkle_proof(block.shard_state)])
        return {"@type": "liteServer.accountState", "id": _blk(bid), "shardblk": _blk(block.shard),
                "shard_proof": b"", "proof": proof, "state": sa.refs[0].to_boc() if sa is not None else b""}

    def _run_method(self, q: dict) -> dict:
        block, bid = self._find(q["id"])
        acc = q["account"]
        params = q.get("params")
        if params:
            stack = Cell.one_from_boc(params)
        else:
            from pytoniq_core.tlb import VmStack

            stack = VmStack.serialize([])
        res = self.chain.get_method(block, bytes.fromhex(acc["id"]), int(q["method_id"]) & 0xFFFFFFFF, stack)
        if res.get("stack") is None and res.get("vm_exit_code") == -256:
            raise LsError(ERR_NOT_READY, "cannot run get-method: account is not active")
        return {"@type": "liteServer.runMethodResult", "mode": 4, "id": _blk(bid), "shardblk": _blk(block.shard),
                "exit_code": int(res["vm_exit_code"]), "result": base64.b64decode(res["stack"]) if res.get("stack") else b""}

    def _transactions(self, q: dict) -> dict:
        acc = q["account"]
        addr = bytes.fromhex(acc["id"])
        count = min(int(q["count"]), 16)
        recs = self.chain.history(addr, int(q["lt"]), bytes.fromhex(q["hash"]), count)
        if not recs:
            raise LsError(ERR_NOT_READY, "transaction not found")
        return {"@type": "liteServer.transactionList", "ids": [_blk(self.chain.blocks[r.block].shard) for r in recs],
                "transactions": cells.boc([r.cell for r in recs])}

    def _one_transaction(self, q: dict) -> dict:
        block, bid = self._find(q["id"])
        rec = self.chain.txs.get((bytes.fromhex(q["account"]["id"]), int(q["lt"])))
        if rec is None or rec.block < 0 or rec.block > block.seqno:
            return {"@type": "liteServer.transactionInfo", "id": _blk(bid), "proof": b"", "transaction": b""}
        return {"@type": "liteServer.transactionInfo", "id": _blk(self.chain.blocks[rec.block].shard), "proof": b"",
                "transaction": rec.boc}

    async def _send_message(self, q: dict) -> dict:
        body = q.get("body")
        if not isinstance(body, bytes):
            raise LsError(ERR_PROTOCOL, "sendMessage needs a BOC")
        try:
            await self.call(self.chain.send_external, body)
        except MessageRejected as e:
            raise LsError(0, str(e)) from None
        self.sent_messages += 1
        return {"@type": "liteServer.sendMsgStatus", "status": 1}

