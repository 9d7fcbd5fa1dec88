"""The webhook delivery worker: sends the outbox's pending deliveries, after the commit.

Each delivery is a POST of the stored event JSON with::

    Content-Type: application/json
    Creditbridge-Signature: t=<unix>,v1=<HMAC-SHA256(secret, "<t>." + body)>
    Creditbridge-Delivery: <delivery id>      (new for a manual redelivery)
    Creditbridge-Event: <event id>            (the same for every delivery of an event)

A 2xx answer is success. 5xx, 408, 429 and network errors are retried with exponential
backoff (tenacity) up to ``max_attempts``; any other answer (and a refused target) fails the
delivery at once. Every attempt is logged (``webhook_attempts``) and the delivery row carries
its next attempt time, so a worker that dies mid-backoff resumes where it was after a
restart: delivery is at least once (receivers de-duplicate by event id). Redirects are not
followed.

Replicas: every API replica runs a worker on the one database. A worker *claims* the
deliveries it starts (``claim_deliveries``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, then a
lease ``claimed_until`` by the database clock), renews the claim before each attempt and
while it waits out a backoff, and releases it with the final outcome; the attempts counter
is incremented in SQL. So no delivery is attempted by two replicas at once, and one that a
replica left mid-POST (it died) is taken by another after ``timeout_seconds +
claim_margin`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Callable

import aiohttp
from sqlalchemy.exc import SQLAlchemyError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from bridge.errors import BridgeError
from bridge.singleton import holder_id
from bridge.storage import webhooks as repo
from bridge.storage.db import Database
from bridge.types import utcnow
from bridge.webhooks import signing
from bridge.webhooks.targets import GuardedResolver, TargetRefused, check_target

log = logging.getLogger("creditbridge.webhooks")

RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "creditbridge-webhooks/1"


class RetryableDelivery(Exception):
    """An attempt failed in a way worth retrying (5xx, 408, 429, network)."""

    def __init__(self, status: int | None, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class DeliveryWorker:
    def __init__(self, db: Database, cfg, *, clock: Callable[[], datetime] = utcnow, concurrency: int = 8,
                 metrics=None, holder: str | None = None, claim_margin: float = 10.0) -> None:
        self.db = db
        self.holder = holder or holder_id()
        self.claim_margin = claim_margin
        self.cfg = cfg  # config.WebhooksConfig
        self.clock = clock
        self.metrics = metrics
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._session: aiohttp.ClientSession | None = None

    def wake(self) -> None:
        self._wake.set()

    async def publish(self, _event) -> None:  # PaymentWatcher's after-commit callback
        self.wake()

    def _wait(self, attempt: int) -> float:
        return min(self.cfg.backoff_max_seconds, self.cfg.backoff_initial_seconds * 2 ** max(0, attempt - 1))

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(allow_loopback=self.cfg.allow_loopback,
                                                                      allow_private=self.cfg.allow_private),
                                             limit=32)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.cfg.timeout_seconds),
                headers={"User-Agent": USER_AGENT})
        return self._session

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if tasks:  # hand what it held to the other replicas now, not after the claims' lease
            try:
                async with self.db.begin() as s:
                    await repo.release_claims(s, self.holder)
            except SQLAlchemyError as e:
                log.warning("webhook worker: releasing claims failed (%s); they expire by themselves",
                            e.__class__.__name__)
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.step()
                except BridgeError as e:
                    log.warning("webhook worker: %s", e)
                self._wake.clear()
                async with self.db.begin() as s:
                    nxt = await repo.next_due_at(s)
                    claim_left = await repo.next_claim_expiry(s)
                timeout = 5.0
                if nxt is not None:
                    timeout = min(timeout, max(0.05, (nxt - self.clock()).total_seconds()))
                if claim_left is not None:  # a claim (perhaps a dead replica's) runs out then
                    timeout = min(timeout, claim_left + 0.05)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=timeout)
                except TimeoutError:
                    pass
        finally:
            await self.aclose()

    async def step(self) -> int:
        """Start every due delivery not already in flight; how many were started."""
        async with self.db.begin() as s:
            due = await repo.claim_deliveries(s, self.clock(), self.holder, self._lease(), limit=100,
                                              exclude=set(self._inflight))
        for d in due:
            self._inflight.add(d.id)
            t = asyncio.create_task(self._deliver(d), name=f"webhook-delivery-{d.id}")
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)
        return len(due)

    def _lease(self, wait: float = 0.0) -> float:
        """How long a claim must last: the wait before the next attempt, the attempt, a margin."""
        return wait + self.cfg.timeout_seconds + self.claim_margin

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _deliver(self, d: repo.Delivery) -> None:
        try:
            async with self._sem:
                await self._deliver_with_retries(d)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the worker alive; the row stays pending and is retried
            log.exception("webhook delivery %s crashed", d.id)
        finally:
            self._inflight.discard(d.id)

    async def _deliver_with_retries(self, d: repo.Delivery) -> None:
        async with self.db.begin() as s:
            webhook = await repo.get_webhook(s, d.webhook_id)
            event = await repo.get_event(s, d.event_id)
        if webhook is None or event is None or not webhook.active:
            await self._record(d.id, None, "webhook removed", repo.FAILED, None)
            return
        remaining = max(1, self.cfg.max_attempts - d.attempts)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(remaining),
            wait=wait_exponential(multiplier=self._wait(d.attempts + 1), max=self.cfg.backoff_max_seconds),
            retry=retry_if_exception_type(RetryableDelivery),
            reraise=True,
        )
        attempt_no = d.attempts
        try:
            async for attempt in retrying:
                with attempt:
                    async with self.db.begin() as s:
                        mine = await repo.renew_claim(s, d.id, self.holder, self._lease())
                    if not mine:  # this worker stalled past its claim: another replica has it
                        log.warning("webhook delivery %s: claim lost; leaving it to its new holder", d.id)
                        return
                    attempt_no += 1
                    await self._attempt(d, webhook, event, attempt_no)
        except RetryableDelivery as e:
            await self._record(d.id, e.status, e.error or "gave up", repo.FAILED, None)
            log.warning("webhook delivery %s to %s failed after %d attempts", d.id, webhook.url, attempt_no)

    async def _attempt(self, d: repo.Delivery, webhook: repo.Webhook, event: repo.Event, attempt_no: int) -> None:
        body = event.payload.encode()
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            signing.SIGNATURE_HEADER: signing.header(webhook.secret, ts, body),
            signing.DELIVERY_HEADER: d.id,
            signing.EVENT_HEADER: event.id,
        }
        status: int | None = None
        try:
            await check_target(webhook.url, allow_loopback=self.cfg.allow_loopback,
                               allow_private=self.cfg.allow_private)
            session = await self._client()
            async with session.post(webhook.url, data=body, headers=headers, allow_redirects=False) as r:
                status = r.status
                await r.read()
        except TargetRefused as e:
            await self._record(d.id, None, e.detail, repo.FAILED, None)
            return
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            error = f"network error: {e.__class__.__name__}"
            self._count("error")
            await self._retry_later(d.id, None, error, attempt_no)
            raise RetryableDelivery(None, error) from None
        if 200 <= status < 300:
            self._count("succeeded")
            await self._record(d.id, status, "", repo.SUCCEEDED, None)
            log.info("webhook delivery %s (event %s) to %s: %d", d.id, event.type, webhook.url, status)
            return
        if status >= 500 or status in RETRY_STATUSES:
            self._count("retry")
            await self._retry_later(d.id, status, f"HTTP {status}", attempt_no)
            raise RetryableDelivery(status, f"HTTP {status}")
        self._count("failed")
        await self._record(d.id, status, f"HTTP {status}", repo.FAILED, None)

    async def _retry_later(self, delivery_id: str, status: int | None, error: str, attempt_no: int) -> None:
        if attempt_no >= self.cfg.max_attempts:
            return  # the caller records the final failure
        wait = self._wait(attempt_no)
        nxt = self.clock() + timedelta(seconds=wait)
        await self._record(delivery_id, status, error, repo.PENDING, nxt, lease=self._lease(wait))

    async def _record(self, delivery_id: str, status: int | None, error: str, outcome: str,
                      next_at: datetime | None, *, lease: float | None = None) -> None:
        async with self.db.begin() as s:
            await repo.record_attempt(s, delivery_id, now=self.clock(), status_code=status, error=error,
                                      outcome=outcome, next_attempt_at=next_at, holder=self.holder,
                                      lease_seconds=lease)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.labels(outcome=outcome).inc()
