"""Signer nodes with their treasury sweepers over a real custody chain (TON, Asset Hub) and a real
settlement chain (anvil with the real CreditLedger), for the per-family sweep tests.

What the nodes would have learned before a sweep is put into their own databases through the
same repositories the signer uses: the deposits (real observations read from the chain by the
family's watcher, or built from real transfers), the node's decision of each deposit (the shared
rule's outcome), and the ``Credited`` records of the settlement contract (as
``Sweeper._scan_credits`` stores them; the EVM sweep tests in tests/integration/lifecycle
exercise reading them from the ledger). From there everything is the real thing: the Sweeper's
epochs, the solvency check against the custody read at a block, the signing or on-chain approval
of the sweep, the refund worker or approval loop paying it, and the lock or multisig refusing a
replay."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.chains import CreditRecord
from bridge.committee import digest as dg
from bridge.committee.signer import SignerNode
from bridge.committee.treasury import Sweeper
from bridge.config import EvmChainConfig
from bridge.keystore import SecretKey
from bridge.payments import refunds, rules
from bridge.storage import observations as obs_repo
from bridge.storage import treasury as repo
from bridge.storage.db import Database
from bridge.types import Credit, Observation
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode
from relayers.evm.contracts import deploy
from relayers.evm.settlement import EvmSettlement

EPOCH = 4  # settlement blocks per epoch
BENEFICIARY = b"\x0b" * 20


@dataclass(frozen=True)
class Terms:
    payment_id: str


@dataclass
class Settlement:
    anvil: AnvilNode
    cfg: EvmChainConfig

    async def height(self) -> int:
        return int(await self.anvil.rpc("eth_blockNumber"), 16)

    async def mine(self, n: int = 1) -> int:
        await self.anvil.mine(n)
        return await self.height()

    async def next_epoch(self) -> int:
        """Mine into the next epoch; the settlement block where credits of it are recorded."""
        h = await self.height()
        return await self.mine(EPOCH - h % EPOCH + 1)


@pytest.fixture(scope="module")
async def settlement():
    node = await AnvilNode.start(chain_id=31337)
    try:
        w3 = AsyncWeb3(AsyncHTTPProvider(node.rpc_url))
        keys = [hashlib.sha256(f"sweep-ledger/{i}".encode()).digest() for i in range(3)]
        addrs = [AsyncWeb3.to_checksum_address(dg.address_of(k)) for k in keys]
        owner = AsyncWeb3.to_checksum_address(dg.address_of(bytes.fromhex(DEV_PRIVATE_KEYS[0][2:])))
        ledger = await deploy(w3, "CreditLedger", [addrs, 2, owner], DEV_PRIVATE_KEYS[0])
        await w3.provider.disconnect()
        cfg = EvmChainConfig(family="evm", name="settlement", chain_id=31337, rpc=[node.rpc_url], finality=0,
                             contracts={"credits": ledger})
        yield Settlement(node, cfg)
    finally:
        await node.stop()


async def make_node(tmp_path, i: int, *, chain: str, token: str, watcher, custody, treasury: bytes,
                    settlement: Settlement, min_refund: int, refund_signers=None, approvers=None) -> SignerNode:
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/sweeper-{chain}-{i}.sqlite")
    await db.migrate()
    k = hashlib.sha256(f"sweeper-{chain}-{i}".encode()).digest()
    node = SignerNode(name=f"s{i}", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=db,
                      watchers={chain: watcher}, settlement=EvmSettlement(settlement.cfg, None), domain=None,
                      gateway=None, gateway_public_key="", refund_signers=refund_signers or {},
                      approvers=approvers or {}, min_refund={chain: min_refund})
    node.sweeper = Sweeper(node, addresses={chain: treasury}, epoch_blocks=EPOCH, custody={chain: custody},
                           tokens={chain: token})
    return node


async def learn(node: SignerNode, chain: str, processed: int,
                deposits: list[tuple[Observation, rules.Decision]]) -> None:
    """What the node knows: its deposit follower processed ``chain`` up to ``processed``; it decided
    ``deposits`` (and authorized the refund of their held parts through its own refund path)."""
    async with node.db.begin() as s:
        await obs_repo.add_observations(s, [o for o, _ in deposits])
        await repo.track_new_deposits(s, chain)
        for o, d in deposits:
            purpose = d.refund_purpose
            rid = refunds.release_id(o.source, o.sequence, purpose) if purpose else None
            await repo.set_decision(s, o.source, o.sequence, outcome=d.outcome, credits=d.credits, counted=d.counted,
                                    refundable=d.refundable, refund_id=rid)
        await obs_repo.set_cursor(s, "signer", chain, processed, None)
    for o, d in deposits:
        if d.refundable:
            await node._sign_release(o, Terms(f"pay-{o.sequence}"), d)


async def credit(node: SignerNode, deposits: list[tuple[Observation, rules.Decision]], block: int) -> None:
    """The settlement contract recorded these deposits' credits at settlement block ``block``."""
    async with node.db.begin() as s:
        await repo.record_credits(s, [CreditRecord(Credit(o.source, o.sequence, BENEFICIARY, d.credits,
                                                          hashlib.sha256(o.reference).digest()),
                                                   hashlib.sha256(o.tx_id).digest(), block) for o, d in deposits])


async def serve(node: SignerNode, runners: list) -> str:
    """The node's HTTP API (``GET /v1/releases``, ``GET /v1/sweeps``) on 127.0.0.1."""
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from bridge.committee.http import create_signer_app

    runner = web.AppRunner(create_signer_app(node, CollectorRegistry()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    runners.append(runner)
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"


async def processed(node: SignerNode, chain: str, height: int) -> None:
    async with node.db.begin() as s:
        await obs_repo.set_cursor(s, "signer", chain, height, None)


async def close(nodes: list[SignerNode]) -> None:
    for n in nodes:
        await n.settlement.aclose()
        for c in n.sweeper.custody.values():
            await c.aclose()
        await n.db.dispose()
