"""The aggregator's refund worker and the EVM release submission on a real anvil, fed by a real
HTTP releases feed (the signers' ``GET /v1/releases`` format), against payers that are
contracts (tests/integration/evm/payers/Payers.sol, compiled with the project's solc):

* a payer whose ``receive()`` reverts makes ``CreditLock.release`` revert (``TransferFailed``;
  nothing marked used, the funds stay in the lock): the release is parked as failed at once
  (worker's ``failed``, log, ``creditbridge_relay_refunds_failed_total``), no transaction is
  sent and it is never retried;
* a payer burning more gas than the cap: parked without sending anything;
* a payer that accepts at estimate time and refuses in the block: one mined revert, then parked;
* the lock short of funds is transient: retried with backoff, not parked;
* a release mined and then dropped by a reorg below finality is sent again, and counts as done
  only once its transaction is final.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from prometheus_client import CollectorRegistry, Counter
from web3 import AsyncWeb3

from bridge.committee import digest as dg
from bridge.payments.refunds import RefundWorker, ReleasesClient, release_id
from devnet.evm.anvil import DEV_PRIVATE_KEYS
from relayers.evm.contracts import LOCK, send_transaction
from relayers.evm.release import EvmLockReleaser
from tests.integration.evm.helpers import evm_config

PAYERS = Path(__file__).parent / "payers"
THRESHOLD = 3
MIN_LOCK = 10**15
USER_KEY, GAS_KEY, OTHER_KEY = DEV_PRIVATE_KEYS[1], DEV_PRIVATE_KEYS[4], DEV_PRIVATE_KEYS[5]
GAS_ADDRESS = Account.from_key(GAS_KEY).address


@pytest.fixture(scope="module")
def payer_artifacts() -> dict:
    out = subprocess.run(["node", str(PAYERS / "compile.js")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest_asyncio.fixture(scope="module")
async def lock(deploy_contract, committee):
    return await deploy_contract(LOCK, [committee.checksum_addresses, THRESHOLD, MIN_LOCK])


@pytest_asyncio.fixture
async def fresh(anvil, lock):
    snap = await anvil.snapshot()
    try:
        yield
    finally:
        await anvil.revert(snap)


pytestmark = pytest.mark.usefixtures("fresh")


async def deploy_payer(w3: AsyncWeb3, artifacts: dict, name: str):
    a = artifacts[name]
    receipt = await send_transaction(w3, {"data": a["bytecode"]}, DEV_PRIVATE_KEYS[0])
    return w3.eth.contract(address=receipt["contractAddress"], abi=a["abi"])


class Feed:
    """A real HTTP server answering ``GET /v1/releases`` like a signer node."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        after, limit = int(request.query["after"]), int(request.query["limit"])
        return web.json_response({"releases": [i for i in self.items if i["id"] > after][:limit]})


@pytest_asyncio.fixture
async def feed():
    f = Feed()
    app = web.Application()
    app.router.add_get("/v1/releases", f.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    f.url = f"http://{host}:{port}"
    yield f
    await runner.cleanup()


@pytest_asyncio.fixture
async def setup(anvil, w3, lock, committee, feed):
    """``await setup(to, amount, gas_cap=...)`` -> (worker, releaser, release id, failed metric)."""
    made = []
    session = aiohttp.ClientSession()

    async def _setup(to: str, amount: int, *, gas_cap: int = 300_000, max_reverts: int = 3, seq: int = 1,
                     finality: str | int = 0):
        releaser = EvmLockReleaser(evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock.address,
                                              finality=finality), GAS_KEY, gas_cap=gas_cap)
        made.append(releaser)
        rid = release_id(b"\x07" * 32, seq, "excess")
        to_b = bytes.fromhex(to[2:])
        d = dg.release_digest(releaser.domain, to_b, amount, rid)
        for i, key in enumerate(committee.keys):
            feed.items.append({"id": len(feed.items) + 1, "chain": "ethereum", "release_id": "0x" + rid.hex(),
                               "to": "0x" + to_b.hex(), "amount": str(amount), "purpose": "excess",
                               "payment_id": f"payment-{seq}", "signer": "0x" + dg.address_of(key).hex(),
                               "signature": "0x" + dg.sign_digest(key, d).hex()})
        registry = CollectorRegistry()
        metric = Counter("creditbridge_relay_refunds_failed_total", "parked", ["chain"], registry=registry)
        worker = RefundWorker(signers=[ReleasesClient(feed.url, session)], releasers={"ethereum": releaser},
                              max_reverts=max_reverts, failed_metric=metric)
        return worker, releaser, rid, registry

    yield _setup
    for r in made:
        await r.aclose()
    await session.close()


async def fund_lock(w3, lock, value: int = 10**18) -> None:
    await send_transaction(w3, {"to": lock.address, "data": lock.encode_abi("lock", [keccak(b"ref")]),
                                "value": value}, USER_KEY)


def failed_count(registry) -> float:
    return registry.get_sample_value("creditbridge_relay_refunds_failed_total", {"chain": "ethereum"}) or 0.0


async def test_a_refund_to_a_refusing_contract_is_parked_as_failed(w3, lock, payer_artifacts, setup, caplog):
    await fund_lock(w3, lock)
    payer = await deploy_payer(w3, payer_artifacts, "RefusingPayer")
    worker, releaser, rid, registry = await setup(payer.address, 10**17)
    nonce = await w3.eth.get_transaction_count(GAS_ADDRESS)
    with caplog.at_level(logging.ERROR, logger="creditbridge.refunds"):
        assert await worker.step() == 0
    assert list(worker.failed) == [rid]
    f = worker.failed[rid]
    assert f["chain"] == "ethereum" and f["amount"] == str(10**17) and "TransferFailed" in f["reason"]
    assert failed_count(registry) == 1
    assert "parked as failed" in caplog.text and GAS_KEY[2:] not in caplog.text
    # never retried: later steps send nothing and re-reading the feed does not revive it
    worker._pending.clear()
    for c in worker._cursor:
        worker._cursor[c] = 0
    for _ in range(3):
        assert await worker.step() == 0
    assert worker._pending == {} and failed_count(registry) == 1
    assert await w3.eth.get_transaction_count(GAS_ADDRESS) == nonce  # no gas spent at all
    assert await w3.eth.get_balance(lock.address) == 10**18  # the funds stay in the lock


async def test_a_payer_burning_more_gas_than_the_cap_is_parked_without_sending(w3, lock, payer_artifacts, setup):
    await fund_lock(w3, lock)
    payer = await deploy_payer(w3, payer_artifacts, "GreedyPayer")
    worker, _, rid, registry = await setup(payer.address, 10**17, gas_cap=300_000)
    nonce = await w3.eth.get_transaction_count(GAS_ADDRESS)
    assert await worker.step() == 0
    assert "above the cap of 300000" in worker.failed[rid]["reason"] and failed_count(registry) == 1
    assert await w3.eth.get_transaction_count(GAS_ADDRESS) == nonce
    # a worker with a cap that covers it makes it (and a second one the feed now has too):
    # the cap is what refused it
    worker, _, rid, _ = await setup(payer.address, 10**17, gas_cap=3_000_000, seq=2)
    assert await worker.step() == 2 and worker.failed == {}
    assert await w3.eth.get_balance(payer.address) == 2 * 10**17


async def test_a_payer_refusing_in_the_block_costs_one_revert_then_is_parked(anvil, w3, lock, payer_artifacts, setup):
    import asyncio

    await fund_lock(w3, lock)
    payer = await deploy_payer(w3, payer_artifacts, "MoodyPayer")
    worker, releaser, rid, registry = await setup(payer.address, 10**17)
    nonce = await w3.eth.get_transaction_count(GAS_ADDRESS)
    await anvil.rpc("evm_setAutomine", False)
    try:
        step = asyncio.create_task(worker.step())
        while int(await anvil.rpc("eth_getTransactionCount", GAS_ADDRESS, "pending"), 16) == nonce:
            assert not step.done(), step.result()
            await asyncio.sleep(0.02)
        # the payer changes its mind in the same block, ahead of the release (higher tip)
        base = (await w3.eth.get_block("latest"))["baseFeePerGas"]
        signed = Account.from_key(OTHER_KEY).sign_transaction({
            "to": payer.address, "data": payer.encode_abi("setRefuse", [True]), "gas": 100_000,
            "maxPriorityFeePerGas": 10**10, "maxFeePerGas": 2 * base + 10**10, "chainId": anvil.chain_id,
            "nonce": await w3.eth.get_transaction_count(Account.from_key(OTHER_KEY).address, "pending")})
        await w3.eth.send_raw_transaction(signed.raw_transaction)
        await anvil.rpc("evm_mine")
        assert await asyncio.wait_for(step, 30) == 0
    finally:
        await anvil.rpc("evm_setAutomine", True)
    assert await w3.eth.get_transaction_count(GAS_ADDRESS) == nonce + 1  # one transaction, reverted
    reason = worker.failed[rid]["reason"]
    assert "TransferFailed" in reason and "reverted" in reason and failed_count(registry) == 1
    assert await worker.step() == 0
    assert await w3.eth.get_transaction_count(GAS_ADDRESS) == nonce + 1


async def test_a_lock_short_of_funds_is_retried_not_parked(w3, lock, setup):
    await fund_lock(w3, lock, MIN_LOCK)
    to = "0x" + "c0" * 20
    worker, _, rid, registry = await setup(to, 10**17)  # more than the lock holds
    assert await worker.step() == 0
    assert worker.failed == {} and failed_count(registry) == 0
    (pending,) = worker._pending.values()
    assert pending.failures == 1 and pending.retry_at > 0  # backoff, as any transient error
    await fund_lock(w3, lock)
    pending.retry_at = 0  # the pause is over
    assert await worker.step() == 1
    assert await w3.eth.get_balance(to_checksum_address(to)) == 10**17


async def test_a_release_dropped_by_a_reorg_is_sent_again_and_done_only_when_final(anvil, w3, lock, setup,
                                                                                   caplog):
    await fund_lock(w3, lock)
    to = "0x" + "d1" * 20
    worker, releaser, rid, _ = await setup(to, 10**17, finality=3)  # final 3 blocks below the head
    nonce = await w3.eth.get_transaction_count(GAS_ADDRESS)
    assert await worker.step() == 0  # sent and mined, not final yet
    (pending,) = worker._pending.values()
    first = pending.tx
    assert first and (await w3.eth.get_transaction_receipt(first))["status"] == 1
    assert await w3.eth.get_balance(to_checksum_address(to)) == 10**17
    assert await worker.step() == 0  # still not final: nothing sent again
    assert await w3.eth.get_transaction_count(GAS_ADDRESS) == nonce + 1

    await anvil.rpc("anvil_reorg", 1, [])  # the release's block is replaced by an empty one
    assert await w3.eth.get_balance(to_checksum_address(to)) == 0
    assert await worker.step() == 0  # gone, but its height is not final yet: wait
    assert pending.tx == first
    await anvil.mine(3)
    with caplog.at_level(logging.INFO, logger="creditbridge.refunds"):
        assert await worker.step() == 0  # the replaced block is final now: provably dropped, sent again
        assert f"release tx 0x{first.hex()} was dropped (reorg?); sending again" in caplog.text
        second = pending.tx
        assert second and second != first and pending.sends == 2
        assert await worker.step() == 0  # the second one is not final yet
        await anvil.mine(3)
        assert await worker.step() == 1
    assert "final" in caplog.records[-1].getMessage() and second.hex() in caplog.records[-1].getMessage()
    assert worker._pending == {} and worker.submitted == [(rid, second)] and worker.failed == {}
    assert await worker.step() == 0
    # exactly one canonical Released for the id, and the payer was paid once
    logs = await w3.eth.get_logs({"address": lock.address, "fromBlock": 0, "toBlock": "latest",
                                  "topics": [keccak(text="Released(bytes32,address,uint256)"), "0x" + rid.hex()]})
    assert len(logs) == 1 and bytes(logs[0]["transactionHash"]) == second
    assert await w3.eth.get_balance(to_checksum_address(to)) == 10**17
    assert GAS_KEY[2:] not in caplog.text
