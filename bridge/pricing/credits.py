"""Exact credit maths: integers and ``Fraction`` only, never a float.

Prices are ``Decimal`` USD amounts (the price of one credit, the price of one *whole* token);
token amounts are integer base units (``10**decimals`` of them make one whole token).
Every conversion rounds in the gateway's favour by exactly less than one unit:

* ``amount_for_credits`` rounds **up**: the payer pays at least the value of the credits;
* ``credits_for_amount`` rounds **down**: an amount never buys more credits than it is worth;
* ``credits_for_deposit`` credits a deposit against a signed quote, pro-rata and floored, and
  never more than the quote promised.

All three are pure and deterministic, so every committee signer computes the same numbers.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from functools import lru_cache

from bridge.errors import InputError

MAX_DECIMALS = 36


def _check_nonneg_int(name: str, v: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InputError(f"{name} must be an integer")
    if v < 0:
        raise InputError(f"{name} must not be negative")


def _price(name: str, v: Decimal) -> Fraction:
    if not isinstance(v, Decimal) or not v.is_finite() or v <= 0:
        raise InputError(f"{name} must be a positive finite Decimal")
    return Fraction(v)  # exact: a finite Decimal is a rational number


def _unit(decimals: int) -> int:
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
        raise InputError(f"decimals must be an integer in [0, {MAX_DECIMALS}]")
    return 10**decimals


def _ceil(f: Fraction) -> int:
    return -((-f.numerator) // f.denominator)


def _floor(f: Fraction) -> int:
    return f.numerator // f.denominator


@lru_cache(maxsize=256)  # pure, and asked with the same few prices for every quote of a refresh
def credit_value_in_base_units(credit_price_usd: Decimal, token_usd: Decimal, decimals: int) -> Fraction:
    """The exact number of base units one credit is worth (a rational number)."""
    return _price("credit_price_usd", credit_price_usd) * _unit(decimals) / _price("token_usd", token_usd)


def amount_for_credits(credits: int, credit_price_usd: Decimal, token_usd: Decimal, decimals: int) -> int:
    """Base units to pay for ``credits``: ceil(credits * credit_price / token_price * 10**decimals)."""
    _check_nonneg_int("credits", credits)
    return _ceil(credits * credit_value_in_base_units(credit_price_usd, token_usd, decimals))


def credits_for_amount(amount: int, credit_price_usd: Decimal, token_usd: Decimal, decimals: int) -> int:
    """Credits ``amount`` base units buy: floor(amount / 10**decimals * token_price / credit_price)."""
    _check_nonneg_int("amount", amount)
    return _floor(amount / credit_value_in_base_units(credit_price_usd, token_usd, decimals))


def credits_for_deposit(paid: int, quoted_amount: int, quoted_credits: int) -> int:
    """Credits for a deposit of ``paid`` base units against a quote of ``quoted_amount`` for
    ``quoted_credits``: all of them if the deposit covers the quote (an overpayment buys
    nothing more), else ``paid * quoted_credits // quoted_amount`` (pro-rata, floored)."""
    _check_nonneg_int("paid", paid)
    _check_nonneg_int("quoted_amount", quoted_amount)
    _check_nonneg_int("quoted_credits", quoted_credits)
    if quoted_amount == 0:
        raise InputError("quoted_amount must be positive")
    if paid >= quoted_amount:
        return quoted_credits
    return paid * quoted_credits // quoted_amount
