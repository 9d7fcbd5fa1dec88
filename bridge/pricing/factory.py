"""Build the configured price sources and their aggregator from ``PricingConfig``.

Chain-agnostic: on-chain sources (``kind = "chainlink"``) need a chain SDK, so the
composition root (``bridge/api/wiring.py``) passes a factory for them; this module never
imports ``relayers/``.

Sources are not wrapped in ``CachedSource``: the aggregator is the cache (it polls every
source each ``refresh_seconds`` and keeps each one's latest good point, subject to that
source's staleness limit), and quotes read the aggregator, never a source. The aggregator
records every source failure (metric and health) the way the wrappers do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta

import aiohttp
from prometheus_client import CollectorRegistry

from bridge.config import (
    ChainlinkSourceConfig,
    ExchangeSourceConfig,
    FixedSourceConfig,
    PricingConfig,
    secret_from_env,
)
from bridge.errors import ConfigError
from bridge.pricing.aggregate import DEFAULT_SYMBOLS, PriceAggregator
from bridge.pricing.sources.base import PriceSource
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.pricing.sources.http import HttpSettings

ChainlinkFactory = Callable[[ChainlinkSourceConfig, str], PriceSource]


def _exchange(cfg: ExchangeSourceConfig, name: str, session: aiohttp.ClientSession,
              env: Mapping[str, str]) -> tuple[PriceSource, frozenset[str]]:
    settings = HttpSettings(timeout=cfg.timeout)
    kw: dict = {"name": name, "settings": settings}
    if cfg.base_url:
        kw["base_url"] = cfg.base_url.rstrip("/")
    markets = None if cfg.markets is None else dict(cfg.markets)
    if cfg.kind == "kraken":
        from bridge.pricing.sources.kraken import DEFAULT_PAIRS, KrakenSource

        return KrakenSource(session, pairs=markets, **kw), frozenset(markets or DEFAULT_PAIRS)
    if cfg.kind == "binance":
        from bridge.pricing.sources.binance import DEFAULT_SYMBOLS as BINANCE, BinanceSource

        return BinanceSource(session, symbols=markets, **kw), frozenset(markets or BINANCE)
    if cfg.kind == "coinbase":
        from bridge.pricing.sources.coinbase import DEFAULT_PRODUCTS, CoinbaseSource

        return CoinbaseSource(session, products=markets, **kw), frozenset(markets or DEFAULT_PRODUCTS)
    if cfg.kind == "coingecko":
        from bridge.pricing.sources.coingecko import DEFAULT_IDS, CoinGeckoSource

        if cfg.api_key_env:
            kw["api_key"] = env[cfg.api_key_env] if cfg.api_key_env in env else secret_from_env(cfg.api_key_env)
        return CoinGeckoSource(session, ids=markets, **kw), frozenset(markets or DEFAULT_IDS)
    raise ConfigError(f"unknown price source kind {cfg.kind!r}")  # pragma: no cover - the config model forbids it


def build_sources(
    pricing: PricingConfig,
    *,
    session: aiohttp.ClientSession | None,
    chainlink: ChainlinkFactory | None = None,
    env: Mapping[str, str] = os.environ,
) -> list[tuple[PriceSource, frozenset[str]]]:
    """Each configured source (``fixed_usd`` as a fixed source named "fixed") with the
    symbols it can price."""
    out: list[tuple[PriceSource, frozenset[str]]] = []
    for cfg in pricing.source_configs():
        name = PricingConfig.source_name(cfg)
        if isinstance(cfg, FixedSourceConfig):
            out.append((FixedPriceSource(dict(cfg.prices), name=name), frozenset(cfg.prices)))
        elif isinstance(cfg, ChainlinkSourceConfig):
            if chainlink is None:
                raise ConfigError(f"price source {name!r}: chainlink sources need the EVM relayer")
            out.append((chainlink(cfg, name), frozenset(cfg.feeds)))
        else:
            if session is None:
                raise ConfigError(f"price source {name!r}: HTTP sources need a client session")
            out.append(_exchange(cfg, name, session, env))
    return out


def check_coverage(pricing: PricingConfig, covered: Iterable[tuple[str, frozenset[str]]],
                   tokens: Iterable[str]) -> None:
    """Every payable token needs at least ``min_sources`` sources that know it: else no quote
    for it could ever be made, which is a configuration error, found at start-up."""
    covered = list(covered)
    for token in sorted(set(tokens)):
        names = [n for n, symbols in covered if token in symbols]
        if len(names) < pricing.min_sources:
            raise ConfigError(
                f"pricing: token {token} is priced by {len(names)} source(s) "
                f"({', '.join(names) or 'none'}), but min_sources is {pricing.min_sources}"
            )


def build_aggregator(
    pricing: PricingConfig,
    tokens: Iterable[str],
    *,
    registry: CollectorRegistry,
    session: aiohttp.ClientSession | None,
    chainlink: ChainlinkFactory | None = None,
    env: Mapping[str, str] = os.environ,
) -> PriceAggregator:
    """The aggregator over every configured source, for the payable ``tokens``."""
    tokens = frozenset(tokens)
    built = build_sources(pricing, session=session, chainlink=chainlink, env=env)
    if not built:
        raise ConfigError("pricing: no price source is configured (pricing.sources or pricing.fixed_usd)")
    check_coverage(pricing, [(s.name, symbols) for s, symbols in built], tokens)
    return PriceAggregator(
        [s for s, _ in built],
        min_sources=pricing.min_sources,
        max_deviation=pricing.max_deviation,
        max_age=timedelta(seconds=pricing.max_age_seconds),
        registry=registry,
        symbols=tokens or DEFAULT_SYMBOLS,
    )
