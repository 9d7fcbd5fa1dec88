"""Instructions a request of the quote endpoint, bare aiohttp against the API, under callgrind.

    .venv/bin/python bench/quote_callgrind.py [--requests 1500] [--warmup 400] [--connections 64]

Wall-clock ratios on the shared 2-core machine move with the other load; instruction counts do
not. Each server of ``bench/quote_throughput.py`` (bare, then api) runs in its own process under
``valgrind --tool=callgrind`` (every thread of it counted; the API's quote store process, a
child that commits the SQLite batches, is not followed: its work runs beside the event loop,
as PostgreSQL's would); a client outside valgrind sends ``--warmup`` requests, the counters are zeroed
(``callgrind_control --zero``), it sends ``--requests`` more over ``--connections`` keep-alive
connections, and the counters are dumped. Printed: instructions per request of each and their
ratio (what a CPU-bound run's throughput ratio would approach). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _variant(app, variant: str) -> None:
    """Diagnostic variants of the api server (``--variant``), each taking one part away to see
    what it costs: ``trivial`` (the quote route answers a fixed body: aiohttp, the middleware
    and the app alone), ``nowriter`` (quotes made and answered, never signed or stored),
    ``nosign`` (stored with a fixed signature, no Merkle tree or Ed25519), ``nostore`` (signed,
    not written: no store process, no SQLite). Measurements only: none of these is a valid quote."""
    from aiohttp import web

    from bridge.api.keys import QUOTE_WRITER
    from bridge.pricing.quotes import _evolve

    writer = app[QUOTE_WRITER]
    fake = {"signature": b"s" * 64, "merkle_root": b"r" * 32, "merkle_path": ()}
    if variant == "trivial":
        body = b'{"token":"ETH","credits":"500","ok":true}'

        async def trivial(request):
            await request.read()
            return web.Response(body=body, status=201, content_type="application/json")

        for route in app.router["quotes"]:
            route._handler = trivial
    elif variant == "nowriter":
        async def add(q):
            return _evolve(q, **fake)

        writer.add = add
    elif variant == "nosign":
        writer.sign = lambda qs: [_evolve(q, **fake) for q in qs]
    elif variant == "nostore":
        async def insert(quotes):
            return None

        writer._insert = insert


async def _serve(kind: str, home: str, variant: str = "") -> None:
    """The server process (run under valgrind): prints its port, serves until stdin closes."""
    from aiohttp import web

    import quote_throughput as qt

    if kind == "bare":
        app = qt.bare_app()
    else:
        app, _ = await qt.api_app(Path(home))
        _variant(app, variant)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print("PORT", runner.addresses[0][1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


async def _load(url: str, n: int, connections: int) -> dict[int, int]:
    import aiohttp

    body = json.dumps({"token": "ETH", "credits": "500"}).encode()
    statuses: dict[int, int] = {}
    left = [n]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections),
                                     timeout=aiohttp.ClientTimeout(total=600)) as s:
        async def worker() -> None:
            while left[0] > 0:
                left[0] -= 1
                async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return statuses


def measure(kind: str, args: argparse.Namespace, tmp: str) -> float:
    out = os.path.join(tmp, f"cg-{kind}.%p")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
         "--serve", kind, "--home", tmp, "--variant", args.variant],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}/bench:{ROOT}"})
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    m = re.match(r"PORT (\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"{kind} server did not start: {line!r}")
    url = f"http://127.0.0.1:{m.group(1)}/v1/quotes"
    asyncio.run(_load(url, args.warmup, args.connections))
    subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
    statuses = asyncio.run(_load(url, args.requests, args.connections))
    subprocess.run(["callgrind_control", "--dump=measured", str(proc.pid)], check=True, capture_output=True)
    proc.stdin.close()
    proc.wait(timeout=600)
    total = 0
    for f in glob.glob(os.path.join(tmp, f"cg-{kind}.{proc.pid}*")):
        text = Path(f).read_text(errors="replace")
        if not re.search(r"^desc: Trigger: .*measured", text, re.M):  # the dump at exit is not ours
            continue
        m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
        total += int(m.group(1)) if m else 0
    if statuses.get(201, 0) != args.requests:
        print(f"{kind}: statuses {statuses}", file=sys.stderr)
    return total / args.requests


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--warmup", type=int, default=400)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--only", choices=("bare", "api"))
    p.add_argument("--variant", choices=("", "trivial", "nowriter", "nosign", "nostore"), default="",
                   help="api with one part taken away (diagnostics, see _variant)")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    p.add_argument("--home", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve, args.home, args.variant))
        return
    with tempfile.TemporaryDirectory(prefix="cb-cg-") as tmp:
        result = {k: measure(k, args, tmp) for k in (("bare", "api") if args.only is None else (args.only,))}
    for k, v in result.items():
        name = f"{k} ({args.variant})" if k == "api" and args.variant else k
        print(f"{name:5} {v / 1000:8.0f}k instructions a request ({args.requests} requests, {args.connections} connections)")
    if len(result) == 2:
        print(f"ratio bare/api by instructions: {result['bare'] / result['api']:.2f}x")


if __name__ == "__main__":
    main()
