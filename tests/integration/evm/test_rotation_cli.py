"""`creditbridge committee rotate` on real anvil (issue 13): propose from the config's custodies,
members sign with their own keystores, the submitter rotates the ledger AND the lock; afterwards
credits and refunds work only with the new set, and the manifest names the new committee."""

from __future__ import annotations

import json

import pytest
from eth_utils import to_checksum_address

from bridge.cli import main
from bridge.committee import digest as dg
from bridge.keystore import write_keystore
from relayers.evm.contracts import LEDGER, LOCK
from tests.integration.evm.test_contracts import (ALICE, CHAIN_ID, MIN_LOCK, PROVIDER_KEY, SUBMITTER_KEY,
                                                  address_of_key, as_args, assert_reverts, balance, credit,
                                                  lock_domain, settle, transact)

PASSWORD = "rotation-test-password"


@pytest.fixture
async def contracts(deploy_contract, committee):
    ledger = await deploy_contract(LEDGER, [committee.checksum_addresses, 3, address_of_key(PROVIDER_KEY)])
    lock = await deploy_contract(LOCK, [committee.checksum_addresses, 3, MIN_LOCK])
    return ledger, lock


def config(tmp_path, anvil, ledger, lock) -> str:
    cfg = {"chains": [
        {"family": "evm", "name": "settlement", "chain_id": CHAIN_ID, "rpc": [anvil.rpc_url], "finality": 0,
         "contracts": {"credits": ledger.address}},
        {"family": "evm", "name": "ethereum", "chain_id": CHAIN_ID, "rpc": [anvil.rpc_url], "token": "ETH",
         "finality": 0, "contracts": {"lock": lock.address}},
    ], "settlement_chain": "settlement"}
    p = tmp_path / "relay.json"
    p.write_text(json.dumps(cfg))
    return str(p)


def keystore(tmp_path, name: str, secret: bytes) -> str:
    path = tmp_path / "keys" / f"{name}.json"
    write_keystore(path, "secp256k1", secret, PASSWORD, n=2**10)
    return str(path)


def run(*argv) -> int:
    """`main` runs its own event loop: called from a worker thread of the async test."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(main, list(argv)).result()


async def test_rotate_ledger_and_lock_then_only_the_new_set_counts(tmp_path, anvil, w3, contracts, committee,
                                                                   committee_factory, monkeypatch, capsys):
    ledger, lock = contracts
    monkeypatch.setenv("ROT_PASSWORD", PASSWORD)
    new = committee_factory.make(4, "rotation-cli-new")
    (tmp_path / "new.json").write_text(json.dumps({"threshold": 3, "members": [
        {"name": f"new-{i}", "address": "0x" + a.hex()} for i, a in enumerate(new.addresses)]}))
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "network": "devnet", "committee": {
        "index": 0, "threshold": 3, "members": [{"name": f"old-{i}", "address": "0x" + a.hex()}
                                                for i, a in enumerate(committee.addresses)]}, "chains": {}}))
    cfg = config(tmp_path, anvil, ledger, lock)
    assert run("committee", "rotate", "propose", "--config", cfg, "--new-committee", str(tmp_path / "new.json"),
               "--out", str(tmp_path / "proposal.json")) == 0
    proposal = json.loads((tmp_path / "proposal.json").read_text())
    assert proposal["committee"]["index"] == 1
    assert sorted(c["role"] for c in proposal["custodies"]) == ["ledger", "lock"]

    sigdir = tmp_path / "sigs"
    sigdir.mkdir()
    for i in (0, 1):
        assert run("committee", "rotate", "sign", "--proposal", str(tmp_path / "proposal.json"),
                   "--key", keystore(tmp_path, f"old-{i}", committee.keys[i]), "--password-env", "ROT_PASSWORD",
                   "--out", str(sigdir / f"old-{i}.json")) == 0
    # a new member signing does not count: the CURRENT set must sign
    assert run("committee", "rotate", "sign", "--proposal", str(tmp_path / "proposal.json"),
               "--key", keystore(tmp_path, "new-0", new.keys[0]), "--password-env", "ROT_PASSWORD",
               "--out", str(sigdir / "new-0.json")) == 0
    payer = keystore(tmp_path, "payer", bytes.fromhex(SUBMITTER_KEY[2:]))
    submit = ("committee", "rotate", "submit", "--config", cfg, "--proposal", str(tmp_path / "proposal.json"),
              "--signatures", str(sigdir), "--payer-key", payer, "--password-env", "ROT_PASSWORD",
              "--manifest", str(manifest))
    capsys.readouterr()
    assert run(*submit) == 1  # two of the current members: below the threshold, nothing sent
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "2 signature(s) of current members, the threshold is 3" in err
    assert await ledger.functions.committeeIndex().call() == 0

    assert run("committee", "rotate", "sign", "--proposal", str(tmp_path / "proposal.json"),
               "--key", keystore(tmp_path, "old-3", committee.keys[3]), "--password-env", "ROT_PASSWORD",
               "--out", str(sigdir / "old-3.json")) == 0
    assert run(*submit) == 0
    capsys.readouterr()
    new_sorted = [to_checksum_address(a) for a in sorted(new.addresses)]
    for contract in (ledger, lock):
        assert await contract.functions.committeeIndex().call() == 1
        assert await contract.functions.signers().call() == new_sorted
        assert await contract.functions.threshold().call() == 3
    assert json.loads(manifest.read_text())["committee"]["index"] == 1
    assert run(*submit) == 0  # idempotent: both custodies are already at index 1
    assert "already at index 1" in capsys.readouterr().out

    # credits: the new set at index 1 settles, the old set (at either index) does not
    await assert_reverts(ledger.functions.settle(as_args([credit(0, ALICE, 5)]),
                                                 committee.sign(dg.credit_digest(
                                                     ledger_domain_of(ledger), msg([credit(0, ALICE, 5)], 1)))),
                         LEDGER, "UnknownSigner")
    await settle(w3, ledger, new, [credit(0, ALICE, 5)], index=1)
    assert await balance(ledger, ALICE) == 5

    # refunds: the lock pays a release signed by the new set only
    await transact(w3, lock.functions.lock(b"\x01" * 32), SUBMITTER_KEY, value=10**17)
    to, rid = bytes.fromhex("c1" * 20), b"\x07" * 32
    d = dg.release_digest(lock_domain(lock), to, 10**16, rid)
    await assert_reverts(lock.functions.release(to_checksum_address(to), 10**16, rid, committee.sign(d, (0, 1, 2))),
                         LOCK, "UnknownSigner")
    await transact(w3, lock.functions.release(to_checksum_address(to), 10**16, rid, new.sign(d, (0, 1, 2))),
                   SUBMITTER_KEY)
    assert await w3.eth.get_balance(to_checksum_address(to)) == 10**16


def ledger_domain_of(ledger):
    from bridge.types import SettlementDomain

    return SettlementDomain(chain_id=CHAIN_ID, contract=bytes.fromhex(ledger.address[2:]))


def msg(credits, index):
    from bridge.types import CreditMessage

    return CreditMessage(index, tuple(credits))
