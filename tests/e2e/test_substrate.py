"""DOT and KSM payments end to end over the real devnet (see conftest): two chopsticks chains
running the real Asset Hub runtime, paid by signed ``Utility.batch_all`` extrinsics exactly as
the API's instructions say, credited once on the settlement contract by the 4-signer
committee (threshold 3). Bad payments -- no remark, another destination, a failed extrinsic
-- are never credited (the one without a remark, sent to the committee account, is refunded to
its sender after the signers' delay: issue 14); an underpayment is credited pro-rata
(``pricing.credits.credits_for_deposit``)."""

from __future__ import annotations

import asyncio
import time

from bridge.config import SubstrateCommittee
from bridge.pricing.credits import credits_for_deposit
from relayers.substrate.multisig import committee_address
from relayers.substrate.wallet import Receipt, connect, payment_call, submit
from tests.e2e.conftest import Devnet
from tests.e2e.test_devnet import assert_each_deposit_credited_once, balance

CHAINS = {"DOT": "polkadot", "KSM": "kusama"}


async def open_payment(net: Devnet, token: str, account: int, credits: str = "500") -> dict:
    beneficiary = net.info["accounts"]["settlement"][account]["address"]
    q = await net.call("POST", "/v1/quotes", {"token": token, "credits": credits}, expect=201)
    return await net.call("POST", "/v1/payments", {"quote_id": q["id"], "beneficiary": beneficiary}, expect=201)


async def pay(net: Devnet, payment: dict, seed: str, *, amount: int | None = None, remark: bool = True,
              to: str | None = None) -> Receipt:
    """Sign and submit the payment as the instructions say (or deliberately not)."""
    ins = payment["instructions"]
    chain = net.info["chains"][ins["chain"]]

    def job() -> Receipt:
        si = connect(chain["rpc"], chain["ss58_prefix"])
        try:
            call = payment_call(si, to or ins["to"], int(ins["amount"]) if amount is None else amount,
                                bytes.fromhex(ins["remark"][2:]) if remark else None)
            return submit(si, seed, call)
        finally:
            si.close()

    return await asyncio.to_thread(job)


async def wait_for(predicate, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await predicate()
        if got:
            return got
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


async def state_is(net: Devnet, pid: str, want: str):
    p = await net.call("GET", f"/v1/payments/{pid}")
    return p if p.get("state") == want else None


async def test_devnet_json_describes_both_asset_hub_chains(devnet: Devnet):
    info = devnet.info
    members = ["0x" + k for k in info["committee"]["ed25519_public_keys"]]
    committee = SubstrateCommittee(members=members, threshold=info["committee"]["threshold"])
    for token, name in CHAINS.items():
        chain = info["chains"][name]
        prefix = {"DOT": 0, "KSM": 2}[token]
        assert {k: chain[k] for k in ("family", "ss58_prefix", "token")} == {
            "family": "substrate", "ss58_prefix": prefix, "token": token}
        assert chain["rpc"].startswith("ws://127.0.0.1:")
        assert chain["committee_account"] == committee_address(committee, prefix)
        accounts = info["accounts"][name]
        assert [a["seed"] for a in accounts] == ["//Alice", "//Bob", "//Charlie", "//Dave"]
        assert all(a["address"] for a in accounts)


async def test_dot_payment_is_credited_exactly_once(devnet: Devnet):
    before = await balance(devnet, 0)
    p = await open_payment(devnet, "DOT", 0)
    ins = p["instructions"]
    assert set(ins) == {"chain", "to", "amount", "remark", "transfer", "uri"} and ins["chain"] == "polkadot"
    assert ins["to"] == devnet.info["chains"]["polkadot"]["committee_account"]
    # issue 14: the plain transfer goes to the payment's own account, not the committee's
    assert ins["transfer"]["to"] == ins["uri"] != ins["to"] and ins["transfer"]["amount"] == ins["amount"]
    assert ins["remark"] == p["reference"]
    r = await pay(devnet, p, "//Alice")
    assert r.success
    done = await wait_for(lambda: state_is(devnet, p["id"], "credited"), "DOT payment credited")
    assert int(done["settlement"]["credits"]) == 500
    assert await balance(devnet, 0) - before == 500
    await asyncio.sleep(3)  # the aggregator keeps running: still nothing more
    assert await balance(devnet, 0) - before == 500
    await assert_each_deposit_credited_once(devnet)


async def test_a_plain_dot_transfer_to_the_payment_account_is_credited_once(devnet: Devnet):
    """Issue 14: a lone ``transfer_keep_alive`` to ``instructions.transfer.to`` (what Nova, Talisman
    or an exchange sends) is collected by the signers' multisig into the committee account and
    credited once; nothing stays at the payment account."""
    before = await balance(devnet, 0)
    p = await open_payment(devnet, "DOT", 0, credits="300")
    t = p["instructions"]["transfer"]
    chain = devnet.info["chains"]["polkadot"]

    def job() -> Receipt:
        si = connect(chain["rpc"], chain["ss58_prefix"])
        try:
            call = si.compose_call("Balances", "transfer_keep_alive", {"dest": t["to"], "value": int(t["amount"])})
            return submit(si, "//Alice", call)
        finally:
            si.close()

    assert (await asyncio.to_thread(job)).success
    done = await wait_for(lambda: state_is(devnet, p["id"], "credited"), "plain DOT transfer credited", timeout=180)
    assert int(done["settlement"]["credits"]) == 300
    assert await balance(devnet, 0) - before == 300

    def left() -> int:
        si = connect(chain["rpc"], chain["ss58_prefix"])
        try:
            return int(si.query("System", "Account", [t["to"]]).value["data"]["free"])
        finally:
            si.close()

    assert await asyncio.to_thread(left) == 0  # collected whole (transfer_all): nothing stuck
    await asyncio.sleep(3)
    assert await balance(devnet, 0) - before == 300
    await assert_each_deposit_credited_once(devnet)


async def test_ksm_payment_is_credited(devnet: Devnet):
    before = await balance(devnet, 1)
    p = await open_payment(devnet, "KSM", 1, credits="300")
    assert p["instructions"]["chain"] == "kusama"
    assert (await pay(devnet, p, "//Bob")).success
    await wait_for(lambda: state_is(devnet, p["id"], "credited"), "KSM payment credited")
    assert await balance(devnet, 1) - before == 300


async def test_bad_payments_are_never_credited_and_an_underpayment_is_prorated(devnet: Devnet):
    before = {a: await balance(devnet, a) for a in (2, 3)}
    no_remark = await open_payment(devnet, "DOT", 2)
    elsewhere = await open_payment(devnet, "DOT", 2)
    failed = await open_payment(devnet, "DOT", 2)
    under = await open_payment(devnet, "DOT", 3)
    assert (await pay(devnet, no_remark, "//Charlie", remark=False)).success
    dave = devnet.info["accounts"]["polkadot"][3]["address"]
    assert (await pay(devnet, elsewhere, "//Charlie", to=dave)).success
    r = await pay(devnet, failed, "//Charlie", amount=10**30)  # more than Charlie has
    assert not r.success, r
    paid = int(under["instructions"]["amount"]) // 3
    assert (await pay(devnet, under, "//Dave", amount=paid)).success
    want = credits_for_deposit(paid, int(under["amount"]), int(under["credits"]))
    assert 0 < want < 500

    async def prorated():
        return await balance(devnet, 3) - before[3] == want

    await wait_for(prorated, "the underpayment credited pro-rata")
    # issue 14: the transfer to the committee account without a remark names no payment: it is
    # held and refunded whole to Charlie once the signers' delay (60 s on the devnet) has passed
    charlie = devnet.info["accounts"]["polkadot"][2]["address"]
    chain = devnet.info["chains"]["polkadot"]

    def free_charlie() -> int:
        si = connect(chain["rpc"], chain["ss58_prefix"])
        try:
            return int(si.query("System", "Account", [charlie]).value["data"]["free"])
        finally:
            si.close()

    after_paying = await asyncio.to_thread(free_charlie)

    async def unattributed_refunded():
        return await asyncio.to_thread(free_charlie) == after_paying + int(no_remark["amount"])

    await wait_for(unattributed_refunded, "the no-remark transfer refunded to its sender", timeout=180)
    # a good payment made after the bad ones: once it is credited, every watcher has passed them
    good = await open_payment(devnet, "DOT", 0)
    assert (await pay(devnet, good, "//Alice")).success
    await wait_for(lambda: state_is(devnet, good["id"], "credited"), "good payment credited")
    for p in (no_remark, elsewhere, failed):
        assert (await devnet.call("GET", f"/v1/payments/{p['id']}"))["state"] == "new"
    assert await balance(devnet, 2) == before[2]
    u = await devnet.call("GET", f"/v1/payments/{under['id']}")
    assert int(u["paid_amount"]) == paid
    assert await balance(devnet, 3) - before[3] == want
    await assert_each_deposit_credited_once(devnet)


async def test_dot_overpayment_excess_is_refunded_once_by_the_committee_multisig(devnet: Devnet):
    """Paying 2 DOT-units more than quoted: the quoted credits are credited, and the excess goes
    back to the payer from the committee's multisig account: each signer node approves the
    refund call on chain with its own Ed25519 key (``relayers/substrate/refund.py``); the
    t-th approval executes it. The payer's balance ends exactly at quote + its fee, and stays
    there (no second refund)."""
    chain = devnet.info["chains"]["polkadot"]
    seed = "//Bob"  # pays nothing else on polkadot in this module
    address = devnet.info["accounts"]["polkadot"][1]["address"]

    def free() -> int:
        si = connect(chain["rpc"], chain["ss58_prefix"])
        try:
            return int(si.query("System", "Account", [address]).value["data"]["free"])
        finally:
            si.close()

    p = await open_payment(devnet, "DOT", 1, credits="200")
    amount, excess = int(p["instructions"]["amount"]), 2 * 10**10
    start = await asyncio.to_thread(free)
    r = await pay(devnet, p, seed, amount=amount + excess)
    assert r.success
    # read right after inclusion: the refund needs the committee's approvals in later blocks
    # (one block per 12 s slot), so this is the balance with the payment and its fee paid
    fee = start - await asyncio.to_thread(free) - amount - excess
    assert fee > 0
    done = await wait_for(lambda: state_is(devnet, p["id"], "credited"), "credit")
    assert int(done["settlement"]["credits"]) == 200 and int(done["refundable_amount"]) == excess

    async def refunded():
        return await asyncio.to_thread(free) == start - amount - fee

    await wait_for(refunded, "the refund of the excess", timeout=180)
    await asyncio.sleep(15)  # at least one more 12 s block: nothing is refunded twice
    assert await asyncio.to_thread(free) == start - amount - fee

    async def every_node_done():  # each node's own view (GET /v1/refunds): its part is done
        import aiohttp

        async with aiohttp.ClientSession() as s:
            for node in devnet.info["committee"]["nodes"]:
                async with s.get(node["url"] + "/v1/refunds") as r:
                    view = await r.json()
                # this refund, and the unattributed one of the bad-payments test (issue 14)
                chain_view = view["by_chain"].get("polkadot") or {}
                if set(chain_view) != {"done"} or chain_view["done"] < 1 or view["failed"]:
                    return False
        return True

    await wait_for(every_node_done, "every signer seeing its refund done", timeout=60)
