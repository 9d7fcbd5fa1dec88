"""Late deposits credited at a fresh quote, over a real HTTP server on 127.0.0.1: the signer
nodes' endpoint ``GET /v1/payments/by-reference/{ref}/late/{source}/{sequence}``, its signed and
stored decisions, the signers' client (``GatewayClient.late_terms``), and the API's payment
watcher turning a late deposit decided "credit" into a credited payment."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest

from bridge.chains import CreditRecord
from bridge.committee.gateway import GatewayClient
from bridge.errors import GatewayUnavailable
from bridge.payments import late as late_rule
from bridge.payments.state import CREDITED, EXPIRED, LATE
from bridge.payments.watcher import PaymentWatcher
from bridge.pricing.credits import amount_for_credits
from bridge.pricing.quotes import (
    late_terms_from_json,
    parse_rfc3339,
    quote_from_json,
    terms_to_json,
    verify_late_terms,
    verify_quote,
)
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.storage import late as late_repo
from bridge.storage import observations as obs_repo
from bridge.storage import payments as payments_repo
from bridge.types import Credit, Observation, quote_id_bytes
from tests.integration.api.test_api import Clock, Gateway, assert_problem
from tests.integration.api.test_api import start as api_start  # noqa: F401 - the gateway fixture

SOURCE = b"\x5a" * 32
PRICE = Decimal("3000")


class _Any:
    def __eq__(self, other) -> bool:
        return True


_ANY = _Any()


@dataclass
class LateGateway(Gateway):
    source: FixedPriceSource = None  # type: ignore[assignment]

    def set_price(self, price: Decimal | None) -> None:
        self.source._prices = {} if price is None else {"ETH": price}

    async def late(self, payment: dict, source: bytes = SOURCE, sequence: int = 0):
        return await self.get(f"/v1/payments/by-reference/{payment['reference']}/late/0x{source.hex()}/{sequence}")

    async def observe(self, payment: dict, amount: int | None = None, *, seconds_after_expiry: int = 60,
                      sequence: int = 0, reference: bytes | None = None, chain: str = "ethereum",
                      token: str = "ETH") -> Observation:
        """Store a final deposit in the API's own observations (what its watchers do)."""
        ts = int(parse_rfc3339(payment["expires_at"]).timestamp()) + seconds_after_expiry
        o = Observation(chain=chain, source=SOURCE, sequence=sequence, tx_id=uuid.uuid4().bytes * 2, event_index=0,
                        block_number=100 + sequence, block_hash=uuid.uuid4().bytes * 2, timestamp=ts, token=token,
                        amount=int(payment["amount"]) if amount is None else amount, payer=b"\x77" * 32,
                        reference=reference or bytes.fromhex(payment["reference"][2:]))
        async with self.db.begin() as s:
            assert await obs_repo.add_observations(s, [o]) == [o]
        return o


@pytest.fixture
async def start(api_start):
    """``await start(tolerance_bps=..., grace=...)``: test_api's gateway, with late crediting
    configured and a price that can move."""

    async def _start(tolerance_bps: int = 200, grace: int = 0, **api) -> LateGateway:
        source = FixedPriceSource({"ETH": PRICE})
        g = await api_start(source=source, payments={"late_tolerance_bps": tolerance_bps,
                                                     "late_grace_seconds": grace}, **api)
        return LateGateway(g.url, g.http, g.app, g.db, g.clock, g.signer, g.settings, source)

    return _start


@pytest.fixture
async def gw(start) -> LateGateway:
    return await start()


async def new_payment(gw: LateGateway, credits: int = 500) -> dict:
    return await gw.payment((await gw.quote(credits=str(credits)))["id"])


async def verified(gw: LateGateway, body: dict):
    _, key, _ = await gw.get("/v1/gateway")
    lt = late_terms_from_json(body)
    verify_late_terms(lt, key["public_key"])
    return lt


# --- the endpoint -----------------------------------------------------------------------------
async def test_not_seen_then_a_signed_decision_to_credit_that_stays(gw):
    p = await new_payment(gw)
    status, body, resp = await gw.late(p)
    assert_problem(status, body, resp, 404, "deposit-not-seen")

    o = await gw.observe(p)
    status, body, _ = await gw.late(p)
    assert status == 200, body
    lt = await verified(gw, body)
    assert lt.decision == "credit" and lt.reason == late_rule.CREDITED_AT_FRESH_QUOTE
    assert lt.credits == 500 and lt.counted == int(p["amount"]) and lt.refundable == 0
    assert (lt.payment_id, lt.reference, lt.source, lt.sequence) == (p["id"], o.reference, SOURCE, 0)
    assert (lt.amount, lt.block_time, lt.tolerance_bps) == (o.amount, o.timestamp, 200)
    assert lt.within_bounds(500)
    # the fresh quote is a real, stored, signed quote for the payment's credits
    status, fresh, _ = await gw.get(f"/v1/quotes/{lt.fresh_quote_id}")
    assert status == 200 and fresh["credits"] == "500" and int(fresh["amount"]) == lt.fresh_amount
    verify_quote(quote_from_json(fresh), gw.signer.public_key)
    assert fresh["id"] != p["quote_id"]

    # stored: the same decision for everyone, whenever they ask, even after the price moved
    gw.set_price(Decimal("9000"))
    for _ in range(2):
        assert await gw.late(p) == (200, body, _ANY)
    async with gw.db.begin() as s:
        assert await late_repo.get_late_decision(s, SOURCE, 0) == lt
        assert await late_repo.late_decisions_for_payment(s, p["id"]) == [lt]


async def test_price_moved_beyond_tolerance_holds(gw):
    p = await new_payment(gw)
    await gw.observe(p)
    gw.set_price(PRICE * Decimal("0.97"))  # 3 % cheaper token: the credits cost ~3.1 % more now
    status, body, _ = await gw.late(p)
    assert status == 200, body
    lt = await verified(gw, body)
    assert (lt.decision, lt.credits, lt.counted, lt.refundable) == ("hold", 0, 0, int(p["amount"]))
    assert lt.reason == late_rule.PRICE_MOVED
    assert lt.fresh_amount == amount_for_credits(500, Decimal("0.01"), PRICE * Decimal("0.97"), 18)
    assert (await gw.get(f"/v1/quotes/{lt.fresh_quote_id}"))[0] == 200  # auditable


async def test_price_fell_within_tolerance_credits_with_a_refundable_remainder(gw):
    p = await new_payment(gw)
    await gw.observe(p)
    gw.set_price(PRICE * Decimal("1.01"))  # the token rose 1 %: the same credits cost less
    status, body, _ = await gw.late(p)
    lt = await verified(gw, body)
    fresh = amount_for_credits(500, Decimal("0.01"), PRICE * Decimal("1.01"), 18)
    assert fresh < int(p["amount"])
    assert (lt.decision, lt.credits, lt.counted, lt.refundable) == ("credit", 500, fresh, int(p["amount"]) - fresh)


async def test_other_deposits_hold_without_a_fresh_quote(gw):
    p = await new_payment(gw)
    await gw.observe(p, 10, seconds_after_expiry=-60, sequence=0)  # an in-time part payment
    await gw.observe(p, sequence=1)
    status, body, _ = await gw.late(p, sequence=1)
    lt = await verified(gw, body)
    assert (lt.decision, lt.reason, lt.fresh_quote_id, lt.fresh_amount) == ("hold", late_rule.OTHER_DEPOSITS, "", None)
    assert body["fresh_amount"] == "" and body["fresh_quote_id"] == ""


async def test_disabled_by_default_and_prices_unavailable(start):
    off = await start(tolerance_bps=0)
    p = await new_payment(off)
    await off.observe(p)
    lt = await verified(off, (await off.late(p))[1])
    assert (lt.decision, lt.reason, lt.fresh_quote_id, lt.tolerance_bps) == ("hold", late_rule.DISABLED, "", 0)

    on = await start()
    p = await new_payment(on)
    await on.observe(p)
    on.set_price(None)
    status, body, _ = await on.late(p)
    assert status == 200, body
    lt = await verified(on, body)
    assert (lt.decision, lt.reason, lt.fresh_quote_id, lt.fresh_amount) == ("hold", "price unavailable", "", None)


async def test_not_late_unknown_and_malformed(start):
    gw = await start(grace=30)
    p = await new_payment(gw)
    await gw.observe(p, seconds_after_expiry=30, sequence=0)  # within the grace: in time
    status, body, resp = await gw.late(p, sequence=0)
    assert_problem(status, body, resp, 409, "conflict")
    other = await new_payment(gw)
    await gw.observe(other, seconds_after_expiry=3600, sequence=1)  # late, but for the other payment
    status, body, resp = await gw.late(p, sequence=1)
    assert_problem(status, body, resp, 409, "conflict")
    await gw.observe(p, seconds_after_expiry=3600, sequence=2, chain="ton", token="TON")  # invalid, not late
    status, body, resp = await gw.late(p, sequence=2)
    assert_problem(status, body, resp, 409, "conflict")
    status, body, resp = await gw.late(p, sequence=2**63)  # beyond what is ever stored
    assert_problem(status, body, resp, 404, "deposit-not-seen")

    status, body, resp = await gw.get(f"/v1/payments/by-reference/0x{'00' * 32}/late/0x{SOURCE.hex()}/0")
    assert_problem(status, body, resp, 404, "not-found")
    base = f"/v1/payments/by-reference/{p['reference']}/late"
    for bad in ("0x1234/0", f"{SOURCE.hex()}/0", f"0x{SOURCE.hex()}/-1", f"0x{SOURCE.hex()}/01",
                f"0x{SOURCE.hex()}/1.5", f"0x{SOURCE.hex()}/{2**64}", f"0x{SOURCE.hex()}/0%0A"):
        status, body, resp = await gw.get(f"{base}/{bad}")
        assert_problem(status, body, resp, 400, "invalid-input")
    status, body, resp = await gw.get(f"/v1/payments/by-reference/0x1234/late/0x{SOURCE.hex()}/0")
    assert_problem(status, body, resp, 400, "invalid-input")


async def test_concurrent_first_requests_get_one_decision(gw):
    p = await new_payment(gw)
    await gw.observe(p)
    answers = await asyncio.gather(*(gw.late(p) for _ in range(6)))
    assert {a[0] for a in answers} == {200}
    assert all(a[1] == answers[0][1] for a in answers)


async def test_not_rate_limited(start):
    gw = await start(rate_limit_per_minute=1, rate_limit_burst=2)
    p = await new_payment(gw)  # uses up the burst
    await gw.observe(p)
    assert (await gw.get("/v1/tokens"))[0] == 429
    for _ in range(5):  # signer nodes poll for late decisions: never limited
        assert (await gw.late(p))[0] == 200


# --- the signers' client ----------------------------------------------------------------------
async def test_gateway_client_late_terms(gw):
    p = await new_payment(gw)
    ref = bytes.fromhex(p["reference"][2:])
    client = GatewayClient(gw.url, gw.http)
    assert terms_to_json(await client.terms(ref)) == p["terms"]  # the terms, through the same helper
    assert await client.late_terms(ref, SOURCE, 0) is None  # not seen yet
    assert await client.late_terms(b"\x00" * 32, SOURCE, 0) is None  # no such payment
    await gw.observe(p)
    lt = await client.late_terms(ref, SOURCE, 0)
    verify_late_terms(lt, gw.signer.public_key)
    assert lt.decision == "credit" and lt.amount == int(p["amount"])
    assert await client.late_terms(ref, SOURCE, 0) == lt
    await gw.observe(p, seconds_after_expiry=-1, sequence=5)  # in time: the gateway says 409
    with pytest.raises(GatewayUnavailable):
        await client.late_terms(ref, SOURCE, 5)
    with pytest.raises(GatewayUnavailable):
        await GatewayClient("http://127.0.0.1:1", gw.http, timeout=2).late_terms(ref, SOURCE, 0)


# --- the API's payment watcher ----------------------------------------------------------------
async def test_watcher_expired_then_late_then_credited_at_the_fresh_quote(gw):
    p = await new_payment(gw)
    expires = parse_rfc3339(p["expires_at"])
    clock = Clock()
    clock.now = expires + timedelta(hours=1)
    watcher = PaymentWatcher(db=gw.db, watchers={}, settlement=None, settlement_chain="settlement", clock=clock)

    async def state() -> payments_repo.PaymentRecord:
        async with gw.db.begin() as s:
            return await payments_repo.get_payment(s, p["id"])

    assert await watcher.step() == 1 and (await state()).state == EXPIRED  # nothing paid in time
    await gw.observe(p)  # paid an hour late
    assert await watcher.step() == 0 and (await state()).state == EXPIRED  # undecided: expired, not watched
    lt = await verified(gw, (await gw.late(p))[1])  # a signer asks; the gateway decides "credit"
    assert lt.decision == "credit"
    assert await watcher.step() == 1
    rec = await state()
    assert rec.state == LATE and rec.refundable == 0 and rec.credited == 0
    # the payment (and so the checkout page) shows the decision while the credit is pending
    status, shown, _ = await gw.get(f"/v1/payments/{p['id']}")
    assert status == 200 and shown["state"] == "late"
    assert shown["late_deposits"] == [{"source": "0x" + SOURCE.hex(), "sequence": "0", "amount": p["amount"],
                                       "decision": "credit", "credits": "500", "refundable": "0",
                                       "reason": late_rule.CREDITED_AT_FRESH_QUOTE,
                                       "fresh_quote_id": lt.fresh_quote_id}]
    assert await watcher.step() == 0  # waiting for the credit
    # the committee credits the deposit under the fresh quote's id; the settlement follower stores it
    credit = Credit(SOURCE, 0, bytes.fromhex(p["beneficiary"][2:]), lt.credits, quote_id_bytes(lt.fresh_quote_id))
    async with gw.db.begin() as s:
        assert await payments_repo.record_credits(s, [CreditRecord(credit, b"\xee" * 32, 7)]) == 1
    assert await watcher.step() == 1
    rec = await state()
    assert rec.state == CREDITED and rec.credited == 500 and rec.settlement_tx == b"\xee" * 32
    assert await watcher.step() == 0  # final now: no longer looked at
    async with gw.db.begin() as s:
        assert await late_repo.payments_with_late_credits(s, ("expired", "late", "invalid")) == []


async def test_watcher_held_late_deposit_stays_late(start):
    gw = await start(tolerance_bps=0)
    p = await new_payment(gw)
    clock = Clock()
    clock.now = parse_rfc3339(p["expires_at"]) + timedelta(hours=1)
    watcher = PaymentWatcher(db=gw.db, watchers={}, settlement=None, settlement_chain="settlement", clock=clock)
    await gw.observe(p)
    assert (await gw.late(p))[1]["decision"] == "hold"
    assert await watcher.step() == 1
    async with gw.db.begin() as s:
        rec = await payments_repo.get_payment(s, p["id"])
    assert rec.state == LATE and rec.refundable == int(p["amount"])
    assert await watcher.step() == 0
    shown = (await gw.get(f"/v1/payments/{p['id']}"))[1]
    assert [(d["decision"], d["refundable"]) for d in shown["late_deposits"]] == [("hold", p["amount"])]
