"""Compose price sources: cache and fallback wrappers, plus the failure bookkeeping they share.

Both wrappers follow style rule 8 (BTCPay's ``IRateProvider`` wrappers): they are price
sources themselves, they re-raise ``asyncio.CancelledError`` untouched, and they record
every other failure instead of letting it escape as anything but ``PriceUnavailable``:

* the counter ``creditbridge_pricing_source_failures_total{source=...}`` on the injected
  Prometheus ``CollectorRegistry`` (counted once per failure even when the same exception
  passes through several wrappers, e.g. ``FallbackSource([CachedSource(kraken), ...])``);
* a :class:`SourceHealth` per wrapped source (last success, last error, counts) for a
  status view.

:class:`PricingMetrics` owns every pricing metric of one registry, so the wrappers and the
aggregator can share a registry without registering a metric twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from bridge.errors import ConfigError, PriceUnavailable
from bridge.pricing.sources.base import PricePoint, PriceSource
from bridge.pricing.sources.http import MalformedPriceData

__all__ = [
    "CachedSource",
    "FallbackSource",
    "PricingMetrics",
    "SourceHealth",
    "as_price_unavailable",
    "validate_points",
]

log = logging.getLogger("creditbridge.pricing")


def _utc_now() -> datetime:
    return datetime.now(UTC)


# --- metrics --------------------------------------------------------------------------------
class PricingMetrics:
    """The pricing metrics of one registry (created once per registry, then shared)."""

    _by_registry: weakref.WeakKeyDictionary[CollectorRegistry, PricingMetrics] = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.source_failures = Counter(
            "creditbridge_pricing_source_failures",
            "Failed fetches from a price source (any reason but cancellation).",
            ["source"],
            registry=registry,
        )
        self.price_usd = Gauge(
            "creditbridge_pricing_price_usd",
            "Aggregated (median) USD price per whole token; absent while unavailable.",
            ["symbol"],
            registry=registry,
        )
        self.source_age_seconds = Gauge(
            "creditbridge_pricing_source_age_seconds",
            "Age of the latest price point a source gave for a symbol.",
            ["source", "symbol"],
            registry=registry,
        )
        # the depeg guard (bridge/pricing/quotes.py): per (token, chain) with a peg
        self.peg_deviation_bps = Gauge(
            "creditbridge_pricing_peg_deviation_bps",
            "Distance of a pegged token's measured price from its peg, in basis points (at the last quote asked).",
            ["token", "chain"],
            registry=registry,
        )
        self.depegged_quotes = Counter(
            "creditbridge_pricing_depegged_quotes",
            "Quotes asked while a pegged token traded outside its band: refused, or priced at the measured rate.",
            ["token", "chain", "action"],
            registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> PricingMetrics:
        metrics = cls._by_registry.get(registry)
        if metrics is None:
            metrics = cls._by_registry[registry] = cls(registry)
        return metrics

    def count_failure(self, source: str, exc: BaseException) -> None:
        """Count ``exc`` against ``source`` unless it was already counted for that source."""
        key = (id(self), source)
        seen: set[tuple[int, str]] = exc.__dict__.setdefault("_creditbridge_counted", set())
        if key in seen:
            return
        seen.add(key)
        self.source_failures.labels(source=source).inc()


# --- health (status view) -------------------------------------------------------------------
@dataclass
class SourceHealth:
    """What a status page needs to know about one source."""

    name: str
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_code: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    failures: int = 0

    def succeeded(self, now: datetime) -> None:
        self.last_success_at = now
        self.consecutive_failures = 0

    def failed(self, exc: PriceUnavailable, now: datetime) -> None:
        self.last_error = exc.detail
        self.last_error_code = exc.code
        self.last_error_at = now
        self.consecutive_failures += 1
        self.failures += 1

    def as_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "name": self.name,
            "last_success_at": iso(self.last_success_at),
            "last_error": self.last_error,
            "last_error_code": self.last_error_code,
            "last_error_at": iso(self.last_error_at),
            "consecutive_failures": self.consecutive_failures,
            "failures": self.failures,
        }


def as_price_unavailable(source: str, exc: Exception) -> PriceUnavailable:
    """``exc`` itself if it is a ``PriceUnavailable``, else one wrapping it (a bug somewhere)."""
    if isinstance(exc, PriceUnavailable):
        return exc
    wrapped = PriceUnavailable(f"{source}: unexpected {type(exc).__name__}: {exc}", retryable=True)
    wrapped.__cause__ = exc
    # whatever was counted for the original is counted for the wrapper too
    wrapped.__dict__["_creditbridge_counted"] = exc.__dict__.setdefault("_creditbridge_counted", set())
    return wrapped


def record_failure(
    metrics: PricingMetrics, health: SourceHealth, exc: Exception, now: datetime
) -> PriceUnavailable:
    """Book a failed fetch of ``health.name``: counter, health, log. Returns it as PriceUnavailable."""
    error = as_price_unavailable(health.name, exc)
    if error is not exc:  # not a PriceUnavailable: a programming error deserves a traceback
        log.error("price source %s raised %s", health.name, type(exc).__name__, exc_info=exc)
    else:
        log.warning("price source %s failed: %s", health.name, error.detail)
    metrics.count_failure(health.name, error)
    health.failed(error, now)
    return error


def validate_points(source: str, symbols: frozenset[str], points: Any) -> dict[str, PricePoint]:
    """Check a source kept its promise (only asked symbols, positive finite Decimals, aware times).

    Returns the points restricted to ``symbols``; raises ``MalformedPriceData`` otherwise.
    """
    if not isinstance(points, dict):
        raise MalformedPriceData(f"{source}: fetch returned {type(points).__name__}, not a dict")
    out: dict[str, PricePoint] = {}
    for symbol, point in points.items():
        if not isinstance(point, PricePoint) or point.symbol != symbol:
            raise MalformedPriceData(f"{source}: entry {symbol!r} is not a PricePoint for that symbol")
        if symbol not in symbols:
            continue
        price = point.price
        if not (isinstance(price, Decimal) and price.is_finite() and price > 0):
            raise MalformedPriceData(f"{source}: {symbol} price {price!r} is not a positive finite Decimal")
        ts = point.timestamp
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise MalformedPriceData(f"{source}: {symbol} timestamp is not an aware datetime")
        out[symbol] = point
    return out


# --- CachedSource -----------------------------------------------------------------------------
class CachedSource:
    """Serve a source's last answer for ``ttl``; concurrent misses share one upstream fetch.

    A hit needs the asked symbols to be a subset of those the cached fetch asked for.
    Failures are not cached (the HTTP client's cool-down already throttles a rate-limited
    exchange); they are recorded and re-raised as ``PriceUnavailable``.
    """

    def __init__(
        self,
        source: PriceSource,
        ttl: timedelta,
        *,
        registry: CollectorRegistry,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= timedelta(0):
            raise ConfigError(f"CachedSource({source.name}): ttl must be positive, got {ttl}")
        self.source = source
        self.name = source.name
        self.ttl = ttl
        self.health = SourceHealth(source.name)
        self._metrics = PricingMetrics.for_registry(registry)
        self._clock = clock
        self._monotonic = monotonic
        self._cached: tuple[frozenset[str], dict[str, PricePoint], float] | None = None
        self._lock = asyncio.Lock()

    def _lookup(self, symbols: frozenset[str]) -> dict[str, PricePoint] | None:
        if self._cached is None:
            return None
        asked, points, at = self._cached
        if self._monotonic() - at >= self.ttl.total_seconds() or not symbols <= asked:
            return None
        return {s: p for s, p in points.items() if s in symbols}

    def invalidate(self) -> None:
        self._cached = None

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        symbols = frozenset(symbols)
        hit = self._lookup(symbols)
        if hit is not None:
            return hit
        async with self._lock:
            hit = self._lookup(symbols)  # filled while we waited for the lock
            if hit is not None:
                return hit
            try:
                points = validate_points(self.name, symbols, await self.source.fetch(symbols))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = record_failure(self._metrics, self.health, exc, self._clock())
                if error is exc:
                    raise
                raise error from exc
            self._cached = (symbols, points, self._monotonic())
            self.health.succeeded(self._clock())
            return dict(points)

    def statuses(self) -> list[SourceHealth]:
        return [self.health]


# --- FallbackSource ---------------------------------------------------------------------------
class FallbackSource:
    """Ask sources in order; each later one only for the symbols still unanswered.

    Returns as soon as every asked symbol has a price. Returns what it has if some
    symbols stay unanswered but at least one was answered, or if nothing failed (no
    source knows those symbols). Raises ``PriceUnavailable`` naming every failure when
    all failed and nothing was answered.
    """

    def __init__(
        self,
        sources: Sequence[PriceSource],
        *,
        registry: CollectorRegistry,
        name: str | None = None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not sources:
            raise ConfigError("FallbackSource needs at least one source")
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"FallbackSource: source names must be unique, got {names}")
        self.sources = list(sources)
        self.name = name or f"fallback({','.join(names)})"
        self.health = {n: SourceHealth(n) for n in names}
        self._metrics = PricingMetrics.for_registry(registry)
        self._clock = clock

    async def fetch(self, symbols: frozenset[str]) -> dict[str, PricePoint]:
        remaining = set(symbols)
        points: dict[str, PricePoint] = {}
        errors: list[PriceUnavailable] = []
        for source in self.sources:
            if not remaining:
                break
            asked = frozenset(remaining)
            health = self.health[source.name]
            try:
                got = validate_points(source.name, asked, await source.fetch(asked))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                errors.append(record_failure(self._metrics, health, exc, self._clock()))
                continue
            health.succeeded(self._clock())
            points.update(got)
            remaining -= got.keys()
        if points or not errors:
            return points
        raise PriceUnavailable(
            f"{self.name}: every source failed: " + "; ".join(e.detail for e in errors),
            retryable=any(e.retryable for e in errors),
        )

    def statuses(self) -> list[SourceHealth]:
        return list(self.health.values())
