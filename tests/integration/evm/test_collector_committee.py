"""Plain transfers to per-payment deposit addresses through the whole signer path (issue 14):
the gateway issues payments, a wallet sends plain ETH to the payment's address, the relay's
EvmCollector collects it, four in-process SignerNodes (own databases, own EvmWatchers, the
gateway over HTTP) credit it once, refund an overpayment to the funding transaction's sender,
and keep (never refund) the held part of a deposit whose funding hint does not verify.

Reuses the committee flow's real anvil, gateway and signer fixtures."""

from __future__ import annotations

import os
import time

import aiohttp
from eth_utils import keccak, to_checksum_address

from bridge.payments.evm_deposit import deposit_address
from bridge.payments.feed import FeedEntry
from bridge.node import DbCursor
from bridge.storage.db import Database
from relayers.evm.collector import EvmCollector
from tests.integration.evm.helpers import DEV_ADDRESSES, receipt
from tests.integration.lifecycle.conftest import lifecycle, receiver  # noqa: F401 (fixtures)
from tests.integration.lifecycle.test_committee_flow import (  # noqa: F401 (fixtures)
    GAS,
    attested,
    chain,
    chain_settings,
    committee_of,
    statuses,
    step_all,
)

COLLECT = keccak(text="collect(bytes32,bytes32)")[:4]


class ListFeed:
    """The ReferenceFeed protocol over a list (the gateway's feed endpoint is engineer D's)."""

    def __init__(self) -> None:
        self.entries: list[FeedEntry] = []

    def add(self, payment: dict) -> bytes:
        r = bytes.fromhex(payment["reference"][2:])
        self.entries.append(FeedEntry(len(self.entries) + 1, "ethereum", r, int(time.time()) + 3600))
        return r

    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        return [e for e in self.entries if e.chain == chain and e.cursor > after][:limit]


async def plain_transfer(chain, to: str, value: int, sender: int) -> bytes:
    h = await chain.anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[sender], "to": to, "value": hex(value)})
    await receipt(chain.anvil, bytes.fromhex(h[2:]))
    return bytes.fromhex(h[2:])


async def test_plain_transfers_are_credited_once_and_refunded_to_their_sender(chain, lifecycle, committee_of,
                                                                           tmp_path):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    feed = ListFeed()
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/relay.sqlite")
    await db.migrate()
    start = int(await chain.anvil.rpc("eth_blockNumber"), 16)
    collector = EvmCollector(chain.cfg.model_copy(update={"start_block": start}), GAS, feed,
                             DbCursor(db, "collector"))
    try:
        exact = await lc.payment(None, credits="500")
        over = await lc.payment(None, credits="100")
        fronted = await lc.payment(None, credits="100")
        for p in (exact, over, fronted):
            feed.add(p)
        # the instructions the payer's wallet gets: a plain transfer to the deposit address
        lock = bytes.fromhex(chain.lock[2:])
        to = {p["id"]: to_checksum_address(deposit_address(lock, bytes.fromhex(p["reference"][2:])))
              for p in (exact, over, fronted)}
        extra = 10**15
        await plain_transfer(chain, to[exact["id"]], int(exact["amount"]), sender=1)
        await plain_transfer(chain, to[over["id"]], int(over["amount"]) + extra, sender=3)
        await collector.step()
        assert collector.collects == 2
        # someone front-runs the relay on the third payment with a bogus funding hint
        await plain_transfer(chain, to[fronted["id"]], int(fronted["amount"]) + extra, sender=4)
        bogus = os.urandom(32)
        h = await chain.anvil.rpc("eth_sendTransaction", {
            "from": DEV_ADDRESSES[6], "to": chain.lock, "gas": hex(200_000),
            "data": "0x" + (COLLECT + bytes.fromhex(fronted["reference"][2:]) + bogus).hex()})
        assert int((await receipt(chain.anvil, bytes.fromhex(h[2:])))["status"], 16) == 1
        await collector.step()
        await collector.step()
        assert collector.collects == 2  # nothing left to collect there: no second collect

        for _ in range(2):
            await step_all(c)
        for n in c.nodes:
            # each payment credited once, at its quote
            assert sorted((await attested(n)).values()) == [100, 100, 500]
            assert set((await statuses(n)).values()) == {"attested"}
            rel = await n.releases_after(0, 100)
            # the overpayment goes back to the sender of the funding transaction; the fronted
            # one's excess has no provable payer: kept (as dust), never signed
            assert [(r["purpose"], int(r["amount"]), r["to"]) for r in rel] == [
                ("excess", extra, DEV_ADDRESSES[3].lower())]
        async with aiohttp.ClientSession() as session:
            async with session.get(c.urls[0] + "/v1/refunds") as r:
                view = await r.json()
        assert view["by_chain"] == {"ethereum": {"signed": 1, "dust": 1}}
        assert view["dust"]["ethereum"]["count"] == 1 and view["dust"]["ethereum"]["amount"] == str(extra)
        assert [d["payment_id"] for d in view["dust_latest"]] == [fronted["id"]]
    finally:
        await collector.aclose()
        await db.dispose()
