"""Composition root: builds each process's components from Settings and runs them.

This module (with ``cli``, ``devnet`` and ``api.wiring``) is the only place under ``bridge/``
that imports ``relayers/``: chain families are wired in here, by the config's ``family`` tag.
"""

from __future__ import annotations

import logging

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


def make_watcher(chain) -> Watcher:
    if chain.family == "evm":
        from relayers.evm.watcher import EvmWatcher

        return EvmWatcher(chain)
    if chain.family == "substrate":
        from relayers.substrate.watcher import SubstrateWatcher

        return SubstrateWatcher(chain)
    if chain.family == "ton":
        from relayers.ton.watcher import TonWatcher

        return TonWatcher(chain)
    raise ConfigError(f"chain {chain.name}: family {chain.family!r} has no watcher")


def make_submitter(chain, private_key: bytes | None = None) -> Submitter:
    if chain.family == "evm":
        from relayers.evm.settlement import EvmSettlement

        return EvmSettlement(chain, private_key)
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
    key = load_key(cfg.key)
    sup = Supervisor(f"signer:{cfg.name}")
    db = await open_database(settings.storage.url)
    sup.on_stop(db.dispose)
    session = aiohttp.ClientSession()
    sup.on_stop(session.close)
    registry = CollectorRegistry()
    watchers = {c.name: make_watcher(c) for c in settings.source_chains()}
    settlement = make_submitter(settings.chain(settings.settlement_chain))
    _close_on_stop(sup, [*watchers.values(), settlement])
    node = SignerNode(
        name=cfg.name, key=key, db=db, watchers=watchers,
        settlement=settlement,
        domain=settlement_domain(settings), gateway=GatewayClient(cfg.gateway_url, session),
        gateway_public_key=cfg.gateway_public_key, late_grace_seconds=cfg.late_grace_seconds,
        max_block_range={c.name: c.max_block_range for c in settings.source_chains()},
        start_block={c.name: c.start_block for c in settings.source_chains()},
        poll_interval=min(c.poll_interval for c in settings.source_chains()),
        metrics=SignerMetrics(registry),
        **lifecycle_options(settings, load_key(cfg.refund_key) if cfg.refund_key else None, sup),
    )
    node.sweeper = make_sweeper(settings, node, registry, sup)
    await _serve(sup, create_signer_app(node, registry), cfg.host, cfg.port)
    sup.add("signer", node.run)
    await sup.run()


def make_custody(chain):
    """What a custody holds and has paid out (the treasury sweeper's solvency check), or None if
    the family cannot tell yet."""
    if chain.family == "evm" and "lock" in chain.contracts:
        from relayers.evm.custody import EvmCustody

        return EvmCustody(chain)
    return None


def make_sweeper(settings: Settings, node, registry, sup: Supervisor | None = None):
    """The signer's treasury sweeper (issue 12), or None without a ``[treasury]`` section."""
    from bridge import addresses
    from bridge.committee.treasury import Sweeper, TreasuryMetrics

    t = settings.treasury
    if t is None or not t.addresses:
        return None
    custody = {}
    for c in settings.source_chains():
        if c.name not in t.addresses:
            continue
        reader = make_custody(c)
        if reader is None:
            log.warning("treasury: chain %s has no custody reader yet; it is not swept", c.name)
            continue
        custody[c.name] = reader
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
    if refund_key is not None:
        if refund_key.kind != "ed25519":
            raise ConfigError("signer.refund_key must be an ed25519 keystore")
        for c in settings.source_chains():
            if c.family == "ton":
                from relayers.ton.release import TonRefundSigner

                refund_signers[c.name] = TonRefundSigner(c.contracts["lock"], refund_key.secret)
            elif c.family == "substrate":
                from relayers.substrate.refund import SignerApprovals

                approvers[c.name] = SignerApprovals(c, refund_key.secret)
        if sup is not None:
            _close_on_stop(sup, list(approvers.values()))
    else:
        others = [c.name for c in settings.source_chains() if c.family in ("ton", "substrate")]
        if others:
            log.warning("signer has no refund_key: it will not authorize refunds on %s", ", ".join(others))
    limits = {name: governor.Limits.from_config(g) for name, g in settings.governor.chains.items()}
    return {"lock_domains": domains, "refund_signers": refund_signers, "approvers": approvers, "governor": limits,
            "credit_price_usd": settings.pricing.credit_price_usd}


def refund_worker(settings: Settings, key: bytes, session, sup: Supervisor):
    """The aggregator's refund worker over the source chains' lock contracts (EVM, TON)."""
    from relayers.evm.release import EvmLockReleaser
    from relayers.ton.release import TonLockReleaser

    from bridge.payments.refunds import RefundWorker, ReleasesClient

    releasers = {c.name: EvmLockReleaser(c, key) for c in settings.source_chains()
                 if c.family == "evm" and "lock" in c.contracts}
    releasers.update({c.name: TonLockReleaser(c) for c in settings.source_chains()
                      if c.family == "ton" and c.liteserver_config is not None})
    _close_on_stop(sup, list(releasers.values()))
    return RefundWorker(signers=[ReleasesClient(u, session) for u in settings.aggregator.signers],
                        releasers=releasers, poll_interval=settings.aggregator.poll_interval)


async def run_relay(settings: Settings) -> None:
    from bridge.committee.aggregate import Aggregator, SignerClient
    from bridge.committee.http import AggregatorMetrics, create_ops_app

    if settings.aggregator is None:
        raise ConfigError("config has no [aggregator] section")
    cfg = settings.aggregator
    key = load_key(cfg.key)
    sup = Supervisor("relay")
    db = await open_database(settings.storage.url)
    sup.on_stop(db.dispose)
    session = aiohttp.ClientSession()
    sup.on_stop(session.close)
    registry = CollectorRegistry()
    settlement = make_submitter(settings.chain(settings.settlement_chain), key.secret)
    _close_on_stop(sup, [settlement])
    agg = Aggregator(
        signers=[SignerClient(u, session) for u in cfg.signers],
        settlement=settlement,
        domain=settlement_domain(settings), db=db, batch_size=cfg.batch_size,
        poll_interval=cfg.poll_interval, max_batch_wait=cfg.max_batch_wait,
        metrics=AggregatorMetrics(registry),
    )
    if settings.metrics_port is not None:
        await _serve(sup, create_ops_app(lambda: agg.ready, registry), "127.0.0.1", settings.metrics_port)
    sup.add("aggregator", agg.run)
    sup.add("refunds", refund_worker(settings, key.secret, session, sup).run)
    await sup.run()


async def run_api(settings: Settings) -> None:
    from bridge.api.wiring import build_api

    if settings.api is None:
        raise ConfigError("config has no [api] section")
    sup = Supervisor("api")
    app, components = await build_api(settings, sup)
    await _serve(sup, app, settings.api.host, settings.api.port)
    for name, run in components:
        sup.add(name, run)
    await sup.run()
