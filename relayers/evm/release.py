"""Submits committee-signed refunds on a CreditLock (``bridge.payments.refunds.Releaser``):
``release(to, amount, releaseId, signatures)``. Holds a gas-paying key only; the contract
verifies the committee's signatures and refuses a release id twice (``ReleaseUsed``)."""

from __future__ import annotations

import asyncio

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import Web3Exception

from bridge.committee import digest
from bridge.config import EvmChainConfig
from bridge.errors import ChainError, ConfigError, VerificationError
from bridge.payments.refunds import lock_domain
from relayers.evm.contracts import send_transaction

RELEASE = keccak(text="release(address,uint256,bytes32,bytes)")[:4]
COMMITTEE_INDEX = keccak(text="committeeIndex()")[:4]
THRESHOLD = keccak(text="threshold()")[:4]
SIGNERS = keccak(text="signers()")[:4]


class EvmLockReleaser:
    def __init__(self, cfg: EvmChainConfig, private_key: bytes | str, *, timeout: float = 60.0) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required for refunds")
        self.cfg = cfg
        self.chain = cfg.name
        self.lock = cfg.contracts["lock"]
        self.domain = lock_domain(cfg.chain_id, bytes.fromhex(self.lock[2:]))
        self._key = private_key
        self.timeout = timeout
        self.w3 = AsyncWeb3(AsyncHTTPProvider(cfg.rpc[0], request_kwargs={"timeout": cfg.request_timeout}))

    async def _call(self, data: bytes) -> bytes:
        try:
            return bytes(await self.w3.eth.call({"to": to_checksum_address(self.lock), "data": "0x" + data.hex()}))
        except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
            raise ChainError(f"chain {self.chain}: lock call failed: {e.__class__.__name__}") from None

    async def committee(self) -> tuple[int, list[bytes], int]:
        idx, signers, thr = await asyncio.gather(self._call(COMMITTEE_INDEX), self._call(SIGNERS),
                                                 self._call(THRESHOLD))
        (index,) = abi_decode(["uint64"], idx)
        (addrs,) = abi_decode(["address[]"], signers)
        (threshold,) = abi_decode(["uint256"], thr)
        return index, [bytes.fromhex(a[2:]) for a in addrs], threshold

    def verify(self, to: bytes, amount: int, release_id: bytes, signer: bytes, signature: bytes) -> None:
        if len(to) != 20 or digest.recover(digest.release_digest(self.domain, to, amount, release_id),
                                           signature) != signer:
            raise VerificationError("release signature does not match its signer")

    async def release(self, to: bytes, amount: int, release_id: bytes, signatures: list[tuple[bytes, bytes]]) -> bytes:
        packed = digest.pack_signatures(sorted(signatures))  # the lock wants ascending signers
        data = RELEASE + abi_encode(["address", "uint256", "bytes32", "bytes"],
                                    [to_checksum_address(to), amount, release_id, packed])
        receipt = await send_transaction(self.w3, {"to": to_checksum_address(self.lock), "data": data}, self._key,
                                         timeout=self.timeout)
        return bytes(receipt["transactionHash"])

    async def aclose(self) -> None:
        await self.w3.provider.disconnect()
