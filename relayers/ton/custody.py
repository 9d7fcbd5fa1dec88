"""What a TON lock holds and has paid out, at a final masterchain block (the treasury sweeper's
solvency check, bridge/committee/treasury.py): the lock's balance at that block, and which
release ids (refunds, sweeps) its ``is_released`` get-method reports at that block.

A release pays its own fees out of its amount (contracts/ton/lock.fc reserves, mode 128): the
lock's balance drops by exactly the release's amount and the destination receives the amount
minus the release's gas, import and forwarding fees (``relayers.ton.lock.RELEASE_FEE_BOUND``).

Reads go through liteservers (``liteserver_config``), like the refund worker's releases: a
masterchain block is final once served, so a release id seen paid at a block stays paid; only
those are remembered, ids not paid yet are asked again at the next height.

Jettons (issue 15): a reader built with ``token`` (a ``PayableToken`` with ``jetton_master``)
reports that jetton: ``balance(height)`` is the balance (``get_wallet_data``) of the lock's
jetton wallet at that block, the wallet being the one the lock stored at set-up (``get_jetton``
of the master; 0 while the lock has none). ``released`` is the same set for every token (release
ids are unique across tokens).
"""

from __future__ import annotations

from pytoniq_core import Address

from bridge.config import PayableToken, TonChainConfig
from bridge.errors import ChainError, ConfigError, InputError
from relayers.ton.transport import LiteTransport, McBlock


class TonCustody:
    def __init__(self, cfg: TonChainConfig, transport: LiteTransport | None = None, *,
                 token: PayableToken | None = None) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required for its custody")
        if transport is None and cfg.liteserver_config is None:
            raise ConfigError(f"chain {cfg.name}: the custody is read through a liteserver: liteserver_config "
                              "is required to sweep it")
        self.chain = cfg.name
        try:
            self.lock = Address(cfg.contracts["lock"])
        except Exception:  # pytoniq-core raises bare exceptions on bad addresses
            raise ConfigError(f"chain {cfg.name}: contracts.lock is not a TON address") from None
        self.token = None if token is None or token.native else token
        self.master: Address | None = None
        if self.token is not None:
            if self.token.jetton_master is None:
                raise ConfigError(f"chain {cfg.name}: token {self.token.symbol} has no jetton_master")
            try:
                self.master = Address(self.token.jetton_master)
            except Exception:  # pytoniq-core raises bare exceptions on bad addresses
                raise ConfigError(f"chain {cfg.name}: token {self.token.symbol}: jetton_master is not a TON address") from None
        self._own = transport is None
        self.transport = transport if transport is not None else LiteTransport(
            cfg.liteserver_config, cfg.trust_level, cfg.request_timeout)
        self._paid: set[bytes] = set()  # seen released at a final block: stays so
        self._blocks: dict[int, McBlock] = {}

    async def _block(self, height: int) -> McBlock:
        b = self._blocks.get(height)
        if b is None:
            b = await self.transport.mc_block(height)
            if len(self._blocks) > 64:
                self._blocks.clear()
            self._blocks[height] = b
        return b

    async def balance(self, height: int) -> int:
        """The lock's balance (nanotons) at masterchain block ``height``; for a jetton reader, the
        balance (base units) of the lock's wallet of that jetton at that block."""
        block = await self._block(height)
        if self.master is None:
            return await self.transport.balance(self.lock, block)
        wallet = await self.jetton_wallet(block)
        if wallet is None or await self.transport.account_data(wallet, block) is None:
            return 0
        from relayers.ton.jetton import parse_wallet_data

        try:
            balance, _, _ = parse_wallet_data(await self.transport.run_get_method(wallet, "get_wallet_data", [], block))
        except InputError as e:
            raise ChainError(f"chain {self.chain}: the lock's jetton wallet {wallet.to_str()} answers oddly: "
                             f"{e.detail}") from None
        return balance

    async def jetton_wallet(self, block: McBlock | None = None) -> Address | None:
        """The lock's wallet of this reader's jetton, as the lock stored it (None before set-up)."""
        assert self.master is not None
        wallet, _ = await self.transport.run_get_method(self.lock, "get_jetton",
                                                        [int.from_bytes(self.master.hash_part, "big")], block)
        wallet = int(wallet)
        if wallet <= 0:
            return None
        return Address((0, wallet.to_bytes(32, "big")))

    async def released(self, height: int, candidates: set[bytes]) -> set[bytes]:
        """Which of ``candidates`` the lock paid in blocks up to ``height`` (``is_released`` at
        that block, one get-method per id not seen paid yet)."""
        block = None
        for rid in sorted(set(candidates) - self._paid):
            if len(rid) != 32:
                continue
            if block is None:
                block = await self._block(height)
            (used,) = await self.transport.run_get_method(self.lock, "is_released", [int.from_bytes(rid, "big")],
                                                          block)
            if int(used) != 0:
                self._paid.add(rid)
        return self._paid & set(candidates)

    async def aclose(self) -> None:
        if self._own:
            await self.transport.aclose()
