"""Composition root of the API process: the app plus the payment watcher it needs."""

from __future__ import annotations

from aiohttp import web

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.node import _close_on_stop, make_submitter, make_watcher, payment_instructions
from bridge.payments.watcher import PaymentWatcher
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.storage.db import open_database
from bridge.supervisor import Supervisor


async def build_api(settings: Settings, sup: Supervisor) -> tuple[web.Application, list]:
    from bridge.api.app import create_app

    if not settings.pricing.fixed_usd:
        raise ConfigError("pricing.fixed_usd is empty: configure a price for every payable token")
    signer = QuoteSigner.from_ref(settings.api.quote_key)
    db = await open_database(settings.storage.url)
    sup.on_stop(db.dispose)
    source = FixedPriceSource(dict(settings.pricing.fixed_usd))
    quotes = QuoteService.from_settings(settings, source, signer)
    app = create_app(settings, db=db, quote_service=quotes, signer=signer, own_db=False,
                     instructions=payment_instructions())
    sources = settings.source_chains()
    watchers = {c.name: make_watcher(c) for c in sources}
    settlement = make_submitter(settings.chain(settings.settlement_chain))
    _close_on_stop(sup, [*watchers.values(), settlement])
    watcher = PaymentWatcher(
        db=db,
        watchers=watchers,
        settlement=settlement,
        settlement_chain=settings.settlement_chain,
        max_block_range={c.name: c.max_block_range for c in sources},
        start_block={c.name: c.start_block for c in sources},
        poll_interval=min(c.poll_interval for c in sources),
    )
    return app, [("payment-watcher", watcher.run)]
