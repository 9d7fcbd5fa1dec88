"""TonWatcher.reobserve when its endpoint cannot tell (issue 11 item 2): a toncenter endpoint
that holds ``getTransactions`` until the client times out, and a liteserver-backed view that
lags behind the deposit, raise a retryable ChainError -- never ``[]`` ("proved absent"), which
would make a signer reject the deposit for good. Once the endpoint answers, the deposit is there."""

from __future__ import annotations

import os

import pytest

from bridge.errors import ChainError
from relayers.ton import lock as L
from relayers.ton.watcher import TonWatcher

from tests.integration.fault_proxy import FaultProxy
from tests.integration.ton.conftest import TON, TonEnv


async def _a_deposit(ton: TonEnv):
    w = TonWatcher(ton.config())
    try:
        start = await ton.final_seqno() + 1
        ref = os.urandom(32)
        await ton.pay(1, 2 * TON, L.deposit_body(ref, query_id=1))
        await ton.wait_block()
        (o,) = [o for o in await w.fetch_deposits(start, await w.finalized_height()) if o.reference == ref]
        return o
    finally:
        await w.aclose()


async def test_a_stalled_endpoint_is_could_not_tell_not_absent(ton: TonEnv):
    o = await _a_deposit(ton)
    proxy = await FaultProxy(ton.toncenter).start()
    w = TonWatcher(ton.config(liteserver_config=None, toncenter=[proxy.url], request_timeout=0.5))
    try:
        proxy.stall_if = lambda path, body: "/getTransactions" in path
        with pytest.raises(ChainError) as e:
            await w.reobserve(o.tx_id)
        assert e.value.retryable and proxy.stalled >= 1
        proxy.heal()
        assert await w.reobserve(o.tx_id) == [o]
    finally:
        await w.aclose()
        await proxy.stop()


class _Lagging:
    """A transport whose view of the chain stops at an older masterchain block (a lagging
    liteserver); everything else is the real liteserver's."""

    def __init__(self, inner, last: int) -> None:
        self.inner, self.last, self.name = inner, last, "lagging"

    async def last_seqno(self) -> int:
        return self.last

    def __getattr__(self, name):
        return getattr(self.inner, name)


async def test_a_lagging_liteserver_is_could_not_tell_not_absent(ton: TonEnv):
    before = await ton.final_seqno()
    o = await _a_deposit(ton)
    real = TonWatcher(ton.config())
    w = TonWatcher(ton.config(), transport=_Lagging(real.transport, before))
    try:
        with pytest.raises(ChainError, match="lagging"):
            await w.reobserve(o.tx_id)
        w.transport.last = await ton.final_seqno()
        assert await w.reobserve(o.tx_id) == [o]
    finally:
        await real.aclose()
