"""The local devnet: real anvil chains, deployed contracts, a 4-signer committee (threshold 3),
the aggregator and the HTTP API, each component in its own OS process.

``creditbridge devnet`` (``make devnet``) runs it until Ctrl-C / SIGTERM and writes
``<dir>/devnet.json`` once everything answers. A component process that dies is restarted
(as a service manager would); its current pid is in ``<dir>/pids/<name>.pid`` and its log in
``<dir>/logs/<name>.log``. Everything here is for local development: the keystore password
is written to ``<dir>/password`` and the dev accounts are anvil's public test keys.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp

from bridge.committee.digest import address_of
from bridge.deploy_cli import init_committee
from devnet.devchains import DevChain, DevCommittee
from bridge.errors import BridgeError
from bridge.keystore import read_keystore, write_keystore
from bridge.manifest import load_manifest, member_from_keystores, parse_manifest, update_manifest

log = logging.getLogger("creditbridge.devnet")

ETH_CHAIN_ID = 31337
SETTLEMENT_CHAIN_ID = 31338
PASSWORD_ENV = "CREDITBRIDGE_DEVNET_PASSWORD"
NETWORK = "devnet"  # the manifest's network
LOCK_MIN_WEI = 10**9
ETH_USD = "3000"
# The ETH/USD PriceFeed (Chainlink AggregatorV3Interface) on the settlement anvil: 8 decimals
# like Chainlink's USD feeds, answering ETH_USD. Its heartbeat is a day; the devnet re-submits
# the same answer every half heartbeat, so the feed never goes stale while the devnet runs.
FEED_DECIMALS = 8
FEED_HEARTBEAT_SECONDS = 86_400
FEED_OWNER_INDEX = 8  # anvil dev account that owns the feed (no other devnet role)
# stablecoin USD feeds (issue 15), on the settlement anvil next to ETH / USD and in the fixed
# source: the devnet prices USDC and USDT from local sources. Payable where their custody exists:
# USDC and USDT on ethereum (ERC-20 test tokens deployed by devnet/evm/tokens.py, minted to the
# funded dev accounts); TON's USDT jetton (devnet/ton/devchain.py)
STABLE_USD = {"USDC": "1", "USDT": "1"}
STABLE_PEG_BAND_BPS = 200
ETH_TOKEN_MIN_AMOUNT = 10_000  # 0.01 of a 6-decimal stablecoin
ETH_TOKEN_MIN_REFUND = 100_000  # 0.10: smaller ERC-20 refunds (a releaseToken costs ~80k gas) are kept as dust
DEVNET_MAX_DEPOSIT_USD = "1000000"  # the signers' hard cap on one deposit's credits


# Chain families that add source chains to the devnet: module with
#   async def start_devchains(directory: Path, committee: DevCommittee) -> list[DevChain]
FAMILY_PLUGINS = ("devnet.substrate.devchain", "devnet.ton.devchain")


def _plugins() -> list:
    import importlib
    import importlib.util

    mods = []
    for name in FAMILY_PLUGINS:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if found:
            mods.append(importlib.import_module(name))
    return mods


@dataclass
class DevnetOptions:
    directory: Path = Path(".devnet")
    signers: int = 4
    threshold: int = 3
    api_port: int = 8080
    confirmations: int = 2
    block_time: float = 1.0
    restart: bool = True
    families: bool = True  # start the other chain families' devnet chains (substrate, ton)
    # chaos testing: maps (chain name, rpc url) to the url components should use instead
    # (e.g. a TCP proxy the harness can cut); devnet.json keeps the direct urls
    rpc_proxy: Callable[[str, str], Awaitable[str]] | None = None
    # pricing guards of the API (the chaos harness asks for 2 fresh sources and fast refresh)
    min_sources: int = 1
    price_refresh_seconds: float = 30.0
    # chaos testing: the components' request timeout (s) on the Ethereum and TON source chains,
    # so a stalled endpoint times out within a short fault window (None: the family default)
    request_timeout: float | None = None
    # scale-out: the API's database on PostgreSQL (a cluster of its own, started by the
    # project's scripts/pg.sh; see postgres_dir) and this many API processes sharing it
    postgres: bool = False
    api_replicas: int = 1
    # this many relay processes (aggregators), each with its own funded gas key and database,
    # splitting the deposits by id hash (aggregator.relay_index / relay_count)
    aggregators: int = 1


class ProcessSupervisor:
    """Runs component processes, restarts them when they die, records their pids."""

    def __init__(self, directory: Path, env: dict[str, str], restart: bool = True) -> None:
        self.dir = directory
        self.env = env
        self.restart = restart
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.argv: dict[str, list[str]] = {}
        self.restarts: dict[str, int] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        (directory / "logs").mkdir(parents=True, exist_ok=True)
        (directory / "pids").mkdir(parents=True, exist_ok=True)

    async def _spawn(self, name: str) -> asyncio.subprocess.Process:
        logf = open(self.dir / "logs" / f"{name}.log", "ab")
        proc = await asyncio.create_subprocess_exec(*self.argv[name], stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=logf, stderr=logf, env=self.env)
        logf.close()
        self.procs[name] = proc
        (self.dir / "pids" / f"{name}.pid").write_text(str(proc.pid))
        return proc

    async def start(self, name: str, argv: list[str]) -> None:
        self.argv[name] = argv
        await self._spawn(name)
        self._tasks.append(asyncio.create_task(self._watch(name)))

    async def _watch(self, name: str) -> None:
        while True:
            proc = self.procs[name]
            code = await proc.wait()
            if self._stopping or not self.restart:
                return
            self.restarts[name] = self.restarts.get(name, 0) + 1
            log.warning("%s exited with %s; restarting (restart #%d)", name, code, self.restarts[name])
            await asyncio.sleep(0.5)
            if self._stopping:
                return
            await self._spawn(name)

    async def stop(self) -> None:
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for p in self.procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                await asyncio.wait_for(p.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                try:
                    p.kill()
                except ProcessLookupError:  # it exited meanwhile
                    pass
                await p.wait()


async def _wait_healthy(urls: dict[str, str], procs: ProcessSupervisor, timeout: float = 300.0) -> None:
    """Wait until every service answers its health URL. The supervisor restarts a process that
    dies, so only the deadline ends a start that never becomes healthy. 300 s: nine Python
    services importing web3, substrate-interface and pytoniq at once took over 90 s to answer on a
    2-core machine at load average 25 (a replica-mode chaos run beside test runs), and a slow start
    is no failure."""
    deadline = time.monotonic() + timeout
    pending = dict(urls)
    async with aiohttp.ClientSession() as s:
        while pending:
            for name, url in list(pending.items()):
                try:
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            pending.pop(name)
                except (aiohttp.ClientError, TimeoutError):
                    pass
            if not pending:
                return
            if time.monotonic() > deadline:
                logs = procs.dir / "logs"
                raise BridgeError(f"devnet: {', '.join(pending)} not healthy after {timeout:.0f}s; see {logs}/")
            await asyncio.sleep(0.3)


def _free_port() -> int:
    from devnet.evm.anvil import free_port

    return free_port()


async def _deploy_evm(manifest: Path, chain: str, rpc: str, key: bytes, kind: str, confirmations: int, **kw):
    """``creditbridge deploy evm`` as the devnet runs it (dev deployer key from its keystore)."""
    from relayers.evm.deploy import deploy_evm

    return await deploy_evm(manifest, network=NETWORK, chain=chain, rpc=rpc, private_key=key, kind=kind,
                            confirmations=confirmations, **kw)


async def _deploy_feed(rpc: str, key: str, answer: int, description: str = "ETH / USD") -> str:
    from relayers.evm.chainlink import deploy_price_feed

    return await deploy_price_feed(rpc, key, decimals=FEED_DECIMALS, description=description, answer=answer)


async def _keep_feed_fresh(rpc: str, key: str, feeds: list[tuple[str, int]]) -> None:
    """Re-submit the devnet's fixed answers every half heartbeat (a Chainlink node would on its
    heartbeat): the API's Chainlink source refuses answers older than the heartbeat."""
    from relayers.evm.chainlink import submit_answer

    while True:
        await asyncio.sleep(FEED_HEARTBEAT_SECONDS / 2)
        try:
            for feed, answer in feeds:
                await submit_answer(rpc, key, feed, answer)
        except BridgeError as e:
            log.warning("PriceFeed keeper: %s; retrying in a minute", e)
            await asyncio.sleep(60)


# treasury sweeps (issue 12): the settlement anvil mines on transactions and, so that epochs
# close without traffic, one empty block every TREASURY_TICK seconds: an epoch is ~30 s
TREASURY_TICK = 3.0
TREASURY_EPOCH_BLOCKS = 10


async def _tick(node: AnvilNode) -> None:
    while True:
        await asyncio.sleep(TREASURY_TICK)
        try:
            # not while someone holds transactions in the pool on purpose (the chaos harness's
            # settlement_drop turns automine off): an empty block is only a clock tick
            if await node.rpc("anvil_getAutomine"):
                await node.mine(1)
        except (OSError, aiohttp.ClientError, BridgeError) as e:
            log.warning("devnet: settlement ticker: %s", e)


def _treasury_accounts(extra: list) -> dict[str, str]:
    """A fresh treasury address per source chain (nobody holds its key: it only receives)."""
    from bridge.addresses import ss58_encode

    out = {"ethereum": "0x" + address_of(os.urandom(32)).hex()}
    for c in extra:
        family = c.config.get("family")
        if family == "substrate":
            out[c.name] = ss58_encode(os.urandom(32), int(c.info.get("ss58_prefix", 42)))
        elif family == "ton":
            out[c.name] = "0:" + os.urandom(32).hex()
    return out


async def _proxied(config: dict, proxy) -> dict:
    """A family chain's config with its endpoints routed through the chaos proxy: ws/http RPC
    URLs, and TON liteservers (ADNL over TCP)."""
    import copy

    cfg = copy.deepcopy(config)
    if isinstance(cfg.get("rpc"), list):
        out = []
        for url in cfg["rpc"]:
            scheme = url.split("://", 1)[0]
            proxied = await proxy(cfg["name"], "http://" + url.split("://", 1)[1])
            out.append(scheme + "://" + proxied.split("://", 1)[1])
        cfg["rpc"] = out
    ls = (cfg.get("liteserver_config") or {}).get("liteservers")
    for server in ls or []:
        proxied = await proxy(cfg["name"], f"http://127.0.0.1:{server['port']}")
        server["port"] = int(proxied.rsplit(":", 1)[1])
    return cfg


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Refuse to start when something listens on ``host:port`` (one-line BridgeError).

    The probe sets SO_REUSEADDR, as the API's own listener does (asyncio sets it on Unix), so
    connections of a devnet stopped a moment ago, still in TIME_WAIT, do not count as "in use";
    only a live listener (or a bound socket) does."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise BridgeError(f"devnet: port {port} is in use; pass --api-port N (0 = any)") from None


async def run_devnet(opts: DevnetOptions, *, ready: asyncio.Event | None = None,
                     stop: asyncio.Event | None = None) -> None:
    from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode
    from devnet.evm.tokens import DEV_TOKEN_DECIMALS, deploy_dev_tokens

    if not 1 <= opts.threshold <= opts.signers:
        raise BridgeError("devnet: threshold must be between 1 and the number of signers")
    if opts.api_replicas < 1:
        raise BridgeError("devnet: --api-replicas must be at least 1")
    if not 1 <= opts.aggregators <= 4:
        raise BridgeError("devnet: --aggregators must be between 1 and 4")
    if opts.api_replicas > 1 and not opts.postgres:
        raise BridgeError("devnet: --api-replicas above 1 needs --postgres (SQLite serves one process)")
    if opts.api_port:
        check_port_free(opts.api_port)
    d = opts.directory.resolve()
    if d.exists():
        shutil.rmtree(d)
    (d / "keys").mkdir(parents=True)
    (d / "db").mkdir()
    (d / "config").mkdir()

    eth = await AnvilNode.start(chain_id=ETH_CHAIN_ID, block_time=opts.block_time)
    st = await AnvilNode.start(chain_id=SETTLEMENT_CHAIN_ID)
    procs: ProcessSupervisor | None = None
    pg_dir: Path | None = None
    keeper: asyncio.Task | None = None
    ticker: asyncio.Task | None = None
    extra: list[DevChain] = []
    try:
        password = secrets.token_hex(16)
        pw_file = d / "password"
        pw_file.write_text(password)
        pw_file.chmod(0o600)
        kref = lambda name: {"keystore": str(d / "keys" / f"{name}.json"), "password_env": PASSWORD_ENV}  # noqa: E731

        signer_keys = [os.urandom(32) for _ in range(opts.signers)]
        signer_addrs = ["0x" + address_of(k).hex() for k in signer_keys]
        for i, k in enumerate(signer_keys):
            write_keystore(d / "keys" / f"signer-{i}.json", "secp256k1", k, password, n=2**14)
        quote_pub = write_keystore(d / "keys" / "quote.json", "ed25519", os.urandom(32), password, n=2**14)
        # relay i pays gas with anvil dev account 9, 7, 6, 5 (funded on both anvils, no other devnet
        # role: 0 deploys, 1-4 are the payers' accounts, 8 owns the price feeds)
        relay_keys = [DEV_PRIVATE_KEYS[j] for j in (9, 7, 6, 5)[:opts.aggregators]]
        for i, rk in enumerate(relay_keys):
            write_keystore(d / "keys" / ("relay.json" if i == 0 else f"relay-{i}.json"), "secp256k1",
                           bytes.fromhex(rk[2:]), password, n=2**14)

        ed_secrets = [os.urandom(32) for _ in range(opts.signers)]
        ed_paths = tuple(d / "keys" / f"signer-{i}-ed25519.json" for i in range(opts.signers))
        ed_public = tuple(write_keystore(p, "ed25519", k, password, n=2**14) for p, k in zip(ed_paths, ed_secrets))
        deployer = DEV_PRIVATE_KEYS[0]
        write_keystore(d / "keys" / "deployer.json", "secp256k1", bytes.fromhex(deployer[2:]), password, n=2**14)

        # the deployment goes through the operators' commands (bridge/deploy_cli.py and
        # relayers/<family>/deploy.py): `committee init` from the keystores' public parts, then
        # `deploy evm|ton|substrate`, each recording its chain in the manifest
        manifest_path = d / "manifest.json"
        init_committee(manifest_path, network=NETWORK, threshold=opts.threshold, members=[
            member_from_keystores(f"signer-{i}", d / "keys" / f"signer-{i}.json", ed_paths[i])
            for i in range(opts.signers)])
        committee = DevCommittee(opts.threshold, tuple(signer_addrs), ed_public, ed_paths, manifest=manifest_path,
                                 network=NETWORK)
        deployer_key = read_keystore(d / "keys" / "deployer.json", password).secret
        provider_addr = "0x" + address_of(deployer_key).hex()
        # the EVM contracts deploy while the other families' chains start
        evm_deploys = asyncio.ensure_future(asyncio.gather(
            _deploy_evm(manifest_path, "ethereum", eth.rpc_url, deployer_key, "lock", opts.confirmations,
                        min_amount=LOCK_MIN_WEI),
            _deploy_evm(manifest_path, "settlement", st.rpc_url, deployer_key, "credits", 0,
                        provider=provider_addr)))
        try:
            for plugin in _plugins() if opts.families else []:
                started = await plugin.start_devchains(d, committee)
                extra.extend(started)
                log.info("started %s", ", ".join(c.name for c in started) or f"no chain from {plugin.__name__}")
            lock, ledger = (x.address for x in await evm_deploys)
        except BaseException:
            evm_deploys.cancel()
            raise
        log.info("deployed CreditLock %s on ethereum and CreditLedger %s on settlement", lock, ledger)
        eth_tokens = await deploy_dev_tokens(eth.rpc_url, DEV_PRIVATE_KEYS[0], [
            "0x" + address_of(bytes.fromhex(k[2:])).hex() for k in DEV_PRIVATE_KEYS[1:5]])
        log.info("deployed the ERC-20 test tokens %s on ethereum", ", ".join(f"{s} {a}" for s, a in eth_tokens.items()))
        feed_key = DEV_PRIVATE_KEYS[FEED_OWNER_INDEX]
        eth_usd = int(ETH_USD) * 10**FEED_DECIMALS
        eth_feed = await _deploy_feed(st.rpc_url, feed_key, eth_usd)
        stable_answers = {s: int(Decimal(usd) * 10**FEED_DECIMALS) for s, usd in STABLE_USD.items()}
        stable_feeds = {s: await _deploy_feed(st.rpc_url, feed_key, a, f"{s} / USD") for s, a in stable_answers.items()}
        keeper = asyncio.create_task(_keep_feed_fresh(st.rpc_url, feed_key, [
            (eth_feed, eth_usd), *((stable_feeds[s], a) for s, a in stable_answers.items())]), name="feed-keeper")
        ticker = asyncio.create_task(_tick(st), name="settlement-ticker")
        log.info("deployed the ETH / USD PriceFeed %s on settlement", eth_feed)

        async def component_rpc(name: str, url: str) -> str:
            return await opts.rpc_proxy(name, url) if opts.rpc_proxy is not None else url

        api_port = opts.api_port or _free_port()
        api_url = f"http://127.0.0.1:{api_port}"
        # chain ids, tokens, contracts, start blocks, committees: from the manifest
        chains = [
            {"family": "evm", "name": "ethereum", "rpc": [await component_rpc("ethereum", eth.rpc_url)],
             "finality": opts.confirmations, "poll_interval": 0.5, "max_block_range": 500},
            {"family": "evm", "name": "settlement", "rpc": [await component_rpc("settlement", st.rpc_url)],
             "finality": 0, "poll_interval": 0.5},
        ]
        if opts.request_timeout is not None:  # the source chain (not the settlement chain)
            chains[0]["request_timeout"] = opts.request_timeout
        fixed_usd, min_amount = {"ETH": ETH_USD, **STABLE_USD}, {"ETH": 10**13}
        min_amount.update({f"{s}@ethereum": ETH_TOKEN_MIN_AMOUNT for s in eth_tokens})
        # the non-native tokens ([[tokens]]): the ERC-20s on ethereum, then the family plug-ins' (TON's USDT jetton)
        payable = [{"symbol": s, "chain": "ethereum", "decimals": DEV_TOKEN_DECIMALS, "contract": a.lower(),
                    "peg": "1.00", "peg_band_bps": STABLE_PEG_BAND_BPS, "min_refund": ETH_TOKEN_MIN_REFUND}
                   for s, a in eth_tokens.items()]
        for c in extra:
            payable.extend(c.tokens)
            cfg = await _proxied(c.config, component_rpc) if opts.rpc_proxy else c.config
            if opts.request_timeout is not None and cfg.get("family") == "ton":
                cfg = {**cfg, "request_timeout": opts.request_timeout}
            chains.append(cfg)
            fixed_usd.update(c.fixed_usd)
            min_amount.update(c.min_amount)
        extra_sources = []
        if opts.min_sources > 1 and len(fixed_usd) > 1:
            # tokens without an on-chain feed get a second (reference) fixed source, so the
            # "several fresh sources" rule can be asked of every token on the devnet
            extra_sources.append({"kind": "fixed", "name": "reference",
                                  "prices": {k: v for k, v in fixed_usd.items() if k != "ETH"}})
        treasury = _treasury_accounts(extra)

        def _with_treasury(m):  # the treasury is committee configuration: it lives in the manifest
            doc = m.document()
            for name, address in treasury.items():
                doc["chains"][name]["treasury"] = address
            doc["treasury"] = {"epoch_blocks": TREASURY_EPOCH_BLOCKS}
            return parse_manifest(doc)

        update_manifest(manifest_path, NETWORK, _with_treasury)
        # Asset Hub committee accounts keep the existential deposit whatever they owe
        reserve = {c.name: int(c.info["existential_deposit"]) for c in extra
                   if c.config.get("family") == "substrate" and "existential_deposit" in c.info}
        base = {"manifest": str(manifest_path), "chains": chains, **({"tokens": payable} if payable else {}),
                "treasury": {"poll_interval": 2.0, "reserve": reserve},
                "pricing": {"credit_price_usd": "0.01", "fixed_usd": fixed_usd, "min_amount": min_amount,
                            "min_sources": opts.min_sources, "refresh_seconds": opts.price_refresh_seconds,
                            "sources": [{"kind": "chainlink", "chain": "settlement", "feeds": {
                                "ETH": {"address": eth_feed, "heartbeat_seconds": FEED_HEARTBEAT_SECONDS},
                                **{s: {"address": a, "heartbeat_seconds": FEED_HEARTBEAT_SECONDS}
                                   for s, a in stable_feeds.items()}}},
                                *extra_sources]}}

        def write_cfg(name: str, extra: dict) -> Path:
            p = d / "config" / f"{name}.json"
            cfg = {**base, "storage": {"url": f"sqlite+aiosqlite:///{d / 'db' / name}.sqlite"}, **extra}
            p.write_text(json.dumps(cfg, indent=2))
            return p

        # every signer bounds every token itself: ETH by the Chainlink feed's round in force when
        # the quote was issued, the tokens without a feed by a wide band over its own sources
        price_bound = {"max_deposit_usd": DEVNET_MAX_DEPOSIT_USD, "tokens": {
            "ETH": {"kind": "chainlink", "chain": "settlement", "address": eth_feed,
                    "heartbeat_seconds": FEED_HEARTBEAT_SECONDS, "tolerance": "0.03",
                    "settle_seconds": 2},  # the settlement anvil mines only on transactions
            **{t: {"kind": "band", "tolerance": "0.25"} for t in sorted(fixed_usd)
               if t != "ETH" and t not in STABLE_USD},
            # a payable stablecoin (SYMBOL@chain) is bounded by its USD PriceFeed
            **{f"{t['symbol']}@{t['chain']}": {
                "kind": "chainlink", "chain": "settlement", "address": stable_feeds[t["symbol"]],
                "heartbeat_seconds": FEED_HEARTBEAT_SECONDS, "tolerance": "0.03", "settle_seconds": 2}
               for t in payable if t["symbol"] in stable_feeds}}}
        health: dict[str, str] = {}
        argv: dict[str, list[str]] = {}
        cli = [sys.executable, "-m", "bridge.cli"]
        signer_ports = [_free_port() for _ in range(opts.signers)]
        signer_urls = [f"http://127.0.0.1:{port}" for port in signer_ports]
        api_storage = None
        if opts.postgres:
            pg_dir = postgres_dir(d)
            api_storage = {"url": await start_postgres(pg_dir)}
        replica_ports = [api_port] + [_free_port() for _ in range(opts.api_replicas - 1)]
        api_urls = [f"http://127.0.0.1:{port}" for port in replica_ports]
        for i, port in enumerate(replica_ports):
            name = "api" if i == 0 else f"api-{i}"
            p = write_cfg(name, {"api": {"host": "127.0.0.1", "port": port, "quote_key": kref("quote"),
                                         "rate_limit_per_minute": 6000, "rate_limit_burst": 600,
                                         "quote_retention_seconds": 3600, "quote_prune_interval_seconds": 300,
                                         # GET /v1/admin/treasury: what `threshold` signers report alike
                                         "treasury_signers": signer_urls, "treasury_threshold": opts.threshold,
                                         "treasury_poll_seconds": 5.0},
                                 "payments": {"webhooks": {"allow_loopback": True}, "late_tolerance_bps": 200},
                                 **({"storage": api_storage} if api_storage else {})})
            if i == 0:  # `db upgrade` once (SQLite would migrate itself), then the devnet's keys
                admin_key, merchant_key = await _devnet_api_keys(p)
            argv[name] = [*cli, "api", "--config", str(p)]
            health[name] = f"{api_urls[i]}/v1/health"
        for i, (port, url) in enumerate(zip(signer_ports, signer_urls)):
            p = write_cfg(f"signer-{i}", {"signer": {
                "name": f"signer-{i}", "host": "127.0.0.1", "port": port, "key": kref(f"signer-{i}"),
                "refund_key": kref(f"signer-{i}-ed25519"), "gateway_url": api_url,
                "gateway_public_key": quote_pub, "price_bound": price_bound,
                "unknown_reference_refund_after_seconds": 60}})
            argv[f"signer-{i}"] = [*cli, "signer", "--config", str(p)]
            health[f"signer-{i}"] = f"{url}/v1/health"
        relays, relay_port = [], 0
        for i in range(opts.aggregators):
            name = "relay" if i == 0 else f"relay-{i}"
            port = _free_port()
            relay_port = relay_port or port
            p = write_cfg(name, {"aggregator": {"signers": signer_urls, "key": kref(name), "batch_size": 32,
                                                "poll_interval": 0.5, "max_batch_wait": 1.0,
                                                # the payment-reference feed: collect plain transfers
                                                # to per-payment deposit addresses (issue 14)
                                                "gateway_url": api_url, "collect_interval": 1.0,
                                                **({"relay_index": i, "relay_count": opts.aggregators,
                                                    "takeover_after_seconds": 10.0}
                                                   if opts.aggregators > 1 else {})},
                                 "metrics_port": port})
            argv[name] = [*cli, "relay", "--config", str(p)]
            health[name] = f"http://127.0.0.1:{port}/v1/health"
            relays.append({"name": name, "address": "0x" + address_of(bytes.fromhex(relay_keys[i][2:])).hex(),
                           "metrics": f"http://127.0.0.1:{port}/metrics"})

        env = {**os.environ, PASSWORD_ENV: password, "PYTHONUNBUFFERED": "1"}
        procs = ProcessSupervisor(d, env, restart=opts.restart)
        for name, a in argv.items():
            await procs.start(name, a)
        await _wait_healthy(health, procs)

        manifest = load_manifest(manifest_path)
        info = {
            "api": api_url,
            "api_replicas": api_urls,
            "manifest": {"path": str(manifest_path), "hash": manifest.hash},
            "chains": {
                "ethereum": {"family": "evm", "rpc": eth.rpc_url, "chain_id": ETH_CHAIN_ID,
                             "contracts": {"lock": lock}, "finality": {"confirmations": opts.confirmations},
                             "tokens": {s: {"contract": a, "decimals": DEV_TOKEN_DECIMALS}
                                        for s, a in eth_tokens.items()}},
                "settlement": {"family": "evm", "rpc": st.rpc_url, "chain_id": SETTLEMENT_CHAIN_ID,
                               "contracts": {"credits": ledger}},
            },
            "accounts": {
                "ethereum": [{"address": "0x" + address_of(bytes.fromhex(k[2:])).hex(), "private_key": k}
                             for k in DEV_PRIVATE_KEYS[1:5]],
                "settlement": [{"address": "0x" + address_of(bytes.fromhex(k[2:])).hex(), "private_key": k}
                               for k in DEV_PRIVATE_KEYS[1:5]],
            },
            "committee": {"signers": signer_addrs, "ed25519_public_keys": list(ed_public), "threshold": opts.threshold,
                          "nodes": [{"name": f"signer-{i}", "url": u, "address": signer_addrs[i]}
                                    for i, u in enumerate(signer_urls)]},
            "gateway_public_key": quote_pub,
            "admin_key": admin_key,  # dev only: `creditbridge status` uses it
            "merchant_key": merchant_key,  # dev only: a merchant's API key (payments, webhooks)
            **({"api_database": api_storage["url"]} if api_storage else {}),
            "provider": {"address": provider_addr, "private_key": deployer},
            "processes": {"pids_dir": str(d / "pids"), "logs_dir": str(d / "logs"),
                          "names": list(argv)},
            "relay_metrics": f"http://127.0.0.1:{relay_port}/metrics",
            "relays": relays,  # every relay process: name, gas account, metrics URL
            # one fresh account per chain with no other use: a balance change there is a sweep
            "treasury": treasury,
            "price_feeds": {"ETH": {"chain": "settlement", "address": eth_feed, "decimals": FEED_DECIMALS,
                                    "heartbeat_seconds": FEED_HEARTBEAT_SECONDS,
                                    "owner_private_key": feed_key},
                            **{s: {"chain": "settlement", "address": a, "decimals": FEED_DECIMALS,
                                   "heartbeat_seconds": FEED_HEARTBEAT_SECONDS, "owner_private_key": feed_key}
                               for s, a in stable_feeds.items()}},
        }
        for c in extra:
            info["chains"][c.name] = c.info
            info["accounts"][c.name] = c.accounts
        tmp = d / "devnet.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(d / "devnet.json")
        print(f"devnet ready: API {api_url}  ethereum {eth.rpc_url}  settlement {st.rpc_url}\n"
              f"  details: {d / 'devnet.json'}   try: .venv/bin/creditbridge pay --credits 500\n"
              f"  Ctrl-C stops everything.", flush=True)
        if ready is not None:
            ready.set()
        await _wait_for_stop(stop)
    finally:
        log.info("stopping devnet")
        if keeper is not None:
            keeper.cancel()
        if ticker is not None:
            ticker.cancel()
        (d / "devnet.json").unlink(missing_ok=True)
        if procs is not None:
            await procs.stop()
        for c in reversed(extra):
            try:
                await c.stop()
            except Exception:
                log.exception("stopping %s failed", c.name)
        await eth.stop()
        await st.stop()
        if pg_dir is not None:
            await stop_postgres(pg_dir)


async def _pg_script(action: str, pg_dir: Path) -> str:
    script = Path(__file__).resolve().parents[1] / "scripts" / "pg.sh"
    proc = await asyncio.create_subprocess_exec("bash", str(script), action, env={**os.environ, "PGDATA": str(pg_dir)},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BridgeError(f"devnet: scripts/pg.sh {action} failed: {err.decode(errors='replace').strip()[-300:]}")
    return out.decode().strip()


def postgres_dir(devnet_dir: Path) -> Path:
    """Where the devnet's PostgreSQL cluster lives: under the system temp dir (the server runs as
    the 'postgres' user when we are root, and must reach it), one per devnet directory."""
    import hashlib
    import tempfile

    digest = hashlib.sha1(str(devnet_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"creditbridge-devnet-pg-{digest}"


async def start_postgres(pg_dir: Path) -> str:
    """A fresh PostgreSQL cluster of the devnet's own (scripts/pg.sh with PGDATA=pg_dir; one a
    crashed devnet left behind is removed first); its URL."""
    await _pg_script("stop", pg_dir)
    url = (await _pg_script("start", pg_dir)).splitlines()[-1]
    if not url.startswith("postgresql+asyncpg://"):
        raise BridgeError(f"devnet: scripts/pg.sh printed no database URL ({url[:80]!r})")
    return url


async def stop_postgres(pg_dir: Path) -> None:
    try:
        await _pg_script("stop", pg_dir)
    except BridgeError as e:
        log.error("%s", e)


async def _devnet_api_keys(api_config: Path) -> tuple[str, str]:
    """Upgrade the API's database (the explicit `creditbridge db upgrade` step), then create the
    devnet's operator (admin) and merchant API keys there (stored hashed, like `apikey new`)."""
    from bridge.api.auth import create_key
    from bridge.config import load_settings
    from bridge.storage.db import Database

    db = Database(load_settings(api_config).storage.url)
    try:
        await db.migrate()
        admin = (await create_key(db, "devnet operator", "admin"))[1]
        merchant = (await create_key(db, "devnet merchant", "merchant"))[1]
        return admin, merchant
    finally:
        await db.dispose()


async def _wait_for_stop(stop: asyncio.Event | None) -> None:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()


# --- a dApp's view: the demo payment ---------------------------------------------------------------
async def demo_pay(devnet: dict, *, credits: str, account: int = 0, timeout: float = 120.0) -> dict:
    from relayers.evm.wallet import credits_of, send_lock

    api = devnet["api"]
    payer = devnet["accounts"]["ethereum"][account]
    beneficiary = devnet["accounts"]["settlement"][account]["address"]
    st = devnet["chains"]["settlement"]
    async with aiohttp.ClientSession() as s:
        async def call(method, path, body=None):
            async with s.request(method, api + path, json=body) as r:
                data = await r.json(content_type=None)
                if r.status >= 400:
                    raise BridgeError(f"{path}: {data.get('title')}: {data.get('detail')}")
                return data

        before = await credits_of(st["rpc"], st["contracts"]["credits"], beneficiary)
        q = await call("POST", "/v1/quotes", {"token": "ETH", "credits": credits})
        print(f"quote {q['id']}: {q['credits']} credits for {q['amount']} wei (expires {q['expires_at']})")
        pay = await call("POST", "/v1/payments", {"quote_id": q["id"], "beneficiary": beneficiary})
        ins = pay["instructions"]
        print(f"payment {pay['id']}: send {ins['value']} wei to {ins['contract']} {ins['method']} "
              f"with reference {ins['reference']}")
        txh = await send_lock(devnet["chains"]["ethereum"]["rpc"], payer["private_key"], ins["contract"],
                              ins["reference"], int(ins["value"]))
        print(f"paid in tx {txh}")
        start, state = time.monotonic(), None
        while time.monotonic() - start < timeout:
            p = await call("GET", f"/v1/payments/{pay['id']}")
            if p["state"] != state:
                state = p["state"]
                print(f"  {time.monotonic() - start:6.1f}s  state {state}")
            if state == "credited":
                after = await credits_of(st["rpc"], st["contracts"]["credits"], beneficiary)
                print(f"credited: {beneficiary} holds {after} credits on the settlement chain "
                      f"(+{after - before}), settlement tx {p.get('settlement', {}).get('tx_hash')}")
                return p
            await asyncio.sleep(0.5)
        raise BridgeError(f"payment {pay['id']} not credited within {timeout:.0f}s (state {state})")
