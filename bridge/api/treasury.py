"""The operator's treasury endpoint (API key of role ``admin``)::

    GET /v1/admin/treasury

Per chain (token): earned, swept, pending (earned not paid to the treasury yet), signed but
unpaid, stranded, and the last sweep (id, epoch, amount, state, payout tx, block and time), as
at least ``threshold`` of the committee signers in ``[api] treasury_signers`` report them
(bridge/treasury_view.py says why the signers, not the API, are the source). The same view is
refreshed every ``treasury_poll_seconds`` for the ``creditbridge_treasury_*`` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bridge import treasury_view
from bridge.api.auth import authenticate
from bridge.api.keys import CLOCK, DB, METRICS, SETTINGS
from bridge.errors import BridgeError
from bridge.pricing.quotes import rfc3339

log = logging.getLogger("creditbridge.api.treasury")

MAX_AGE = 2.0  # seconds a view is served again before the signers are asked anew


class TreasuryMetrics:
    """What the API can say that no single signer can: the committee's agreed figures, whether a
    quorum agrees, and how many signers disagree or cannot be reached."""

    def __init__(self, registry) -> None:
        from prometheus_client import Gauge

        labels = ["chain", "token"]

        def g(name: str, doc: str, lbl=labels) -> Gauge:
            return Gauge("creditbridge_treasury_" + name, doc, lbl, registry=registry)

        self.earned = g("committee_earned", "Earned base units, as a quorum of signers reports")
        self.swept = g("committee_swept", "Base units paid to the treasury, as a quorum of signers reports")
        self.pending = g("committee_pending", "Earned base units not paid to the treasury yet")
        self.stranded = g("committee_stranded", "Below-one-credit remainders kept in custody")
        self.last_paid = g("last_sweep_paid_timestamp_seconds", "Block time of the last sweep's payout")
        self.quorum = g("quorum", "1 if at least threshold signers report the same figures", ["chain"])
        self.disagreeing = g("signers_disagreeing", "Signers reporting other figures than the quorum", ["chain"])
        self.unreachable = g("signers_unreachable", "Treasury signers that did not answer", [])

    def update(self, view: dict) -> None:
        from datetime import datetime

        self.unreachable.set(len(view["unreachable"]))
        for chain, c in view["chains"].items():
            self.quorum.labels(chain=chain).set(1 if c["quorum"] else 0)
            self.disagreeing.labels(chain=chain).set(len(c["disagreeing_signers"]))
            if not c["quorum"]:
                continue
            token = c["token"] or ""
            chain = c.get("chain") or chain.partition("@")[2] or chain  # SYMBOL@chain: that token's figures
            for gauge, k in ((self.earned, "earned"), (self.swept, "swept"), (self.pending, "pending"),
                             (self.stranded, "stranded")):
                if c[k] is not None:
                    gauge.labels(chain=chain, token=token).set(int(c[k]))
            w = c["last_sweep"]
            if w and w.get("paid_at"):
                self.last_paid.labels(chain=chain, token=token).set(datetime.fromisoformat(w["paid_at"]).timestamp())


class TreasuryView:
    """The signers' views combined, cached for ``MAX_AGE`` seconds (one fan-out at a time)."""

    def __init__(self, urls: list[str], threshold: int, session: aiohttp.ClientSession | None,
                 metrics: TreasuryMetrics | None = None) -> None:
        self.urls, self.threshold, self.session, self.metrics = urls, threshold, session, metrics
        self._lock = asyncio.Lock()
        self._view: dict | None = None
        self._at = 0.0

    async def get(self, max_age: float = MAX_AGE) -> dict:
        async with self._lock:
            if self._view is None or time.monotonic() - self._at > max_age:
                views = await treasury_view.fetch(self.urls, self.session) if self.urls and self.session else {}
                self._view = treasury_view.summarize(views, self.threshold)
                self._at = time.monotonic()
                if self.metrics is not None:
                    self.metrics.update(self._view)
            return self._view

    async def poll(self, interval: float) -> None:
        """Keep the metrics current (signers' failures are part of the view, not errors)."""
        while True:
            try:
                await self.get(max_age=0)
            except BridgeError as e:
                log.error("treasury view: %s", e)
            await asyncio.sleep(interval)


TREASURY = web.AppKey("treasury_view", TreasuryView)


async def treasury(request: web.Request) -> web.Response:
    app = request.app
    await authenticate(request, app[DB], role="admin")
    view = await app[TREASURY].get()
    return web.json_response({"time": rfc3339(app[CLOCK]()), **view})


async def _treasury_ctx(app: web.Application) -> AsyncIterator[None]:
    """The signers' HTTP session and the metrics poller (once, however many runners start the app)."""
    view = app[TREASURY]
    if view.session is not None:
        yield
        return
    api = app[SETTINGS].api
    view.session = aiohttp.ClientSession()
    task = None
    if view.urls:
        task = asyncio.create_task(view.poll(api.treasury_poll_seconds), name="api-treasury-view")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await view.session.close()
        view.session = None


def add_routes(app: web.Application) -> None:
    api = app[SETTINGS].api
    urls = list(api.treasury_signers) if api else []
    threshold = (api.treasury_threshold if api and api.treasury_threshold else
                 treasury_view.default_threshold(len(urls)))
    app[TREASURY] = TreasuryView(urls, threshold, None, TreasuryMetrics(app[METRICS].registry))
    app.router.add_get("/v1/admin/treasury", treasury, name="admin_treasury")
    app.cleanup_ctx.append(_treasury_ctx)
