"""The dust rule (issue 11, item 6): a held amount below the chain's ``min_refund`` is kept, not
refunded; ``min_refund`` is validated per ``[[chains]]`` entry with a one-line error."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bridge.config import settings_from_dict
from bridge.errors import ConfigError
from bridge.payments import rules

T = rules.Terms("polkadot", "DOT", 1000, 100, datetime(2030, 1, 1, tzinfo=timezone.utc))


def fact(seq: int, amount: int, chain: str = "polkadot") -> rules.DepositFact:
    return rules.DepositFact((b"s", seq), chain, "DOT", amount, 0)


@pytest.mark.parametrize("refundable,minimum,dust", [
    (0, 0, False), (0, 10, False),  # nothing held: nothing to keep
    (1, 0, False), (10**30, 0, False),  # 0: everything is refunded (the default)
    (9, 10, True), (1, 10, True),
    (10, 10, False), (11, 10, False),  # the minimum itself is refunded
])
def test_is_dust(refundable, minimum, dust):
    assert rules.is_dust(refundable, minimum) is dust


def test_overpaid_excess_and_invalid_deposits_against_the_minimum():
    over = rules.decide(T, fact(1, 1009), [], 0)
    assert (over.refundable, over.refund_purpose) == (9, rules.EXCESS) and rules.is_dust(over.refundable, 10)
    excess = rules.decide(T, fact(2, 50), [fact(1, 1000)], 0)  # the quote was paid already
    assert (excess.outcome, excess.refundable) == (rules.EXCESS, 50) and not rules.is_dust(excess.refundable, 10)
    invalid = rules.decide(T, fact(3, 5, chain="kusama"), [], 0)
    assert (invalid.outcome, invalid.refundable) == (rules.INVALID, 5) and rules.is_dust(invalid.refundable, 10)


def config(**chain_extra) -> dict:
    return {
        "settlement_chain": "settle",
        "chains": [
            {"family": "evm", "name": "settle", "chain_id": 1, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "11" * 20}},
            {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:2"], "token": "DOT",
             "ss58_prefix": 0, "committee": {"members": ["0x" + "22" * 32], "threshold": 1}, **chain_extra},
        ],
    }


def test_min_refund_defaults_to_zero_and_is_read_per_chain():
    assert settings_from_dict(config()).chain("polkadot").min_refund == 0
    assert settings_from_dict(config(min_refund=10**9)).chain("polkadot").min_refund == 10**9


@pytest.mark.parametrize("bad", [-1, 0.5, "100", True, 2**256])
def test_min_refund_is_validated_with_one_line(bad):
    with pytest.raises(ConfigError) as e:
        settings_from_dict(config(min_refund=bad))
    assert "chains.1.substrate.min_refund" in str(e.value) and "\n" not in str(e.value)
