"""Credit maths: exact, rounded in the gateway's favour by less than one unit, never over-crediting."""

from __future__ import annotations

import ast
import inspect
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InputError
from bridge.pricing import credits as cm
from bridge.pricing.credits import amount_for_credits, credits_for_amount, credits_for_deposit

DECIMALS = st.sampled_from([9, 10, 12, 18])
# prices with up to 8 fractional digits, from a hundred-millionth of a dollar to a million
PRICES = st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal("1000000"), places=8,
                     allow_nan=False, allow_infinity=False).filter(lambda d: d > 0)
CREDIT_PRICES = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("100"), places=4).filter(lambda d: d > 0)
CREDITS = st.integers(min_value=0, max_value=10**15)
AMOUNTS = st.integers(min_value=0, max_value=10**30)


def exact_value(credits: int, cp: Decimal, tp: Decimal, decimals: int) -> Fraction:
    return credits * Fraction(cp) * 10**decimals / Fraction(tp)


def test_known_values():
    # 500 credits at $0.01 = $5; ETH at $3000 -> 5/3000 ETH = 1666666666666666.67 wei -> rounds up
    assert amount_for_credits(500, Decimal("0.01"), Decimal("3000"), 18) == 1666666666666667
    assert credits_for_amount(1666666666666667, Decimal("0.01"), Decimal("3000"), 18) == 500
    assert credits_for_amount(1666666666666666, Decimal("0.01"), Decimal("3000"), 18) == 499
    # DOT (10 decimals) at $7.25: 1 DOT buys 725 credits exactly
    assert credits_for_amount(10**10, Decimal("0.01"), Decimal("7.25"), 10) == 725
    assert amount_for_credits(725, Decimal("0.01"), Decimal("7.25"), 10) == 10**10
    assert amount_for_credits(0, Decimal("0.01"), Decimal("7.25"), 10) == 0


def test_credits_for_deposit_examples():
    assert credits_for_deposit(1000, 1000, 500) == 500
    assert credits_for_deposit(5000, 1000, 500) == 500  # overpaying buys nothing more
    assert credits_for_deposit(999, 1000, 500) == 499  # 499.5 floored
    assert credits_for_deposit(1, 1000, 500) == 0
    assert credits_for_deposit(0, 1000, 500) == 0


@pytest.mark.parametrize("call", [
    lambda: amount_for_credits(-1, Decimal("1"), Decimal("1"), 18),
    lambda: amount_for_credits(1.0, Decimal("1"), Decimal("1"), 18),
    lambda: amount_for_credits(True, Decimal("1"), Decimal("1"), 18),
    lambda: amount_for_credits(1, Decimal("0"), Decimal("1"), 18),
    lambda: amount_for_credits(1, Decimal("1"), Decimal("-2"), 18),
    lambda: amount_for_credits(1, Decimal("NaN"), Decimal("1"), 18),
    lambda: amount_for_credits(1, Decimal("Infinity"), Decimal("1"), 18),
    lambda: amount_for_credits(1, 0.01, Decimal("1"), 18),
    lambda: amount_for_credits(1, Decimal("1"), Decimal("1"), 99),
    lambda: credits_for_amount(-5, Decimal("1"), Decimal("1"), 18),
    lambda: credits_for_deposit(1, 0, 5),
    lambda: credits_for_deposit(-1, 10, 5),
    lambda: credits_for_deposit(1, 10, 5.0),
])
def test_bad_inputs_are_input_errors(call):
    with pytest.raises(InputError):
        call()


def test_no_float_in_the_module():
    tree = ast.parse(inspect.getsource(cm))
    floats = [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, float)]
    names = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "float"]
    assert floats == [] and names == []


@given(CREDITS, CREDIT_PRICES, PRICES, DECIMALS)
def test_amount_rounds_up_by_less_than_one_unit(credits, cp, tp, decimals):
    amount = amount_for_credits(credits, cp, tp, decimals)
    exact = exact_value(credits, cp, tp, decimals)
    assert isinstance(amount, int)
    assert exact <= amount < exact + 1  # the payer pays at least the value


@given(AMOUNTS, CREDIT_PRICES, PRICES, DECIMALS)
def test_credits_round_down_and_never_over_credit(amount, cp, tp, decimals):
    credits = credits_for_amount(amount, cp, tp, decimals)
    assert isinstance(credits, int) and credits >= 0
    assert exact_value(credits, cp, tp, decimals) <= amount  # never more credits than the amount is worth
    assert exact_value(credits + 1, cp, tp, decimals) > amount  # and the largest such number


@given(CREDITS, CREDIT_PRICES, PRICES, DECIMALS)
def test_round_trip_credits_amount_credits(credits, cp, tp, decimals):
    amount = amount_for_credits(credits, cp, tp, decimals)
    back = credits_for_amount(amount, cp, tp, decimals)
    assert back >= credits
    # paying for N credits buys exactly N when one base unit is worth less than a credit
    if exact_value(1, cp, tp, decimals) > 1:
        assert back == credits


@given(AMOUNTS, CREDIT_PRICES, PRICES, DECIMALS)
def test_round_trip_amount_credits_amount(amount, cp, tp, decimals):
    credits = credits_for_amount(amount, cp, tp, decimals)
    assert amount_for_credits(credits, cp, tp, decimals) <= amount


@given(st.lists(CREDITS, min_size=2, max_size=2), CREDIT_PRICES, PRICES, DECIMALS)
def test_amount_is_monotonic_in_credits(pair, cp, tp, decimals):
    a, b = sorted(pair)
    assert amount_for_credits(a, cp, tp, decimals) <= amount_for_credits(b, cp, tp, decimals)


@given(st.lists(AMOUNTS, min_size=2, max_size=2), CREDIT_PRICES, PRICES, DECIMALS)
def test_credits_are_monotonic_in_amount(pair, cp, tp, decimals):
    a, b = sorted(pair)
    assert credits_for_amount(a, cp, tp, decimals) <= credits_for_amount(b, cp, tp, decimals)


@given(AMOUNTS, CREDIT_PRICES, st.lists(PRICES, min_size=2, max_size=2), DECIMALS)
def test_higher_token_price_buys_no_fewer_credits(amount, cp, prices, decimals):
    lo, hi = sorted(prices)
    assert credits_for_amount(amount, cp, lo, decimals) <= credits_for_amount(amount, cp, hi, decimals)


@given(st.integers(0, 10**40), st.integers(1, 10**40), st.integers(0, 10**20))
def test_deposit_never_over_credits(paid, quoted_amount, quoted_credits):
    c = credits_for_deposit(paid, quoted_amount, quoted_credits)
    assert 0 <= c <= quoted_credits
    if paid >= quoted_amount:
        assert c == quoted_credits
    else:
        assert Fraction(c) <= Fraction(paid * quoted_credits, quoted_amount) < c + 1


@given(st.lists(st.integers(0, 10**30), min_size=2, max_size=2), st.integers(1, 10**30), st.integers(0, 10**20))
def test_deposit_is_monotonic(pair, quoted_amount, quoted_credits):
    a, b = sorted(pair)
    assert credits_for_deposit(a, quoted_amount, quoted_credits) <= credits_for_deposit(b, quoted_amount, quoted_credits)


@given(st.lists(st.integers(1, 10**24), min_size=1, max_size=6), st.integers(1, 10**24), st.integers(0, 10**12))
def test_split_deposits_never_beat_one_deposit_below_the_quote(parts, quoted_amount, quoted_credits):
    """Paying in instalments that together stay below the quote never yields more credits."""
    total = sum(parts)
    if total < quoted_amount:
        split = sum(credits_for_deposit(p, quoted_amount, quoted_credits) for p in parts)
        assert split <= credits_for_deposit(total, quoted_amount, quoted_credits)
