"""Multisig account derivation, payment instructions and the known networks' facts.

The derivation is checked against the real runtime in
``tests/integration/substrate/test_substrate_multisig.py`` (NewMultisig event); here it is
also checked against scalecodec's independent ``MultiAccountId`` and for its properties.
Genesis hashes of the real networks are recomputed from the chain specs that
``@substrate/connect-known-chains`` (npm) ships.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from scalecodec.base import RuntimeConfigurationObject
from scalecodec.type_registry import load_type_registry_preset
from scalecodec.types import CompactU32
from scalecodec.utils.ss58 import ss58_decode

from bridge.config import SubstrateChainConfig, SubstrateCommittee
from bridge.errors import ConfigError, InputError
from relayers.substrate.decode import compact, read_compact
from relayers.substrate.instructions import substrate_instructions
from relayers.substrate.decode import blake2_256
from relayers.substrate.multisig import (
    committee_account_id,
    committee_address,
    multisig_account_id,
    payment_account,
    payment_tag,
    ss58,
)
from relayers.substrate.networks import (
    KUSAMA_ASSET_HUB,
    POLKADOT_HUB,
    WESTEND_ASSET_HUB,
    check_network,
    config_entry,
    genesis_hash_from_state_root,
)

ROOT = Path(__file__).resolve().parents[3]
SPECS = ROOT / "node_modules/@substrate/connect-known-chains/dist/commonjs/specs"
KEYS = [bytes([i]) * 32 for i in (3, 1, 2)]


@pytest.mark.parametrize("n", [0, 1, 63, 64, 16383, 16384, 2**30 - 1, 2**30, 2**32 + 5, 2**64 - 1])
def test_compact_matches_scalecodec(n):
    assert compact(n) == bytes(CompactU32().encode(n).data)
    assert read_compact(b"\xff" + compact(n) + b"\xee", 1) == (n, len(compact(n)))


def test_multisig_account_matches_scalecodec_and_ignores_member_order():
    rc = RuntimeConfigurationObject()
    rc.update_type_registry(load_type_registry_preset("core"))
    MultiAccountId = rc.get_decoder_class("MultiAccountId")
    for t in (1, 2, 3):
        mine = multisig_account_id(KEYS, t)
        theirs = MultiAccountId.create_from_account_list(["0x" + k.hex() for k in KEYS], t)
        assert "0x" + mine.hex() == theirs.value
        assert multisig_account_id(list(reversed(KEYS)), t) == mine
    assert len({multisig_account_id(KEYS, t) for t in (1, 2, 3)}) == 3
    assert multisig_account_id(KEYS[:2], 2) != multisig_account_id(KEYS, 2)


@pytest.mark.parametrize("members,t", [([KEYS[0]], 1), (KEYS, 0), (KEYS, 4), ([KEYS[0], KEYS[0]], 1),
                                       ([b"\x01" * 31, b"\x02" * 32], 1), ([os.urandom(32) for _ in range(101)], 2)])
def test_impossible_multisigs_are_refused(members, t):
    with pytest.raises(InputError):
        multisig_account_id(members, t)


def test_committee_address_per_prefix():
    c = SubstrateCommittee(members=["0x" + k.hex() for k in KEYS], threshold=2)
    account = committee_account_id(c)
    assert account == multisig_account_id(KEYS, 2)
    for prefix in (0, 2, 42):
        text = committee_address(c, prefix)
        assert ss58_decode(text, valid_ss58_format=prefix) == account.hex()
    assert committee_address(c, 0)[0] == "1"  # Polkadot addresses start with 1
    with pytest.raises(ConfigError):
        committee_account_id(SubstrateCommittee(members=["0x" + KEYS[0].hex()], threshold=1))
    with pytest.raises(InputError):
        ss58(b"\x00" * 20, 0)


def test_payment_account_is_the_multisig_of_the_members_and_the_reference_tag():
    """pallet_multisig's derivation (scalecodec's independent MultiAccountId) over the members
    plus blake2_256(b"creditbridge/payment" + reference), with the committee's threshold; the
    real runtime agrees in tests/integration/substrate/test_substrate_collect.py."""
    rc = RuntimeConfigurationObject()
    rc.update_type_registry(load_type_registry_preset("core"))
    MultiAccountId = rc.get_decoder_class("MultiAccountId")
    c = SubstrateCommittee(members=["0x" + k.hex() for k in KEYS], threshold=2)
    reference = bytes(range(32))
    tag = blake2_256(b"creditbridge/payment" + reference)
    assert payment_tag(reference) == tag
    theirs = MultiAccountId.create_from_account_list(["0x" + k.hex() for k in (*KEYS, tag)], 2)
    assert "0x" + payment_account(c, reference).hex() == theirs.value
    assert payment_account(c, reference) != committee_account_id(c)
    assert payment_account(c, reference) != payment_account(c, bytes(31) + b"\x01")
    with pytest.raises(InputError):
        payment_account(c, reference[:31])


def test_instructions_name_the_multisig_account_and_the_exact_remark():
    cfg = SubstrateChainConfig(family="substrate", name="kusama", rpc=["wss://example.invalid"], token="KSM",
                               ss58_prefix=2, committee={"members": ["0x" + k.hex() for k in KEYS], "threshold": 2})
    reference = os.urandom(32)
    ins = substrate_instructions(cfg, reference, 123_456_789_012)
    pay_to = ss58(payment_account(cfg.committee, reference), 2)
    assert ins == {"chain": "kusama", "to": committee_address(cfg.committee, 2), "amount": "123456789012",
                   "remark": "0x" + reference.hex(),
                   "transfer": {"to": pay_to, "amount": "123456789012", "comment": None}, "uri": pay_to}
    assert substrate_instructions(cfg, reference, 123_456_789_012, code="CB0123456789AB") == ins
    assert ss58_decode(ins["to"], valid_ss58_format=2) == multisig_account_id(KEYS, 2).hex()
    for bad_ref, bad_amount in ((reference[:31], 1), (reference, 0), (reference, -5), (reference, True)):
        with pytest.raises(InputError):
            substrate_instructions(cfg, bad_ref, bad_amount)


def _state_root(spec_module: str) -> str:
    text = (SPECS / f"{spec_module}.js").read_text()
    return re.search(r'"stateRootHash":\s*"(0x[0-9a-f]{64})"', text).group(1)


def _properties(spec_module: str) -> dict:
    text = (SPECS / f"{spec_module}.js").read_text()
    return json.loads(re.search(r'"properties":\s*(\{[^}]*\})', text).group(1))


def test_genesis_hashes_are_those_of_the_shipped_chain_specs():
    if not SPECS.is_dir():
        pytest.fail(f"{SPECS} missing: run `make setup`")
    # the method, checked on the relay chain whose genesis hash every Polkadot tool shows
    assert genesis_hash_from_state_root(bytes.fromhex(_state_root("polkadot")[2:])) == (
        "0x91b171bb158e2d3848fa23a9f1c25182fb8e20313b2c1eb49219da7a70ce90c3")
    for net, module in ((POLKADOT_HUB, "polkadot_asset_hub"), (KUSAMA_ASSET_HUB, "ksmcc3_asset_hub")):
        assert genesis_hash_from_state_root(bytes.fromhex(_state_root(module)[2:])) == net.genesis_hash
        props = _properties(module)
        assert (props["tokenSymbol"], props["tokenDecimals"], props["ss58Format"]) == (
            net.token, net.decimals, net.ss58_prefix)
    # the testnet: Westend Asset Hub's spec names no ss58Format; its relay chain's (42) applies
    assert genesis_hash_from_state_root(bytes.fromhex(_state_root("westend2_asset_hub")[2:])) == (
        WESTEND_ASSET_HUB.genesis_hash)
    props = _properties("westend2_asset_hub")
    assert (props["tokenSymbol"], props["tokenDecimals"]) == (WESTEND_ASSET_HUB.token, WESTEND_ASSET_HUB.decimals)
    assert "ss58Format" not in props and _properties("westend2")["ss58Format"] == WESTEND_ASSET_HUB.ss58_prefix
    # Paseo (PAS, 10 decimals): only its relay chain's spec is shipped
    assert (_properties("paseo")["tokenSymbol"], _properties("paseo")["tokenDecimals"]) == ("PAS", 10)


def test_known_networks_refuse_the_wrong_token_or_prefix():
    check_network("polkadot", POLKADOT_HUB.genesis_hash, "DOT", 0)
    check_network("devnet", "0x" + "45" * 32, "KSM", 7)  # unknown genesis: nothing to check
    with pytest.raises(ConfigError):
        check_network("polkadot", POLKADOT_HUB.genesis_hash, "KSM", 0)
    with pytest.raises(ConfigError):
        check_network("kusama", KUSAMA_ASSET_HUB.genesis_hash, "KSM", 0)
    committee = {"members": ["0x" + k.hex() for k in KEYS], "threshold": 2}
    for net, name in ((POLKADOT_HUB, "polkadot"), (KUSAMA_ASSET_HUB, "kusama")):
        cfg = SubstrateChainConfig(**config_entry(net, name, committee))
        assert (cfg.token, cfg.ss58_prefix, cfg.genesis_hash) == (net.token, net.ss58_prefix, net.genesis_hash)
