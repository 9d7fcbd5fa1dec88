#!/usr/bin/env python3
"""Record a real chopsticks WebSocket session for the substrate replay tests.

Starts chopsticks on the offline Asset Hub runtime (Manual block mode), puts a recording
WebSocket proxy in front of it and, through that proxy, runs what a relayer does: a
``chain_subscribeFinalizedHeads`` subscriber and a ``SubstrateWatcher`` that follows every
block, fetches deposits, checks block refs, re-observes deposits and asks for block times.
Meanwhile payments (valid and not) are signed by dev keys and submitted straight to
chopsticks, one small block at a time. Every text frame through the proxy is written, in
order and per connection, to the fixture, together with the payments made and the deposits
the watcher observed live::

    .venv/bin/python scripts/record_chopsticks_session.py tests/data/chopsticks_session.json

The fixture is small (the runtime metadata is the largest frame) and is committed; the
runtime itself is not. Re-record after changing what the watcher asks the node.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import WSMsgType, web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bridge.config import SubstrateChainConfig  # noqa: E402
from devnet.substrate.chopsticks import ChopsticksNode  # noqa: E402
from relayers.substrate.multisig import committee_address  # noqa: E402
from relayers.substrate.networks import CHOPSTICKS_GENESIS  # noqa: E402
from relayers.substrate.wallet import connect, keypair  # noqa: E402
from relayers.substrate.watcher import SubstrateWatcher  # noqa: E402

UNIT = 10**12
SEEDS = ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve", "//Poor")


def member_key(i: int) -> str:
    return "0x" + hashlib.blake2b(f"creditbridge-replay/member/{i}".encode(), digest_size=32).hexdigest()


COMMITTEE = {"members": [member_key(i) for i in range(3)], "threshold": 2}


def reference(label: str) -> bytes:
    return hashlib.blake2b(f"creditbridge-replay/ref/{label}".encode(), digest_size=32).digest()


class Recorder:
    """A WebSocket proxy that records every text frame, per connection."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.frames: list[dict] = []
        self.t0 = time.monotonic()
        self._conns = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    def _log(self, conn: int, direction: str, data: str) -> None:
        self.frames.append({"conn": conn, "t": round((time.monotonic() - self.t0) * 1000), "dir": direction,
                            "data": data})

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        conn = self._conns
        self._conns += 1
        down = web.WebSocketResponse(max_msg_size=0)
        await down.prepare(request)
        async with aiohttp.ClientSession() as s, s.ws_connect(self.upstream, max_msg_size=0) as up:
            async def pump_up():
                async for m in down:
                    if m.type == WSMsgType.TEXT:
                        self._log(conn, "out", m.data)
                        await up.send_str(m.data)
                await up.close()

            async def pump_down():
                async for m in up:
                    if m.type == WSMsgType.TEXT:
                        self._log(conn, "in", m.data)
                        await down.send_str(m.data)
                await down.close()

            await asyncio.gather(pump_up(), pump_down())
        return down

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def _obs_json(o) -> dict:
    return {"chain": o.chain, "source": o.source.hex(), "sequence": o.sequence, "tx_id": o.tx_id.hex(),
            "event_index": o.event_index, "block_number": o.block_number, "block_hash": o.block_hash.hex(),
            "timestamp": o.timestamp, "token": o.token, "amount": str(o.amount), "payer": o.payer.hex(),
            "reference": o.reference.hex()}


async def record(out: Path) -> dict:
    cfg = SubstrateChainConfig(family="substrate", name="polkadot", rpc=["ws://127.0.0.1:1"], token="DOT",
                               ss58_prefix=0, genesis_hash=CHOPSTICKS_GENESIS, committee=COMMITTEE)
    to = committee_address(cfg.committee, 42)
    balances = {keypair(s).ss58_address: (10**12 if s == "//Poor" else 10**18) for s in SEEDS}
    node = await ChopsticksNode.start(Path(tempfile.mkdtemp()), "record", balances=balances,
                                      build_block_mode="Manual")
    rec = Recorder(node.ws_url)
    await rec.start()
    payments: list[dict] = []
    observed: list = []
    si = await asyncio.to_thread(connect, node.ws_url)
    nonces: dict[str, int] = {}
    try:
        watcher = SubstrateWatcher(cfg.model_copy(update={"rpc": [rec.url]}))
        session = aiohttp.ClientSession()
        sub = await session.ws_connect(rec.url, max_msg_size=0)
        await sub.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chain_subscribeFinalizedHeads",
                                       "params": []}))

        def send(seed: str, calls, label: str, ref: bytes | None, amount: int, counts: bool,
                 batch: str = "batch_all") -> str:
            kp = keypair(seed)
            built = [si.compose_call(m, f, a) for m, f, a in calls]
            call = si.compose_call("Utility", batch, {"calls": built}) if batch else built[0]
            nonce = nonces.get(seed, si.get_account_nonce(kp.ss58_address))
            xt = si.create_signed_extrinsic(call=call, keypair=kp, nonce=nonce)
            nonces[seed] = nonce + 1
            si.submit_extrinsic(xt, wait_for_inclusion=False)
            payments.append({"label": label, "hash": "0x" + xt.extrinsic_hash.hex(), "reference":
                             ref.hex() if ref else None, "amount": str(amount), "counts": counts})
            return "0x" + xt.extrinsic_hash.hex()

        def pay(seed, label, amount, counts=True, dest=None, with_remark=True, batch="batch_all", extra=()):
            ref = reference(label)
            calls = [("Balances", "transfer_keep_alive", {"dest": dest or to, "value": amount})]
            if with_remark:
                calls.append(("System", "remark_with_event", {"remark": "0x" + ref.hex()}))
            calls.extend(extra)
            return send(seed, calls, label, ref, amount, counts, batch)

        rounds = [
            [],
            [lambda: pay("//Alice", "alice-1", 3 * UNIT)],
            [lambda: pay("//Bob", "bob-batch", 2 * UNIT, batch="batch"),
             lambda: pay("//Charlie", "charlie-1", UNIT),
             lambda: pay("//Dave", "no-remark", UNIT, counts=False, with_remark=False)],
            [],
            [lambda: pay("//Poor", "too-poor", 5 * UNIT, counts=False),
             lambda: pay("//Eve", "other-account", UNIT, counts=False, dest=keypair("//Bob").ss58_address)],
            [lambda: pay("//Dave", "dave-underpaid", 7)],
            [],
            [lambda: pay("//Alice", "alice-2", 4 * UNIT),
             lambda: pay("//Bob", "interrupted", 10**30, counts=False, batch="batch")],
            [],
            [lambda: pay("//Eve", "eve-1", 6 * UNIT)],
            [],
        ]
        height = await watcher.finalized_height()
        start = height + 1
        for r in rounds:
            for make in r:
                await asyncio.to_thread(make)
            block_hash = await node.new_block()
            blk = await node.rpc("chain_getBlock", block_hash)
            hashes = ["0x" + hashlib.blake2b(bytes.fromhex(x[2:]), digest_size=32).hexdigest()
                      for x in blk["block"]["extrinsics"]]
            number = int(blk["block"]["header"]["number"], 16)
            for p in payments:
                if p["hash"] in hashes:
                    p["block"], p["index"] = number, hashes.index(p["hash"])
            final = await watcher.finalized_height()
            observed += await watcher.fetch_deposits(height + 1, final)
            await watcher.block_ref(final)
            height = final
        for o in observed:
            assert await watcher.reobserve(o.tx_id) == [o]
        await watcher.pending_deposits()
        await watcher.block_time(height)
        await asyncio.sleep(0.5)  # let the last subscription notifications arrive
        await sub.close()
        await session.close()
        await watcher.aclose()
    finally:
        si.close()
        await rec.stop()
        await node.stop()

    assert all("block" in p for p in payments), "a payment was not included"
    counted = sorted(p["reference"] for p in payments if p["counts"])
    assert counted == sorted(o.reference.hex() for o in observed), "the live watcher disagrees with the plan"
    session_json = {
        "about": "chopsticks 1.5.1, Rococo Asset Hub runtime (spec 900) from @substrate/connect-known-chains; "
                 "recorded by scripts/record_chopsticks_session.py",
        "chain": cfg.name, "token": cfg.token, "ss58_prefix": cfg.ss58_prefix, "genesis_hash": CHOPSTICKS_GENESIS,
        "committee": COMMITTEE, "start_block": start, "end_block": height,
        "payments": payments, "observed": [_obs_json(o) for o in observed], "frames": rec.frames,
    }
    out.write_text(json.dumps(session_json, separators=(",", ":")))
    return session_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "tests/data/chopsticks_session.json"))
    args = ap.parse_args()
    s = asyncio.run(record(Path(args.out)))
    size = Path(args.out).stat().st_size
    print(f"recorded {len(s['frames'])} frames, blocks {s['start_block']}..{s['end_block']}, "
          f"{len(s['observed'])} deposits, {size / 1024:.0f} KiB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
