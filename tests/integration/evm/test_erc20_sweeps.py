"""Treasury sweeps of an ERC-20 held by the CreditLock (issue 15) on anvil (the lock, the USDC
test token and the settlement CreditLedger on one chain): three signer nodes (lock committee 2 of
3) with their sweepers, one ledger per (chain, token); the sweep of USDC is a ``releaseToken``
the refund worker submits (tests/integration/treasury_harness.py says what is given to the nodes
and what is real).

A credited USDC payment is swept once, in USDC, to the treasury; the excess of an overpayment
is refunded to the payer in USDC, never swept; a deposit whose credit is not recorded is not
swept; the ETH ledger of the same lock sweeps nothing, and while its custody reader cannot
reach its endpoint the USDC ledger is swept regardless (a failing ledger backs off alone); a second worker replaying the releases
pays nothing twice; the custody readers report each token's balance."""

from __future__ import annotations

import hashlib
import logging
import os
import socket

import aiohttp
from eth_abi import encode as abi_encode
from eth_utils import keccak
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.committee import digest as dg
from bridge.committee.treasury import Sweeper
from bridge.config import EvmChainConfig, PayableToken
from bridge.payments import refunds, rules
from bridge.payments.evm_deposit import deposit_address
from bridge.payments.treasury import sweep_release_id
from devnet.evm.anvil import DEV_PRIVATE_KEYS
from devnet.evm.tokens import deploy_token, mint, pay_token, token_balance
from relayers.evm.contracts import LOCK, deploy, send_transaction
from relayers.evm.custody import EvmCustody
from relayers.evm.release import EvmLockReleaser
from relayers.evm.watcher import EvmWatcher
from tests.integration.treasury_harness import (  # noqa: F401  (settlement is a fixture)
    EPOCH, close, credit, learn, make_node, processed, serve, settlement)

UNIT = 10**6
GAS = DEV_PRIVATE_KEYS[9]
PAYER = DEV_PRIVATE_KEYS[3]
COLLECT_TOKEN = keccak(text="collectToken(address,bytes32,bytes32)")[:4]


def member_key(i: int) -> bytes:  # the key make_node gives node i
    return hashlib.sha256(f"sweeper-ethereum-{i}".encode()).digest()


async def test_an_erc20_is_swept_once_in_the_token_and_its_excess_refunded(settlement, tmp_path, caplog):
    anvil = settlement.anvil
    w3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
    members = sorted(AsyncWeb3.to_checksum_address(dg.address_of(member_key(i))) for i in range(3))
    lock = await deploy(w3, LOCK, [members, 2, 10**9], DEV_PRIVATE_KEYS[0])
    usdc = await deploy_token(anvil.rpc_url, DEV_PRIVATE_KEYS[0], "USDC", "TestToken")
    payer = bytes.fromhex(AsyncWeb3.to_checksum_address(dg.address_of(bytes.fromhex(PAYER[2:])))[2:])
    await mint(anvil.rpc_url, DEV_PRIVATE_KEYS[0], usdc, [payer], 100 * UNIT)
    start = await settlement.height()
    cfg = EvmChainConfig(family="evm", name="ethereum", chain_id=31337, rpc=[anvil.rpc_url], token="ETH", finality=0,
                         contracts={"lock": lock}, start_block=start)
    token = PayableToken(symbol="USDC", chain="ethereum", family="evm", decimals=6, price_symbol="USDC",
                         native=False, contract=usdc.lower(), min_refund=UNIT // 10)
    tokens = {"USDC": token}
    lock20 = bytes.fromhex(lock[2:])
    refs = [os.urandom(32) for _ in range(3)]
    amounts = [10 * UNIT, 6 * UNIT, 3 * UNIT]
    for r, a in zip(refs, amounts):  # plain transfers, collected into the lock naming the funding
        funding = await pay_token(anvil.rpc_url, PAYER, usdc, deposit_address(lock20, r), a)
        data = COLLECT_TOKEN + abi_encode(["address", "bytes32", "bytes32"], [usdc, r, funding])
        await send_transaction(w3, {"to": lock, "data": "0x" + data.hex()}, GAS)
    probe = EvmWatcher(cfg, tokens=tokens)
    end = await probe.finalized_height()
    obs = {o.reference: o for o in await probe.fetch_deposits(start, end)}
    exact, over, pending = (obs[r] for r in refs)
    assert {(o.token, o.payer) for o in obs.values()} == {("USDC", bytes(12) + payer)}
    excess = UNIT
    deposits = [(exact, rules.Decision(rules.CREDIT, 1000, exact.amount, 0)),
                (over, rules.Decision(rules.CREDIT, 500, over.amount - excess, excess)),
                (pending, rules.Decision(rules.CREDIT, 300, pending.amount, 0))]
    treasury = os.urandom(20)
    domain = refunds.lock_domain(31337, lock20)
    nodes, runners = [], []
    session = aiohttp.ClientSession()
    readers = {None: EvmCustody(cfg), "USDC": EvmCustody(cfg, token=token)}
    with socket.socket() as sk:  # a port nothing listens on
        sk.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sk.getsockname()[1]}"
    dead, live = [], []  # each node's ETH reader: on that endpoint, and on anvil
    releaser = EvmLockReleaser(cfg, GAS, tokens=tokens)
    try:
        for i in range(3):
            k = member_key(i)
            node = await make_node(tmp_path, i, chain="ethereum", token="ETH", watcher=EvmWatcher(cfg, tokens=tokens),
                                   custody=EvmCustody(cfg), treasury=treasury, settlement=settlement, min_refund=10**12,
                                   refund_signers={"ethereum": refunds.EvmRefundSigner(
                                       domain, k, dg.address_of(k), {"USDC": bytes.fromhex(usdc[2:])})})
            node.native_tokens = {"ethereum": "ETH"}
            node.min_refund["USDC@ethereum"] = token.min_refund
            # one ledger per (chain, token): the lock's ETH and its USDC. The ETH ledger's reader
            # starts on an endpoint that refuses connections: that ledger fails, the USDC one must
            # not wait for it
            old = node.sweeper.custody[("ethereum", "ETH")]
            dead.append(EvmCustody(cfg.model_copy(update={"rpc": [closed]})))
            node.sweeper = Sweeper(node, addresses={"ethereum": treasury}, epoch_blocks=EPOCH,
                                   custody={("ethereum", "ETH"): dead[-1],
                                            ("ethereum", "USDC"): EvmCustody(cfg, token=token)},
                                   tokens={"ethereum": "ETH"})
            live.append(old)
            await learn(node, "ethereum", end, deposits)
            nodes.append(node)
            await serve(node, runners)
        urls = [f"http://{r.addresses[0][0]}:{r.addresses[0][1]}" for r in runners]
        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits[:2], block)
        await settlement.mine(5)
        with caplog.at_level(logging.WARNING, logger="creditbridge.treasury"):
            assert [await n.sweeper.step() for n in nodes] == [1, 1, 1]  # USDC swept, ETH's reader down
        failed = [r.getMessage() for r in caplog.records if "treasury sweeper" in r.getMessage()]
        assert len(failed) == 3 and all(": ethereum: " in m and "retried in" in m for m in failed), failed
        for n, reader in zip(nodes, live):  # the ETH reader's endpoint is back
            n.sweeper.custody[("ethereum", "ETH")] = reader
        earned = exact.amount + over.amount - excess
        views = [await n.sweeper.view() for n in nodes]
        assert len({(v["sweeps"][0]["release_id"], v["sweeps"][0]["amount"]) for v in views}) == 1
        (sweep,) = views[0]["sweeps"]
        assert (sweep["token"], sweep["amount"], sweep["to"]) == ("USDC", str(earned), "0x" + treasury.hex())
        assert {d["sequence"] for d in sweep["deposits"]} == {exact.sequence, over.sequence}  # not the pending one
        rid = bytes.fromhex(sweep["release_id"][2:])
        assert rid == sweep_release_id(exact.source, sweep["epoch"], "USDC")
        rels = {r["purpose"]: r for r in await nodes[0].releases_after(0, 100)}
        assert (rels["sweep"]["token"], rels["excess"]["token"]) == ("USDC", "USDC")

        payer_before = await token_balance(anvil.rpc_url, usdc, payer)
        worker = refunds.RefundWorker(signers=[refunds.ReleasesClient(u, session) for u in urls[:2]],
                                      releasers={"ethereum": releaser})
        assert await worker.step() == 2  # the sweep and the excess refund
        assert await token_balance(anvil.rpc_url, usdc, treasury) == earned
        assert await token_balance(anvil.rpc_url, usdc, payer) == payer_before + excess
        h = await settlement.height()
        assert await readers["USDC"].balance(h) == pending.amount  # what is still owed (pending)
        assert await readers[None].balance(h) == 0
        assert await readers["USDC"].released(h) >= {rid, refunds.release_id(over.source, over.sequence, "excess")}
        # another worker replays them: the lock refuses, nothing is paid twice
        again = refunds.RefundWorker(signers=[refunds.ReleasesClient(u, session) for u in urls],
                                     releasers={"ethereum": releaser})
        assert await again.step() == 2 and all(tx == b"" for _, tx in again.submitted)
        assert await token_balance(anvil.rpc_url, usdc, treasury) == earned
        # the sweepers find it paid; nothing more is swept
        for n in nodes:
            await processed(n, "ethereum", await settlement.height())
        assert [await n.sweeper.step() for n in nodes] == [0, 0, 0]
        assert (await nodes[0].sweeper.view())["sweeps"][0]["state"] == "paid"
    finally:
        for r in runners:
            await r.cleanup()
        for n in nodes:
            for w in n.watchers.values():
                await w.aclose()
        await close(nodes)
        for c in readers.values():
            await c.aclose()
        await releaser.aclose()
        await probe.aclose()
        for c in dead:
            await c.aclose()
        await session.close()
        await w3.provider.disconnect()
