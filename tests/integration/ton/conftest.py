"""The local TON chain for integration tests, started once per session in this process: the
real TVM emulator (pytvm) behind an ADNL liteserver and a toncenter v2 API on 127.0.0.1. The
lock contract is deployed by a real WalletV4R2 transfer, and tests talk to the chain only
through an unmodified pytoniq LiteBalancer (trust_level=2: the local chain has no validator
signatures to prove anything with) or the toncenter HTTP API. No node exists offline; the TVM,
the contracts and pytoniq's decoding path are the real ones."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest_asyncio
from pytoniq import LiteBalancer, WalletV4R2
from pytoniq_core import Address
from pytoniq_core.crypto.keys import mnemonic_new, mnemonic_to_private_key

from bridge.config import TonChainConfig
from relayers.ton import lock as L
from relayers.ton import wallet as tw
from devnet.ton.liteserver import LiteServer
from devnet.ton.localchain import LOCAL_GLOBAL_ID, wallet_state_init
from devnet.ton.toncenter_server import start_toncenter

MIN = 10**7
TON = 10**9
BLOCK_INTERVAL = 0.2


@dataclass
class TonEnv:
    server: LiteServer
    lb: LiteBalancer
    toncenter: str
    lock: Address
    seeds: list[bytes]
    publics: list[bytes]
    threshold: int
    wallets: list[WalletV4R2] = field(default_factory=list)
    mnemonics: list[list[str]] = field(default_factory=list)

    def config(self, **kw) -> TonChainConfig:
        base = {"family": "ton", "name": "ton", "liteserver_config": self.server.global_config(), "trust_level": 2,
                "global_id": LOCAL_GLOBAL_ID, "contracts": {"lock": L.bounceable(self.lock)}, "poll_interval": 0.2}
        base.update(kw)
        return TonChainConfig(**base)

    async def final_seqno(self) -> int:
        return (await self.lb.get_masterchain_info())["last"]["seqno"]

    async def deposit_count(self) -> int:
        return (await self.lb.run_get_method(self.lock, "get_deposit_seq", []))[0]

    async def pay(self, i: int, amount: int, body, *, wait_lock_txs: bool = True) -> bytes:
        """A signed transfer from wallet ``i``; waits until the wallet's seqno moved (so the next
        transfer of the same wallet is valid) and the chain sealed the block."""
        w = self.wallets[i]
        before = await self._seqno(w)
        h = await tw.transfer(w, self.lock, amount, body)
        await tw.wait_for(lambda: self._moved(w, before), 20)
        return h

    async def _seqno(self, w) -> int:
        await w.update()
        return await w.get_seqno() if w.is_active else 0

    async def _moved(self, w, before: int) -> bool:
        return await self._seqno(w) > before

    async def new_wallet(self, amount: int = 50 * TON, deployed: bool = True) -> tuple[WalletV4R2, list[str]]:
        words = mnemonic_new(24)
        pub = mnemonic_to_private_key(words)[0]
        w = await tw.open_wallet(self.lb, words)
        await self.server.call(self.server.chain.mint, w.address, amount,
                               wallet_state_init({"public_key": pub.hex()}) if deployed else None)
        await self.server.seal()
        await self.wait_block()
        return w, words

    async def wait_block(self, n: int = 1) -> None:
        target = self.server.chain.last.seqno + n
        await tw.wait_for(lambda: self._at(target), 20, 0.05)

    async def _at(self, seqno: int) -> bool:
        return await self.final_seqno() >= seqno


@pytest_asyncio.fixture(scope="session")
async def ton():
    server = await LiteServer.start(block_interval=BLOCK_INTERVAL)
    runner, url = await start_toncenter(server)
    seeds = [os.urandom(32) for _ in range(4)]
    pubs = [L.ed25519_public(s) for s in seeds]
    lb = await tw.connect(server.global_config())
    env = TonEnv(server, lb, url, L.lock_address(pubs, 3, MIN, global_id=LOCAL_GLOBAL_ID), seeds, pubs, 3)
    try:
        for _ in range(3):
            w, words = await env.new_wallet(1_000 * TON)
            env.wallets.append(w)
            env.mnemonics.append(words)
        # deploy the lock as a wallet app would: state init + top-up body, bounceable
        await tw.transfer(env.wallets[0], env.lock, 2 * TON, L.top_up_body(), state_init=L.state_init(pubs, 3, MIN, global_id=LOCAL_GLOBAL_ID))

        async def deployed():
            try:
                return await env.deposit_count() == 0
            except Exception:  # pytoniq raises while the account is not active
                return False

        await tw.wait_for(deployed, 20)
        yield env
    finally:
        await lb.close_all()
        await runner.cleanup()
        await server.close()
