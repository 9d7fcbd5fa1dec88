"""The rotation proposal and signature files (bridge/committee/rotation.py), offline: what each
member signs is recomputed from the proposal, and the submitter refuses files that do not verify."""

from __future__ import annotations

import copy
import os

import pytest

from bridge.committee import digest as dg
from bridge.committee import rotation as R
from bridge.errors import InputError, VerificationError
from bridge.hashing import keccak256
from bridge.types import SettlementDomain

OLD = [keccak256(f"rot-unit/old/{i}".encode()) for i in range(4)]
NEW = [keccak256(f"rot-unit/new/{i}".encode()) for i in range(4)]
SEEDS = [os.urandom(32) for _ in range(4)]
LEDGER = "0x" + "22" * 20
LOCK = "0x" + "11" * 20


def ton_hash(custody, committee) -> bytes:  # stands in for relayers.ton.rotation.payload_hash
    return keccak256(custody.lock.encode() + committee.index.to_bytes(4, "big"))


def proposal(**over) -> R.Proposal:
    data = {"network": "devnet",
            "committee": {"index": 1, "threshold": 3, "members": [
                {"name": f"n{i}", "address": "0x" + dg.address_of(k).hex(), "ed25519": "0x" + (b"%c" % (i + 1) * 32).hex()}
                for i, k in enumerate(NEW)]},
            "custodies": [
                {"family": "evm", "chain": "settlement", "role": "ledger", "chain_id": 8453, "contract": LEDGER},
                {"family": "evm", "chain": "ethereum", "role": "lock", "chain_id": 1, "contract": LOCK},
                {"family": "ton", "chain": "ton", "global_id": -239, "lock": "0:" + "33" * 32}]}
    data.update(over)
    return R.proposal_from_dict(data)


def test_members_sign_the_contracts_own_digest():
    p = proposal()
    doc = R.sign(p, member="o0", secp256k1_key=OLD[0], ed25519_seed=SEEDS[0], ton_hash=ton_hash)
    assert doc["proposal"] == p.hash() and sorted(doc["signatures"]) == ["ethereum/lock", "settlement/ledger", "ton/lock"]
    # the ledger's digest is exactly what Committee.sol hashes (RotateCommittee over the sorted set)
    want = dg.rotate_digest(SettlementDomain(8453, bytes.fromhex(LEDGER[2:])), 1,
                            sorted(dg.address_of(k) for k in NEW), 3)
    assert dg.recover(want, bytes.fromhex(doc["signatures"]["settlement/ledger"][2:])) == dg.address_of(OLD[0])
    lock_d = dg.rotate_digest(SettlementDomain(1, bytes.fromhex(LOCK[2:]), name=dg.LOCK_NAME), 1,
                              sorted(dg.address_of(k) for k in NEW), 3)
    assert dg.recover(lock_d, bytes.fromhex(doc["signatures"]["ethereum/lock"][2:])) == dg.address_of(OLD[0])


def test_collect_and_choose_keep_current_members_only():
    p = proposal()
    docs = [R.sign(p, member=f"o{i}", secp256k1_key=OLD[i], ed25519_seed=SEEDS[i], ton_hash=ton_hash) for i in range(3)]
    docs.append(R.sign(p, member="n0", secp256k1_key=NEW[0], ed25519_seed=None, ton_hash=ton_hash))
    got = R.collect(p, docs + [copy.deepcopy(docs[0])], ton_hash)  # a duplicate file counts once
    assert len(got["settlement/ledger"]) == 4 and len(got["ton/lock"]) == 3
    current = [dg.address_of(k) for k in OLD]
    chosen = R.choose(got["settlement/ledger"], current, 3, "settlement/ledger")
    assert [s for s, _ in chosen] == sorted(dg.address_of(k) for k in OLD[:3])
    with pytest.raises(InputError, match="2 signature"):
        R.choose(got["settlement/ledger"], current[1:3] + [b"\x01" * 20], 3, "settlement/ledger")


@pytest.mark.parametrize("tamper, match", [
    (lambda d: d.update(proposal="0x" + "00" * 32), "another proposal"),
    (lambda d: d["signatures"].update({"settlement/ledger": d["signatures"]["ethereum/lock"]}), "not by"),
    (lambda d: d.update(address="0x" + dg.address_of(OLD[1]).hex()), "not by"),
    (lambda d: d.update(ed25519="0x" + "07" * 32), "not by"),
    (lambda d: d["signatures"].update({"polkadot/account": "0x00"}), "unknown custody"),
    (lambda d: d["signatures"].update({"ton/lock": "0x1234"}), "64 bytes"),
])
def test_a_file_that_does_not_verify_is_refused(tamper, match):
    p = proposal()
    doc = R.sign(p, member="o0", secp256k1_key=OLD[0], ed25519_seed=SEEDS[0], ton_hash=ton_hash)
    tamper(doc)
    with pytest.raises(VerificationError, match=match):
        R.collect(p, [doc], ton_hash)


def test_a_signature_is_bound_to_the_proposal_it_was_made_for():
    """Another threshold, index or chain id is another proposal: old files do not carry over."""
    p = proposal()
    doc = R.sign(p, member="o0", secp256k1_key=OLD[0], ed25519_seed=SEEDS[0], ton_hash=ton_hash)
    other = proposal(committee={**p.committee.model_dump(mode="json"), "index": 2})
    with pytest.raises(VerificationError, match="another proposal"):
        R.collect(other, [doc], ton_hash)


@pytest.mark.parametrize("committee, match", [
    ({"index": 1, "threshold": 2, "members": [{"name": f"n{i}", "address": "0x" + f"{i + 1:02x}" * 20} for i in range(4)]},
     "majority"),
    ({"index": 1, "threshold": 2, "members": [{"name": "a", "address": "0x" + "01" * 20},
                                              {"name": "b", "address": "0x" + "01" * 20}]}, "distinct"),
    ({"index": 0, "threshold": 1, "members": [{"name": "a", "address": "0x" + "01" * 20}]}, "index"),
    ({"index": 1, "threshold": 3, "members": [{"name": "a", "address": "0x" + "01" * 20}]}, "exceeds"),
])
def test_invalid_new_committees_are_refused_in_one_line(committee, match):
    with pytest.raises(InputError, match=match) as e:
        proposal(committee=committee)
    assert "\n" not in str(e.value)


def test_manifest_gets_the_new_committee_and_account():
    sub = {"family": "substrate", "chain": "polkadot", "ss58_prefix": 0, "old_members": ["0x" + "01" * 32, "0x" + "02" * 32],
           "old_threshold": 2, "old_account": "0x" + "aa" * 32, "new_account": "0x" + "bb" * 32, "from_block": 5}
    p = proposal(custodies=[sub])
    m = {"version": 1, "committee": {"index": 0}, "chains": {"polkadot": {"family": "substrate",
                                                                          "committee_account": "old"}}}
    out = R.apply_to_manifest(m, p, ss58=lambda b, prefix: f"{prefix}:{b.hex()[:4]}")
    assert out["committee"]["index"] == 1 and len(out["committee"]["members"]) == 4
    assert out["chains"]["polkadot"]["committee_account"] == "0:bbbb"
    assert out["chains"]["polkadot"]["previous_committee_accounts"] == ["0:aaaa"]
    assert m["committee"] == {"index": 0}  # the input is not modified


def test_a_bad_new_committee_file_is_named_in_one_line():
    with pytest.raises(InputError) as e:
        R.new_committee({"index": 1, "threshold": 1, "members": [{"name": "a", "address": "0x12", "ed25519": "00"}]})
    assert e.value.detail.startswith("invalid new committee: members.0.address:") and "\n" not in str(e.value)
