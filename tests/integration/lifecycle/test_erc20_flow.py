"""ERC-20 payments end to end on a real anvil (issue 15): the gateway quotes USDC on ethereum,
the payer makes a plain ``transfer`` to the payment's deposit address, the relay's collector
moves it into the CreditLock (``collectToken``), four in-process signer nodes (EvmWatchers with
the chain's tokens) attest the deposit once, and the refund worker pays back, in the token
deposited, the excess of an overpayment (USDC) and a deposit of the wrong token (USDT sent to a
USDC payment) through ``releaseToken``: once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import aiohttp
import pytest
from aiohttp import web
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.api.keys import SIGNER as SIGNER_KEY
from bridge.committee import digest as dg
from bridge.committee.gateway import GatewayClient
from bridge.committee.http import create_signer_app
from bridge.committee.signer import SignerNode
from bridge.config import EvmChainConfig, PayableToken
from bridge.hashing import keccak256
from bridge.keystore import SecretKey
from bridge.node import DbCursor
from bridge.payments.evm_deposit import deposit_address
from bridge.payments.feed import FeedEntry
from bridge.payments.refunds import RefundWorker, ReleasesClient, lock_domain
from bridge.storage import attestations as att_repo
from bridge.storage.db import Database
from bridge.types import SettlementDomain
from bridge.watch import DepositFollower
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode
from devnet.evm.tokens import deploy_token, mint, pay_token, token_balance
from relayers.evm.collector import EvmCollector
from relayers.evm.contracts import deploy
from relayers.evm.release import EvmLockReleaser
from relayers.evm.settlement import EvmSettlement
from relayers.evm.watcher import EvmWatcher

CHAIN_ID = 31337
KEYS = sorted((keccak256(f"creditbridge-erc20-flow/{i}".encode()) for i in range(4)), key=dg.address_of)
PAYER = DEV_PRIVATE_KEYS[1]
GAS = DEV_PRIVATE_KEYS[9]
UNIT = 10**6


@dataclass
class Chain:
    anvil: AnvilNode
    lock: str
    ledger: str
    cfg: EvmChainConfig
    settlement_cfg: EvmChainConfig
    tokens: dict[str, str]  # symbol -> contract

    def payables(self) -> dict[str, PayableToken]:
        return {s: PayableToken(symbol=s, chain="ethereum", family="evm", decimals=6, price_symbol=s, native=False,
                                contract=a.lower()) for s, a in self.tokens.items()}

    def token_entries(self) -> list[dict]:
        return [{"symbol": s, "chain": "ethereum", "decimals": 6, "contract": a.lower(), "peg": "1.00",
                 "peg_band_bps": 200} for s, a in self.tokens.items()]


@pytest.fixture(scope="module")
async def chain():
    node = await AnvilNode.start(chain_id=CHAIN_ID)
    w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
    addrs = [AsyncWeb3.to_checksum_address(dg.address_of(k)) for k in KEYS]
    lock = await deploy(w3, "CreditLock", [addrs, 3, 10**9], DEV_PRIVATE_KEYS[0])
    ledger = await deploy(w3, "CreditLedger", [addrs, 3, AsyncWeb3.to_checksum_address(dg.address_of(
        bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])))], DEV_PRIVATE_KEYS[0])
    await w3.provider.disconnect()
    tokens = {"USDC": await deploy_token(node.rpc_url, DEV_PRIVATE_KEYS[0], "USDC", "TestToken"),
              "USDT": await deploy_token(node.rpc_url, DEV_PRIVATE_KEYS[0], "USDT", "TestTetherToken")}
    payer = AsyncWeb3.to_checksum_address(dg.address_of(bytes.fromhex(PAYER[2:])))
    for a in tokens.values():
        await mint(node.rpc_url, DEV_PRIVATE_KEYS[0], a, [payer], 1000 * UNIT)
    cfg = EvmChainConfig(family="evm", name="ethereum", chain_id=CHAIN_ID, rpc=[node.rpc_url], token="ETH",
                         finality=0, contracts={"lock": lock})
    st = EvmChainConfig(family="evm", name="settlement", chain_id=CHAIN_ID, rpc=[node.rpc_url], finality=0,
                        contracts={"credits": ledger})
    try:
        yield Chain(node, lock, ledger, cfg, st, tokens)
    finally:
        await node.stop()


class ListFeed:
    def __init__(self) -> None:
        self.entries: list[FeedEntry] = []

    def add(self, reference: bytes) -> None:
        self.entries.append(FeedEntry(len(self.entries) + 1, "ethereum", reference, int(time.time()) + 3600))

    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        return [e for e in self.entries if e.chain == chain and e.cursor > after][:limit]


async def test_erc20_payments_are_credited_once_and_refunded_in_the_token_deposited(chain, lifecycle, tmp_path):
    lc = await lifecycle(
        chains=[chain.cfg.model_dump(mode="json"), chain.settlement_cfg.model_dump(mode="json")],
        tokens=chain.token_entries(),
        pricing={"credit_price_usd": "0.01", "quote_ttl_seconds": 900,
                 "fixed_usd": {"ETH": "3000", "USDC": "1", "USDT": "1"},
                 "min_amount": {"ETH": 1000, "USDC@ethereum": 1000, "USDT@ethereum": 1000}})

    async def usdc_payment(credits: str) -> dict:
        status, q = await lc.request("POST", "/v1/quotes", json={"token": "USDC", "chain": "ethereum",
                                                                 "credits": credits})
        assert status == 201, q
        status, p = await lc.request("POST", "/v1/payments", json={"quote_id": q["id"], "beneficiary": "0x" + "ab" * 20})
        assert status == 201, p
        return p

    over = await usdc_payment("500")  # 5 USDC quoted
    wrong = await usdc_payment("300")  # 3 USDC quoted, paid in USDT
    assert int(over["amount"]) == 5 * UNIT
    lock20 = bytes.fromhex(chain.lock[2:])
    refs = {k: bytes.fromhex(p["reference"][2:]) for k, p in (("over", over), ("wrong", wrong))}
    # the payment names what to send where: USDC, to the payment's deposit address (EIP-681 transfer)
    ins = over["instructions"]
    to = AsyncWeb3.to_checksum_address(deposit_address(lock20, refs["over"]))
    usdc = AsyncWeb3.to_checksum_address(chain.tokens["USDC"])
    assert ins["transfer"] == {"to": to, "amount": str(5 * UNIT), "comment": None, "token": usdc}
    assert ins["uri"] == f"ethereum:{usdc}@{CHAIN_ID}/transfer?address={to}&uint256={5 * UNIT}"
    await pay_token(chain.anvil.rpc_url, PAYER, chain.tokens["USDC"], deposit_address(lock20, refs["over"]), 6 * UNIT)
    await pay_token(chain.anvil.rpc_url, PAYER, chain.tokens["USDT"], deposit_address(lock20, refs["wrong"]),
                    3 * UNIT)

    # the relay collects both into the lock
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/relay.sqlite")
    await db.migrate()
    feed = ListFeed()
    for r in refs.values():
        feed.add(r)
    collector = EvmCollector(chain.cfg, GAS, feed, DbCursor(db, "collector"), tokens=chain.payables())
    try:
        await collector.step()
        await collector.step()
        assert collector.collects == 2
    finally:
        await collector.aclose()
        await db.dispose()

    # four signers decide the deposits
    session = aiohttp.ClientSession()
    nodes, urls, runners = [], [], []
    try:
        for i, k in enumerate(KEYS):
            sdb = Database(f"sqlite+aiosqlite:///{tmp_path}/signer-{i}.sqlite")
            await sdb.migrate()
            domain = lock_domain(CHAIN_ID, lock20)
            node = SignerNode(
                name=f"s{i}", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=sdb,
                watchers={"ethereum": EvmWatcher(chain.cfg, tokens=chain.payables())},
                settlement=EvmSettlement(chain.settlement_cfg, None),
                domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])),
                gateway=GatewayClient(lc.url, session), gateway_public_key=lc.app[SIGNER_KEY].public_key,
                lock_domains={"ethereum": domain}, native_tokens={"ethereum": "ETH"},
                lock_tokens={"ethereum": {s: bytes.fromhex(a[2:]) for s, a in chain.tokens.items()}},
                credit_price_usd=Decimal("0.01"), poll_interval=0.1)
            runner = web.AppRunner(create_signer_app(node, __import__("prometheus_client").CollectorRegistry()))
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            nodes.append(node)
            urls.append(f"http://{host}:{port}")
            runners.append(runner)
        # the API's deposit follower, with the chain's tokens (as bridge/api/wiring.py builds it)
        api_watcher = EvmWatcher(chain.cfg, tokens=chain.payables())
        try:
            await DepositFollower(api_watcher, lc.db, "api").step()
        finally:
            await api_watcher.aclose()
        for _ in range(2):
            for n in nodes:
                for f in n.followers:
                    await f.step()
                await n.process_once()
        for n in nodes:
            async with n.db.begin() as s:
                credited = [(a.credit.sequence, a.credit.credits) for a in await att_repo.attestations_after(s, 0, 100)]
            assert credited == [(0, 500)]  # the USDC deposit, once; the USDT one credits nothing
            rel = await n.releases_after(0, 100)
            assert sorted((r["purpose"], int(r["amount"]), r.get("token")) for r in rel) == [
                ("excess", UNIT, "USDC"), ("invalid", 3 * UNIT, "USDT")]

        payer = bytes.fromhex(AsyncWeb3.to_checksum_address(dg.address_of(bytes.fromhex(PAYER[2:])))[2:])
        usdc0 = await token_balance(chain.anvil.rpc_url, chain.tokens["USDC"], payer)
        usdt0 = await token_balance(chain.anvil.rpc_url, chain.tokens["USDT"], payer)
        releaser = EvmLockReleaser(chain.cfg, GAS, tokens=chain.payables())
        try:
            worker = RefundWorker(signers=[ReleasesClient(u, session) for u in urls[:3]],
                                  releasers={"ethereum": releaser})
            assert await worker.step() == 2
            assert await worker.step() == 0  # nothing twice
        finally:
            await releaser.aclose()
        assert await token_balance(chain.anvil.rpc_url, chain.tokens["USDC"], payer) == usdc0 + UNIT
        assert await token_balance(chain.anvil.rpc_url, chain.tokens["USDT"], payer) == usdt0 + 3 * UNIT
        assert await token_balance(chain.anvil.rpc_url, chain.tokens["USDC"], chain.lock) == 5 * UNIT
        assert await token_balance(chain.anvil.rpc_url, chain.tokens["USDT"], chain.lock) == 0
    finally:
        for r in runners:
            await r.cleanup()
        for n in nodes:
            for w in n.watchers.values():
                await w.aclose()
            await n.settlement.aclose()
            await n.db.dispose()
        await session.close()
