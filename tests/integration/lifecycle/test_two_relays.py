"""Two aggregators (relays) with separate gas keys on one anvil, both reading the same signers'
attestations (in-process signer nodes over HTTP, the fixtures of test_committee_flow).

Each deposit is settled once; with the split (relay_count=2) each relay sends only its own
share at once, so no transaction reverts (no gas burnt on a deposit the other relay settled);
when one relay stops, the other takes its share over after ``takeover_after``; the stopped one,
back, finds everything settled, sends nothing and forgets it (no retry loop).
"""

from __future__ import annotations

import asyncio

import aiohttp
from eth_account import Account

from bridge.committee.aggregate import Aggregator, SignerClient, relay_of
from bridge.storage.db import Database
from bridge.types import SettlementDomain
from devnet.evm.anvil import DEV_PRIVATE_KEYS
from relayers.evm.settlement import EvmSettlement
from tests.integration.evm.helpers import set_automine, wait_for
from tests.integration.lifecycle.test_committee_flow import (CHAIN_ID, attested, chain, chain_settings,  # noqa: F401
                                                             committee_of, pay, step_all)

GAS_KEYS = (DEV_PRIVATE_KEYS[9], DEV_PRIVATE_KEYS[8])


async def nonce(chain, key: str) -> int:
    return int(await chain.anvil.rpc("eth_getTransactionCount", Account.from_key(key).address, "latest"), 16)


async def test_two_relays_settle_each_deposit_once_without_reverts(chain, lifecycle, committee_of, tmp_path):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    payments = [await lc.payment(None, credits=str(100 + i)) for i in range(6)]
    for p in payments:
        await pay(chain, p, int(p["amount"]))
    await step_all(c)
    assert len(await attested(c.nodes[0])) == 6

    session = aiohttp.ClientSession()
    relays, closers = [], []
    try:
        for i, key in enumerate(GAS_KEYS):
            st = EvmSettlement(chain.settlement_cfg, key, receipt_poll=0.02)
            db = Database(f"sqlite+aiosqlite:///{tmp_path}/relay-{i}.sqlite")
            await db.migrate()
            closers += [st.aclose, db.dispose]
            relays.append(Aggregator(
                signers=[SignerClient(u, session) for u in c.urls], settlement=st,
                domain=SettlementDomain(CHAIN_ID, bytes.fromhex(chain.ledger[2:])), db=db, max_batch_wait=0,
                relay_index=i, relay_count=2, takeover_after=3600.0))
        start = [await nonce(chain, k) for k in GAS_KEYS]
        first_block = int(await chain.anvil.rpc("eth_blockNumber"), 16) + 1

        # both relays step at once and their transactions land in one block
        await set_automine(chain.anvil, False)
        try:
            tasks = [asyncio.create_task(r.step()) for r in relays]

            async def both_sent() -> bool:
                return int((await chain.anvil.rpc("txpool_status"))["pending"], 16) >= 2

            await wait_for(both_sent)
            await chain.anvil.mine(1)
            settled = await asyncio.gather(*tasks)
        finally:
            await set_automine(chain.anvil, True)
        assert sum(settled) == 6 and all(settled)
        for i, r in enumerate(relays):  # each settled its own share only
            assert len(r._done) == settled[i] and {relay_of(dep, 2) for dep in r._done} == {i}
        # no transaction reverted: nobody paid gas for a deposit the other relay settled
        head = int(await chain.anvil.rpc("eth_blockNumber"), 16)
        for n in range(first_block, head + 1):
            block = await chain.anvil.rpc("eth_getBlockByNumber", hex(n), False)
            for t in block["transactions"]:
                assert (await chain.anvil.rpc("eth_getTransactionReceipt", t))["status"] == "0x1"
        assert [await nonce(chain, k) - s for k, s in zip(GAS_KEYS, start)] == [1, 1]
        # each deposit credited exactly once on chain
        records = await relays[0].settlement.credited(0, head)
        ids = [r.credit.deposit_id for r in records]
        assert len(ids) == len(set(ids)) == 6

        # relay 1 stops; relay 0 settles its own share at once and relay 1's after the takeover delay
        more = [await lc.payment(None, credits=str(200 + i)) for i in range(6)]
        for p in more:
            await pay(chain, p, int(p["amount"]))
        await step_all(c)
        relays[0].takeover_after = 0.5
        own = await relays[0].step()
        others = 6 - own
        assert others > 0, "all six new deposits hashed to relay 0: pick other amounts"
        await asyncio.sleep(0.6)
        assert await relays[0].step() == others
        ids = [r.credit.deposit_id for r in await relays[0].settlement.credited(0, int(
            await chain.anvil.rpc("eth_blockNumber"), 16))]
        assert len(ids) == len(set(ids)) == 12

        # relay 1 comes back: it sees its deposits settled by relay 0, sends nothing, drops them
        before = await nonce(chain, GAS_KEYS[1])
        assert await relays[1].step() == 0
        assert await nonce(chain, GAS_KEYS[1]) == before
        assert not any(relay_of(dep, 2) == 1 for dep in relays[1]._pending)
        # relay 0's deposits wait in relay 1's memory until their takeover time; then they are
        # found settled and dropped, again without a transaction
        relays[1].takeover_after = 0
        assert await relays[1].step() == 0 and await nonce(chain, GAS_KEYS[1]) == before
        assert relays[1]._pending == {}
    finally:
        for close in closers:
            await close()
        await session.close()
