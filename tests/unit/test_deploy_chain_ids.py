"""``creditbridge deploy evm`` refuses an RPC whose chain id is not the named chain's."""

import pytest

from bridge.errors import ConfigError
from relayers.evm.deploy import check_chain_id


def test_testnet_sepolia_must_be_sepolia():
    # config/testnet names its Ethereum chain "sepolia": an RPC of another testnet is refused
    with pytest.raises(ConfigError, match="sepolia: the RPC's chain id is 84532, testnet sepolia is 11155111"):
        check_chain_id("testnet", "sepolia", 84532, None)
    check_chain_id("testnet", "sepolia", 11155111, None)


def test_network_checks():
    with pytest.raises(ConfigError, match="Ethereum mainnet"):
        check_chain_id("devnet", "ethereum", 1, None)
    with pytest.raises(ConfigError, match="a testnet"):
        check_chain_id("mainnet", "settlement", 84532, None)
    with pytest.raises(ConfigError, match="the manifest's is 31337"):
        check_chain_id("devnet", "ethereum", 31338, 31337)
    check_chain_id("devnet", "ethereum", 31337, None)  # local chains: any id that is not a real network's
