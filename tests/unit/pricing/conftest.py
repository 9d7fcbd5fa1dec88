"""Fixtures for the pricing tests: a fake-exchange HTTP server on 127.0.0.1, a client session,
a fresh Prometheus registry and an injectable monotonic clock (see ``fakes.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from .fakes import FakeExchanges, FakeMonotonic, start_server


@pytest.fixture
async def exchanges() -> AsyncIterator[FakeExchanges]:
    fake = FakeExchanges()
    app = web.Application()
    app.router.add_get("/0/public/Ticker", fake.kraken)
    app.router.add_get("/api/v3/ticker/price", fake.binance)
    app.router.add_get("/products/{product}/ticker", fake.coinbase)
    app.router.add_get("/api/v3/simple/price", fake.coingecko)
    runner, fake.base_url = await start_server(app)
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def dead_url() -> str:
    """A 127.0.0.1 URL where nothing listens any more (connection refused)."""
    runner, url = await start_server(web.Application())
    await runner.cleanup()
    return url


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def mono() -> FakeMonotonic:
    return FakeMonotonic()


