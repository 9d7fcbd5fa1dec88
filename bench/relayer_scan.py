"""Relayer throughput: the EVM watcher + follower persisting deposits, against a raw scan.

    .venv/bin/python bench/relayer_scan.py [--deposits 10000] [--per-block 10] [--pg] [--rounds 3]

Puts ``--deposits`` ``lock(bytes32)`` deposits on a fresh anvil (``--per-block`` a block, so
10,000 deposits span 1,000 blocks), then times, in the same run and against the same node:

* **raw**: ``eth_getLogs`` over the range in chunks of ``max_block_range`` blocks and an
  ``eth_abi`` decode of every ``Locked`` log -- the floor of any EVM relayer;
* **relayer**: ``EvmWatcher`` + ``DepositFollower`` from the first block to the head, i.e. the
  logs plus everything that makes them safe (each log's receipt re-checked against the
  canonical block hash, the observations and the cursor committed to the database), on a
  migrated SQLite file database, and on PostgreSQL with ``--pg`` (started by
  ``scripts/pg.sh``; the URL is taken from ``CREDITBRIDGE_TEST_PG_URL`` if set).

Printed: deposits/s of each and the relayer/raw throughput ratio (target >= 0.5). With
``--rounds N`` the scans run N times interleaved (raw, SQLite, PostgreSQL, raw, ...) and the
fastest round of each is compared (the least disturbed on a shared machine); every round's
time and same-round ratio, and the median of those, are printed too. Both scans run with the garbage collector tuned as
every service process runs (``bridge.gctune.service_gc``, held by ``Supervisor.run``): before
that, one full collection of the import graph took ~70 ms of a relayer round. Also printed,
because a loaded machine stretches wall-clock times by whatever else runs: the CPU time each scan cost (Linux ``/proc``): this
process's (all threads, so aiosqlite's too), anvil's, and on PostgreSQL the server backends'
of the bench database; the "CPU ratio" is raw's total over the relayer's (median rounds).
The chain
needs (blocks x block time) to produce; the catch-up rate printed as "x real time" is how many
times faster than Ethereum's 12 s blocks the relayer catches up after being offline. Nothing
here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


async def _put_deposits(node, lock: str, n: int, per_block: int) -> tuple[int, int]:
    from eth_utils import keccak

    from devnet.evm.anvil import DEV_PRIVATE_KEYS
    from eth_account import Account

    senders = [Account.from_key(k).address for k in DEV_PRIVATE_KEYS[1:10]]
    selector = keccak(text="lock(bytes32)")[:4]
    await node.rpc("evm_setAutomine", False)
    first = int(await node.rpc("eth_blockNumber"), 16) + 1
    session = node._get_session()
    sent = 0
    while sent < n:
        batch = []
        for j in range(min(per_block, n - sent)):
            ref = keccak(text=f"bench-ref-{sent + j}")
            batch.append({"jsonrpc": "2.0", "id": j, "method": "eth_sendTransaction", "params": [{
                "from": senders[(sent + j) % len(senders)], "to": lock, "value": hex(10**15 + sent + j),
                "data": "0x" + (selector + ref).hex(), "gas": hex(100_000)}]})
        async with session.post(node.rpc_url, json=batch) as r:
            answers = await r.json()
        bad = [a for a in answers if "error" in a]
        if bad:
            raise RuntimeError(f"sending deposits failed: {bad[0]['error']}")
        await node.rpc("evm_mine")
        sent += len(batch)
    await node.rpc("evm_setAutomine", True)
    last = int(await node.rpc("eth_blockNumber"), 16)
    return first, last


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if unknown (not Linux, gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


class _Cpu:
    """CPU seconds of this process, anvil and the PostgreSQL backends serving ``db`` between
    ``start()`` and ``stop()`` (backends that connected meanwhile count whole)."""

    def __init__(self, anvil_pid: int, db=None) -> None:
        self.anvil_pid, self.db = anvil_pid, db

    async def _backends(self) -> dict[int, float]:
        if self.db is None or not self.db.is_postgres:
            return {}
        from sqlalchemy import text

        async with self.db.engine.connect() as conn:
            pids = (await conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))).scalars().all()
        return {p: _proc_cpu(p) for p in pids}

    async def start(self) -> None:
        self.backends = await self._backends()
        self.t = (time.process_time(), _proc_cpu(self.anvil_pid))

    async def stop(self) -> dict:
        client, anvil = time.process_time() - self.t[0], _proc_cpu(self.anvil_pid) - self.t[1]
        db = sum(cpu - self.backends.get(p, 0.0) for p, cpu in (await self._backends()).items())
        return {"client": client, "node": anvil, "db": db, "total": client + anvil + db}


async def _raw(rpc_url: str, lock: str, first: int, last: int, chunk: int, anvil_pid: int = 0) -> tuple[int, float, dict]:
    import aiohttp
    from eth_abi import decode
    from eth_utils import keccak

    topic = "0x" + keccak(text="Locked(uint64,address,uint256,bytes32)").hex()
    cpu = _Cpu(anvil_pid)
    await cpu.start()
    t0 = time.perf_counter()
    count = 0
    async with aiohttp.ClientSession() as s:
        start = first
        while start <= last:
            end = min(last, start + chunk - 1)
            body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs",
                    "params": [{"address": lock, "fromBlock": hex(start), "toBlock": hex(end), "topics": [topic]}]}
            async with s.post(rpc_url, json=body) as r:
                logs = (await r.json())["result"]
            for lg in logs:
                nonce = int(lg["topics"][1], 16)
                sender = bytes.fromhex(lg["topics"][2][2:])[12:]
                ref = bytes.fromhex(lg["topics"][3][2:])
                (amount,) = decode(["uint256"], bytes.fromhex(lg["data"][2:]))
                assert nonce >= 0 and sender and ref and amount > 0
                count += 1
            start = end + 1
    elapsed = time.perf_counter() - t0
    return count, elapsed, await cpu.stop()


async def _relayer(rpc_url: str, lock: str, chain_id: int, first: int, last: int, chunk: int, db_url: str,
                   anvil_pid: int = 0) -> tuple[int, float, dict]:
    from bridge.config import EvmChainConfig
    from bridge.storage.db import Database
    from bridge.storage.observations import observations_by_status
    from bridge.watch import DepositFollower
    from relayers.evm.watcher import EvmWatcher

    cfg = EvmChainConfig(family="evm", name="ethereum", chain_id=chain_id, rpc=[rpc_url], token="ETH",
                         finality=0, contracts={"lock": lock}, max_block_range=chunk)
    db = Database(db_url)
    await db.migrate()
    watcher = EvmWatcher(cfg)
    follower = DepositFollower(watcher, db, "bench", start_block=first, max_range=chunk)
    cpu = _Cpu(anvil_pid, db)
    await cpu.start()
    t0 = time.perf_counter()
    stored = 0
    while follower.height is None or follower.height < last:
        stored += await follower.step()
    elapsed = time.perf_counter() - t0
    used = await cpu.stop()
    async with db.begin() as s:
        rows = await observations_by_status(s, "new", limit=10**6)
    await watcher.aclose()
    await db.dispose()
    if len(rows) != stored:
        raise RuntimeError(f"stored {stored} but the database holds {len(rows)}")
    return stored, elapsed, used


def _median_cpu(rounds: list[dict]) -> dict:
    """Per part (client, node, db, total), the median over the rounds."""
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def _pg_url() -> str:
    url = os.environ.get("CREDITBRIDGE_TEST_PG_URL")
    if url:
        return url
    out = subprocess.run(["bash", str(ROOT / "scripts" / "pg.sh"), "start"], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


async def _fresh_pg(url: str) -> str:
    """A fresh database on the server at ``url`` (the bench must not reuse tables)."""
    import uuid

    import asyncpg

    name = "bench_" + uuid.uuid4().hex[:8]
    plain = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(plain)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base, _, _db = url.rpartition("/")
    return f"{base}/{name}"


async def main_async(args) -> dict:
    from bridge.gctune import service_gc
    from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode
    from relayers.evm.contracts import LOCK, deploy
    from web3 import AsyncHTTPProvider, AsyncWeb3
    from eth_account import Account

    node = await AnvilNode.start(chain_id=DEFAULT_CHAIN_ID)
    try:
        w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
        committee = [Account.from_key(k).address for k in DEV_PRIVATE_KEYS[5:8]]
        lock = await deploy(w3, LOCK, [sorted(committee, key=lambda a: int(a, 16)), 2, 10**15], DEV_PRIVATE_KEYS[0])
        t0 = time.perf_counter()
        first, last = await _put_deposits(node, lock, args.deposits, args.per_block)
        print(f"put {args.deposits} deposits in blocks {first}..{last} ({time.perf_counter() - t0:.1f} s)", flush=True)
        results: dict = {"deposits": args.deposits, "blocks": last - first + 1}
        targets = [("sqlite", None)] + ([("postgresql", _pg_url())] if args.pg else [])
        times: dict[str, list[float]] = {"raw": []}
        cpus: dict[str, list[dict]] = {"raw": []}
        raw_n = 0
        pid = node._process.pid
        # the collector as in every service process while it runs (Supervisor.run): the
        # start-up heap frozen, young collections rare (bridge.gctune); raw scans run alike
        with tempfile.TemporaryDirectory() as tmp, service_gc():
            for rnd in range(args.rounds):  # interleaved, so that a load burst hits every kind alike
                raw_n, raw_t, raw_cpu = await _raw(node.rpc_url, lock, first, last, args.chunk, pid)
                times["raw"].append(raw_t)
                cpus["raw"].append(raw_cpu)
                for name, url in targets:
                    db_url = (f"sqlite+aiosqlite:///{tmp}/scan{rnd}.sqlite" if url is None
                              else await _fresh_pg(url))
                    n, t, used = await _relayer(node.rpc_url, lock, DEFAULT_CHAIN_ID, first, last, args.chunk,
                                                db_url, pid)
                    if n != raw_n:
                        raise RuntimeError(f"relayer ({name}) stored {n} deposits, raw scan saw {raw_n}")
                    times.setdefault(name, []).append(t)
                    cpus.setdefault(name, []).append(used)
        # the fastest round of each: the least disturbed by other load on a shared machine
        raw_t = min(times["raw"])
        raw_cpu = _median_cpu(cpus["raw"])
        results["raw"] = {"deposits": raw_n, "seconds": raw_t, "per_s": raw_n / raw_t, "rounds": times["raw"],
                          "cpu": raw_cpu}
        for name, _ in targets:
            t = min(times[name])
            cpu = _median_cpu(cpus[name])
            results[name] = {"deposits": raw_n, "seconds": t, "per_s": raw_n / t, "ratio": raw_t / t,
                             "x_real_time": (last - first + 1) * 12.0 / t, "rounds": times[name],
                             "round_ratios": [r / x for r, x in zip(times["raw"], times[name])],
                             "cpu": cpu, "cpu_ratio": raw_cpu["total"] / cpu["total"] if cpu["total"] else None}
        return results
    finally:
        await node.stop()


def _fmt_cpu(c: dict) -> str:
    return (f"{c['total'] * 1000:.0f} ms (client {c['client'] * 1000:.0f}, anvil {c['node'] * 1000:.0f}"
            + (f", PostgreSQL {c['db'] * 1000:.0f}" if c["db"] else "") + ")")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deposits", type=int, default=10_000)
    ap.add_argument("--per-block", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=1000, help="max_block_range of both scans")
    ap.add_argument("--pg", action="store_true", help="also persist into PostgreSQL")
    ap.add_argument("--rounds", type=int, default=1,
                    help="interleaved rounds (raw, sqlite, postgresql); the fastest of each is compared")
    args = ap.parse_args(argv)
    r = asyncio.run(main_async(args))
    raw = r["raw"]
    print(f"raw eth_getLogs + decode : {raw['deposits']} deposits in {raw['seconds']:.2f} s = {raw['per_s']:.0f}/s"
          f"; CPU {_fmt_cpu(raw['cpu'])}")
    for name in ("sqlite", "postgresql"):
        if name in r:
            x = r[name]
            print(f"relayer ({name:10s}) : {x['deposits']} deposits in {x['seconds']:.2f} s = {x['per_s']:.0f}/s "
                  f"ratio {x['ratio']:.3f}x raw (target >= 0.5); catches up {x['x_real_time']:.0f}x real time")
            if x["cpu_ratio"] is not None:
                print(f"  CPU {_fmt_cpu(x['cpu'])}: CPU ratio {x['cpu_ratio']:.3f}x raw")
            if len(x["rounds"]) > 1:
                print(f"  rounds: {' '.join(f'{t:.2f}' for t in x['rounds'])} s; raw "
                      f"{' '.join(f'{t:.2f}' for t in raw['rounds'])} s; same-round ratios "
                      f"{' '.join(f'{q:.2f}' for q in x['round_ratios'])} "
                      f"(median {statistics.median(x['round_ratios']):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
