"""``creditbridge devnet --postgres --api-replicas 2`` (issue 16): two API processes on one
PostgreSQL (started by scripts/pg.sh), listed in devnet.json; the devnet's merchant key
registers a webhook on one replica and opens a payment on the other; the replica holding the
payment watcher's lease is killed (SIGKILL) mid-flight; the payment is credited, both replicas
answer the same state, and the receiver gets each event under one event id."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import defaultdict

import pytest
from aiohttp import web

from tests.e2e.conftest import Devnet, devnet_process
from tests.e2e.test_devnet import pay


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    with devnet_process(tmp_path_factory, "devnet-replicas", ["--evm-only", "--postgres", "--api-replicas", "2"],
                        start_timeout=480) as net:
        yield net


async def lease_holder(url: str, name: str) -> int:
    """The pid of the process holding the lease ``name`` (holder = host:pid:suffix)."""
    from bridge.storage import leases
    from bridge.storage.db import Database

    db = Database(url)
    try:
        deadline = time.monotonic() + 30
        while True:
            async with db.begin() as s:
                h = await leases.holder_of(s, name)
            if h is not None:
                return int(h[0].split(":")[1])
            assert time.monotonic() < deadline, f"nobody holds {name}"
            await asyncio.sleep(0.5)
    finally:
        await db.dispose()


def replica(net: Devnet, i: int) -> Devnet:
    r = Devnet(net.dir, net.proc, net.info)
    r.api = net.info["api_replicas"][i]
    return r


async def test_two_replicas_on_postgres_serve_one_payment_lifecycle(replicated: Devnet):
    info = replicated.info
    assert len(info["api_replicas"]) == 2 and info["api_replicas"][0] == info["api"]
    assert info["merchant_key"].startswith("cbk_") and info["api_database"].startswith("postgresql+asyncpg://")
    assert set(info["processes"]["names"]) >= {"api", "api-1"}
    a, b = replica(replicated, 0), replica(replicated, 1)
    auth = {"Authorization": f"Bearer {info['merchant_key']}"}

    got: dict[str, list[dict]] = defaultdict(list)
    app = web.Application()

    async def hook(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        got[body["data"]["payment_id"]].append({"event": body["id"], "type": body["type"]})
        return web.Response(status=200)

    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        import aiohttp

        async with aiohttp.ClientSession(headers=auth) as s:
            async with s.post(b.api + "/v1/webhooks", json={"url": f"http://{host}:{port}/hook"}) as r:
                assert r.status == 201, await r.text()
            async with s.post(a.api + "/v1/quotes", json={"token": "ETH", "credits": "500"}) as r:
                q = await r.json()
            beneficiary = info["accounts"]["settlement"][0]["address"]
            async with s.post(b.api + "/v1/payments", json={"quote_id": q["id"], "beneficiary": beneficiary}) as r:
                assert r.status == 201, await r.text()
                p = await r.json()
        await pay(replicated, p, 0)
        holder = await lease_holder(info["api_database"], "api:payment-watcher")
        victim = next(n for n in ("api", "api-1") if replicated.pid(n) == holder)
        pid = replicated.signal(victim, signal.SIGKILL)  # the replica running the payment watcher dies
        # ... and the other one (or the restarted one) takes the watcher over after the lease
        deadline = time.monotonic() + 150
        while (await b.call("GET", f"/v1/payments/{p['id']}"))["state"] != "credited":
            assert time.monotonic() < deadline, "not credited"
            await asyncio.sleep(0.5)
        await replicated.wait_restarted(victim, pid)
        assert (await a.call("GET", f"/v1/payments/{p['id']}"))["state"] == "credited"
        deadline = time.monotonic() + 60
        while "payment.credited" not in {e["type"] for e in got[p["id"]]}:
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.3)
        by_type = defaultdict(set)
        for e in got[p["id"]]:
            by_type[e["type"]].add(e["event"])
        assert all(len(ids) == 1 for ids in by_type.values()), by_type  # one event id per change
    finally:
        await runner.cleanup()
