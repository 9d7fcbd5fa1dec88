"""The signer's retry schedule and its unknown-reference refund delay setting."""

from __future__ import annotations

import pytest

from bridge.committee.signer import RETRY_MAX_SECONDS, retry_delay
from bridge.config import settings_from_dict
from bridge.errors import ConfigError


def _settings(**signer):
    return settings_from_dict({
        "chains": [{"family": "evm", "name": "settlement", "chain_id": 1, "rpc": ["http://127.0.0.1:1"],
                    "contracts": {"credits": "0x" + "22" * 20}}],
        "settlement_chain": "settlement",
        "signer": {"name": "s0", "key": {"keystore": "k.json", "password_env": "PW"},
                   "gateway_url": "http://127.0.0.1:1", "gateway_public_key": "ab" * 32,
                   "price_bound": {"max_deposit_usd": "1000", "unbounded": []}, **signer}})


def test_backoff_doubles_from_two_seconds_and_is_capped():
    assert [retry_delay(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert retry_delay(9) == 30 == RETRY_MAX_SECONDS and retry_delay(10**6) == RETRY_MAX_SECONDS


def test_unknown_reference_refund_delay_defaults_to_a_day_and_is_validated():
    assert _settings().signer.unknown_reference_refund_after_seconds == 86_400
    assert _settings(unknown_reference_refund_after_seconds=120).signer.unknown_reference_refund_after_seconds == 120
    for bad in (0, 59, 31 * 86_400, "soon"):
        with pytest.raises(ConfigError, match="signer.unknown_reference_refund_after_seconds") as e:
            _settings(unknown_reference_refund_after_seconds=bad)
        assert "\n" not in str(e.value)
