"""End to end over the real devnet (see conftest): a TON payment made by a signed WalletV4R2
transfer, built only from the API's payment instructions, is credited exactly once on the
settlement chain. The TON side is the devnet's local chain: the real TVM emulator executing the
real lock and wallet contracts, reached through an unmodified pytoniq LiteBalancer over ADNL
(trust_level 2: the local chain has no validator-signed proofs; see devnet/ton/localchain.py)."""

from __future__ import annotations

import asyncio
import base64

from pytoniq_core import Cell

from relayers.ton import wallet as tw

from tests.e2e.conftest import Devnet
from tests.e2e.test_devnet import assert_each_deposit_credited_once, balance, wait_state


async def test_ton_payment_with_the_api_instructions_is_credited_exactly_once(devnet: Devnet):
    assert devnet.info["chains"]["ton"]["family"] == "ton"
    account = devnet.info["accounts"]["ton"][0]
    assert len(account["mnemonic"].split()) == 24 and account["version"] == "v4r2"
    before = await balance(devnet, 1)
    beneficiary = devnet.info["accounts"]["settlement"][1]["address"]
    q = await devnet.call("POST", "/v1/quotes", {"token": "TON", "credits": "500"}, expect=201)
    p = await devnet.call("POST", "/v1/payments", {"quote_id": q["id"], "beneficiary": beneficiary}, expect=201)
    ins = p["instructions"]
    assert ins["chain"] == "ton" and ins["contract"] == devnet.info["chains"]["ton"]["contracts"]["lock"]
    assert ins["amount"] == q["amount"] and ins["link"].startswith(f"ton://transfer/{ins['contract']}?amount=")

    lb = await tw.connect(devnet.info["chains"]["ton"]["liteserver_config"], trust_level=2)
    try:
        wallet = await tw.open_wallet(lb, account["mnemonic"])
        await tw.transfer(wallet, ins["contract"], int(ins["amount"]), Cell.one_from_boc(base64.b64decode(ins["body"])))
        done = await wait_state(devnet, p["id"], "credited", timeout=120)
    finally:
        await lb.close_all()
    assert int(done["settlement"]["credits"]) == 500
    assert await balance(devnet, 1) - before == 500
    await asyncio.sleep(3)  # the committee keeps running; nothing is credited twice
    assert await balance(devnet, 1) - before == 500
    await assert_each_deposit_credited_once(devnet)


async def test_ton_overpayment_is_credited_and_the_excess_refunded_once(devnet: Devnet):
    """Paying 1 TON more than quoted: the quoted credits are credited, and the committee's
    signed release (t Ed25519 signatures, collected by the aggregator's refund worker) pays the
    excess back to the paying wallet from the lock -- once."""
    account = devnet.info["accounts"]["ton"][2]
    beneficiary = devnet.info["accounts"]["settlement"][2]["address"]
    excess = 10**9
    q = await devnet.call("POST", "/v1/quotes", {"token": "TON", "credits": "300"}, expect=201)
    p = await devnet.call("POST", "/v1/payments", {"quote_id": q["id"], "beneficiary": beneficiary}, expect=201)
    ins = p["instructions"]
    lb = await tw.connect(devnet.info["chains"]["ton"]["liteserver_config"], trust_level=2)
    try:
        wallet = await tw.open_wallet(lb, account["mnemonic"])
        await wallet.update()
        start = wallet.balance
        await tw.transfer(wallet, ins["contract"], int(ins["amount"]) + excess,
                          Cell.one_from_boc(base64.b64decode(ins["body"])))
        done = await wait_state(devnet, p["id"], "credited", timeout=120)
        assert int(done["settlement"]["credits"]) == 300
        assert int(done["refundable_amount"]) == excess
        fees = 5 * 10**7  # generous bound on the wallet's send and receive fees (0.05 TON)
        cost = int(ins["amount"])  # what the payment should cost in the end

        async def refunded() -> bool:
            await wallet.update()
            return start - wallet.balance < cost + fees

        await tw.wait_for(refunded, timeout=90)
        spent = start - wallet.balance
        assert cost < spent < cost + fees, spent  # the excess came back, not more
        await asyncio.sleep(5)  # the worker and the committee keep running: no second refund
        await wallet.update()
        assert start - wallet.balance == spent
    finally:
        await lb.close_all()
