"""End to end over the real devnet (see conftest): ETH payments become credits on the
settlement contract exactly once, while signer, aggregator and API processes are killed,
a signer is frozen, and a deposit is reorged out before finality."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp

from relayers.evm.wallet import credits_of, send_lock

from tests.e2e.conftest import CONFIRMATIONS, ROOT, Devnet

PRICE_CHECK_CREDITS = "500"


async def open_payment(net: Devnet, account: int, credits: str = PRICE_CHECK_CREDITS) -> dict:
    beneficiary = net.info["accounts"]["settlement"][account]["address"]
    q = await net.call("POST", "/v1/quotes", {"token": "ETH", "credits": credits}, expect=201)
    return await net.call("POST", "/v1/payments", {"quote_id": q["id"], "beneficiary": beneficiary}, expect=201)


async def pay(net: Devnet, payment: dict, account: int) -> str:
    ins = payment["instructions"]
    key = net.info["accounts"]["ethereum"][account]["private_key"]
    return await send_lock(net.info["chains"]["ethereum"]["rpc"], key, ins["contract"], ins["reference"],
                           int(ins["value"]))


async def wait_state(net: Devnet, pid: str, want: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    p = None
    while time.monotonic() < deadline:
        p = await net.call("GET", f"/v1/payments/{pid}")
        if p.get("state") == want:
            return p
        await asyncio.sleep(0.3)
    raise AssertionError(f"payment {pid} not {want} after {timeout}s: {p}")


async def balance(net: Devnet, account: int) -> int:
    st = net.info["chains"]["settlement"]
    return await credits_of(st["rpc"], st["contracts"]["credits"],
                            net.info["accounts"]["settlement"][account]["address"])


async def credited_events(net: Devnet) -> list[dict]:
    """Every Credited event of the ledger, straight from the settlement chain."""
    from relayers.evm.contracts import CREDITED_TOPIC

    topic = "0x" + bytes(CREDITED_TOPIC).hex()
    return await net.rpc("settlement", "eth_getLogs", {
        "address": net.info["chains"]["settlement"]["contracts"]["credits"], "fromBlock": "0x0",
        "toBlock": "latest", "topics": [topic]})


async def assert_each_deposit_credited_once(net: Devnet) -> None:
    events = await credited_events(net)
    ids = [(e["topics"][1], e["topics"][2]) for e in events]
    assert len(ids) == len(set(ids)), "a deposit was credited twice"


async def test_eth_payment_is_credited_exactly_once(devnet: Devnet):
    before = await balance(devnet, 0)
    p = await open_payment(devnet, 0)
    assert p["state"] == "new" and p["instructions"]["method"] == "lock(bytes32)"
    await pay(devnet, p, 0)
    done = await wait_state(devnet, p["id"], "credited")
    assert done["settlement"]["credits"] == "500" or int(done["settlement"]["credits"]) == 500
    assert done["settlement"]["tx_hash"].startswith("0x")
    assert await balance(devnet, 0) - before == 500
    # nothing more happens later: the aggregator keeps running but credits nothing twice
    await asyncio.sleep(3)
    assert await balance(devnet, 0) - before == 500
    await assert_each_deposit_credited_once(devnet)


async def test_restarting_relay_signer_and_api_mid_flight_loses_nothing(devnet: Devnet):
    before = [await balance(devnet, a) for a in (1, 2)]
    payments = [await open_payment(devnet, a) for a in (1, 2)]
    for a, p in zip((1, 2), payments):
        await pay(devnet, p, a)
    # crash them while the deposits wait for finality and attestations are in flight
    killed = {name: devnet.signal(name, signal.SIGKILL) for name in ("relay", "signer-1", "api")}
    for name, pid in killed.items():
        await devnet.wait_restarted(name, pid)
    for p in payments:
        await wait_state(devnet, p["id"], "credited", timeout=120)
    after = [await balance(devnet, a) for a in (1, 2)]
    assert [x - y for x, y in zip(after, before)] == [500, 500]
    await assert_each_deposit_credited_once(devnet)


async def test_one_signer_down_still_credits(devnet: Devnet):
    pid = devnet.signal("signer-3", signal.SIGSTOP)  # frozen: it answers nothing, like a hung node
    try:
        before = await balance(devnet, 3)
        p = await open_payment(devnet, 3)
        await pay(devnet, p, 3)
        await wait_state(devnet, p["id"], "credited", timeout=120)
        assert await balance(devnet, 3) - before == 500
    finally:
        import os

        os.kill(pid, signal.SIGCONT)


async def test_deposit_reorged_out_before_finality_is_never_credited(devnet: Devnet):
    before = await balance(devnet, 2)
    p = await open_payment(devnet, 2)
    txh = await pay(devnet, p, 2)
    receipt = await devnet.rpc("ethereum", "eth_getTransactionReceipt", txh)
    mined_at = int(receipt["blockNumber"], 16)
    head = int(await devnet.rpc("ethereum", "eth_blockNumber"), 16)
    depth = head - mined_at + 2
    assert depth < CONFIRMATIONS, "the chain moved too far before the reorg could be made"
    await devnet.rpc("ethereum", "anvil_reorg", depth, [])  # replace those blocks with empty ones
    assert await devnet.rpc("ethereum", "eth_getTransactionReceipt", txh) is None
    # wait well past the finality point of the replaced blocks
    target = mined_at + CONFIRMATIONS + 6
    while int(await devnet.rpc("ethereum", "eth_blockNumber"), 16) < target:
        await asyncio.sleep(0.3)
    await asyncio.sleep(3)
    got = await devnet.call("GET", f"/v1/payments/{p['id']}")
    assert got["state"] in ("new", "seen") and got["state"] != "credited"
    assert await balance(devnet, 2) == before
    for i in range(4):
        assert txh[2:] not in devnet.log(f"signer-{i}")
    # the same payment paid again afterwards is credited once
    await pay(devnet, p, 2)
    await wait_state(devnet, p["id"], "credited")
    assert await balance(devnet, 2) - before == 500
    await assert_each_deposit_credited_once(devnet)


async def test_simultaneous_payments_settle_in_shared_batches(devnet: Devnet):
    """Deposits that become final together are settled under one signature set (batch)."""
    accounts = [0, 1, 2, 3]
    before = {a: await balance(devnet, a) for a in accounts}
    payments = [await open_payment(devnet, a, credits="100") for a in accounts]
    key = lambda a: devnet.info["accounts"]["ethereum"][a]["private_key"]  # noqa: E731
    rpc = devnet.info["chains"]["ethereum"]["rpc"]
    # send all four before any is mined, so they land in the same block
    await asyncio.gather(*(send_lock(rpc, key(a), p["instructions"]["contract"], p["reference"],
                                     int(p["instructions"]["value"]), wait=False)
                           for a, p in zip(accounts, payments)))
    done = [await wait_state(devnet, p["id"], "credited") for p in payments]
    for a in accounts:
        assert await balance(devnet, a) - before[a] == 100
    txs = {d["settlement"]["tx_hash"] for d in done}
    assert len(txs) < len(payments), f"expected batching, got {len(txs)} settlement txs"
    await assert_each_deposit_credited_once(devnet)


async def test_deposit_with_unknown_reference_is_held_never_credited_then_refunded(devnet: Devnet):
    """A lock deposit naming a reference the gateway never issued: every signer keeps asking (a
    database failover must not lose a real payment), nothing is credited, and after the devnet's
    ``unknown_reference_refund_after_seconds`` (60 s) the whole deposit is refunded to its payer
    once, under the release id of purpose ``unattributed``, by the relay's refund worker."""
    from bridge.hashing import source_id
    from bridge.payments.refunds import release_id
    from relayers.evm.contracts import RELEASED_TOPIC

    events_before = len(await credited_events(devnet))
    account = devnet.info["accounts"]["ethereum"][0]
    eth = devnet.info["chains"]["ethereum"]
    lock = eth["contracts"]["lock"]
    stray = "0x" + "ab" * 32
    tx = await send_lock(eth["rpc"], account["private_key"], lock, stray, 10**15)
    receipt = await devnet.rpc("ethereum", "eth_getTransactionReceipt", tx)
    nonce = int([lg for lg in receipt["logs"] if lg["address"].lower() == lock.lower()][0]["topics"][1], 16)
    chain_id = int(await devnet.rpc("ethereum", "eth_chainId"), 16)
    rid = release_id(source_id("evm", chain_id, bytes.fromhex(lock[2:])), nonce, "unattributed")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all("unknown-reference" in devnet.log(f"signer-{i}") for i in range(4)):
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError("signers did not hold the stray deposit as an unknown reference")
    assert len(await credited_events(devnet)) == events_before
    deadline = time.monotonic() + 150
    released = []
    while time.monotonic() < deadline:
        released = await devnet.rpc("ethereum", "eth_getLogs", {
            "address": lock, "fromBlock": receipt["blockNumber"], "toBlock": "latest",
            "topics": ["0x" + bytes(RELEASED_TOPIC).hex(), "0x" + rid.hex()]})
        if released:
            break
        await asyncio.sleep(1)
    else:
        raise AssertionError("the stray deposit was not refunded as unattributed")
    assert len(released) == 1
    assert "0x" + released[0]["topics"][2][-40:] == account["address"].lower()
    assert int(released[0]["data"], 16) == 10**15
    assert len(await credited_events(devnet)) == events_before


async def test_earned_eth_is_swept_to_the_treasury(devnet: Devnet):
    """Issue 12: a credited payment's earned ETH reaches the devnet's treasury by a committee-signed
    sweep that the relay's refund worker submits; the treasury holds exactly what paid sweeps
    moved, and each sweep's amount is the sum of the deposits it covers (signer's audit trail)."""
    treasury = devnet.info["treasury"]
    assert set(treasury) >= {"ethereum"} and treasury["ethereum"].startswith("0x")
    p = await open_payment(devnet, 3, credits="100")
    await pay(devnet, p, 3)
    await wait_state(devnet, p["id"], "credited")
    node = devnet.info["committee"]["nodes"][0]["url"]
    deadline = time.monotonic() + 120
    view = None
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            async with s.get(node + "/v1/sweeps") as r:
                view = await r.json()
            paid = [w for w in view["sweeps"] if w["chain"] == "ethereum" and w["state"] == "paid"]
            covered = sum(int(d["earned"]) for w in paid for d in w["deposits"])
            if paid and covered >= int(p["amount"]):
                break
            await asyncio.sleep(1)
        else:
            raise AssertionError(f"no paid sweep covers the payment: {view}")
    for w in view["sweeps"]:
        assert w["to"] == treasury["ethereum"].lower()
        assert int(w["amount"]) == sum(int(d["earned"]) for d in w["deposits"])
    held = int(await devnet.rpc("ethereum", "eth_getBalance", treasury["ethereum"], "latest"), 16)
    assert held == sum(int(w["amount"]) for w in paid)
    assert len({w["release_id"] for w in view["sweeps"]}) == len(view["sweeps"])
    # the operator reads it with only the devnet's file (the default one of `make devnet`): the API's admin view,
    # as 3 of the 4 signers report it (they may differ for a moment while one catches up)
    deadline = time.monotonic() + 60
    while True:
        out = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "bridge.cli", "treasury", "status", "--json",
                              "--devnet", str(devnet.dir / "devnet.json")], env={**os.environ, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        eth = json.loads(out.stdout)["chains"]["ethereum"]
        if eth["quorum"] and eth["last_sweep"] and eth["last_sweep"]["tx"] and int(eth["swept"]) >= int(p["amount"]):
            break
        assert time.monotonic() < deadline, eth
        await asyncio.sleep(1)
    assert eth["treasury"] == treasury["ethereum"].lower() and eth["last_sweep"]["state"] == "paid"
    receipt = await devnet.rpc("ethereum", "eth_getTransactionReceipt", eth["last_sweep"]["tx"])
    assert receipt["to"].lower() == devnet.info["chains"]["ethereum"]["contracts"]["lock"].lower()


async def test_devnet_json_has_a_working_merchant_key(devnet: Devnet):
    """Every devnet writes a merchant API key (stored hashed) for dApp and webhook testing."""
    key = devnet.info["merchant_key"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as s:
        async with s.get(devnet.api + "/v1/webhooks") as r:
            assert r.status == 200, await r.text()
        async with s.get(devnet.api + "/v1/admin/status") as r:
            assert r.status == 403  # a merchant, not an operator
    assert devnet.info["api_replicas"] == [devnet.api]
