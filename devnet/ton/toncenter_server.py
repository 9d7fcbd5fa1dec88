"""A toncenter v2-compatible HTTP API over the local chain (tests and the devnet), serving the
same blocks and transactions as the ADNL liteserver in toncenter's documented JSON format:

    GET /api/v2/getMasterchainInfo
    GET /api/v2/lookupBlock?workchain=&shard=&seqno=     (or lt= / unixtime=)
    GET /api/v2/getBlockHeader?workchain=&shard=&seqno=
    GET /api/v2/getAddressInformation?address=[&seqno=]
    GET /api/v2/getTransactions?address=&limit=[&lt=&hash=&to_lt=&archival=]
    POST /api/v2/sendBoc {"boc": base64}

Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": ..., "code": ...}``;
hashes are base64, lt and balances decimal strings, ``getTransactions`` items carry the raw
transaction BOC in ``data`` and ``transaction_id{lt, hash}``.
"""

from __future__ import annotations

import base64

from aiohttp import web
from pytoniq_core import Address, Cell
from pytoniq_core.tlb.transaction import Transaction

from devnet.ton.liteserver import LiteServer
from devnet.ton.localchain import SHARD, Block, BlockId, MessageRejected, account_balance

SERVER = web.AppKey("server", LiteServer)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _block_id(b: BlockId) -> dict:
    return {"@type": "ton.blockIdExt", "workchain": b.workchain, "shard": str(SHARD), "seqno": b.seqno,
            "root_hash": _b64(b.root_hash), "file_hash": _b64(b.file_hash)}


def _int(q, name: str, default=None) -> int | None:
    v = q.get(name)
    if v is None or v == "":
        if default is not None or name not in ("workchain", "seqno", "address"):
            return default
        raise ApiError(422, f"parameter {name} is required")
    try:
        return int(v)
    except ValueError:
        raise ApiError(422, f"parameter {name} must be an integer") from None


def _address(q) -> Address:
    try:
        return Address(q["address"])
    except KeyError:
        raise ApiError(422, "parameter address is required") from None
    except Exception:
        raise ApiError(416, "Incorrect address") from None


def _hash_param(v: str) -> bytes:
    try:
        b = bytes.fromhex(v) if len(v) == 64 else base64.b64decode(v.replace("-", "+").replace("_", "/") + "=" * (-len(v) % 4))
    except ValueError:
        raise ApiError(422, "hash must be hex or base64") from None
    if len(b) != 32:
        raise ApiError(422, "hash must be 32 bytes")
    return b


def _friendly(a: Address | None) -> str:
    return a.to_str(is_user_friendly=True, is_bounceable=True, is_url_safe=True) if a is not None else ""


def _message(m) -> dict:
    if m is None:
        return {}
    info = m.info
    body = m.body if m.body is not None else Cell.empty()
    value = getattr(getattr(info, "value", None), "grams", 0) or 0
    src = getattr(info, "src", None)
    dest = getattr(info, "dest", None)
    return {"@type": "raw.message",
            "source": _friendly(src) if isinstance(src, Address) else "",
            "destination": _friendly(dest) if isinstance(dest, Address) else "",
            "value": str(value), "fwd_fee": str(getattr(info, "fwd_fee", 0) or 0),
            "ihr_fee": str(getattr(info, "ihr_fee", 0) or 0), "created_lt": str(getattr(info, "created_lt", 0) or 0),
            "body_hash": _b64(body.hash),
            "msg_data": {"@type": "msg.dataRaw", "body": _b64(body.to_boc()), "init_state": ""},
            "message": ""}


def _tx_json(rec, address: Address) -> dict:
    tx = Transaction.deserialize(rec.cell.begin_parse())
    return {"@type": "raw.transaction",
            "address": {"@type": "accountAddress", "account_address": _friendly(address)},
            "utime": rec.now, "data": _b64(rec.boc),
            "transaction_id": {"@type": "internal.transactionId", "lt": str(rec.lt), "hash": _b64(rec.hash)},
            "fee": str(tx.total_fees.grams), "storage_fee": "0", "other_fee": str(tx.total_fees.grams),
            "in_msg": _message(tx.in_msg), "out_msgs": [_message(m) for m in tx.out_msgs]}


def _pick_block(server: LiteServer, q) -> Block:
    chain = server.chain
    seqno = q.get("seqno")
    if seqno not in (None, ""):
        b = chain.block(_int(q, "seqno"))
    elif q.get("lt"):
        b = chain.block_by_lt(_int(q, "lt"))
    elif q.get("unixtime"):
        b = chain.block_by_utime(_int(q, "unixtime"))
    else:
        raise ApiError(422, "one of seqno, lt, unixtime is required")
    if b is None:
        raise ApiError(404, "block not found")
    return b


def _handlers(server: LiteServer):
    chain = server.chain

    def masterchain_info(q):
        last = chain.last
        return {"@type": "blocks.masterchainInfo", "last": _block_id(last.mc),
                "state_root_hash": _b64(last.mc_state_hash), "init": _block_id(chain.blocks[0].mc)}

    def lookup_block(q):
        wc = _int(q, "workchain")
        b = _pick_block(server, q)
        return _block_id(b.mc if wc == -1 else b.shard)

    def block_header(q):
        wc = _int(q, "workchain")
        b = _pick_block(server, q)
        bid = b.mc if wc == -1 else b.shard
        return {"@type": "blocks.header", "id": _block_id(bid), "global_id": chain.global_id, "version": 0,
                "flags": 0, "after_merge": False, "after_split": False, "before_split": False, "want_merge": False,
                "want_split": False, "validator_list_hash_short": 0, "catchain_seqno": 0,
                "min_ref_mc_seqno": max(b.seqno - 1, 0), "is_key_block": b.seqno == 0, "prev_key_block_seqno": 0,
                "start_lt": str(b.start_lt), "end_lt": str(b.end_lt), "gen_utime": b.gen_utime, "prev_blocks": []}

    def address_information(q):
        addr = _address(q)
        b = chain.block(_int(q, "seqno", chain.last.seqno))
        if b is None:
            raise ApiError(404, "block not found")
        sa = b.accounts.get(addr.hash_part) if addr.wc == 0 else None
        res = {"@type": "raw.fullAccountState", "balance": "0", "code": "", "data": "",
               "last_transaction_id": {"@type": "internal.transactionId", "lt": "0", "hash": _b64(b"\x00" * 32)},
               "block_id": _block_id(b.mc), "frozen_hash": "", "sync_utime": b.gen_utime, "state": "uninitialized"}
        if sa is not None:
            s = sa.begin_parse()
            s.load_ref()
            last_hash, last_lt = s.load_bytes(32), s.load_uint(64)
            res["balance"] = str(account_balance(sa))
            res["last_transaction_id"] = {"@type": "internal.transactionId", "lt": str(last_lt), "hash": _b64(last_hash)}
            from pytoniq_core.tlb.account import Account

            acc = Account.deserialize(sa.refs[0].begin_parse())
            st = acc.storage.state if acc is not None else None
            if st is not None and st.type_ == "account_active":
                res["state"] = "active"
                res["code"] = _b64(st.state_init.code.to_boc()) if st.state_init.code else ""
                res["data"] = _b64(st.state_init.data.to_boc()) if st.state_init.data else ""
        return res

    def transactions(q):
        addr = _address(q)
        limit = min(max(_int(q, "limit", 10), 1), 100)
        lt = _int(q, "lt", 0)
        to_lt = _int(q, "to_lt", 0)
        if lt:
            if not q.get("hash"):
                raise ApiError(422, "lt must be sent with hash")
            start_hash = _hash_param(q["hash"])
        else:
            sa = chain.last.accounts.get(addr.hash_part) if addr.wc == 0 else None
            if sa is None:
                return []
            s = sa.begin_parse()
            s.load_ref()
            start_hash, lt = s.load_bytes(32), s.load_uint(64)
            if not lt:
                return []
        recs = chain.history(addr.hash_part, lt, start_hash, limit)
        if not recs:
            raise ApiError(404, "transaction not found (lt/hash)")
        return [_tx_json(r, addr) for r in recs if r.lt > to_lt]

    return {"getMasterchainInfo": masterchain_info, "lookupBlock": lookup_block, "getBlockHeader": block_header,
            "getAddressInformation": address_information, "getTransactions": transactions}


def create_app(server: LiteServer) -> web.Application:
    app = web.Application()
    app[SERVER] = server
    handlers = _handlers(server)

    async def get(request: web.Request) -> web.Response:
        fn = handlers.get(request.match_info["method"])
        if fn is None:
            return web.json_response({"ok": False, "error": "Not Found", "code": 404}, status=404)
        try:
            result = await server.call(fn, dict(request.query))
        except ApiError as e:
            return web.json_response({"ok": False, "error": str(e), "code": e.status}, status=e.status)
        return web.json_response({"ok": True, "result": result})

    async def send_boc(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            boc = base64.b64decode(body["boc"])
        except (ValueError, KeyError, TypeError):
            return web.json_response({"ok": False, "error": "boc (base64) is required", "code": 422}, status=422)
        try:
            await server.call(server.chain.send_external, boc)
        except MessageRejected as e:
            return web.json_response({"ok": False, "error": str(e), "code": 500}, status=500)
        return web.json_response({"ok": True, "result": {"@type": "ok"}})

    app.router.add_post("/api/v2/sendBoc", send_boc)
    app.router.add_get("/api/v2/{method}", get)
    return app


async def start_toncenter(server: LiteServer, host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(server), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    real_port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://{host}:{real_port}/api/v2"
