"""[aggregator] fee and multi-relay settings (validated, one-line errors) and the fee policy's
arithmetic (relayers/evm/fees.py): cap, clamp, bumps of at least the 10% replacement minimum."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.committee.aggregate import relay_of
from bridge.config import AggregatorConfig
from relayers.evm.fees import FeeAboveCap, FeePolicy

BASE = {"signers": ["http://127.0.0.1:1"], "key": {"keystore": "relay.json", "password_env": "PW"}}


def cfg(**kw) -> AggregatorConfig:
    return AggregatorConfig.model_validate({**BASE, **kw})


def error(**kw) -> str:
    with pytest.raises(ValidationError) as e:
        cfg(**kw)
    first = e.value.errors()[0]
    return ".".join(str(x) for x in first["loc"]) + ": " + first["msg"]


def test_defaults_keep_one_relay_and_no_cap():
    c = cfg()
    assert (c.max_fee_per_gas, c.priority_fee_per_gas, c.fee_bump_percent, c.max_fee_bumps) == (None, None, 12, 3)
    assert (c.relay_index, c.relay_count) == (0, 1)
    p = FeePolicy.from_config(c)
    assert p.bump_percent == 12 and p.bump_after == 30.0 and p.max_fee_per_gas is None


@pytest.mark.parametrize("kw, where", [
    ({"fee_bump_percent": 9}, "fee_bump_percent: Input should be greater than or equal to 10"),
    ({"max_fee_per_gas": 0}, "max_fee_per_gas: Input should be greater than 0"),
    ({"max_fee_per_gas": "lots"}, "max_fee_per_gas: Input should be a valid integer"),
    ({"fee_bump_after_seconds": 0}, "fee_bump_after_seconds: Input should be greater than 0"),
    ({"max_fee_bumps": 21}, "max_fee_bumps: Input should be less than or equal to 20"),
    ({"relay_count": 0}, "relay_count: Input should be greater than or equal to 1"),
    ({"relay_index": 2, "relay_count": 2}, "relay_index: 2 must be below relay_count (2)"),
    ({"max_fee_per_gas": 10, "priority_fee_per_gas": 11}, "priority_fee_per_gas: 11 is above max_fee_per_gas (10)"),
])
def test_bad_values_are_one_line_errors(kw, where):
    msg = error(**kw)
    assert where in msg and "\n" not in msg


def test_initial_fees_cap_and_clamp():
    p = FeePolicy(max_fee_per_gas=1000)
    assert p.initial(400, 10, None) == {"maxPriorityFeePerGas": 10, "maxFeePerGas": 810}
    assert p.initial(600, 10, None) == {"maxPriorityFeePerGas": 10, "maxFeePerGas": 1000}  # clamped to the cap
    with pytest.raises(FeeAboveCap) as e:
        p.initial(995, 10, None)  # base + tip above the cap: not sent
    assert e.value.retryable
    assert p.initial(None, None, 999) == {"gasPrice": 999}
    with pytest.raises(FeeAboveCap):
        p.initial(None, None, 1001)
    assert FeePolicy().initial(400, 10, None)["maxFeePerGas"] == 810  # no cap


def test_bumps_raise_both_fees_by_the_percentage_and_stop_at_the_cap():
    p = FeePolicy(bump_percent=10)
    assert p.bumped({"maxPriorityFeePerGas": 100, "maxFeePerGas": 1000}) == {
        "maxPriorityFeePerGas": 110, "maxFeePerGas": 1100}
    assert p.bumped({"maxPriorityFeePerGas": 1, "maxFeePerGas": 3}) == {
        "maxPriorityFeePerGas": 2, "maxFeePerGas": 4}  # at least +1 wei: never an equal replacement
    # the base fee rose above what the old price covers: the replacement follows it
    assert p.bumped({"maxPriorityFeePerGas": 100, "maxFeePerGas": 1000}, base_fee=2000)["maxFeePerGas"] == 4110
    capped = FeePolicy(bump_percent=10, max_fee_per_gas=1100)
    assert capped.bumped({"maxPriorityFeePerGas": 100, "maxFeePerGas": 1000}, base_fee=2000) == {
        "maxPriorityFeePerGas": 110, "maxFeePerGas": 1100}
    assert capped.bumped({"maxPriorityFeePerGas": 100, "maxFeePerGas": 1001}) is None  # +10% passes the cap
    assert capped.bumped({"gasPrice": 1000}) == {"gasPrice": 1100}
    assert capped.bumped({"gasPrice": 1001}) is None
    with pytest.raises(ValueError):
        FeePolicy(bump_percent=5)


def test_relay_of_splits_deposits_about_evenly():
    counts = [0, 0, 0]
    for seq in range(3000):
        counts[relay_of((b"\x01" * 32, seq), 3)] += 1
    assert all(900 < c < 1100 for c in counts)
    assert {relay_of((b"\x01" * 32, seq), 1) for seq in range(10)} == {0}


@pytest.mark.parametrize("n", [0, 5])
def test_devnet_refuses_an_aggregator_count_out_of_range_before_starting_anything(tmp_path, n):
    import asyncio

    from bridge.errors import BridgeError
    from devnet.network import DevnetOptions, run_devnet

    with pytest.raises(BridgeError, match="--aggregators must be between 1 and 4"):
        asyncio.run(run_devnet(DevnetOptions(directory=tmp_path / "dn", aggregators=n)))
    assert not (tmp_path / "dn").exists()
