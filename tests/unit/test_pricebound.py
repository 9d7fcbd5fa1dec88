"""The signers' own price bound (bridge/committee/pricebound.py): exact maths, the reference
time, the decision it turns an out-of-bound deposit into, the band over the signer's own
sources, and the signer config that must choose a bound for every token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bridge.committee.http import SignerMetrics
from bridge.committee.pricebound import CAP, RATE, PriceBound, Reference, SourcesBand, check, reference_time
from bridge.config import settings_from_dict
from bridge.errors import ConfigError, PriceUnavailable
from bridge.payments import rules
from bridge.pricing.aggregate import PriceAggregator
from bridge.pricing.credits import amount_for_credits, credits_for_amount
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.types import Observation, PaymentTerms

CP = Decimal("0.01")
ETH = 18


def ref(price: str, tol: str = "0.03") -> Reference:
    return Reference(Fraction(Decimal(price)), Fraction(Decimal(tol)), "test")


# --- the maths -----------------------------------------------------------------------------------
def test_absurd_terms_are_out_of_bound():
    v = check(rate_credits=2**127, rate_amount=10**13, deposit_credits=2**127, decimals=ETH, credit_price_usd=CP,
              reference=ref("3000"), max_deposit_usd=Decimal("1000000"))
    assert not v.ok and v.reason == RATE
    assert v.paid_usd == Fraction(3, 100)  # 1e13 wei at $3000
    assert "allowed" in v.describe()


def test_ten_times_overpriced_is_out_and_honest_is_in():
    amount = amount_for_credits(500, CP, Decimal("3000"), ETH)  # $5 of ETH
    honest = check(rate_credits=500, rate_amount=amount, deposit_credits=500, decimals=ETH, credit_price_usd=CP,
                   reference=ref("3000"), max_deposit_usd=Decimal("100"))
    assert honest.ok and honest.reason == ""
    tenx = check(rate_credits=5000, rate_amount=amount, deposit_credits=5000, decimals=ETH, credit_price_usd=CP,
                 reference=ref("3000"), max_deposit_usd=Decimal("100"))
    assert not tenx.ok and tenx.reason == RATE


def test_tolerance_edge_is_exact():
    # 1 ETH at $3000 with 3% tolerance allows exactly $3090 = 309000 credits, not one more
    kw = dict(rate_amount=10**18, decimals=ETH, credit_price_usd=CP, reference=ref("3000"),
              max_deposit_usd=Decimal("1e9"))
    assert check(rate_credits=309_000, deposit_credits=309_000, **kw).ok
    assert not check(rate_credits=309_001, deposit_credits=309_001, **kw).ok


def test_the_cap_bounds_one_deposit():
    amount = 10**18
    kw = dict(rate_credits=300_000, rate_amount=amount, decimals=ETH, credit_price_usd=CP, reference=ref("3000"))
    assert check(deposit_credits=300_000, max_deposit_usd=Decimal("3000"), **kw).ok
    v = check(deposit_credits=300_000, max_deposit_usd=Decimal("2999.99"), **kw)
    assert not v.ok and v.reason == CAP


@settings(max_examples=300, deadline=None)
@given(price=st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=4),
       amount=st.integers(min_value=10**9, max_value=10**24), spread=st.sampled_from([0, 1, 2, 5]))
def test_every_honest_quote_is_within_the_bound_at_its_own_price(price, amount, spread):
    """A quote made by the API's own maths at the reference price is never refused, with any
    credit spread, and zero tolerance; 1% more credits than the value is refused."""
    cp = CP * (1 + Decimal(spread) / 100)
    credits = credits_for_amount(amount, cp, price, ETH)
    r = Reference(Fraction(price), Fraction(0), "t")
    assert check(rate_credits=credits, rate_amount=amount, deposit_credits=credits, decimals=ETH,
                 credit_price_usd=cp, reference=r, max_deposit_usd=Decimal("1e30")).ok
    more = credits + credits // 100 + 1
    assert not check(rate_credits=more, rate_amount=amount, deposit_credits=more, decimals=ETH,
                     credit_price_usd=cp, reference=r, max_deposit_usd=Decimal("1e30")).ok


def test_reference_time_is_the_issue_time_capped_by_the_block():
    assert reference_time(expires_at=1900, quote_ttl_seconds=900, block_time=1500, late=False) == 1000
    # a forged future expiry cannot select a price after the deposit
    assert reference_time(expires_at=10**9, quote_ttl_seconds=900, block_time=1500, late=False) == 1500
    assert reference_time(expires_at=1900, quote_ttl_seconds=900, block_time=5000, late=True) == 5000


# --- the signer's use of it --------------------------------------------------------------------
class Fixed:
    def __init__(self, price: str, tol: str = "0.03") -> None:
        self.r = ref(price, tol)
        self.asked: list[tuple[str, int]] = []

    async def reference(self, token: str, at: int) -> Reference:
        self.asked.append((token, at))
        return self.r


class Down:
    async def reference(self, token: str, at: int) -> Reference:
        raise PriceUnavailable("feed down", retryable=False)


def obs(amount: int, ts: int = 10_000) -> Observation:
    return Observation(chain="ethereum", source=b"\x01" * 32, sequence=7, tx_id=b"\x02" * 32, event_index=0,
                       block_number=5, block_hash=b"\x03" * 32, timestamp=ts, token="ETH", amount=amount,
                       payer=b"\x00" * 12 + b"\x04" * 20, reference=b"\x05" * 32)


def terms(amount: int, credits: int, expires: int = 10_500) -> PaymentTerms:
    return PaymentTerms("p1", b"\x05" * 32, b"\x06" * 20, "q", "ethereum", "ETH", amount, credits,
                        datetime.fromtimestamp(expires, UTC))


def bound(source, **kw) -> PriceBound:
    return PriceBound(references={"ETH": source}, credit_price_usd=CP, max_deposit_usd=Decimal("100000"),
                      quote_ttl_seconds=900, **kw)


async def test_out_of_bound_turns_into_an_unpriced_refund_of_the_whole_deposit():
    registry = CollectorRegistry()
    metrics = SignerMetrics(registry)
    src = Fixed("3000")
    b = bound(src, metrics=metrics)
    d = obs(10**13 + 5)
    absurd = rules.Decision(rules.CREDIT, 2**127, 10**13, 5)
    got = await b.apply(d, terms(10**13, 2**127), absurd)
    assert got == rules.Decision(rules.UNPRICED, 0, 0, d.amount)
    assert got.refund_purpose == "unpriced"
    assert src.asked == [("ETH", 10_500 - 900)]  # the quote's issue time
    assert registry.get_sample_value("creditbridge_signer_price_bound_violations_total",
                                     {"chain": "ethereum", "token": "ETH"}) == 1
    fine = rules.Decision(rules.CREDIT, 3, 10**13, 5)  # $0.03 of ETH buys 3 credits
    assert await b.apply(d, terms(10**13, 3), fine) is fine
    nothing = rules.Decision(rules.EXCESS, 0, 0, d.amount)
    assert await b.apply(d, terms(10**13, 2**127), nothing) is nothing  # nothing minted: nothing to bound


async def test_a_late_deposit_is_bounded_by_its_own_rate_at_its_block_time():
    src = Fixed("3000")
    b = bound(src)
    d = obs(10**16, ts=50_000)
    late_ok = rules.Decision(rules.LATE, 3000, 10**16, 0)
    assert await b.apply(d, terms(10**13, 2**127), late_ok) is late_ok  # the stale terms' rate is not used
    late_bad = rules.Decision(rules.LATE, 30_000, 10**16, 0)
    assert (await b.apply(d, terms(10**16, 3000), late_bad)).outcome == rules.UNPRICED
    assert src.asked == [("ETH", 50_000), ("ETH", 50_000)]


async def test_cannot_tell_is_retryable_and_unbounded_tokens_pass():
    with pytest.raises(PriceUnavailable) as e:
        await bound(Down()).apply(obs(10**13), terms(10**13, 3), rules.Decision(rules.CREDIT, 3, 10**13, 0))
    assert e.value.retryable  # the deposit waits; the signer loop is never stopped by it
    free = PriceBound(references={}, credit_price_usd=CP, max_deposit_usd=Decimal(1), quote_ttl_seconds=900,
                      unbounded=frozenset({"ETH"}))
    d = rules.Decision(rules.CREDIT, 2**127, 10**13, 0)
    assert await free.apply(obs(10**13), terms(10**13, 2**127), d) is d
    missing = PriceBound(references={}, credit_price_usd=CP, max_deposit_usd=Decimal(1), quote_ttl_seconds=900)
    with pytest.raises(PriceUnavailable):
        await missing.apply(obs(10**13), terms(10**13, 2**127), d)


async def test_band_over_own_sources():
    agg = PriceAggregator([FixedPriceSource({"DOT": Decimal("5")})], min_sources=1, max_deviation=Decimal(0),
                          max_age=timedelta(days=1), registry=CollectorRegistry(), symbols={"DOT"})
    band = SourcesBand(agg, Decimal("0.25"))
    r = await band.reference("DOT", 0)
    assert r.price == 5 and r.tolerance == Fraction(1, 4) and "fixed" in r.basis
    with pytest.raises(PriceUnavailable):
        await band.reference("KSM", 0)


# --- config -------------------------------------------------------------------------------------------
def signer_settings(price_bound) -> dict:
    signer = {"name": "s0", "key": {"keystore": "/k.json", "password_env": "PW"}, "gateway_url": "http://x",
              "gateway_public_key": "ab" * 32}
    if price_bound is not None:
        signer["price_bound"] = price_bound
    return {"chains": [
        {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
         "contracts": {"lock": "0x" + "11" * 20}},
        {"family": "evm", "name": "settlement", "chain_id": 2, "rpc": ["http://127.0.0.1:1"],
         "contracts": {"credits": "0x" + "22" * 20}}],
        "settlement_chain": "settlement", "signer": signer, "pricing": {"fixed_usd": {"ETH": "3000"}}}


FEED = {"kind": "chainlink", "chain": "ethereum", "address": "0x" + "33" * 20, "heartbeat_seconds": 3600}


def test_config_requires_a_bound_for_every_token():
    with pytest.raises(ConfigError, match="signer.price_bound is required"):
        settings_from_dict(signer_settings(None))
    with pytest.raises(ConfigError, match="ETH neither bounded"):
        settings_from_dict(signer_settings({"max_deposit_usd": "1000"}))
    s = settings_from_dict(signer_settings({"max_deposit_usd": "1000", "tokens": {"ETH": FEED}}))
    assert s.signer.price_bound.tokens["ETH"].tolerance == Decimal("0.03")
    assert settings_from_dict(signer_settings({"max_deposit_usd": "1000", "unbounded": ["ETH"]}))
    assert settings_from_dict(signer_settings({"max_deposit_usd": "1000", "tokens": {"ETH": {"kind": "band"}}}))


@pytest.mark.parametrize("pb, msg", [
    ({"max_deposit_usd": "0", "tokens": {"ETH": FEED}}, "max_deposit_usd"),
    ({"max_deposit_usd": "1000", "tokens": {"ETH": {**FEED, "chain": "nowhere"}}}, "no chain named"),
    ({"max_deposit_usd": "1000", "tokens": {"ETH": {**FEED, "tolerance": "-0.1"}}}, "tolerance"),
    ({"max_deposit_usd": "1000", "tokens": {"ETH": FEED}, "unbounded": ["ETH"]}, "both bounded and unbounded"),
    ({"max_deposit_usd": "1000", "tokens": {"ETH": FEED, "DOT": {"kind": "band"}}}, "DOT is not paid"),
])
def test_config_errors_are_one_clear_line(pb, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        settings_from_dict(signer_settings(pb))
    assert "\n" not in str(e.value)
