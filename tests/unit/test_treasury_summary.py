"""The operator's treasury view (bridge/treasury_view.py): figures only when ``threshold`` signers
report them alike; the others are named; the table has one line per token."""

from __future__ import annotations

import pytest

from bridge import treasury_view as tv
from bridge.errors import BridgeError


def signer(earned: str, swept: str, tx: str | None = "0xaa", chain: str = "ethereum") -> dict:
    return {"epoch_blocks": 4,
            "chains": {chain: {"token": "ETH", "treasury": "0x01", "earned": earned, "swept": swept,
                               "signed_unpaid": "0", "stranded": "0", "settlement_final": 9}},
            "sweeps": [{"release_id": "0x" + "22" * 32, "chain": chain, "epoch": 2, "cutoff": 8, "amount": swept,
                        "state": "paid", "tx": tx, "block": 7, "paid_at": "2026-12-06T16:00:00+00:00",
                        "to": "0x01", "token": "ETH", "created_at": "2026-12-06T15:59:00+00:00", "deposits": []}]}


def test_a_quorum_gives_the_figures_and_names_the_others():
    views = {"a": signer("10", "7"), "b": signer("10", "7"), "c": signer("10", "7", tx=None),
             "d": {"error": "unreachable (ClientConnectorError)"}}
    out = tv.summarize(views, 2)
    eth = out["chains"]["ethereum"]
    assert eth["quorum"] and eth["agreeing"] == 2 and eth["disagreeing_signers"] == ["c"]
    assert (eth["earned"], eth["swept"], eth["pending"]) == ("10", "7", "3")
    assert eth["last_sweep"]["tx"] == "0xaa" and out["unreachable"] == ["d"]
    lines = tv.format_table(out).splitlines()
    assert [x for x in lines if x.startswith("ethereum")][0].split()[:5] == ["ethereum", "ETH", "10", "7", "3"]
    assert any("disagreeing signers: c" in x for x in lines) and any("unreachable signers: d" in x for x in lines)
    assert tv.short_line(out) == "treasury: ethereum swept 7 of 10 ETH (pending 3); 1 signer(s) unreachable"


def test_without_a_quorum_there_are_no_figures():
    out = tv.summarize({"a": signer("10", "7"), "b": signer("11", "7"), "c": {"error": "HTTP 500"}}, 2)
    eth = out["chains"]["ethereum"]
    assert not eth["quorum"] and eth["earned"] is None and eth["pending"] is None and eth["last_sweep"] is None
    assert eth["disagreeing_signers"] == ["a", "b"]
    assert "NO QUORUM" in tv.format_table(out)
    assert tv.short_line(out) == "treasury: ethereum no quorum; 1 signer(s) unreachable"


def test_a_signer_without_the_chain_is_missing_not_agreeing():
    out = tv.summarize({"a": signer("1", "1"), "b": {"epoch_blocks": None, "chains": {}, "sweeps": []}}, 2)
    eth = out["chains"]["ethereum"]
    assert not eth["quorum"] and eth["missing_signers"] == ["b"]
    with pytest.raises(BridgeError):
        tv.summarize({}, 0)
    assert tv.default_threshold(4) == 3 and tv.default_threshold(3) == 2


def test_the_api_treasury_signers_are_checked_with_one_line_errors():
    from bridge.config import settings_from_dict
    from bridge.errors import ConfigError

    def settings(**api):
        return settings_from_dict({
            "chains": [{"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"],
                        "token": "ETH", "contracts": {"lock": "0x" + "11" * 20}},
                       {"family": "evm", "name": "settlement", "chain_id": 2, "rpc": ["http://127.0.0.1:1"],
                        "contracts": {"credits": "0x" + "22" * 20}}],
            "settlement_chain": "settlement",
            "api": {"quote_key": {"keystore": "q.json", "password_env": "X"}, **api}})

    ok = settings(treasury_signers=["http://127.0.0.1:1", "http://127.0.0.1:2"], treasury_threshold=2)
    assert ok.api.treasury_threshold == 2 and ok.api.treasury_poll_seconds == 30
    assert settings().api.treasury_signers == []
    for api, words in [({"treasury_signers": ["127.0.0.1:1"]}, "not an http(s) URL"),
                       ({"treasury_signers": ["http://a", "http://a"]}, "listed twice"),
                       ({"treasury_signers": ["http://a"], "treasury_threshold": 2}, "more than the 1"),
                       ({"treasury_threshold": 0}, "treasury_threshold"),
                       ({"treasury_poll_seconds": 0}, "treasury_poll_seconds")]:
        with pytest.raises(ConfigError) as e:
            settings(**api)
        assert words in str(e.value) and "\n" not in str(e.value), (api, str(e.value))
