"""Fixtures for EVM integration tests: one real anvil per test module, a helper to deploy the
compiled contracts, and test committees whose keys sign with bridge.committee.digest.

Modules deploy their contracts in module-scoped fixtures and isolate tests with
``anvil.snapshot()`` / ``anvil.revert()`` taken after those deployments (see
test_contracts.py's ``fresh_state``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Sequence

import pytest
import pytest_asyncio
from eth_utils import to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.committee import digest as dg
from bridge.errors import ConfigError
from bridge.hashing import keccak256
from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode, anvil_binary
from relayers.evm.contracts import LEDGER, LOCK, deploy, load_artifact


@dataclass(frozen=True)
class TestCommittee:
    """Deterministic test keys of a committee, ordered by address (ascending)."""

    __test__ = False  # not a test class

    keys: tuple[bytes, ...]

    @classmethod
    def make(cls, n: int, label: str) -> "TestCommittee":
        keys = [keccak256(f"creditbridge-test/{label}/{i}".encode()) for i in range(n)]
        return cls(tuple(sorted(keys, key=dg.address_of)))

    @property
    def addresses(self) -> list[bytes]:
        return [dg.address_of(k) for k in self.keys]

    @property
    def checksum_addresses(self) -> list[str]:
        return [to_checksum_address(a) for a in self.addresses]

    def sign(self, digest: bytes, members: Iterable[int] | None = None) -> bytes:
        """Signatures of the chosen members (default: all), packed in ascending address order."""
        chosen = range(len(self.keys)) if members is None else members
        return dg.pack_signatures((dg.address_of(self.keys[i]), dg.sign_digest(self.keys[i], digest)) for i in chosen)


@pytest.fixture(scope="session")
def committee_factory() -> type[TestCommittee]:
    return TestCommittee


@pytest.fixture(scope="session")
def committee() -> TestCommittee:
    """Four signers (the tests use threshold 3)."""
    return TestCommittee.make(4, "committee-0")


@pytest.fixture(scope="session")
def dev_keys() -> tuple[str, ...]:
    return DEV_PRIVATE_KEYS


@pytest_asyncio.fixture(scope="module")
async def anvil():
    try:
        anvil_binary()
        load_artifact(LEDGER)
        load_artifact(LOCK)
    except ConfigError as e:  # missing set-up is an error with its fix, not a skip
        pytest.fail(str(e), pytrace=False)
    node = await AnvilNode.start(chain_id=DEFAULT_CHAIN_ID)
    try:
        yield node
    finally:
        await node.stop()


@pytest_asyncio.fixture(scope="module")
async def w3(anvil: AnvilNode):
    web3 = AsyncWeb3(AsyncHTTPProvider(anvil.rpc_url))
    try:
        yield web3
    finally:
        await web3.provider.disconnect()


@pytest.fixture(scope="module")
def deploy_contract(w3: AsyncWeb3) -> Callable[..., Awaitable[Any]]:
    """``await deploy_contract(name, args, key=dev account 0)`` -> bound web3 contract."""

    async def _deploy(name: str, args: Sequence[Any], key: str = DEV_PRIVATE_KEYS[0]):
        address = await deploy(w3, name, args, key)
        abi, _ = load_artifact(name)
        return w3.eth.contract(address=address, abi=abi)

    return _deploy
