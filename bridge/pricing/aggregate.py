"""One trustworthy USD price per token from several independent sources.

:class:`PriceAggregator` polls every source concurrently (``refresh``; ``run`` loops it
under the supervisor) and keeps each source's latest good point per symbol. ``price``
then applies the guards a quote must pass:

1. **staleness**: a point older than ``max_age`` (overridable per source) is ignored;
2. **quorum**: at least ``min_sources`` fresh points, else ``PriceUnavailable``;
3. **median**: the price is the median of the fresh points (even count: the exact mean
   of the two middle values), computed in exact Decimal arithmetic;
4. **agreement**: if ``(max - min) / median > max_deviation`` the sources disagree too
   much to trust any of them, and ``PriceUnavailable`` is raised (never a price).

A failing or hanging source never breaks a refresh: its failure is recorded (metric
``creditbridge_pricing_source_failures_total{source}``, plus last error in the status
view), and its previous points simply age out. Gauges: ``creditbridge_pricing_price_usd
{symbol}`` (set at each refresh, removed while unavailable) and
``creditbridge_pricing_source_age_seconds{source,symbol}`` (computed at scrape time).
Gauge values are floats, as Prometheus requires; they are for dashboards only and never
feed back into pricing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Underflow,
)
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry

from bridge.errors import ConfigError, InputError, PriceUnavailable
from bridge.pricing.sources.base import PricePoint, PriceSource
from bridge.pricing.wrappers import (
    PricingMetrics,
    SourceHealth,
    record_failure,
    validate_points,
)

__all__ = ["AggregatedPrice", "PriceAggregator", "SourceQuote", "median"]

log = logging.getLogger("creditbridge.pricing")

DEFAULT_SYMBOLS = frozenset({"DOT", "KSM", "ETH", "TON"})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SourceQuote(NamedTuple):
    name: str  # the source that produced the point (PricePoint.source)
    price: Decimal
    age: timedelta  # at the ``now`` the aggregate was computed for


@dataclass(frozen=True)
class AggregatedPrice:
    symbol: str
    price: Decimal  # median of the fresh sources, exact
    sources: tuple[SourceQuote, ...]  # the fresh points used, sorted by name
    as_of: datetime  # timestamp of the oldest point used: the price is at least this recent


# --- exact Decimal arithmetic -----------------------------------------------------------------
def _exact_context(values: Iterable[Decimal]) -> Context:
    """A context wide enough that sums, halvings and pairwise products of ``values`` are exact.

    ``Inexact`` is trapped, so should that ever fail to hold we get an exception, not a
    silently rounded price.
    """
    vals = [v for v in values if v]
    if vals:
        top = max(v.adjusted() for v in vals)
        bottom = min(int(v.as_tuple().exponent) for v in vals)
        span = top - bottom + 1
    else:
        span = 1
    return Context(
        prec=max(28, 2 * span + 4),
        Emax=MAX_EMAX,
        Emin=MIN_EMIN,
        traps=[Inexact, InvalidOperation, DivisionByZero, Overflow, Underflow],
    )


def median(values: Sequence[Decimal]) -> Decimal:
    """The exact median; for an even count the exact mean of the two middle values."""
    if not values:
        raise ValueError("median of no values")
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    if n % 2:
        return ordered[mid]
    a, b = ordered[mid - 1], ordered[mid]
    ctx = _exact_context((a, b))
    return ctx.divide(ctx.add(a, b), Decimal(2))


def _percent(fraction: Decimal) -> str:
    return f"{fraction * 100:.2f}%"  # for messages only


# --- the aggregator ---------------------------------------------------------------------------
class PriceAggregator:
    """Median-of-sources pricing with staleness, quorum and deviation guards."""

    def __init__(
        self,
        sources: Sequence[PriceSource],
        *,
        min_sources: int,
        max_deviation: Decimal,
        max_age: timedelta,
        registry: CollectorRegistry,
        symbols: Iterable[str] = DEFAULT_SYMBOLS,
        max_age_by_source: Mapping[str, timedelta] | None = None,
        fetch_timeout: timedelta = timedelta(seconds=15),
        max_clock_skew: timedelta = timedelta(seconds=60),
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        names = [s.name for s in sources]
        if not sources:
            raise ConfigError("PriceAggregator needs at least one source")
        if len(set(names)) != len(names):
            raise ConfigError(f"price source names must be unique, got {names}")
        if isinstance(min_sources, bool) or not isinstance(min_sources, int) or not 1 <= min_sources <= len(sources):
            raise ConfigError(f"min_sources must be between 1 and {len(sources)}, got {min_sources!r}")
        if not isinstance(max_deviation, Decimal) or not max_deviation.is_finite() or max_deviation < 0:
            raise ConfigError(f"max_deviation must be a finite Decimal >= 0, got {max_deviation!r}")
        overrides = dict(max_age_by_source or {})
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(f"max_age_by_source names unknown sources: {unknown}")
        for label, age in [("max_age", max_age), *((f"max_age_by_source[{k}]", v) for k, v in overrides.items())]:
            if age <= timedelta(0):
                raise ConfigError(f"{label} must be positive, got {age}")
        if fetch_timeout <= timedelta(0):
            raise ConfigError(f"fetch_timeout must be positive, got {fetch_timeout}")
        self.symbols = frozenset(symbols)
        if not self.symbols:
            raise ConfigError("PriceAggregator needs at least one symbol")

        self.sources = list(sources)
        self._by_name = {s.name: s for s in self.sources}
        self.min_sources = min_sources
        self.max_deviation = max_deviation
        self.max_age = max_age
        self.max_age_by_source = overrides
        self.fetch_timeout = fetch_timeout
        self.max_clock_skew = max_clock_skew
        self._clock = clock
        self._metrics = PricingMetrics.for_registry(registry)
        self.health = {n: SourceHealth(n) for n in names}
        self._points: dict[str, dict[str, PricePoint]] = {n: {} for n in names}
        # price() is a pure function of the points, the health messages and ``now``: its last
        # answer per symbol is kept for that ``now`` until a refresh changes either
        self._memo: dict[str, tuple[datetime, AggregatedPrice | PriceUnavailable]] = {}
        self._age_gauges: set[tuple[str, str]] = set()
        self.last_refresh_at: datetime | None = None
        self.ready = asyncio.Event()  # set once the first refresh has finished

    def max_age_for(self, source: str, symbol: str | None = None) -> timedelta:
        """Staleness limit of ``source``'s points: the configured per-source override, else the
        source's own limit for ``symbol`` (an optional ability: ``max_age_for_symbol(symbol)``,
        e.g. a Chainlink feed's heartbeat), else ``max_age``."""
        override = self.max_age_by_source.get(source)
        if override is not None:
            return override
        if symbol is not None:
            own = getattr(self._by_name[source], "max_age_for_symbol", None)
            limit = own(symbol) if callable(own) else None
            if isinstance(limit, timedelta) and limit > timedelta(0):
                return limit
        return self.max_age

    # polling ----------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Query every source concurrently; never raises but for cancellation."""
        await asyncio.gather(*(self._refresh_one(s) for s in self.sources))
        self.last_refresh_at = self._clock()
        self._update_price_gauges(self.last_refresh_at)

    async def _refresh_one(self, source: PriceSource) -> None:
        health = self.health[source.name]
        try:
            try:
                async with asyncio.timeout(self.fetch_timeout.total_seconds()):
                    raw = await source.fetch(self.symbols)
            except TimeoutError as exc:
                raise PriceUnavailable(
                    f"{source.name}: no answer within {self.fetch_timeout.total_seconds():g}s",
                    retryable=True,
                ) from exc
            points = validate_points(source.name, self.symbols, raw)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            record_failure(self._metrics, health, exc, self._clock())
            self._memo.clear()
            return
        health.succeeded(self._clock())
        self._memo.clear()
        latest = self._points[source.name]
        for symbol, point in points.items():
            current = latest.get(symbol)
            if current is None or point.timestamp >= current.timestamp:
                latest[symbol] = point
            self._ensure_age_gauge(source.name, symbol)

    def _ensure_age_gauge(self, source: str, symbol: str) -> None:
        if (source, symbol) in self._age_gauges:
            return
        self._age_gauges.add((source, symbol))

        def age() -> float:
            point = self._points[source].get(symbol)
            return (self._clock() - point.timestamp).total_seconds() if point else float("nan")

        self._metrics.source_age_seconds.labels(source=source, symbol=symbol).set_function(age)

    def _update_price_gauges(self, now: datetime) -> None:
        for symbol in sorted(self.symbols):
            try:
                aggregated = self.price(symbol, now)
            except PriceUnavailable:
                self._metrics.price_usd.remove(symbol)
            else:
                self._metrics.price_usd.labels(symbol=symbol).set(float(aggregated.price))

    async def run(self, interval: timedelta = timedelta(seconds=30)) -> None:
        """Refresh forever, every ``interval``; for the supervisor. ``ready`` is set after the first."""
        if interval <= timedelta(0):
            raise ConfigError(f"refresh interval must be positive, got {interval}")
        while True:
            await self.refresh()
            self.ready.set()
            await asyncio.sleep(interval.total_seconds())

    # pricing ----------------------------------------------------------------------------
    def price(self, symbol: str, now: datetime | None = None) -> AggregatedPrice:
        """The guarded median price of ``symbol`` at ``now`` (default: the clock).

        Raises ``PriceUnavailable`` with the reason when the guards fail, ``InputError``
        for a symbol this aggregator does not price.
        """
        if symbol not in self.symbols:
            raise InputError(f"no price source is configured for {symbol!r}")
        if now is None:
            now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now must be a timezone-aware datetime")
        memo = self._memo.get(symbol)
        if memo is not None and memo[0] == now:
            answer = memo[1]
            if isinstance(answer, PriceUnavailable):
                raise PriceUnavailable(answer.detail, retryable=answer.retryable)
            return answer
        try:
            answer = self._price(symbol, now)
        except PriceUnavailable as exc:
            self._memo[symbol] = (now, exc)
            raise
        self._memo[symbol] = (now, answer)
        return answer

    def _price(self, symbol: str, now: datetime) -> AggregatedPrice:
        fresh: list[tuple[SourceQuote, datetime]] = []
        excluded: list[str] = []
        for source in self.sources:
            point = self._points[source.name].get(symbol)
            if point is None:
                last_error = self.health[source.name].last_error
                excluded.append(f"{source.name}: no data" + (f" (last error: {last_error})" if last_error else ""))
                continue
            age = now - point.timestamp
            limit = self.max_age_for(source.name, symbol)
            if age < -self.max_clock_skew:
                excluded.append(f"{source.name}: timestamp {point.timestamp.isoformat()} is in the future")
            elif age > limit:
                excluded.append(f"{source.name}: stale, {_fmt_age(age)} old > max {_fmt_age(limit)}")
            else:
                fresh.append((SourceQuote(point.source, point.price, max(age, timedelta(0))), point.timestamp))

        if len(fresh) < self.min_sources:
            have = ", ".join(q.name for q, _ in fresh) or "none"
            raise PriceUnavailable(
                f"{symbol}: {len(fresh)} fresh price source(s) ({have}), need {self.min_sources}"
                + (f"; excluded: {'; '.join(excluded)}" if excluded else ""),
                retryable=True,
            )

        prices = [q.price for q, _ in fresh]
        try:
            mid = median(prices)
            lo, hi = min(prices), max(prices)
            ctx = _exact_context([*prices, mid, self.max_deviation])
            too_wide = ctx.subtract(hi, lo) > ctx.multiply(self.max_deviation, mid)
        except ArithmeticError as exc:  # only for absurd magnitudes; never round silently
            raise PriceUnavailable(f"{symbol}: prices cannot be combined exactly: {exc!r}", retryable=True) from exc
        if too_wide:
            quotes = ", ".join(f"{q.name}={q.price}" for q, _ in sorted(fresh))
            raise PriceUnavailable(
                f"{symbol}: sources disagree by {_percent((hi - lo) / mid)} of the median {mid}, "
                f"more than the allowed {_percent(self.max_deviation)} ({quotes})",
                retryable=True,
            )
        return AggregatedPrice(
            symbol=symbol,
            price=mid,
            sources=tuple(sorted(q for q, _ in fresh)),
            as_of=min(ts for _, ts in fresh),
        )

    # status view ------------------------------------------------------------------------
    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-ready view for ``GET /v1/prices``: prices (as strings) or why not, and source health."""
        if now is None:
            now = self._clock()
        prices: dict[str, Any] = {}
        for symbol in sorted(self.symbols):
            try:
                p = self.price(symbol, now)
            except PriceUnavailable as exc:
                prices[symbol] = {"available": False, "code": exc.code, "reason": exc.detail}
                continue
            prices[symbol] = {
                "available": True,
                "price_usd": str(p.price),
                "as_of": p.as_of.isoformat(),
                "sources": [
                    {"name": q.name, "price_usd": str(q.price), "age_seconds": int(q.age.total_seconds()),
                     **({"max_age_seconds": int(self.max_age_for(q.name, symbol).total_seconds())}
                        if q.name in self._by_name else {})}
                    for q in p.sources
                ],
            }
        sources = []
        for source in self.sources:
            entry = self.health[source.name].as_dict()
            entry["max_age_seconds"] = int(self.max_age_for(source.name).total_seconds())
            inner = getattr(source, "statuses", None)
            if callable(inner):
                entry["inner"] = [h.as_dict() for h in inner()]
            sources.append(entry)
        return {
            "as_of": now.isoformat(),
            "last_refresh_at": self.last_refresh_at.isoformat() if self.last_refresh_at else None,
            "min_sources": self.min_sources,
            "max_deviation": str(self.max_deviation),
            "prices": prices,
            "sources": sources,
        }


def _fmt_age(age: timedelta) -> str:
    return f"{int(age.total_seconds())}s"
