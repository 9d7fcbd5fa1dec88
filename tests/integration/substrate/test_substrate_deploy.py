"""``deploy substrate`` on a real chopsticks Asset Hub: the committee's multisig account is
derived from the manifest's Ed25519 keys, shown in the chain's SS58 format, refused while it
holds less than the existential deposit, and recorded once funded."""

from __future__ import annotations

import pytest

from bridge import manifest as mf
from bridge.config import SubstrateCommittee
from bridge.errors import ConfigError
from relayers.substrate.deploy import deploy_substrate
from relayers.substrate.multisig import committee_address
from relayers.substrate.networks import CHOPSTICKS_GENESIS

KEYS = ["0x" + f"{0x51 + i:02x}" * 32 for i in range(4)]


def _manifest(path, network: str = "testnet") -> None:
    mf.save_manifest(path, mf.parse_manifest({"version": 1, "network": network, "committee": {"threshold": 3, "members": [
        {"name": f"s{i}", "address": "0x" + f"{i + 1:02x}" * 20, "ed25519": k} for i, k in enumerate(KEYS)]}}))


async def test_committee_account_is_derived_checked_and_recorded(chain, tmp_path):
    path = tmp_path / "manifest.json"
    _manifest(path)
    account = committee_address(SubstrateCommittee(members=KEYS, threshold=3), 0)
    with pytest.raises(ConfigError) as e:
        await deploy_substrate(path, network="testnet", chain="polkadot", rpc=[chain.url], token="DOT", ss58_prefix=0)
    assert f"the committee account {account} holds 0 base units, below the existential deposit" in str(e.value)
    assert "\n" not in str(e.value)
    assert "polkadot" not in mf.load_manifest(path).chains  # nothing recorded

    ed = await chain.run(lambda si: int(si.get_constant("Balances", "ExistentialDeposit").value))
    sent = await chain.send("//Alice", lambda si: si.compose_call(
        "Balances", "transfer_keep_alive", {"dest": account, "value": ed}))
    await chain.new_block([sent])
    head = await chain.head()
    result = await deploy_substrate(path, network="testnet", chain="polkadot", rpc=[chain.url], token="DOT",
                                    ss58_prefix=0)
    assert result.funded and result.committee_account == account and result.balance == ed
    entry = mf.load_manifest(path).chains["polkadot"]
    assert (entry.family, entry.genesis_hash, entry.ss58_prefix, entry.token, entry.committee_account) == \
        ("substrate", CHOPSTICKS_GENESIS, 0, "DOT", account)
    assert entry.start_block == head


async def test_mainnet_manifest_refuses_an_unknown_genesis(chain, tmp_path):
    path = tmp_path / "manifest.json"
    _manifest(path, "mainnet")
    with pytest.raises(ConfigError, match="is not a known mainnet Asset Hub"):
        await deploy_substrate(path, network="mainnet", chain="polkadot", rpc=[chain.url], allow_unfunded=True)
