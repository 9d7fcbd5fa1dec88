"""``creditbridge committee init`` and ``deploy evm`` as an operator runs them (real subprocesses
against real anvil chains, keys in encrypted keystores), and a node whose config disagrees with
the manifest refusing to start with one line on stderr."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from eth_utils import keccak

from bridge import manifest as mf
from bridge.keystore import write_keystore
from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "deploy-test-password"


async def cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "CREDITBRIDGE_KEY_PASSWORD": PASSWORD,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "bridge.cli", *args, cwd=str(ROOT), env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def committee(tmp_path) -> list[str]:
    members = []
    for i in range(4):
        write_keystore(tmp_path / f"s{i}.json", "secp256k1", os.urandom(32), PASSWORD, n=2**4)
        write_keystore(tmp_path / f"e{i}.json", "ed25519", os.urandom(32), PASSWORD, n=2**4)
        members += ["--member", f"signer-{i}:{tmp_path / f's{i}.json'}:{tmp_path / f'e{i}.json'}"]
    write_keystore(tmp_path / "deployer.json", "secp256k1", bytes.fromhex(DEV_PRIVATE_KEYS[0][2:]), PASSWORD, n=2**4)
    return members


async def test_deploy_evm_records_lock_and_ledger(tmp_path, committee):
    manifest = str(tmp_path / "manifest.json")
    code, out, err = await cli("committee", "init", "--manifest", manifest, "--network", "devnet",
                               "--threshold", "3", *committee)
    assert code == 0, err
    assert json.loads(out)["members"] == [f"signer-{i}" for i in range(4)]
    async with await AnvilNode.start(chain_id=31337, block_time=0.2) as eth, await AnvilNode.start(chain_id=31338) as st:
        deploy = ["deploy", "evm", "--manifest", manifest, "--network", "devnet",
                  "--keystore", str(tmp_path / "deployer.json")]
        code, out, err = await cli(*deploy, "--chain", "ethereum", "--rpc", eth.rpc_url, "--contract", "lock",
                                   "--min-amount", "1000000000", "--confirmations", "3",
                                   "--max-fee", str(100 * 10**9), "--max-priority-fee", str(10**9))
        assert code == 0, err
        lock = json.loads(out)
        assert await eth.rpc("eth_blockNumber") and int(await eth.rpc("eth_blockNumber"), 16) >= lock["block"] + 3
        code, out, err = await cli(*deploy, "--chain", "settlement", "--rpc", st.rpc_url, "--contract", "credits",
                                   "--confirmations", "0")
        assert code == 0, err
        ledger = json.loads(out)

        m = mf.load_manifest(manifest)
        assert m.hash == ledger["manifest_hash"] and m.settlement_chain == "settlement"
        eth_entry, st_entry = m.chains["ethereum"], m.chains["settlement"]
        assert (eth_entry.chain_id, eth_entry.token, eth_entry.start_block) == (31337, "ETH", lock["block"])
        rec = eth_entry.contracts["lock"]
        assert rec.address == lock["address"] and rec.block == lock["block"]
        code_now = bytes.fromhex((await eth.rpc("eth_getCode", rec.address, "latest"))[2:])
        assert rec.code_hash == "0x" + keccak(code_now).hex()
        assert st_entry.chain_id == 31338 and st_entry.contracts["credits"].address == ledger["address"]
        # the contracts hold the manifest's committee
        signers_call = "0x" + keccak(text="threshold()")[:4].hex()
        assert int(await eth.rpc("eth_call", {"to": rec.address, "data": signers_call}, "latest"), 16) == 3

        # a chain whose id is not the manifest's is refused, in one line, and nothing changes
        code, out, err = await cli(*deploy, "--chain", "ethereum", "--rpc", st.rpc_url, "--contract", "lock",
                                   "--min-amount", "1")
        assert code == 1 and err.count("\n") == 1, err
        assert "the RPC's chain id is 31338, the manifest's is 31337" in err
        # a fee cap below the base fee is refused before anything is sent
        code, out, err = await cli(*deploy, "--chain", "ethereum", "--rpc", eth.rpc_url, "--contract", "lock",
                                   "--min-amount", "1", "--max-fee", "1")
        assert code == 1 and err.count("\n") == 1 and "exceed --max-fee 1 wei" in err, err
        assert mf.load_manifest(manifest).hash == m.hash


async def test_a_mainnet_manifest_refuses_a_dev_chain(tmp_path, committee):
    manifest = str(tmp_path / "manifest.json")
    assert (await cli("committee", "init", "--manifest", manifest, "--network", "mainnet", "--threshold", "3",
                      *committee))[0] == 0
    async with await AnvilNode.start(chain_id=11155111) as eth:
        code, _, err = await cli("deploy", "evm", "--manifest", manifest, "--network", "mainnet", "--chain", "ethereum",
                                 "--rpc", eth.rpc_url, "--contract", "lock", "--min-amount", "1",
                                 "--keystore", str(tmp_path / "deployer.json"))
    assert code == 1 and "the RPC's chain id is 11155111, mainnet ethereum is 1" in err, err


async def test_committee_threshold_must_be_a_majority(tmp_path, committee):
    code, _, err = await cli("committee", "init", "--manifest", str(tmp_path / "m.json"), "--network", "devnet",
                             "--threshold", "2", *committee)
    assert code == 1 and err.count("\n") == 1 and "needs 2t > n (at least 3)" in err, err


def _node_config(tmp_path, **chain_overrides) -> Path:
    lock, ledger = "0x" + "11" * 20, "0x" + "22" * 20
    mf.save_manifest(tmp_path / "manifest.json", mf.parse_manifest({
        "version": 1, "network": "devnet", "settlement_chain": "settlement",
        "committee": {"threshold": 3, "members": [
            {"name": f"s{i}", "address": "0x" + f"{i + 1:02x}" * 20, "ed25519": "0x" + f"{i + 0xa1:02x}" * 32}
            for i in range(4)]},
        "chains": {"ethereum": {"family": "evm", "chain_id": 31337, "token": "ETH",
                                "contracts": {"lock": {"address": lock, "code_hash": "0x" + "aa" * 32, "block": 1}}},
                   "settlement": {"family": "evm", "chain_id": 31338, "contracts": {
                       "credits": {"address": ledger, "code_hash": "0x" + "bb" * 32, "block": 1}}}}}))
    cfg = {"manifest": "manifest.json",
           "chains": [{"name": "ethereum", "rpc": ["http://127.0.0.1:9"], **chain_overrides},
                      {"name": "settlement", "rpc": ["http://127.0.0.1:9"]}],
           "storage": {"url": f"sqlite+aiosqlite:///{tmp_path}/db.sqlite"},
           "aggregator": {"signers": ["http://127.0.0.1:9"],
                          "key": {"keystore": str(tmp_path / "deployer.json"), "password_env": "NOT_SET_ANYWHERE"}}}
    p = tmp_path / "relay.json"
    p.write_text(json.dumps(cfg))
    return p


async def test_node_with_a_disagreeing_config_refuses_to_start_with_one_line(tmp_path, committee):
    cfg = _node_config(tmp_path, chain_id=1)
    code, out, err = await cli("relay", "--config", str(cfg))
    assert code == 1 and out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("creditbridge: invalid-config: config disagrees with manifest 0x")
    assert "chains.ethereum.chain_id is 1 in the config but 31337 in the manifest" in err
    code, _, err = await cli("config", "check", "--config", str(cfg))
    assert code == 1 and "chains.ethereum.chain_id is 1" in err


async def test_node_config_filled_from_the_manifest_passes_the_check(tmp_path, committee):
    code, out, err = await cli("config", "check", "--config", str(_node_config(tmp_path)))
    assert code == 0, err
    assert "2 chain(s), settlement on settlement" in out
