"""Composition root of the API process: the app plus the payment watcher it needs."""

from __future__ import annotations

import logging
from datetime import timedelta

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.api.metrics import ApiMetrics
from bridge.config import ChainlinkSourceConfig, Settings
from bridge.errors import PriceUnavailable
from bridge.node import _close_on_stop, make_submitter, make_watcher, payment_instructions, non_native_tokens
from bridge.payments.watcher import PaymentWatcher
from bridge.pricing.aggregate import PriceAggregator
from bridge.pricing.factory import build_aggregator
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.singleton import Singleton
from bridge.storage.db import open_database
from bridge.storage.quotes import QuotePruner
from bridge.supervisor import Supervisor

log = logging.getLogger("creditbridge.api")


async def build_api(settings: Settings, sup: Supervisor) -> tuple[web.Application, list]:
    from bridge.api.app import create_app

    signer = QuoteSigner.from_ref(settings.api.quote_key)
    metrics = ApiMetrics()  # one registry for the API's and the pricing metrics
    if settings.manifest_data is not None:
        from bridge.manifest import register_metric

        register_metric(metrics.registry, settings.manifest_data.hash)
    aggregator = await build_pricing(settings, sup, metrics.registry)
    db = await open_database(settings.storage.url)
    sup.on_stop(db.dispose)
    quotes = QuoteService.from_settings(settings, aggregator, signer, registry=metrics.registry)
    app = create_app(settings, db=db, quote_service=quotes, signer=signer, own_db=False,
                     instructions=payment_instructions(), metrics=metrics)
    sources = settings.source_chains()
    watchers = {c.name: make_watcher(c, tokens=non_native_tokens(settings)[c.name]) for c in sources}
    settlement = make_submitter(settings.chain(settings.settlement_chain))
    _close_on_stop(sup, [*watchers.values(), settlement])
    deliveries, lifecycle = wire_lifecycle(app, settings, db, watchers, metrics)
    watcher = PaymentWatcher(
        db=db,
        watchers=watchers,
        settlement=settlement,
        settlement_chain=settings.settlement_chain,
        max_block_range={c.name: c.max_block_range for c in sources},
        start_block={c.name: c.start_block for c in sources},
        poll_interval=min(c.poll_interval for c in sources),
        **lifecycle,
    )
    refresh = timedelta(seconds=settings.pricing.refresh_seconds)
    # replicas: the chain followers and the payment evaluation run in one replica at a time
    # (a lease), and so does quote pruning; every replica delivers webhooks (claimed rows) and
    # keeps its own prices (it signs quotes from them)
    return app, [("payment-watcher", Singleton(db, "api:payment-watcher", watcher.run).run),
                 ("price-aggregator", lambda: aggregator.run(refresh)),
                 ("webhook-deliveries", deliveries.run),
                 ("quote-pruner", Singleton(db, "api:quote-pruner", quote_pruner(settings, db, metrics).run).run)]


def quote_pruner(settings: Settings, db, metrics: ApiMetrics) -> QuotePruner:
    """The quote retention job (bridge/storage/quotes.py) with the API's settings and metric."""
    api = settings.api
    return QuotePruner(db, retention=timedelta(seconds=api.quote_retention_seconds),
                       interval=api.quote_prune_interval_seconds, batch=api.quote_prune_batch,
                       metric=metrics.quotes_pruned)


async def build_pricing(settings: Settings, sup: Supervisor, registry: CollectorRegistry) -> PriceAggregator:
    """The price aggregator over the configured sources (Chainlink feeds through the EVM
    relayer), refreshed once before the API serves so the first quotes have prices."""
    tokens = sorted({t.price_symbol for t in settings.payable_tokens()})  # price symbols (one per asset)
    session = aiohttp.ClientSession()
    sup.on_stop(session.close)

    def chainlink(cfg: ChainlinkSourceConfig, name: str):
        from relayers.evm.chainlink import ChainlinkSource

        chain = settings.chain(cfg.chain)
        source = ChainlinkSource(
            {s: (chain, f.address, timedelta(seconds=f.heartbeat_seconds)) for s, f in cfg.feeds.items()},
            name=name,
        )
        sup.on_stop(source.aclose)
        return source

    aggregator = build_aggregator(settings.pricing, tokens, registry=registry, session=session, chainlink=chainlink)
    await aggregator.refresh()  # never raises; failures are recorded and quotes answer 503
    for symbol in sorted(aggregator.symbols):
        try:
            aggregator.price(symbol)
        except PriceUnavailable as e:
            log.warning("no price yet: %s", e.detail)
    return aggregator


def wire_lifecycle(app: web.Application, settings: Settings, db, watchers: dict, metrics: ApiMetrics):
    """The payment lifecycle's parts of the API process: the webhook outbox and its delivery
    worker, and the live chain heads the operator's status endpoint shows."""
    from prometheus_client import Counter

    from bridge.api.admin import CHAIN_HEADS
    from bridge.api.webhooks import WAKE_DELIVERIES
    from bridge.errors import BridgeError
    from bridge.webhooks.delivery import DeliveryWorker
    from bridge.webhooks.outbox import record_event

    counter = Counter("creditbridge_webhooks_attempts_total", "Webhook delivery attempts by outcome", ["outcome"],
                      registry=metrics.registry)
    deliveries = DeliveryWorker(db, settings.payments.webhooks, metrics=counter)
    app[WAKE_DELIVERIES] = deliveries.wake

    async def heads() -> dict:
        out = {}
        for name, w in watchers.items():
            try:
                head_height = getattr(w, "head_height", None)  # optional watcher ability
                head = await head_height() if head_height is not None else None
                out[name] = {"head": head, "final": await w.finalized_height()}
            except BridgeError as e:
                out[name] = {"head": None, "final": None, "error": str(e)}
        return out

    app[CHAIN_HEADS] = heads
    return deliveries, {"publish": deliveries.publish, "record": record_event,
                        "late_grace_seconds": settings.payments.late_grace_seconds}
