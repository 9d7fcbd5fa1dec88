"""Facts of the real Asset Hub networks the relayer is meant for.

Genesis hashes are computed, not copied: ``@substrate/connect-known-chains`` (npm, pinned in
package.json) ships the light-client chain specs ``polkadot_asset_hub`` and
``ksmcc3_asset_hub`` (and the testnet's ``westend2_asset_hub``) with the genesis ``stateRootHash``; the genesis block hash is
``blake2_256`` of the SCALE header ``(parent 0x00.., number 0, state_root, extrinsics_root of
no extrinsics, empty digest)``. ``tests/unit/substrate/test_networks.py`` recomputes them from
the installed package (and the Polkadot relay chain's well-known genesis the same way).

A configured chain whose genesis is one of these must use the matching token and SS58
prefix: paying DOT on Kusama Asset Hub is a configuration error, caught at connect time.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.errors import ConfigError
from relayers.substrate.decode import blake2_256

# the extrinsics root of a block without extrinsics (trie root of nothing)
EMPTY_EXTRINSICS_ROOT = bytes.fromhex("03170a2e7597b7b7e3d84c05391d139a62b157e78786d8c082f29dcf4c111314")


@dataclass(frozen=True)
class Network:
    name: str
    token: str
    decimals: int
    ss58_prefix: int
    genesis_hash: str  # 0x hex
    rpc: tuple[str, ...]  # public endpoints (examples; run your own node in production)


POLKADOT_HUB = Network(
    name="Polkadot Asset Hub (Polkadot Hub)", token="DOT", decimals=10, ss58_prefix=0,
    genesis_hash="0x68d56f15f85d3136970ec16946040bc1752654e906147f7e43e9d539d7c3de2f",
    rpc=("wss://polkadot-asset-hub-rpc.polkadot.io",),
)
KUSAMA_ASSET_HUB = Network(
    name="Kusama Asset Hub", token="KSM", decimals=12, ss58_prefix=2,
    genesis_hash="0x48239ef607d7928874027a43a67689209727dfb3d3dc5e5b03a39bdc2eda771a",
    rpc=("wss://kusama-asset-hub-rpc.polkadot.io",),
)
# the testnet: Westend Asset Hub (WND, 12 decimals; the chain spec names no ss58Format, the
# network uses the generic prefix 42 like its relay chain westend2)
WESTEND_ASSET_HUB = Network(
    name="Westend Asset Hub", token="WND", decimals=12, ss58_prefix=42,
    genesis_hash="0x67f9723393ef76214df0118c34bbbd3dbebc8ed46a10973a8c969d48fe7598c9",
    rpc=("wss://westend-asset-hub-rpc.polkadot.io",),
)
KNOWN: dict[str, Network] = {n.genesis_hash: n for n in (POLKADOT_HUB, KUSAMA_ASSET_HUB, WESTEND_ASSET_HUB)}

# chopsticks reports this fixed hash as the genesis of every chain it runs from a chain spec
CHOPSTICKS_GENESIS = "0x" + "45" * 32


def genesis_hash_from_state_root(state_root: bytes) -> str:
    header = bytes(32) + b"\x00" + state_root + EMPTY_EXTRINSICS_ROOT + b"\x00"
    return "0x" + blake2_256(header).hex()


def check_network(chain: str, genesis_hash: str, token: str, ss58_prefix: int) -> None:
    """ConfigError if ``genesis_hash`` is a known network whose token or prefix differ."""
    known = KNOWN.get(genesis_hash.lower())
    if known is None:
        return
    if known.token != token:
        raise ConfigError(f"chain {chain}: genesis {genesis_hash[:10]}.. is {known.name}, "
                          f"whose token is {known.token}, not {token}")
    if known.ss58_prefix != ss58_prefix:
        raise ConfigError(f"chain {chain}: {known.name} uses SS58 prefix {known.ss58_prefix}, not {ss58_prefix}")


def config_entry(network: Network, name: str, committee: dict) -> dict:
    """A ``chains[]`` config entry for a real network (see README)."""
    return {"family": "substrate", "name": name, "rpc": list(network.rpc), "token": network.token,
            "ss58_prefix": network.ss58_prefix, "genesis_hash": network.genesis_hash, "committee": committee,
            "poll_interval": 6.0, "max_block_range": 100}
