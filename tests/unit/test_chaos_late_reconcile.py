"""The chaos harness's reconciliation of late deposits (bench/chaos.py). A deposit made after its
payment's expiry + grace is decided by the gateway: credited at a fresh quote, or held and its
held part refunded under the "late" purpose. The harness reads those decisions from the API
(``learn_late``); here they are given, and the pure reconciliation is checked: a held late
deposit is not "lost", a late credit is checked against the fresh quote's credits (not the
original quote's), and the refunds and custody debts expected follow the decision."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from chaos import Harness, Payment  # noqa: E402

from bridge.payments.refunds import release_id  # noqa: E402

SOURCE = "0x" + "ab" * 32


def harness() -> Harness:
    h = Harness(SimpleNamespace(seed=1, api_replicas=1))
    h.info = {"chains": {"ton": {"lock_min_release": 50_000_000}}}
    h.api_cfg = {"tokens": []}
    h.source_of = lambda chain: bytes.fromhex(SOURCE[2:])
    return h


def payment(ref: str, amount: int, credits: int) -> Payment:
    return Payment(id="pay_" + ref[-4:], reference=ref, payer=0, token="TON", beneficiary="0x" + "11" * 20,
                   quote_amount=amount, quote_credits=credits, value=amount)


def credited(seq: int, credits: int) -> dict:
    return {"topics": ["0x", SOURCE, hex(seq), "0x" + "00" * 12 + "11" * 20],
            "data": "0x" + credits.to_bytes(32, "big").hex()}


def test_late_deposits_are_reconciled_by_the_gateways_decision():
    h = harness()
    held_ref, fresh_ref, lost_ref = ("0x" + c * 64 for c in "123")
    for ref in (held_ref, fresh_ref, lost_ref):
        h.payments[ref] = payment(ref, 2_000_000_000, 500)
    deposits = [{"source": SOURCE, "sequence": 1, "reference": held_ref, "amount": 2_000_000_000, "token": "TON"},
                {"source": SOURCE, "sequence": 2, "reference": fresh_ref, "amount": 2_100_000_000, "token": "TON"},
                {"source": SOURCE, "sequence": 3, "reference": lost_ref, "amount": 2_000_000_000, "token": "TON"}]
    # seq 1: held whole (price moved); seq 2: credited 490 at a fresh quote, 0.1 TON of it held
    h.late[(SOURCE, 1)] = {"decision": "hold", "amount": 2_000_000_000, "credits": 0,
                           "refundable": 2_000_000_000, "reason": "price moved beyond tolerance"}
    h.late[(SOURCE, 2)] = {"decision": "credit", "amount": 2_100_000_000, "credits": 490,
                           "refundable": 100_000_000, "reason": "credited at a fresh quote"}
    chain_credits = [credited(2, 490)]
    r = h.reconcile(deposits, chain_credits)
    assert [x["sequence"] for x in r["lost"]] == [3]  # only the deposit nothing explains
    assert [x["sequence"] for x in r["late"]["held"]] == [1]
    assert r["late"]["credited_at_fresh_quote"] == 1 and r["mispriced"] == []
    # the original quote's credits for seq 2 would be 500: a late credit is held to the fresh one
    assert h.reconcile(deposits, [credited(2, 500)])["mispriced"][0]["want"] == 490
    # the refunds due: the held deposit whole and the late credit's held part, both "late"
    src = bytes.fromhex(SOURCE[2:])
    refunds = h.expected_refunds(deposits)
    assert {rid: e["amount"] for rid, e in refunds.items()} == {
        release_id(src, 1, "late"): 2_000_000_000, release_id(src, 2, "late"): 100_000_000}
    # the custody: earned is what the fresh quote counted; owed shrinks as the late refunds are paid
    earned, owed = h.earned_owed(deposits, chain_credits, "ton", set(), "TON")
    assert earned == 2_000_000_000
    assert owed == 2_000_000_000 + 2_100_000_000 + 2_000_000_000
    _, owed_after = h.earned_owed(deposits, chain_credits, "ton", set(refunds), "TON")
    assert owed_after == owed - 2_100_000_000
