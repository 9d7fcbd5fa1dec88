"""A served gateway (AppRunner on 127.0.0.1) with the payment lifecycle wired in: the payment
watcher over the gateway's own database (chain facts are stored the way the deposit follower
stores them), the webhook delivery worker, and a real receiver server that checks signatures."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bridge.api.app import create_app
from bridge.api.auth import create_key
from bridge.api.webhooks import WAKE_DELIVERIES
from bridge.config import Settings, settings_from_dict
from bridge.payments.watcher import PaymentWatcher
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.storage import observations as obs_repo
from bridge.storage.db import Database
from bridge.types import Observation, utcnow
from bridge.webhooks import signing
from bridge.webhooks.delivery import DeliveryWorker
from bridge.webhooks.outbox import record_event

LOCK = "0x" + "11" * 20
LEDGER = "0x" + "22" * 20
BENEFICIARY = "0x" + "ab" * 20
PASSWORD_ENV = "CB_LIFECYCLE_TEST_PW"
SOURCE = b"\x05" * 32


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def lifecycle_settings(home: Path, keystore: Path, **extra) -> Settings:
    cfg = {
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": LOCK}},
            {"family": "evm", "name": "settlement", "chain_id": 31337, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": LEDGER}},
        ],
        "settlement_chain": "settlement",
        "storage": {"url": f"sqlite+aiosqlite:///{home}/api.sqlite"},
        "pricing": {"credit_price_usd": "0.01", "quote_ttl_seconds": 900, "fixed_usd": {"ETH": "3000"},
                    "min_amount": {"ETH": 1000}},
        "api": {"quote_key": {"keystore": str(keystore), "password_env": PASSWORD_ENV},
                "rate_limit_per_minute": 60000, "rate_limit_burst": 10000},
        "payments": {"webhooks": {"allow_loopback": True, "max_attempts": 4, "backoff_initial_seconds": 0.05,
                                  "backoff_max_seconds": 0.2, "timeout_seconds": 5}},
    }
    for k, v in extra.items():
        cfg[k] = v
    return settings_from_dict(cfg)


@dataclass
class Receiver:
    """A webhook receiver: verifies every delivery's signature, answers from a script."""

    secret: str = ""
    script: list[int] = field(default_factory=list)  # statuses to answer, then 200
    received: list[dict] = field(default_factory=list)  # verified deliveries
    rejected: int = 0
    url: str = ""
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = signing.verify(self.secret, request.headers.get(signing.SIGNATURE_HEADER, ""), body, int(time.time()))
        if not ok:
            self.rejected += 1
            return web.Response(status=400, text="bad signature")
        status = self.script.pop(0) if self.script else 200
        self.received.append({"status": status, "delivery": request.headers[signing.DELIVERY_HEADER],
                              "event": request.headers[signing.EVENT_HEADER], "body": json.loads(body)})
        self.got.set()
        return web.Response(status=status, text="ok" if status == 200 else "no")

    def delivered(self) -> list[dict]:
        return [r for r in self.received if r["status"] == 200]


@dataclass
class Lifecycle:
    url: str
    http: aiohttp.ClientSession
    app: web.Application
    db: Database
    clock: Clock
    settings: Settings
    watcher: PaymentWatcher
    worker: DeliveryWorker
    receiver: Receiver
    seq: int = 0

    async def request(self, method: str, path: str, key: str | None = None, **kw):
        headers = kw.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.url + path, headers=headers, **kw) as r:
            text = await r.text()
            try:
                return r.status, json.loads(text) if text else None
            except ValueError:
                return r.status, text

    async def merchant(self, name: str = "shop", role: str = "merchant") -> str:
        return (await create_key(self.db, name, role))[1]

    async def payment(self, key: str | None = None, credits: str = "500") -> dict:
        status, q = await self.request("POST", "/v1/quotes", json={"token": "ETH", "credits": credits})
        assert status == 201, q
        status, p = await self.request("POST", "/v1/payments", key,
                                       json={"quote_id": q["id"], "beneficiary": BENEFICIARY})
        assert status == 201, p
        return p

    async def deposit(self, payment: dict, amount: int, *, at: datetime | None = None) -> Observation:
        """Store a final deposit as the API's deposit follower does (observation + cursor)."""
        self.seq += 1
        ts = int((at or self.clock.now).timestamp())
        obs = Observation(chain="ethereum", source=SOURCE, sequence=self.seq, tx_id=bytes([self.seq]) * 32,
                          event_index=0, block_number=100 + self.seq, block_hash=bytes([self.seq]) * 32,
                          timestamp=ts, token="ETH", amount=amount, payer=bytes(12) + b"\x77" * 20,
                          reference=bytes.fromhex(payment["reference"][2:]))
        async with self.db.begin() as s:
            await obs_repo.add_observations(s, [obs])
            await obs_repo.set_cursor(s, "api", "ethereum", obs.block_number, obs.block_hash)
        return obs

    async def deposit_from_chain(self, cfg) -> int:
        """Run the API's own deposit follower over a real chain once (what its watcher does)."""
        from relayers.evm.watcher import EvmWatcher

        from bridge.watch import DepositFollower

        w = EvmWatcher(cfg)
        try:
            return await DepositFollower(w, self.db, "api").step()
        finally:
            await w.aclose()

    async def wait_delivered(self, n: int, timeout: float = 20) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.receiver.delivered()) < n:
            assert time.monotonic() < deadline, f"only {len(self.receiver.delivered())} of {n} delivered"
            self.receiver.got.clear()
            try:
                await asyncio.wait_for(self.receiver.got.wait(), 0.5)
            except TimeoutError:
                pass
        return self.receiver.delivered()


@pytest.fixture
async def receiver():
    r = Receiver()
    app = web.Application()
    app.router.add_post("/hook", r.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    r.url = f"http://{host}:{port}/hook"
    yield r
    await runner.cleanup()


@pytest.fixture
async def lifecycle(tmp_path, monkeypatch, receiver):
    """``await lifecycle(**settings_overrides)`` -> a running gateway with worker tasks."""
    from bridge.keystore import write_keystore

    monkeypatch.setenv(PASSWORD_ENV, "lifecycle test password")
    write_keystore(tmp_path / "quote-key.json", "ed25519", bytes(range(1, 33)), "lifecycle test password", n=2**10)
    cleanups = []

    async def start(run_worker: bool = True, **extra) -> Lifecycle:
        home = tmp_path / f"gw{len(cleanups)}"
        home.mkdir()
        settings = lifecycle_settings(home, tmp_path / "quote-key.json", **extra)
        db = Database(settings.storage.url)
        await db.migrate()
        signer = QuoteSigner.from_ref(settings.api.quote_key)
        clock = Clock()
        worker = DeliveryWorker(db, settings.payments.webhooks, clock=clock)
        watcher = PaymentWatcher(db=db, watchers={}, settlement=None, settlement_chain="settlement",
                                 publish=worker.publish, record=record_event,
                                 late_grace_seconds=settings.payments.late_grace_seconds, clock=clock)
        app = create_app(settings, db=db, quote_service=QuoteService.from_settings(
            settings, FixedPriceSource(settings.pricing.fixed_usd), signer), signer=signer, clock=clock)
        app[WAKE_DELIVERIES] = worker.wake
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        http = aiohttp.ClientSession()
        task = asyncio.create_task(worker.run()) if run_worker else None

        async def cleanup():
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await worker.aclose()
            await http.close()
            await runner.cleanup()

        cleanups.append(cleanup)
        return Lifecycle(f"http://{host}:{port}", http, app, db, clock, settings, watcher, worker, receiver)

    yield start
    for c in reversed(cleanups):
        await c()


def later(clock: Clock, **kw) -> datetime:
    return clock.now + timedelta(**kw)
