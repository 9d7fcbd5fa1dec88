"""The committee manifest (bridge/manifest.py): model, canonical hash, filling a config from it,
and the one-line disagreement a node refuses to start with."""

from __future__ import annotations

import hashlib
import json

import pytest

from bridge import manifest as mf
from bridge.config import load_settings
from bridge.errors import ConfigError

MEMBERS = [{"name": f"signer-{i}", "address": "0x" + f"{i + 1:02x}" * 20, "ed25519": "0x" + f"{i + 0xa1:02x}" * 32}
           for i in range(4)]
LOCK = "0x" + "11" * 20
LEDGER = "0x" + "22" * 20
TON_LOCK_RAW = "0:" + "33" * 32


def _doc() -> dict:
    return {
        "version": 1, "network": "testnet",
        "committee": {"index": 0, "threshold": 3, "members": MEMBERS},
        "settlement_chain": "settlement",
        "chains": {
            "settlement": {"family": "evm", "chain_id": 84532,
                           "contracts": {"credits": {"address": LEDGER, "code_hash": "0x" + "aa" * 32, "block": 5}}},
            "ethereum": {"family": "evm", "chain_id": 11155111, "token": "ETH", "start_block": 123,
                         "contracts": {"lock": {"address": LOCK, "code_hash": "0x" + "bb" * 32, "block": 123}}},
            "polkadot": {"family": "substrate", "genesis_hash": "0x" + "45" * 32, "ss58_prefix": 0, "token": "DOT",
                         "start_block": 456},
            "ton": {"family": "ton", "global_id": -3, "token": "TON", "start_block": 789,
                    "contracts": {"lock": {"address": TON_LOCK_RAW, "code_hash": "0x" + "cc" * 32, "block": 789}}},
        },
        "payments": {"late_grace_seconds": 30},
        "governor": {"chains": {"ethereum": {"daily_limit_usd": "250000", "large_payment_usd": "50000",
                                             "large_payment_delay_seconds": 86400}}},
    }


def _config(manifest_path) -> dict:
    """A signer config stating only what is its own: endpoints, keys, pricing."""
    return {
        "manifest": str(manifest_path),
        "chains": [
            {"name": "ethereum", "rpc": ["http://127.0.0.1:1"], "finality": 2},
            {"name": "settlement", "rpc": ["http://127.0.0.1:1"]},
            {"name": "polkadot", "rpc": ["ws://127.0.0.1:1"]},
            {"name": "ton", "toncenter": ["http://127.0.0.1:1/api/v2"]},
        ],
        "pricing": {"fixed_usd": {"ETH": "3000", "DOT": "5", "TON": "5"}},
        "signer": {"name": "signer-0", "key": {"keystore": "k.json", "password_env": "P"}, "gateway_url": "http://x",
                   "gateway_public_key": "ab" * 32, "price_bound": {"max_deposit_usd": "1000", "tokens": {
                       t: {"kind": "band"} for t in ("ETH", "DOT", "TON")}}},
    }


def _write(tmp_path, doc: dict, cfg: dict | None = None):
    mp = tmp_path / "manifest.json"
    mp.write_text(json.dumps(doc))
    cp = tmp_path / "signer.json"
    cp.write_text(json.dumps(cfg if cfg is not None else _config("manifest.json")))
    return mp, cp


def test_hash_is_sha256_of_canonical_json():
    m = mf.parse_manifest(_doc())
    canonical = json.dumps(m.document(), sort_keys=True, separators=(",", ":")).encode()
    assert m.hash == "0x" + hashlib.sha256(canonical).hexdigest()
    # key order and whitespace of the file do not change it; a value does
    reordered = json.loads(json.dumps(_doc()), object_pairs_hook=lambda kv: dict(reversed(kv)))
    assert mf.parse_manifest(reordered).hash == m.hash
    changed = _doc()
    changed["payments"]["late_grace_seconds"] = 31
    assert mf.parse_manifest(changed).hash != m.hash


def test_saved_manifest_loads_with_the_same_hash(tmp_path):
    m = mf.parse_manifest(_doc())
    assert mf.save_manifest(tmp_path / "m.json", m) == m.hash
    assert mf.load_manifest(tmp_path / "m.json").hash == m.hash


@pytest.mark.parametrize("threshold, members, message", [
    (2, 4, "needs 2t > n (at least 3)"),
    (1, 2, "needs 2t > n (at least 2)"),
    (5, 4, "threshold 5 exceeds the 4 member(s)"),
])
def test_committee_needs_a_majority(threshold, members, message):
    doc = _doc()
    doc["committee"] = {"threshold": threshold, "members": MEMBERS[:members]}
    with pytest.raises(ConfigError) as e:
        mf.parse_manifest(doc)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_duplicate_members_are_refused():
    doc = _doc()
    doc["committee"]["members"] = [*MEMBERS[:3], {**MEMBERS[3], "ed25519": MEMBERS[0]["ed25519"]}]
    with pytest.raises(ConfigError, match="ed25519 values must be distinct"):
        mf.parse_manifest(doc)


def test_config_is_filled_from_the_manifest(tmp_path):
    mp, cp = _write(tmp_path, _doc())
    s = load_settings(cp)
    assert s.manifest_data.hash == mf.load_manifest(mp).hash
    assert s.settlement_chain == "settlement"
    eth, st, dot, ton = (s.chain(n) for n in ("ethereum", "settlement", "polkadot", "ton"))
    assert (eth.family, eth.chain_id, eth.token, eth.start_block, eth.contracts) == \
        ("evm", 11155111, "ETH", 123, {"lock": LOCK})
    assert (st.chain_id, st.contracts) == (84532, {"credits": LEDGER})
    assert (dot.genesis_hash, dot.ss58_prefix, dot.token, dot.start_block) == ("0x" + "45" * 32, 0, "DOT", 456)
    assert dot.committee.members == [m["ed25519"] for m in MEMBERS] and dot.committee.threshold == 3
    assert (ton.global_id, ton.start_block, ton.contracts) == (-3, 789, {"lock": TON_LOCK_RAW})
    assert s.signer.late_grace_seconds == 30
    assert str(s.governor.chains["ethereum"].daily_limit_usd) == "250000"
    mf.check_settings(s, s.manifest_data)  # what it filled agrees


def test_equal_values_stated_in_both_agree(tmp_path):
    cfg = _config("manifest.json")
    cfg["chains"][0].update({"chain_id": 11155111, "contracts": {"lock": LOCK.upper().replace("0X", "0x")}})
    # the TON lock in its user-friendly form is the same address
    from base64 import urlsafe_b64encode

    body = bytes([0x11, 0]) + bytes.fromhex("33" * 32)
    crc = _crc16(body).to_bytes(2, "big")
    cfg["chains"][3]["contracts"] = {"lock": urlsafe_b64encode(body + crc).decode()}
    _, cp = _write(tmp_path, _doc(), cfg)
    s = load_settings(cp)
    mf.check_settings(s, s.manifest_data)


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@pytest.mark.parametrize("edit, first", [
    (lambda c: c["chains"][0].update(chain_id=1), "chains.ethereum.chain_id is 1 in the config but 11155111"),
    (lambda c: c["chains"][0].update(contracts={"lock": "0x" + "99" * 20}), "chains.ethereum.contracts.lock is"),
    (lambda c: c["chains"][0].update(start_block=0), "chains.ethereum.start_block is 0 in the config but 123"),
    (lambda c: c["chains"][2].update(committee={"members": [m["ed25519"] for m in MEMBERS[:3]], "threshold": 3}),
     "chains.polkadot.committee.members are not the manifest committee's"),
    (lambda c: c["chains"][2].update(genesis_hash="0x" + "46" * 32), "chains.polkadot.genesis_hash"),
    (lambda c: c["chains"][3].update(global_id=-239), "chains.ton.global_id is -239 in the config but -3"),
    (lambda c: c["signer"].update(late_grace_seconds=0), "signer.late_grace_seconds is 0 in the config but 30"),
    (lambda c: c.update(governor={"chains": {"ethereum": {"daily_limit_usd": "1", "large_payment_usd": "1"}}}),
     "governor.chains.ethereum.daily_limit_usd is '1' in the config but '250000'"),
    (lambda c: (c["chains"].pop(2), c["signer"]["price_bound"]["tokens"].pop("DOT")),
     "chain 'polkadot' of the manifest is missing from the config's chains"),
    (lambda c: c["chains"].append({"family": "evm", "name": "base", "chain_id": 8453, "rpc": ["http://x"]}),
     "chain 'base' is not in the manifest"),
])
def test_first_disagreement_is_one_line(tmp_path, edit, first):
    cfg = _config("manifest.json")
    edit(cfg)
    _, cp = _write(tmp_path, _doc(), cfg)
    s = load_settings(cp)
    with pytest.raises(ConfigError) as e:
        mf.check_settings(s, s.manifest_data)
    line = str(e.value)
    assert "\n" not in line and "config disagrees with manifest 0x" in line
    assert first in line, line


def test_manifest_path_is_relative_to_the_config(tmp_path):
    (tmp_path / "etc").mkdir()
    mf.save_manifest(tmp_path / "etc" / "manifest.json", mf.parse_manifest(_doc()))
    (tmp_path / "etc" / "signer.json").write_text(json.dumps(_config("manifest.json")))
    assert load_settings(tmp_path / "etc" / "signer.json").manifest_data is not None


def test_unreadable_manifest_is_one_line(tmp_path):
    (tmp_path / "signer.json").write_text(json.dumps(_config("missing.json")))
    with pytest.raises(ConfigError, match="cannot read manifest .*missing.json"):
        load_settings(tmp_path / "signer.json")


def test_member_check():
    m = mf.parse_manifest(_doc())
    mf.check_member(m, address=MEMBERS[1]["address"], ed25519=MEMBERS[1]["ed25519"][2:])
    with pytest.raises(ConfigError, match="is not a member"):
        mf.check_member(m, address="0x" + "ee" * 20)
    with pytest.raises(ConfigError, match="different members"):
        mf.check_member(m, address=MEMBERS[1]["address"], ed25519=MEMBERS[2]["ed25519"])


def test_committee_from_keystores_public_parts(tmp_path):
    from bridge.keystore import write_keystore

    addr = write_keystore(tmp_path / "s.json", "secp256k1", bytes(range(1, 33)), "password", n=2**4)
    ed = write_keystore(tmp_path / "e.json", "ed25519", bytes(range(2, 34)), "password", n=2**4)
    # `keys show` output works as well as the keystore itself
    (tmp_path / "e.show.json").write_text(json.dumps({"kind": "ed25519", "public": ed, "verified": False}))
    member = mf.member_from_keystores("a", tmp_path / "s.json", tmp_path / "e.show.json")
    assert member == {"name": "a", "address": addr.lower(), "ed25519": "0x" + ed}
    with pytest.raises(ConfigError, match="is not a ed25519 keystore"):
        mf.member_from_keystores("a", tmp_path / "s.json", tmp_path / "s.json")
