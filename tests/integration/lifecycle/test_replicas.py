"""API replicas on one real PostgreSQL (issue 16): two or three gateways (create_app, real HTTP
servers on 127.0.0.1) with their own payment watchers and webhook workers on one database,
and a real webhook receiver that notices a delivery attempted twice at once.

* every event is delivered, once per attempt; no delivery is attempted by two replicas at
  once; no change is stored as two events; attempts are counted exactly;
* a replica that dies mid-POST leaves its claim, which another replica takes after the lease;
* singleton jobs: a holder killed with SIGKILL is replaced within the lease time;
* ``creditbridge db upgrade`` is idempotent and safe to run twice at once; components refuse
  an unmigrated PostgreSQL with one line naming the fix;
* cursors are compare-and-set / upserts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select, text

from bridge.errors import ConfigError
from bridge.singleton import Singleton
from bridge.storage import leases as lease_repo
from bridge.storage import observations as obs_repo
from bridge.storage.db import Database, open_database
from bridge.storage.models import WebhookAttemptRow, WebhookDeliveryRow, WebhookEventRow
from bridge.webhooks import signing
from bridge.webhooks.outbox import event_id_for

from tests.conftest import PG_URL, require_pg  # noqa: E402
ROOT = Path(__file__).resolve().parents[3]

def _require_pg() -> str:
    return require_pg()


async def fresh_pg(migrate: bool = True) -> None:
    d = Database(_require_pg())
    async with d.engine.begin() as c:
        await c.execute(text("DROP SCHEMA public CASCADE"))
        await c.execute(text("CREATE SCHEMA public"))
    if migrate:
        await d.migrate()
    await d.dispose()


PAYMENTS = {"webhooks": {"allow_loopback": True, "max_attempts": 4, "backoff_initial_seconds": 0.05,
                         "backoff_max_seconds": 0.2, "timeout_seconds": 5}}


@dataclass
class Hooks:
    """A receiver that answers slowly and records every attempt, and any attempt of a delivery
    made while another attempt of the same delivery is still in flight."""

    secret: str = ""
    script: Counter = field(default_factory=Counter)  # event id -> how many 500s first
    delay: float = 0.05
    hang: asyncio.Event | None = None  # set: the first request waits on it (a replica dies mid-POST)
    posts: list[dict] = field(default_factory=list)
    inflight: set = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        assert signing.verify(self.secret, request.headers[signing.SIGNATURE_HEADER], body, int(time.time()))
        did, eid = request.headers[signing.DELIVERY_HEADER], request.headers[signing.EVENT_HEADER]
        if did in self.inflight:
            self.overlaps.append(did)
        self.inflight.add(did)
        try:
            if self.hang is not None:
                hang, self.hang = self.hang, None
                self.posts.append({"delivery": did, "event": eid, "status": None})
                await hang.wait()
                return web.Response(status=503)
            await asyncio.sleep(self.delay)
            status = 500 if self.script[eid] > 0 else 200
            self.script[eid] -= 1
            self.posts.append({"delivery": did, "event": eid, "status": status})
            return web.Response(status=status)
        finally:
            self.inflight.discard(did)

    def ok(self) -> list[dict]:
        return [p for p in self.posts if p["status"] == 200]


@pytest.fixture
async def hooks():
    h = Hooks()
    app = web.Application()
    app.router.add_post("/hook", h.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    h.url = f"http://{host}:{port}/hook"
    yield h
    await runner.cleanup()


async def replicas(lifecycle, n: int, **kw):
    await fresh_pg()
    return [await lifecycle(storage={"url": _require_pg()}, payments=PAYMENTS, **kw) for _ in range(n)]


async def wait_until(cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_three_replicas_deliver_every_event_once_and_count_attempts(lifecycle, hooks):
    gws = await replicas(lifecycle, 3)
    a = gws[0]
    key = await a.merchant()
    status, w = await gws[1].request("POST", "/v1/webhooks", key, json={"url": hooks.url})
    assert status == 201, w
    hooks.secret = w["secret"]
    pays = [await gws[i % 3].payment(key) for i in range(9)]
    # a third of them underpaid twice: the second change keeps the state (a "payment.updated")
    for p in pays[1::3]:  # their first event's deliveries fail twice first: retried by their holder
        hooks.script[event_id_for(p["id"], 1)] = 2
    for i, p in enumerate(pays):
        amount = int(p["amount"])
        await a.deposit(p, amount if i % 3 else amount // 3)
    await asyncio.gather(*(g.watcher.step() for g in gws))  # every replica evaluates every payment at once
    for p in pays[::3]:
        await a.deposit(p, int(p["amount"]) // 3)
    await asyncio.gather(*(g.watcher.step() for g in gws))
    async with a.db.begin() as s:
        events = (await s.execute(select(WebhookEventRow.id, WebhookEventRow.payment_id, WebhookEventRow.type)
                                  )).all()
    per_payment = Counter(pid for _, pid, _ in events)
    assert all(per_payment[p["id"]] == (2 if i % 3 == 0 else 1) for i, p in enumerate(pays)), per_payment
    assert Counter(t for _, _, t in events) == {"payment.confirmed": 6, "payment.underpaid": 3,
                                                "payment.updated": 3}
    await wait_until(lambda: len(hooks.ok()) >= len(events), what="every event delivered")
    await asyncio.gather(*(g.worker.drain() for g in gws))
    await asyncio.sleep(0.3)  # a replica that would deliver again has had its chance
    assert hooks.overlaps == []
    assert sorted(p["event"] for p in hooks.ok()) == sorted(e for e, _, _ in events)  # each once
    async with a.db.begin() as s:
        rows = (await s.scalars(select(WebhookDeliveryRow))).all()
        logged = Counter((await s.scalars(select(WebhookAttemptRow.delivery_id))).all())
    posted = Counter(p["delivery"] for p in hooks.posts)
    assert all(r.status == "succeeded" and r.claimed_by is None for r in rows)
    assert {r.id: r.attempts for r in rows} == dict(posted) == dict(logged)
    assert sum(posted.values()) == len(events) + 2 * len(pays[1::3])
    # the receiver got each payment's events from whichever replica, the same state everywhere
    for p in pays:
        states = {(await g.request("GET", f"/v1/payments/{p['id']}"))[1]["state"] for g in gws}
        assert len(states) == 1


async def test_a_replica_dying_mid_post_leaves_the_delivery_to_another_after_the_claim(lifecycle, hooks):
    a, b = await replicas(lifecycle, 2, run_worker=False)
    for g in (a, b):
        g.worker.claim_margin = 0.5  # a claim lasts timeout_seconds (5) + margin: 5.5 s
    key = await a.merchant()
    status, w = await a.request("POST", "/v1/webhooks", key, json={"url": hooks.url})
    hooks.secret = w["secret"]
    hooks.hang = hang = asyncio.Event()
    p = await a.payment(key)
    await a.deposit(p, int(p["amount"]))
    assert await a.watcher.step() == 1
    assert await a.worker.step() == 1
    await wait_until(lambda: hooks.posts, what="the first POST")
    t0 = time.monotonic()
    for t in list(a.worker._tasks):  # replica A dies mid-POST: nothing recorded, claim left behind
        t.cancel()
    await asyncio.gather(*a.worker._tasks, return_exceptions=True)
    hang.set()  # the receiver ends A's request (its answer goes nowhere)
    assert await b.worker.step() == 0  # claimed by A: B keeps off it
    task = asyncio.create_task(b.worker.run())
    try:
        await wait_until(lambda: hooks.ok(), timeout=15, what="B delivering")
        took = time.monotonic() - t0
        assert 4.5 < took < 8.0, took
        await b.worker.drain()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    async with b.db.begin() as s:
        (row,) = (await s.scalars(select(WebhookDeliveryRow))).all()
    assert row.status == "succeeded" and row.attempts == 1 and row.claimed_by is None  # A's died unlogged
    assert [x["status"] for x in hooks.posts] == [None, 200] and hooks.overlaps == []


HOLDER = """
import asyncio, sys
from bridge.singleton import Singleton
from bridge.storage.db import Database

async def main():
    db = Database(sys.argv[1])
    async def job():
        print("running", flush=True)
        await asyncio.Event().wait()
    await Singleton(db, "test-job", job, holder="doomed", ttl=2.0, renew=0.4).run()

asyncio.run(main())
"""


async def test_singleton_fails_over_when_its_holder_is_killed(tmp_path):
    await fresh_pg()
    url = _require_pg()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", HOLDER, url, stdout=subprocess.PIPE,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    db = Database(url)
    ran = asyncio.Event()

    async def job():
        ran.set()
        await asyncio.Event().wait()

    standby = Singleton(db, "test-job", job, holder="standby", ttl=2.0, renew=0.4)
    task = None
    try:
        assert (await asyncio.wait_for(proc.stdout.readline(), 30)).strip() == b"running"
        task = asyncio.create_task(standby.run())
        await asyncio.sleep(2.5)  # the holder renews: the standby waits
        assert not ran.is_set()
        async with db.begin() as s:
            assert (await lease_repo.holder_of(s, "test-job"))[0] == "doomed"
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        await proc.wait()
        await asyncio.wait_for(ran.wait(), 10)
        assert time.monotonic() - killed <= 2.0 + 0.4 + 0.5  # ttl + renew interval (+ slack)
        async with db.begin() as s:
            assert (await lease_repo.holder_of(s, "test-job"))[0] == "standby"
        # a clean stop releases the lease: the next one takes it within one renew interval
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        again = asyncio.Event()

        async def job2():
            again.set()
            await asyncio.Event().wait()

        stopped = time.monotonic()
        task = asyncio.create_task(Singleton(db, "test-job", job2, holder="next", ttl=2.0, renew=0.4).run())
        await asyncio.wait_for(again.wait(), 5)
        assert time.monotonic() - stopped < 1.0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await db.dispose()


async def test_lease_has_one_holder_at_a_time_when_replicas_race():
    await fresh_pg()
    dbs = [Database(_require_pg()) for _ in range(4)]
    try:
        async def take(i: int) -> bool:
            async with dbs[i].begin() as s:
                return await lease_repo.acquire(s, "race", f"r{i}", 5.0)

        for _ in range(5):
            got = await asyncio.gather(*(take(i) for i in range(4)))
            assert sum(got) == 1  # then the same holder renews, the others still fail
            holder = got.index(True)
            assert (await asyncio.gather(*(take(i) for i in range(4)))) == [i == holder for i in range(4)]
            async with dbs[holder].begin() as s:
                assert await lease_repo.release(s, "race", f"r{holder}")
    finally:
        for d in dbs:
            await d.dispose()


def _cli(*args: str, config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bridge.cli", *args, "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)


def _pg_config(tmp_path: Path, keystore: Path | None = None) -> Path:
    from tests.integration.lifecycle.conftest import PASSWORD_ENV

    cfg = {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "evm", "name": "settlement", "chain_id": 31337, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
        ],
        "settlement_chain": "settlement",
        "storage": {"url": _require_pg()},
        "pricing": {"credit_price_usd": "0.01", "fixed_usd": {"ETH": "3000"}, "min_amount": {"ETH": 1000}},
    }
    if keystore is not None:
        cfg["api"] = {"quote_key": {"keystore": str(keystore), "password_env": PASSWORD_ENV}, "port": 0}  # never bound
    p = tmp_path / "pg.json"
    p.write_text(json.dumps(cfg))
    return p


async def test_db_upgrade_twice_at_once_then_again(tmp_path):
    await fresh_pg(migrate=False)
    cfg = _pg_config(tmp_path)
    procs = [_cli("db", "upgrade", config=cfg) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    heads = {json.loads(o)["head"] for o, _ in outs}
    assert [json.loads(o)["database"] for o, _ in outs] == list(heads) * 2
    assert sorted(json.loads(o)["was"] or "" for o, _ in outs)[0] == ""  # one of them migrated an empty db
    again = _cli("db", "upgrade", config=cfg)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert json.loads(out)["was"] == json.loads(out)["database"] == heads.pop()
    status = _cli("db", "status", config=cfg)
    assert status.communicate(timeout=60) and status.returncode == 0


async def test_components_refuse_an_unmigrated_postgres(tmp_path, monkeypatch):
    from bridge.keystore import write_keystore
    from tests.integration.lifecycle.conftest import PASSWORD_ENV

    await fresh_pg(migrate=False)
    with pytest.raises(ConfigError, match=r"not migrated: run `creditbridge db upgrade"):
        await open_database(_require_pg())
    monkeypatch.setenv(PASSWORD_ENV, "replica test password")
    write_keystore(tmp_path / "quote.json", "ed25519", bytes(range(1, 33)), "replica test password", n=2**10)
    cfg = _pg_config(tmp_path, tmp_path / "quote.json")
    api = _cli("api", config=cfg)
    out, err = api.communicate(timeout=120)
    assert api.returncode == 1
    (line,) = [x for x in err.splitlines() if x.startswith("creditbridge:")]
    assert "not migrated: run `creditbridge db upgrade --config" in line
    # behind: a database one migration short is refused too; after the upgrade it opens
    d = Database(_require_pg())
    await d.migrate()
    async with d.engine.begin() as c:
        await c.execute(text("UPDATE alembic_version SET version_num = '0009'"))
    with pytest.raises(ConfigError, match=r"at revision 0009, behind"):
        await open_database(_require_pg())
    await fresh_pg()
    (await open_database(_require_pg())).engine  # noqa: B018
    await d.dispose()


async def test_cursor_set_and_advance_are_atomic():
    await fresh_pg()
    dbs = [Database(_require_pg()) for _ in range(6)]
    try:
        async def put(i: int) -> None:
            async with dbs[i].begin() as s:
                await obs_repo.set_cursor(s, "api", "ethereum", 100 + i, None)

        await asyncio.gather(*(put(i) for i in range(6)))  # first insert by six at once: no IntegrityError
        async with dbs[0].begin() as s:
            height, _ = await obs_repo.get_cursor(s, "api", "ethereum")

        async def advance(i: int) -> bool:
            async with dbs[i].begin() as s:
                return await obs_repo.advance_cursor(s, "api", "ethereum", height, height + 10 + i, None)

        got = await asyncio.gather(*(advance(i) for i in range(6)))
        assert sum(got) == 1
        async with dbs[0].begin() as s:
            assert (await obs_repo.get_cursor(s, "api", "ethereum"))[0] == height + 10 + got.index(True)
            assert await s.scalar(select(func.count()).select_from(text("cursors"))) == 1
    finally:
        for d in dbs:
            await d.dispose()


async def test_a_replica_stopping_cleanly_hands_its_deliveries_over_at_once(lifecycle, hooks):
    a, b = await replicas(lifecycle, 2, run_worker=False)
    key = await a.merchant()
    status, w = await a.request("POST", "/v1/webhooks", key, json={"url": hooks.url})
    hooks.secret = w["secret"]
    hooks.hang = hang = asyncio.Event()
    p = await a.payment(key)
    await a.deposit(p, int(p["amount"]))
    assert await a.watcher.step() == 1
    assert await a.worker.step() == 1
    await wait_until(lambda: hooks.posts, what="the first POST")
    assert await b.worker.step() == 0
    await a.worker.aclose()  # shutdown: the in-flight attempt is abandoned, its claim released
    hang.set()
    assert await b.worker.step() == 1
    await b.worker.drain()
    assert [x["status"] for x in hooks.posts] == [None, 200]


async def test_lease_expiry_and_renewal_on_both_dialects(db):
    """SQLite (one process: the lease is trivially held) and PostgreSQL share the SQL."""
    async with db.begin() as s:
        assert await lease_repo.acquire(s, "job", "a", 0.5)
        assert not await lease_repo.acquire(s, "job", "b", 0.5)
        first = await s.scalar(text("SELECT acquired_at FROM leases"))
    await asyncio.sleep(0.2)
    async with db.begin() as s:
        assert await lease_repo.acquire(s, "job", "a", 0.5)  # renewal keeps when it was taken
        assert await s.scalar(text("SELECT acquired_at FROM leases")) == first
    await asyncio.sleep(0.7)
    async with db.begin() as s:
        assert await lease_repo.holder_of(s, "job") is None  # expired
        assert await lease_repo.acquire(s, "job", "b", 5.0)
        assert (await lease_repo.holder_of(s, "job"))[0] == "b"
        assert not await lease_repo.release(s, "job", "a") and await lease_repo.release(s, "job", "b")


async def test_an_expired_claim_on_a_delivery_not_due_yet_does_not_spin_the_worker(db):
    """A dead replica's claim ran out while its delivery waits for a later attempt: the worker
    waits for the attempt time, not in a 50 ms loop."""
    from datetime import timedelta

    from bridge.storage import webhooks as repo
    from bridge.types import utcnow

    now = utcnow()
    async with db.begin() as s:
        await repo.add_webhook(s, "w1", "m1", "https://example.com/h", "whsec_x", now)
        await repo.add_event(s, "e1", "p1", "m1", "payment.confirmed", "{}", now, iter(["d1"]))
        assert [d.id for d in await repo.claim_deliveries(s, now, "dead", 0.01)] == ["d1"]
        await repo.record_attempt(s, "d1", now=now, status_code=500, error="HTTP 500", outcome=repo.PENDING,
                                  next_attempt_at=now + timedelta(seconds=60), holder="dead", lease_seconds=0.01)
    await asyncio.sleep(0.1)
    async with db.begin() as s:
        assert await repo.next_claim_expiry(s) is None
        assert await repo.next_due_at(s) == now + timedelta(seconds=60)
        assert await repo.claim_deliveries(s, now, "alive", 30) == []  # not due yet
        assert [d.id for d in await repo.claim_deliveries(s, now + timedelta(seconds=61), "alive", 30)] == ["d1"]
        assert 25 < await repo.next_claim_expiry(s) <= 30
