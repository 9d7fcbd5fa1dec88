"""The gateway's aiohttp application factory (design rule 10).

``create_app`` takes ready services (the composition root builds them from the settings) and
returns an ``web.Application`` with:

* one middleware (``bridge/api/edge.py``) doing, outermost first: metrics (every answered
  request, with its final status), problem responses (``BridgeError`` / aiohttp HTTP errors /
  unknown exceptions -> RFC 9457 ``application/problem+json``), the per-client rate limit;
* a request body limit (``client_max_size``; larger bodies are a 413 problem);
* resources under ``cleanup_ctx``: a database check at start-up (and its disposal at
  shutdown when the app owns it), the rate limiter's sweeper task, then ``extra_ctx``.

Routes::

    POST /v1/quotes                          signed quote for {"token", "credits" | "amount"}
    GET  /v1/quotes/{id}
    POST /v1/payments                        payment for {"quote_id", "beneficiary"}
    GET  /v1/payments/{id}
    GET  /v1/payments/by-code/{code}         the payment with this payment code
    GET  /v1/payment-references?chain=C&after=N&limit=M
                                             reference feed for per-payment address collectors
                                             (bridge/payments/feed.py)
    GET  /v1/payments/by-reference/{ref}     signed terms (signer nodes; not rate limited)
    GET  /v1/payments/by-reference/{ref}/late/{source}/{sequence}
                                             signed decision on a late deposit (signer nodes;
                                             not rate limited; bridge/payments/late.py)
    GET  /v1/gateway                         the quote key: {"key_id", "public_key"}
    GET  /v1/tokens                          payable tokens: symbol, chain, decimals, min_amount
    GET  /v1/prices                          aggregated prices, their sources and age
    GET  /openapi.json, /docs                the OpenAPI 3.1 document and its HTML page
    GET  /v1/health                          {"status": "ok"} after a database round trip
    GET  /metrics                            Prometheus text
    POST/GET/DELETE /v1/webhooks...          merchants' webhooks (bridge/api/webhooks.py)
    GET  /v1/admin/status                    operator status (bridge/api/admin.py)
    GET  /v1/admin/treasury                  treasury sweeps per token, from the signers (bridge/api/treasury.py)
    GET  /pay/{id}, /pay/{id}/qr.svg         checkout page (bridge/api/checkout.py)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime

from aiohttp import web

from bridge.api import handlers
from bridge.api.keys import (CLOCK, DB, DOCS, INSTRUCTIONS, LIMITER, METRICS, QUOTE_WRITER, QUOTES, SETTINGS,
                             SIGNER, Docs)
from bridge.api.openapi import build_spec, render_docs
from bridge.payments.instructions import Instructions
from bridge.api.edge import edge_middleware
from bridge.api.metrics import ApiMetrics
from bridge.api.ratelimit import TokenBucketLimiter
from bridge.config import Settings
from bridge.gctune import service_gc
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.storage import quotes as quotes_repo
from bridge.storage.db import Database
from bridge.types import utcnow

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]

MAX_BODY = 64 * 1024
DEFAULT_RATE_PER_MINUTE = 600
DEFAULT_BURST = 60
# routes every client may call without limit: monitoring, and the signer nodes' look-ups (terms,
# late deposits' decisions: a fresh quote only while a late deposit is undecided, then the stored one)
UNLIMITED_ROUTES = frozenset({"health", "metrics", "terms_by_reference", "late_terms"})


def create_app(
    settings: Settings,
    *,
    db: Database,
    quote_service: QuoteService,
    signer: QuoteSigner,
    extra_ctx: Iterable[CleanupCtx] = (),
    clock: Callable[[], datetime] = utcnow,
    own_db: bool = True,
    max_body: int = MAX_BODY,
    metrics: ApiMetrics | None = None,
    rate_clock: Callable[[], float] = time.monotonic,
    instructions: Instructions | None = None,
) -> web.Application:
    """The gateway app. With ``own_db`` (the default) the app disposes ``db`` at cleanup.
    ``clock`` is the wall clock used for quote creation and expiry (tests move it)."""
    api = settings.api
    limiter = TokenBucketLimiter(
        api.rate_limit_per_minute if api else DEFAULT_RATE_PER_MINUTE,
        api.rate_limit_burst if api else DEFAULT_BURST,
        clock=rate_clock,
    )
    metrics = metrics or ApiMetrics()
    app = web.Application(
        # metrics, problem responses and the rate limit as one middleware (bridge/api/edge.py)
        middlewares=[edge_middleware(metrics, limiter, exempt_routes=UNLIMITED_ROUTES,
                                     trust_forwarded_for=bool(api and api.trust_forwarded_for))],
        client_max_size=max_body,
    )
    app[SETTINGS] = settings
    app[DB] = db
    app[QUOTES] = quote_service
    app[SIGNER] = signer
    app[METRICS] = metrics
    app[LIMITER] = limiter
    app[CLOCK] = clock
    app[INSTRUCTIONS] = instructions or Instructions()
    spec = build_spec(quote_service.token_chains)
    app[DOCS] = Docs(json.dumps(spec, indent=1).encode(), render_docs(spec))
    # quotes are signed by batch (one signature over a Merkle root) as they are stored by batch
    app[QUOTE_WRITER] = quotes_repo.QuoteWriter(db, signer=quote_service.signer)

    r = app.router
    r.add_post("/v1/quotes", handlers.create_quote, name="quotes")
    r.add_get("/v1/quotes/{id}", handlers.get_quote, name="quote")
    r.add_post("/v1/payments", handlers.create_payment, name="payments")
    r.add_get("/v1/payments/by-reference/{reference}", handlers.get_terms_by_reference, name="terms_by_reference")
    r.add_get("/v1/payments/by-reference/{reference}/late/{source}/{sequence}", handlers.get_late_terms,
              name="late_terms")
    r.add_get("/v1/payments/by-code/{code}", handlers.get_payment_by_code, name="payment_by_code")
    r.add_get("/v1/payments/{id}", handlers.get_payment, name="payment")
    r.add_get("/v1/payment-references", handlers.get_payment_references, name="payment_references")
    r.add_get("/v1/gateway", handlers.gateway, name="gateway")
    r.add_get("/v1/tokens", handlers.tokens, name="tokens")
    r.add_get("/v1/prices", handlers.prices, name="prices")
    r.add_get("/openapi.json", handlers.openapi, name="openapi")
    r.add_get("/docs", handlers.docs, name="docs")
    r.add_get("/v1/health", handlers.health, name="health")
    r.add_get("/metrics", handlers.metrics, name="metrics")
    # payment lifecycle: merchants' webhooks, the operator's status, the checkout page
    from bridge.api import admin, checkout, treasury, webhooks

    webhooks.add_routes(app)
    admin.add_routes(app)
    treasury.add_routes(app)
    checkout.add_routes(app)

    app.cleanup_ctx.append(_gc_ctx)
    app.cleanup_ctx.append(_database_ctx(own_db))
    app.cleanup_ctx.append(_quote_writer_ctx)
    app.cleanup_ctx.append(_sweeper_ctx)
    app.cleanup_ctx.extend(extra_ctx)
    return app


async def _gc_ctx(app: web.Application) -> AsyncIterator[None]:
    """The collector tuned while the app serves (``bridge.gctune``): what exists at start-up
    frozen out of full collections, young collections rare under load."""
    with service_gc():
        yield


def _database_ctx(own_db: bool) -> CleanupCtx:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        db = app[DB]
        async with handlers.transaction(db) as s:  # fail fast on an unreachable database
            await quotes_repo.ping(s)
        try:
            yield
        finally:
            if own_db:
                await db.dispose()

    return ctx


async def _quote_writer_ctx(app: web.Application) -> AsyncIterator[None]:
    """Quotes are stored by one group-commit task (see ``QuoteWriter``); stopped before the
    database is disposed, after writing what is queued."""
    writer = app[QUOTE_WRITER]
    writer.start()
    yield
    await writer.stop()


async def _sweeper_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[LIMITER].run_sweeper(), name="api-ratelimit-sweeper")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
