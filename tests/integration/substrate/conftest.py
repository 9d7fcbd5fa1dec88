"""One real chopsticks chain (the offline Asset Hub runtime, Manual block mode) for the
substrate integration tests, started from the repo's npm tools like every other local chain."""

from __future__ import annotations

import pytest_asyncio

from devnet.substrate.chopsticks import ChopsticksNode
from tests.integration.substrate.helpers import Chain, dev_assets, funded_balances


@pytest_asyncio.fixture(scope="session")
async def chain(tmp_path_factory):
    node = await ChopsticksNode.start(tmp_path_factory.mktemp("chopsticks"), "asset-hub",
                                      balances=funded_balances(), assets=dev_assets(),
                                      build_block_mode="Manual")
    c = Chain(node)
    try:
        yield c
    finally:
        await c.close()
        await node.stop()
