"""What a CreditLock holds and has paid out, at a final block (the treasury sweeper's solvency
check, bridge/committee/treasury.py): ``eth_getBalance`` of the lock at that block, and the
``Released(releaseId, to, amount)`` events up to it (refunds and sweeps paid), and where each
was paid (``payouts``: the Released log's transaction hash, block and block time).

Per token (issue 15): a reader built with ``token`` (a non-native ``PayableToken`` of the chain)
reports the lock's ``balanceOf`` of that ERC-20 at the block; ``released`` reads both
``Released`` (ETH) and ``ReleasedToken`` (any token) logs, as release ids are unique across
tokens."""

from __future__ import annotations

from typing import Any

from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_utils import keccak

from bridge.config import EvmChainConfig, PayableToken
from bridge.errors import ChainError, ConfigError
from bridge.payments.treasury import Payout
from relayers.evm.rpc import RpcPool, hex_bytes, hex_int

RELEASED_TOPIC = keccak(text="Released(bytes32,address,uint256)")
RELEASED_TOKEN_TOPIC = keccak(text="ReleasedToken(bytes32,address,uint256,address)")
BALANCE_OF = keccak(text="balanceOf(address)")[:4]


class EvmCustody:
    def __init__(self, cfg: EvmChainConfig, pool: RpcPool | None = None, *, registry: Any = None,
                 token: PayableToken | None = None) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required for its custody")
        if token is not None and token.native:
            token = None
        if token is not None and (token.chain != cfg.name or not token.contract):
            raise ConfigError(f"chain {cfg.name}: token {token.symbol} is not an ERC-20 of this chain")
        self.token = token
        self.contract = bytes.fromhex(token.contract[2:]) if token is not None and token.contract else None
        self.chain = cfg.name
        self.cfg = cfg
        self.lock = bytes.fromhex(cfg.contracts["lock"][2:])
        self._own_pool = pool is None
        self.pool = pool if pool is not None else RpcPool.from_config(cfg, registry=registry)
        self._paid: dict[bytes, int] = {}
        self._where: dict[bytes, tuple[bytes, int]] = {}  # release id -> (tx hash, block) of its Released log
        self._times: dict[int, int] = {}  # block -> timestamp (final blocks only)
        self._scanned = cfg.start_block - 1  # Released events read up to this block (final ones only)

    async def balance(self, height: int) -> int:
        """The lock's balance at block ``height``: wei, or base units of the reader's token."""
        if self.contract is None:
            return await self.pool.balance(self.lock, height)
        got = await self.pool.call(self.contract, BALANCE_OF + bytes(12) + self.lock, height)
        if len(got) != 32:
            raise ChainError(f"chain {self.chain}: balanceOf of {self.token.symbol} answered {len(got)} bytes")
        return int.from_bytes(got, "big")

    async def released(self, height: int, candidates: set[bytes] | None = None) -> set[bytes]:
        """Release ids (of ``candidates``, or all) the lock paid in blocks up to ``height`` (a final
        block: what was read once is kept)."""
        a = self._scanned + 1
        while a <= height:
            b = min(a + self.cfg.max_block_range - 1, height)
            for raw in await self.pool.get_logs(a, b, self.lock, [[RELEASED_TOPIC, RELEASED_TOKEN_TOPIC]]):
                topics = raw.get("topics") or []
                if raw.get("removed") or len(topics) != 3:
                    continue
                is_token = hex_bytes(topics[0], "topic") == RELEASED_TOKEN_TOPIC
                try:
                    amount = abi_decode(["uint256", "address"] if is_token else ["uint256"],
                                        hex_bytes(raw.get("data"), "log data"))[0]
                except DecodingError:
                    raise ChainError(f"chain {self.chain}: undecodable Released event") from None
                block = hex_int(raw.get("blockNumber"), "block number")
                if not a <= block <= b:
                    raise ChainError(f"chain {self.chain}: eth_getLogs {a}..{b} returned a log outside the range")
                rid = hex_bytes(topics[1], "topic")
                self._paid[rid] = amount
                self._where[rid] = (hex_bytes(raw.get("transactionHash"), "transaction hash"), block)
            self._scanned = b
            a = b + 1
        if height < self._scanned:  # asked about an older block than already read: filter is unknown
            raise ChainError(f"chain {self.chain}: released() asked for block {height} below {self._scanned}",
                             retryable=True)
        return set(self._paid) if candidates is None else set(self._paid) & set(candidates)

    async def payouts(self, ids: set[bytes]) -> dict[bytes, Payout]:
        """Where the lock paid those of ``ids`` that ``released`` has seen paid."""
        found = {i: self._where[i] for i in ids if i in self._where}
        missing = sorted({b for _, b in found.values() if b not in self._times})
        if missing:
            for n, header in zip(missing, await self.pool.get_blocks(missing)):
                if header is not None:
                    self._times[n] = header.timestamp
        return {i: Payout(tx, b, self._times.get(b)) for i, (tx, b) in found.items()}

    async def aclose(self) -> None:
        if self._own_pool:
            await self.pool.aclose()
