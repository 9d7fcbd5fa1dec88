"""Dust on Asset Hub (issue 11, item 6): a held amount below the chain's ``min_refund`` is kept
in custody and reported, never approved on chain, while a normal refund still executes.

Two signer nodes (threshold 2 of 3) with their own databases decide the same two overpaid
deposits through ``SignerNode._sign_release`` and drive their real on-chain approvals
(``_approval_loop`` -> ``relayers/substrate/refund.py``) against chopsticks running the real
Asset Hub runtime; what the test asserts is read back from chain state and the nodes' own
``GET /v1/refunds`` view. (The file name makes it run after ``test_substrate_multisig``,
which needs the session chain's committee account still empty.)
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass

import pytest_asyncio
from prometheus_client import CollectorRegistry

from bridge.committee import digest as dg
from bridge.committee.http import SignerMetrics
from bridge.committee.signer import SignerNode
from bridge.keystore import SecretKey
from bridge.payments import rules
from bridge.storage.db import Database
from bridge.types import Observation
from relayers.substrate.multisig import ss58
from relayers.substrate.refund import SignerApprovals
from tests.integration.substrate.helpers import (
    COMMITTEE, UNIT, batch, blocks_until, chain_config, ref, remark, transfer)

MIN_REFUND = UNIT // 10  # 0.1 of the token: below it, refunding costs the members more than it returns


@dataclass(frozen=True)
class Terms:
    payment_id: str


def member_seed(i: int) -> bytes:
    return hashlib.blake2b(f"creditbridge-test/member/{i}".encode(), digest_size=32).digest()


async def free(chain, account: bytes) -> int:
    return await chain.run(lambda si: si.query("System", "Account", [ss58(account, 42)]).value["data"]["free"])


@pytest_asyncio.fixture
async def nodes(chain, tmp_path):
    if await free(chain, bytes.fromhex(_committee_hex())) < 100 * UNIT:
        paid = await chain.send("//Alice", lambda si: batch(si, [transfer(si, COMMITTEE, 200 * UNIT), remark(si, ref())]))
        await chain.new_block([paid])
    out = []
    for i in range(2):
        db = Database(f"sqlite+aiosqlite:///{tmp_path}/signer{i}.sqlite")
        await db.migrate()
        k = hashlib.sha256(f"dust-signer-{i}".encode()).digest()
        registry = CollectorRegistry()
        node = SignerNode(name=f"s{i}", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=db,
                          watchers={}, settlement=None, domain=None, gateway=None, gateway_public_key="",
                          approvers={"polkadot": SignerApprovals(chain_config(chain.url), member_seed(i))},
                          metrics=SignerMetrics(registry), min_refund={"polkadot": MIN_REFUND})
        out.append((node, registry))
    yield out
    for node, _ in out:
        await node.approvers["polkadot"].aclose()
        await node.db.dispose()
    chain.forget_nonces()  # members' nonces moved behind the helper's back


def _committee_hex() -> str:
    from tests.integration.substrate.helpers import COMMITTEE_ID

    return COMMITTEE_ID.hex()


def deposit(block: int, index: int, payer: bytes, amount: int) -> Observation:
    return Observation(chain="polkadot", source=b"\x01" * 32, sequence=(block << 16) | index, tx_id=os.urandom(36),
                       event_index=index, block_number=block, block_hash=os.urandom(32), timestamp=0, token="DOT",
                       amount=amount, payer=payer, reference=os.urandom(32))


async def test_dust_is_kept_and_reported_while_a_normal_refund_executes(chain, nodes):
    head = await chain.head()
    small_payer, big_payer = os.urandom(32), os.urandom(32)  # fresh accounts: their balance is what was refunded
    quoted = 10 * UNIT
    small = deposit(head, 1, small_payer, quoted + MIN_REFUND - 1)  # overpaid by just under the minimum
    big = deposit(head, 2, big_payer, quoted + 2 * UNIT)
    for node, _ in nodes:
        for obs in (small, big):
            d = rules.Decision(rules.CREDIT, 100, quoted, obs.amount - quoted)
            await node._sign_release(obs, Terms(f"pay-{obs.sequence}"), d)
            await node._sign_release(obs, Terms(f"pay-{obs.sequence}"), d)  # decided again: recorded once
    loops = [asyncio.create_task(node._approval_loop(interval=0.2)) for node, _ in nodes]
    try:
        async def refunded():
            return await free(chain, big_payer) == 2 * UNIT

        await blocks_until(chain, refunded, pause=0.5)
        assert await free(chain, big_payer) == 2 * UNIT  # the normal refund executed
        await chain.new_block()
        assert await free(chain, small_payer) == 0  # the dust was not refunded
    finally:
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    for node, registry in nodes:
        view = await node.refunds()
        assert view["dust"] == {"polkadot": {"count": 1, "amount": str(MIN_REFUND - 1),
                                             "min_refund": str(MIN_REFUND)}}
        (row,) = view["dust_latest"]
        assert (row["to"], row["amount"], row["purpose"]) == ("0x" + small_payer.hex(), str(MIN_REFUND - 1), "excess")
        assert view["by_chain"]["polkadot"].get("dust") == 1 and view["failed"] == []
        assert registry.get_sample_value("creditbridge_signer_dust_total", {"chain": "polkadot"}) == 1
        assert await node.releases_after(0, 100) == []  # nothing for the refund worker either
