"""Hash helpers of the core. keccak256 comes from ``eth-hash`` (pure hashing, no chain SDK)."""

from __future__ import annotations

from eth_hash.auto import keccak as _keccak


def keccak256(data: bytes) -> bytes:
    return _keccak(data)


def source_id(family: str, network: str | int, address: bytes) -> bytes:
    """The 32-byte id of a deposit stream: one lock contract (or account) on one chain.

    Every signer derives it from chain facts (family, the chain's own network id, the
    contract address), never from local config names, so all signers agree on it.
    """
    return keccak256(b"creditbridge/source/v1|" + family.encode() + b"|" + str(network).encode() + b"|" + address)
