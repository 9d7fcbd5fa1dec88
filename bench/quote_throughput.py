"""Quote endpoint throughput and latency against a bare aiohttp JSON endpoint, same run.

    .venv/bin/python bench/quote_throughput.py [--driver wrk|python] [--connections 64] [--duration 5] [--rounds 3]

Serves, one after the other in this process (one event loop, as the API runs in
production):

* **bare**: an aiohttp app whose ``POST /v1/quotes`` reads the JSON body and answers a small
  JSON object with 201 -- the floor any aiohttp JSON endpoint pays;
* **api**: the real gateway (``create_app``: metrics, problem and rate-limit middlewares,
  input validation, prices from a ``PriceAggregator`` over two sources, exact conversion,
  Ed25519 signing by batch -- one signature over the Merkle root of the quotes stored by one
  commit, docs/quotes.md --, the quote stored in a migrated SQLite file database before the
  answer, by the writer's store process). After the run every stored quote is checked against
  the gateway key, and the number of signatures (batches) is printed. The server CPU a request
  printed counts this process and the API's quote store process (``quote_store_worker.py``).

Each is driven for ``--warmup`` then ``--duration`` seconds by ``--driver``: ``wrk`` (default:
Debian's C load generator, installed by ``scripts/wrk.sh``, ``--threads`` threads and
``--connections`` keep-alive connections; a Lua ``done`` hook prints its exact latency
percentiles as JSON) or ``python`` (``--clients`` aiohttp client processes: they cap the bare
endpoint, so their ratio overstates the API's cost -- kept for comparison). Printed: requests/s, p50 and p99 latency of each, and the api/bare throughput ratio
(target >= 0.75). Latency percentiles come from every request of the measured window. With
``--rounds N`` bare and api are run N times, alternating (each api round a fresh app and gateway
key on the same database); every round is printed, with the median of the same-round ratios,
and the round whose bare run was fastest (the least disturbed on a shared machine) is
summarized.
Nothing here asserts timings; it prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = {"token": "ETH", "credits": "500"}


# --- client (a separate process) -------------------------------------------------------------------
async def _client(url: str, connections: int, warmup: float, duration: float) -> dict:
    import aiohttp

    body = json.dumps(BODY).encode()
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counts = {"all": 0}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async with aiohttp.ClientSession(connector=connector) as s:
        async def worker() -> None:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                async with s.post(url, data=body, headers=headers) as r:
                    await r.read()
                    status = r.status
                t1 = time.perf_counter()
                counts["all"] += 1
                if t0 >= measure_from:
                    latencies.append(t1 - t0)
                    statuses[status] = statuses.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return {"latencies": latencies, "statuses": statuses, "duration": duration, "all": counts["all"]}


def client_main(args: argparse.Namespace) -> None:
    result = asyncio.run(_client(args.client, args.connections, args.warmup, args.duration))
    sys.stdout.write(json.dumps(result))


WRK_LUA = r"""
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('CBJSON {"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,' ..
    '"socket_errors":%%d,"non2xx":%%d}\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


async def drive_wrk(url: str, connections: int, threads: int, warmup: float, duration: float,
                    cpu_seconds=None) -> dict:
    """wrk against ``url``: a warm-up run, then the measured run (its own latency histogram)."""
    import subprocess

    wrk = subprocess.run(["bash", str(ROOT / "scripts" / "wrk.sh")], check=True, capture_output=True,
                         text=True).stdout.strip()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA % json.dumps(BODY))
        script = f.name
    try:
        async def run(seconds: float) -> str:
            p = await asyncio.create_subprocess_exec(
                wrk, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
                "--timeout", "10s", "-s", script, url, stdout=asyncio.subprocess.PIPE)
            out, _ = await p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"wrk exited with {p.returncode}")
            return out.decode()

        if warmup > 0:
            await run(warmup)
        cpu_seconds = cpu_seconds or _cpu_seconds
        cpu0 = cpu_seconds()
        out = await run(duration)
        cpu = cpu_seconds() - cpu0
    finally:
        os.unlink(script)
    line = next((ln for ln in out.splitlines() if ln.startswith("CBJSON ")), None)
    if line is None:
        raise SystemExit(f"wrk printed no summary:\n{out}")
    r = json.loads(line[len("CBJSON "):])
    secs = r["duration_us"] / 1e6
    ok = r["requests"] - r["non2xx"]
    return {
        "requests": r["requests"],
        "rps": ok / secs if secs else 0.0,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "statuses": {"2xx": ok, "non-2xx": r["non2xx"], "socket errors": r["socket_errors"]},
        "cpu_us": cpu / r["requests"] * 1e6 if r["requests"] else 0.0,
    }


async def drive(url: str, connections: int, clients: int, warmup: float, duration: float, cpu_seconds=None) -> dict:
    per_client = [connections // clients + (1 if i < connections % clients else 0) for i in range(clients)]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", url, "--connections", str(n), "--warmup", str(warmup),
            "--duration", str(duration), stdout=asyncio.subprocess.PIPE,
        )
        for n in per_client
    ]
    cpu_seconds = cpu_seconds or _cpu_seconds
    cpu0 = cpu_seconds()
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    cpu = cpu_seconds() - cpu0
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    served = 0
    for (out, _), p in zip(outs, procs):
        if p.returncode != 0:
            raise SystemExit(f"client exited with {p.returncode}")
        r = json.loads(out)
        latencies.extend(r["latencies"])
        served += r["all"]
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "rps": len(latencies) / duration,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
        "statuses": statuses,
        "cpu_us": cpu / served * 1e6 if served else 0.0,
    }


def _cpu_seconds() -> float:
    """CPU time of this process (every thread)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _server_cpu(app):
    """The server's CPU seconds so far: this process, plus the API's quote store process on
    SQLite (``quote_store_worker.py``: the writer's SQLite work runs there), so that the CPU a
    request costs counts all of it."""
    from bridge.api.keys import QUOTE_WRITER
    from relayer_scan import _proc_cpu  # CPU seconds of a process from /proc (bench/)

    def cpu() -> float:
        total = _cpu_seconds()
        store = getattr(app.get(QUOTE_WRITER), "_sqlite", None)
        proc = getattr(store, "_proc", None)
        if proc is not None and proc.returncode is None:
            total += _proc_cpu(proc.pid)
        return total

    return cpu


# --- servers (this process) ------------------------------------------------------------------------
def bare_app():
    from aiohttp import web

    async def handler(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"token": body.get("token"), "credits": body.get("credits"), "ok": True}, status=201)

    app = web.Application()
    app.router.add_post("/v1/quotes", handler)
    return app


async def api_app(home: Path):
    from prometheus_client import CollectorRegistry

    from bridge.api.app import create_app
    from bridge.config import settings_from_dict
    from bridge.pricing.aggregate import PriceAggregator
    from bridge.pricing.quotes import QuoteService, QuoteSigner
    from bridge.pricing.sources.fixed import FixedPriceSource
    from bridge.storage.db import Database

    settings = settings_from_dict({
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "evm", "name": "settlement", "chain_id": 31337, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "storage": {"url": f"sqlite+aiosqlite:///{home}/bench.sqlite"},
        "pricing": {"credit_price_usd": "0.01", "min_amount": {"ETH": 10**12}},
        "api": {"quote_key": {"keystore": str(home / "unused.json"), "password_env": "UNUSED"},
                "rate_limit_per_minute": 10**9, "rate_limit_burst": 10**9},
    })
    db = Database(settings.storage.url)
    await db.migrate()
    aggregator = PriceAggregator(
        [FixedPriceSource({"ETH": Decimal("3000")}, name="a"), FixedPriceSource({"ETH": Decimal("3001")}, name="b")],
        min_sources=2, max_deviation=Decimal("0.01"), max_age=timedelta(minutes=10),
        registry=CollectorRegistry(), symbols={"ETH"},
    )
    await aggregator.refresh()
    signer = QuoteSigner.from_secret(os.urandom(32))
    app = create_app(settings, db=db, quote_service=QuoteService.from_settings(settings, aggregator, signer),
                     signer=signer)
    return app, db


async def serve_and_drive(app, args) -> dict:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        url = f"http://{host}:{port}/v1/quotes"
        cpu = _server_cpu(app)
        if args.driver == "wrk":
            return await drive_wrk(url, args.connections, args.threads, args.warmup, args.duration, cpu)
        return await drive(url, args.connections, args.clients, args.warmup, args.duration, cpu)
    finally:
        await runner.cleanup()


async def main(args: argparse.Namespace) -> None:
    from bridge.api.keys import SIGNER

    from sqlalchemy import func, select

    from bridge.pricing.quotes import verify_quote
    from bridge.storage.db import Database
    from bridge.storage.models import QuoteRow
    from bridge.storage.quotes import _quote

    rounds: list[tuple[dict, dict]] = []
    keys: dict[str, str] = {}  # key_id -> public key (a fresh gateway key each round)
    with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
        for _ in range(args.rounds):  # alternating, so that a load burst hits both alike
            bare = await serve_and_drive(bare_app(), args)
            app, db = await api_app(Path(tmp))
            keys[app[SIGNER].key_id] = app[SIGNER].public_key
            api = await serve_and_drive(app, args)  # the app's cleanup disposes db
            rounds.append((bare, api))
        check = Database(f"sqlite+aiosqlite:///{tmp}/bench.sqlite")
        async with check.begin() as s:
            stored = (await s.execute(select(func.count()).select_from(QuoteRow))).scalar_one()
            signatures = (await s.execute(select(func.count(func.distinct(QuoteRow.signature))))).scalar_one()
            for row in (await s.scalars(select(QuoteRow))).all():  # every stored quote verifies
                verify_quote(_quote(row), keys[row.key_id])
        await check.dispose()
    if len(rounds) > 1:
        for i, (b, a) in enumerate(rounds, 1):
            print(f"round {i}: bare {b['rps']:.0f} req/s {b['cpu_us']:.0f} µs CPU, api {a['rps']:.0f} req/s "
                  f"{a['cpu_us']:.0f} µs CPU, p99 {a['p99_ms']:.1f} ms: ratio {a['rps'] / max(b['rps'], 1e-9):.2f}x, "
                  f"by CPU {b['cpu_us'] / max(a['cpu_us'], 1e-9):.2f}x")
        same = sorted(a["rps"] / max(b["rps"], 1e-9) for b, a in rounds)
        print(f"same-round ratios: median {statistics.median(same):.2f}x (lowest {same[0]:.2f}x, "
              f"highest {same[-1]:.2f}x)")
    # the round whose bare run was fastest: the least disturbed by other load
    bare, api = max(rounds, key=lambda r: r[0]["rps"])

    driver = (f"wrk, {args.threads} thread(s)" if args.driver == "wrk"
              else f"{args.clients} python client process(es)")
    print(f"quote throughput: {args.connections} connections, {driver}, "
          f"{args.duration:g}s measured after {args.warmup:g}s warm-up, server on one event loop")
    print(f"{'':6} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'server CPU µs/req':>18}  statuses")
    for name, r in (("bare", bare), ("api", api)):
        print(f"{name:6} {r['rps']:10.0f} {r['p50_ms']:9.2f} {r['p99_ms']:9.2f} {r['cpu_us']:18.0f}  {r['statuses']}")
    ratio = api["rps"] / bare["rps"] if bare["rps"] else 0.0
    cpu_ratio = bare["cpu_us"] / api["cpu_us"] if api["cpu_us"] else 0.0
    print(f"ratio api/bare: {ratio:.2f}x throughput (target >= 0.75x), {cpu_ratio:.2f}x by server CPU per request "
          f"(what a server-bound run would show); api p99 {api['p99_ms']:.1f} ms (target <= 20 ms); "
          f"quotes stored (each verified): {stored}, signatures: {signatures} "
          f"({stored / max(signatures, 1):.1f} quotes a signature)")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--driver", choices=("wrk", "python"), default="wrk")
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--clients", type=int, default=1, help="python driver: client processes sharing the connections")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=1,
                   help="bare and api runs, alternating; the round with the fastest bare run is summarized")
    p.add_argument("--client", help=argparse.SUPPRESS)  # internal: run as a client of this URL
    return p.parse_args()


if __name__ == "__main__":
    a = parse()
    if a.client:
        client_main(a)
    else:
        asyncio.run(main(a))
