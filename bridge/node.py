"""Composition root: builds each process's components from Settings and runs them.

This module (with ``cli``, ``devnet`` and ``api.wiring``) is the only place under ``bridge/``
that imports ``relayers/``: chain families are wired in here, by the config's ``family`` tag.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.chains import Submitter, Watcher
from bridge.config import EvmChainConfig, Settings
from bridge.errors import ConfigError
from bridge.keystore import load_key
from bridge.storage.db import open_database
from bridge.supervisor import Supervisor
from bridge.types import SettlementDomain

log = logging.getLogger("creditbridge.node")


def make_watcher(chain, registry=None, tokens: dict | None = None) -> Watcher:
    if chain.family == "evm":
        from relayers.evm.watcher import EvmWatcher

        return EvmWatcher(chain, tokens=tokens)
    if chain.family == "substrate":
        from relayers.substrate.watcher import SubstrateWatcher

        return SubstrateWatcher(chain, registry=registry, tokens=tokens)
    if chain.family == "ton":
        from relayers.ton.watcher import TonWatcher

        return TonWatcher(chain, tokens=tokens)
    raise ConfigError(f"chain {chain.name}: family {chain.family!r} has no watcher")


def make_submitter(chain, private_key: bytes | None = None, aggregator=None, metrics=None) -> Submitter:
    """The settlement chain's submitter; with an ``[aggregator]`` section, under its fee policy
    (cap, priority fee, bumps)."""
    if chain.family == "evm":
        from relayers.evm.settlement import EvmSettlement

        if aggregator is None:
            return EvmSettlement(chain, private_key)
        from relayers.evm.fees import FeePolicy

        policy = FeePolicy.from_config(aggregator)
        # a transaction is given up on (and re-sent) only after every bump had its time
        timeout = max(120.0, policy.bump_after * (policy.max_bumps + 1))
        return EvmSettlement(chain, private_key, fees=policy, metrics=metrics, receipt_timeout=timeout)
    raise ConfigError(f"chain {chain.name}: family {chain.family!r} cannot be a settlement chain")


def payment_instructions():
    """Instruction builders of every chain family (the API shows them to payers)."""
    from bridge.payments.instructions import Instructions

    builders = {}
    try:
        from relayers.substrate.instructions import substrate_instructions

        builders["substrate"] = substrate_instructions
    except ImportError:
        pass
    try:
        from relayers.ton.instructions import ton_instructions

        builders["ton"] = ton_instructions
    except ImportError:
        pass
    return Instructions(builders)


def settlement_domain(settings: Settings) -> SettlementDomain:
    st: EvmChainConfig = settings.chain(settings.settlement_chain)
    return SettlementDomain(chain_id=st.chain_id, contract=bytes.fromhex(st.contracts["credits"][2:]))


def manifest_startup(settings: Settings) -> str | None:
    """The start-up check of every component (api, signer, relay): a config that names a
    manifest must agree with it (one-line ConfigError otherwise). Returns the manifest's hash."""
    from bridge.manifest import check_settings

    m = settings.manifest_data
    if m is None:
        if settings.manifest is not None:
            raise ConfigError("config names a manifest but it was not loaded (use bridge.config.load_settings)")
        return None
    check_settings(settings, m)
    log.info("manifest %s: %s, committee #%d (%d of %d)", m.hash, m.network, m.committee.index,
             m.committee.threshold, len(m.committee.members))
    return m.hash


def _close_on_stop(sup: Supervisor, things: list) -> None:
    """Chain clients own connection pools: close them when the process stops."""
    for t in things:
        close = getattr(t, "aclose", None)
        if close is not None:
            sup.on_stop(close)


async def _serve(sup: Supervisor, app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sup.on_stop(runner.cleanup)
    log.info("listening on http://%s:%d", host, port)
    return runner


async def run_signer(settings: Settings) -> None:
    from bridge.committee.gateway import GatewayClient
    from bridge.committee.http import SignerMetrics, create_signer_app
    from bridge.committee.signer import SignerNode

    if settings.signer is None:
        raise ConfigError("config has no [signer] section")
    cfg = settings.signer
    manifest_hash = manifest_startup(settings)
    key = load_key(cfg.key)
    refund_key = load_key(cfg.refund_key) if cfg.refund_key else None
    if manifest_hash is not None:
        from bridge.manifest import check_member

        check_member(settings.manifest_data, address=key.public, ed25519=refund_key.public if refund_key else None)
    sup = Supervisor(f"signer:{cfg.name}")
    db = await open_database(settings.storage.url)
    sup.on_stop(db.dispose)
    session = aiohttp.ClientSession()
    sup.on_stop(session.close)
    registry = CollectorRegistry()
    extra = non_native_tokens(settings)
    watchers = {c.name: make_watcher(c, registry, tokens=extra[c.name]) for c in settings.source_chains()}
    settlement = make_submitter(settings.chain(settings.settlement_chain))
    _close_on_stop(sup, [*watchers.values(), settlement])
    metrics = SignerMetrics(registry)
    node = SignerNode(
        name=cfg.name, key=key, db=db, watchers=watchers,
        settlement=settlement,
        domain=settlement_domain(settings), gateway=GatewayClient(cfg.gateway_url, session),
        gateway_public_key=cfg.gateway_public_key, late_grace_seconds=cfg.late_grace_seconds,
        max_block_range={c.name: c.max_block_range for c in settings.source_chains()},
        start_block={c.name: c.start_block for c in settings.source_chains()},
        poll_interval=min(c.poll_interval for c in settings.source_chains()),
        metrics=metrics,
        price_bound=signer_price_bound(settings, sup, registry, session, metrics),
        unknown_reference_refund_after_seconds=cfg.unknown_reference_refund_after_seconds,
        **lifecycle_options(settings, refund_key, sup),
    )
    node.sweeper = make_sweeper(settings, node, registry, sup)
    collectors = payment_collectors(settings, node.approvers, node.gateway, session, registry)
    if manifest_hash is not None:
        from bridge.manifest import register_metric

        register_metric(registry, manifest_hash)
    await _serve(sup, create_signer_app(node, registry, manifest_hash=manifest_hash), cfg.host, cfg.port)
    sup.add("signer", node.run)
    for name, collector in collectors.items():
        sup.add(f"collector:{name}", collector.run)
    await sup.run()


def payment_collectors(settings: Settings, approvers: dict, gateway, session, registry=None) -> dict:
    """Each Asset Hub chain's collector of per-payment accounts (``relayers/substrate/collect.py``),
    over the node's own multisig approver for that chain (one nonce sequence per member key) and
    the gateway's reference feed."""
    from relayers.substrate.collect import PaymentCollector

    extra = non_native_tokens(settings)
    return {c.name: PaymentCollector(c, approvers[c.name].refunder, gateway, registry=registry,
                                     poll_interval=max(c.poll_interval, 1.0), tokens=extra[c.name])
            for c in settings.source_chains() if c.family == "substrate" and c.name in approvers}


def chainlink_source_factory(settings: Settings, sup: Supervisor):
    """Builds ``kind = "chainlink"`` price sources (``bridge.pricing.factory``) over the EVM relayer."""

    def chainlink(cfg, name: str):
        from relayers.evm.chainlink import ChainlinkSource

        chain = settings.chain(cfg.chain)
        source = ChainlinkSource(
            {s: (chain, f.address, timedelta(seconds=f.heartbeat_seconds)) for s, f in cfg.feeds.items()}, name=name)
        sup.on_stop(source.aclose)
        return source

    return chainlink


def signer_price_bound(settings: Settings, sup: Supervisor, registry: CollectorRegistry, session, metrics=None):
    """The signer's own price bound (``bridge/committee/pricebound.py``) from ``signer.price_bound``:
    Chainlink history for ``kind = "chainlink"`` tokens, a band over this config's ``[pricing]``
    sources for ``kind = "band"`` ones."""
    from bridge.committee.pricebound import PriceBound, SourcesBand
    from bridge.pricing.factory import build_aggregator
    from bridge.pricing.quotes import effective_credit_price

    pb = settings.signer.price_bound
    if pb is None:  # Settings refuses a signer without it; kept for callers building Settings by hand
        raise ConfigError("signer.price_bound is required")
    # per (symbol, chain) token, keyed SYMBOL@chain: USDT on ethereum, polkadot and ton share one
    # Chainlink USDT / USD history (one per feed), each with its own decimals
    refs: dict = {}
    bound = settings.bound_tokens()
    band = [(t, b) for t, b in bound if b.kind == "band"]
    if band:
        aggregator = build_aggregator(settings.pricing, sorted({t.price_symbol for t, _ in band}), registry=registry,
                                      session=session, chainlink=chainlink_source_factory(settings, sup))
        for t, b in band:
            refs[t.label] = SourcesBand(aggregator, b.tolerance, refresh_seconds=settings.pricing.refresh_seconds,
                                        price_symbol=t.price_symbol)
    histories: dict = {}
    for t, b in bound:
        if b.kind == "chainlink":
            from relayers.evm.chainlink import ChainlinkHistory

            key = (t.symbol, b.chain, b.address.lower(), b.heartbeat_seconds, b.tolerance, b.settle_seconds)
            if key not in histories:
                histories[key] = ChainlinkHistory(settings.chain(b.chain), b.address,
                                                  timedelta(seconds=b.heartbeat_seconds), symbol=t.symbol,
                                                  tolerance=b.tolerance, max_clock_skew=b.settle_seconds)
                sup.on_stop(histories[key].aclose)
            refs[t.label] = histories[key]
    unbounded = frozenset(t.label for t in settings.payable_tokens()
                          if t.symbol in pb.unbounded or t.label in pb.unbounded)
    for t in pb.unbounded:
        log.warning("PRICE BOUND OFF for %s (signer.price_bound.unbounded): this signer attests whatever rate "
                    "the gateway key signs for it", t)
    log.info("price bound: %s; at most $%s per deposit", ", ".join(
        f"{t} by {b.kind} (tolerance {b.tolerance})" for t, b in sorted(pb.tokens.items())) or "no token",
        pb.max_deposit_usd)
    return PriceBound(references=refs,
                      credit_price_usd=effective_credit_price(settings.pricing.credit_price_usd,
                                                              settings.pricing.credit_spread),
                      max_deposit_usd=pb.max_deposit_usd,
                      quote_ttl_seconds=pb.quote_ttl_seconds or settings.pricing.quote_ttl_seconds,
                      unbounded=unbounded, metrics=metrics,
                      decimals={t.label: t.decimals for t in settings.payable_tokens()})


def make_custody(chain, token=None):
    """What a custody holds of one token (None: the chain's native token; else a non-native
    ``PayableToken``) and has paid out (the treasury sweeper's solvency check), or None if the
    family cannot tell yet."""
    kw = {} if token is None else {"token": token}
    if chain.family == "evm" and "lock" in chain.contracts:
        from relayers.evm.custody import EvmCustody

        return EvmCustody(chain, **kw)
    if chain.family == "ton" and "lock" in chain.contracts:
        if chain.liteserver_config is None:
            log.warning("treasury: chain %s has no liteserver_config: its lock cannot be read for sweeps", chain.name)
            return None
        from relayers.ton.custody import TonCustody

        return TonCustody(chain, **kw)
    if chain.family == "substrate":
        from relayers.substrate.custody import SubstrateCustody

        return SubstrateCustody(chain, **kw)
    return None


def make_sweeper(settings: Settings, node, registry, sup: Supervisor | None = None):
    """The signer's treasury sweeper (issue 12), or None without a ``[treasury]`` section."""
    from bridge import addresses
    from bridge.committee.treasury import Sweeper, TreasuryMetrics

    t = settings.treasury
    if t is None or not t.addresses:
        return None
    custody = {}
    extra = non_native_tokens(settings)
    for c in settings.source_chains():
        if c.name not in t.addresses:
            continue
        # one reader per token the custody holds: sweeps and solvency are per (chain, token)
        for token in [None, *extra.get(c.name, {}).values()]:
            reader = make_custody(c, token)
            symbol = c.token if token is None else token.symbol
            if reader is None:
                log.warning("treasury: %s on %s has no custody reader yet; it is not swept", symbol, c.name)
                continue
            custody[(c.name, symbol)] = reader
    if sup is not None:
        _close_on_stop(sup, list(custody.values()))
    st = settings.chain(settings.settlement_chain)
    return Sweeper(node, addresses={n: addresses.parse(settings.chain(n).family, a) for n, a in t.addresses.items()},
                   epoch_blocks=t.epoch_blocks, custody=custody,
                   tokens={c.name: c.token for c in settings.source_chains()}, reserve=dict(t.reserve),
                   poll_interval=t.poll_interval, settlement_start=st.start_block,
                   metrics=TreasuryMetrics(registry))


def lifecycle_options(settings: Settings, refund_key=None, sup: Supervisor | None = None) -> dict:
    """A signer's refund authorizations per source chain and its governor limits: EVM locks by
    their EIP-712 domain (the signer key), and with an Ed25519 ``refund_key`` TON locks
    (signed releases) and Asset Hub multisig accounts (approved on chain by the node)."""
    from bridge import governor
    from bridge.payments.refunds import lock_domain

    domains = {c.name: lock_domain(c.chain_id, bytes.fromhex(c.contracts["lock"][2:]))
               for c in settings.source_chains() if c.family == "evm" and "lock" in c.contracts}
    refund_signers, approvers = {}, {}
    extra = non_native_tokens(settings)
    if refund_key is not None:
        if refund_key.kind != "ed25519":
            raise ConfigError("signer.refund_key must be an ed25519 keystore")
        for c in settings.source_chains():
            if c.family == "ton":
                from relayers.ton.release import TonRefundSigner

                refund_signers[c.name] = TonRefundSigner.from_config(c, refund_key.secret, tokens=extra[c.name])
            elif c.family == "substrate":
                from relayers.substrate.refund import SignerApprovals

                approvers[c.name] = SignerApprovals(c, refund_key.secret, tokens=extra[c.name])
        if sup is not None:
            _close_on_stop(sup, list(approvers.values()))
    else:
        others = [c.name for c in settings.source_chains() if c.family in ("ton", "substrate")]
        if others:
            log.warning("signer has no refund_key: it will not authorize refunds on %s", ", ".join(others))
    limits = {name: governor.Limits.from_config(g) for name, g in settings.governor.chains.items()}
    min_refund = {c.name: c.min_refund for c in settings.source_chains()}
    min_refund.update({t.label: t.min_refund for ts in extra.values() for t in ts.values()})
    return {"lock_domains": domains, "refund_signers": refund_signers, "approvers": approvers, "governor": limits,
            "credit_price_usd": settings.pricing.credit_price_usd, "min_refund": min_refund,
            "native_tokens": {c.name: c.token for c in settings.source_chains()},
            "lock_tokens": {chain: {sym: bytes.fromhex(t.contract[2:]) for sym, t in ts.items() if t.contract}
                            for chain, ts in extra.items() if chain in domains}}


def non_native_tokens(settings: Settings) -> dict[str, dict]:
    """Per source chain, the non-native tokens its custody holds: symbol -> ``PayableToken``
    (ERC-20s of an EVM lock, ``pallet_assets`` of the committee account, jettons of a TON lock)."""
    out: dict[str, dict] = {c.name: {} for c in settings.source_chains()}
    for t in settings.payable_tokens():
        if not t.native:
            out.setdefault(t.chain, {})[t.symbol] = t
    return out


def refund_worker(settings: Settings, key: bytes, session, sup: Supervisor, registry: CollectorRegistry | None = None):
    """The aggregator's refund worker over the source chains' lock contracts (EVM, TON)."""
    from prometheus_client import Counter
    from relayers.evm.release import EvmLockReleaser
    from relayers.ton.release import TonLockReleaser

    from bridge.payments.refunds import RefundWorker, ReleasesClient

    cfg = settings.aggregator
    extra = non_native_tokens(settings)
    releasers = {c.name: EvmLockReleaser(c, key, gas_cap=cfg.refund_gas_cap, tokens=extra[c.name])
                 for c in settings.source_chains() if c.family == "evm" and "lock" in c.contracts}
    releasers.update({c.name: TonLockReleaser(c, tokens=extra[c.name]) for c in settings.source_chains()
                      if c.family == "ton" and c.liteserver_config is not None})
    _close_on_stop(sup, list(releasers.values()))
    failed = Counter("creditbridge_relay_refunds_failed_total", "Refunds parked as failed (never retried), by chain",
                     ["chain"], registry=registry) if registry is not None else None
    return RefundWorker(signers=[ReleasesClient(u, session) for u in cfg.signers],
                        releasers=releasers, poll_interval=cfg.poll_interval,
                        max_reverts=cfg.refund_max_reverts, failed_metric=failed, relay_index=cfg.relay_index,
                        relay_count=cfg.relay_count, takeover_after=cfg.takeover_after_seconds)


async def run_relay(settings: Settings) -> None:
    from bridge.committee.aggregate import Aggregator, SignerClient
    from bridge.committee.http import AggregatorMetrics, create_ops_app

    if settings.aggregator is None:
        raise ConfigError("config has no [aggregator] section")
    cfg = settings.aggregator
    manifest_hash = manifest_startup(settings)
    key = load_key(cfg.key)
    sup = Supervisor("relay")
    db = await open_database(settings.storage.url)
    sup.on_stop(db.dispose)
    session = aiohttp.ClientSession()
    sup.on_stop(session.close)
    registry = CollectorRegistry()
    metrics = AggregatorMetrics(registry)
    settlement = make_submitter(settings.chain(settings.settlement_chain), key.secret, cfg, metrics)
    _close_on_stop(sup, [settlement])
    agg = Aggregator(
        signers=[SignerClient(u, session) for u in cfg.signers],
        settlement=settlement,
        domain=settlement_domain(settings), db=db, batch_size=cfg.batch_size,
        poll_interval=cfg.poll_interval, max_batch_wait=cfg.max_batch_wait,
        metrics=metrics, relay_index=cfg.relay_index, relay_count=cfg.relay_count,
        takeover_after=cfg.takeover_after_seconds,
    )
    if manifest_hash is not None:
        from bridge.manifest import register_metric

        register_metric(registry, manifest_hash)
    if settings.metrics_port is not None:
        await _serve(sup, create_ops_app(lambda: agg.ready, registry, manifest_hash=manifest_hash), "127.0.0.1",
                     settings.metrics_port)
    sup.add("aggregator", agg.run)
    sup.add("refunds", refund_worker(settings, key.secret, session, sup, registry).run)
    for name, run in collectors(settings, key.secret, session, db, sup, registry):
        sup.add(name, run)
    await sup.run()


class DbCursor:
    """A component's chain cursors in the database (``cursors`` table): the collectors'
    ``CursorStore``."""

    def __init__(self, db, component: str) -> None:
        self.db = db
        self.component = component

    async def load(self, chain: str) -> int | None:
        from bridge.storage import observations as obs_repo

        async with self.db.begin() as s:
            got = await obs_repo.get_cursor(s, self.component, chain)
        return None if got is None else got[0]

    async def save(self, chain: str, height: int) -> None:
        from bridge.storage import observations as obs_repo

        async with self.db.begin() as s:
            await obs_repo.set_cursor(s, self.component, chain, height, None)


def collectors(settings: Settings, key: bytes, session, db, sup: Supervisor, registry: CollectorRegistry | None = None):
    """The relay's collectors of plain transfers to per-payment deposit addresses (EVM locks),
    fed by the gateway's reference feed; none without ``aggregator.gateway_url``."""
    cfg = settings.aggregator
    if cfg is None or cfg.gateway_url is None:
        return []
    from relayers.evm.collector import EvmCollector, collector_metric

    from bridge.committee.gateway import GatewayClient

    feed = GatewayClient(cfg.gateway_url, session)
    cursor = DbCursor(db, "collector")
    metric = collector_metric(registry) if registry is not None else None
    out = []
    extra = non_native_tokens(settings)
    for c in settings.source_chains():
        if c.family == "evm" and "lock" in c.contracts:
            col = EvmCollector(c, key, feed, cursor, interval=cfg.collect_interval,
                               balance_every=cfg.collect_balance_every_blocks, metric=metric,
                               relay_index=cfg.relay_index, relay_count=cfg.relay_count,
                               takeover_after=cfg.takeover_after_seconds,
                               tokens=extra[c.name])
            _close_on_stop(sup, [col])
            out.append((f"collector-{c.name}", col.run))
    return out


async def run_api(settings: Settings) -> None:
    from bridge.api.wiring import build_api

    if settings.api is None:
        raise ConfigError("config has no [api] section")
    manifest_startup(settings)
    sup = Supervisor("api")
    app, components = await build_api(settings, sup)
    await _serve(sup, app, settings.api.host, settings.api.port)
    for name, run in components:
        sup.add(name, run)
    await sup.run()
