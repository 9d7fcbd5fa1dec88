"""Typed application keys of the gateway app (design rule 10)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from bridge.api.metrics import ApiMetrics
from bridge.api.ratelimit import TokenBucketLimiter
from bridge.config import Settings
from bridge.payments.instructions import Instructions
from bridge.pricing.quotes import QuoteService, QuoteSigner
from bridge.storage.db import Database
from bridge.storage.quotes import QuoteWriter



@dataclass(frozen=True)
class Docs:
    """The OpenAPI document, serialized once, and its HTML rendering."""

    spec_json: bytes
    html: str


SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
QUOTES = web.AppKey("quote_service", QuoteService)
SIGNER = web.AppKey("quote_signer", QuoteSigner)
METRICS = web.AppKey("metrics", ApiMetrics)
LIMITER = web.AppKey("rate_limiter", TokenBucketLimiter)
CLOCK = web.AppKey("clock", Callable[[], datetime])
INSTRUCTIONS = web.AppKey("instructions", Instructions)
DOCS = web.AppKey("docs", Docs)
QUOTE_WRITER = web.AppKey("quote_writer", QuoteWriter)
