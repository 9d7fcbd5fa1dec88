"""Submits committee-signed refunds on a CreditLock (``bridge.payments.refunds.Releaser``):
``release(to, amount, releaseId, signatures)``. Holds a gas-paying key only; the contract
verifies the committee's signatures and refuses a release id twice (``ReleaseUsed``).

``CreditLock.release`` pays with ``to.call{value: amount}("")`` and reverts the whole
transaction with ``TransferFailed()`` when that call fails (nothing is marked used; the funds
stay in the lock). A payer that is a contract refusing ETH (its ``receive`` reverts, or it has
none) therefore makes the release revert every time, and a payer whose ``receive`` burns gas
makes every attempt expensive. So each release is first estimated: a ``TransferFailed`` while
the lock holds enough is ``RefundRefused`` (permanent; the worker parks it), while the lock
being short of funds stays a retryable ``ChainError``; an estimate above ``gas_cap`` is
``RefundRefused`` without sending anything; the transaction is sent with at most ``gas_cap``
gas. A transaction that is mined and reverts anyway (the payer changed its mind between the
estimate and the block) is simulated again to classify it, else ``ReleaseReverted`` (the
worker parks a release after a few of those).

A mined release can still be dropped by a reorg below finality: ``confirmed(tx_hash)`` tells
the worker when it is final (its receipt in the canonical block at its height, that block final
under ``cfg.finality``, status 1), provably gone (send it again), or not known yet.

ERC-20 releases (issue 15: refunds and sweeps of a token) are
``releaseToken(token, to, amount, releaseId, signatures)`` over the EIP-712 struct
``TokenRelease(address token,address to,uint256 amount,bytes32 releaseId)`` of the same lock
domain (``digest.token_release_digest``; the signers' ``refunds.EvmRefundSigner`` signs it),
with the same used-id set as ETH releases. ``release(..., token=SYMBOL)`` and
``verify(..., token=SYMBOL)`` take the token's symbol and map it to its contract through the
chain's configured tokens. A token payout that fails (``TokenTransferFailed``: the token refuses,
e.g. a blacklisted payer) while the lock holds enough of it is ``RefundRefused``.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import BlockNotFound, ContractLogicError, TransactionNotFound, Web3Exception

from bridge.committee import digest
from bridge.config import EvmChainConfig, PayableToken
from bridge.errors import ChainError, ConfigError, TransactionFailed, VerificationError
from bridge.payments.refunds import RefundRefused, ReleaseReverted, lock_domain
from relayers.evm.contracts import LOCK, decode_error, describe_revert, revert_data, send_transaction

RELEASE = keccak(text="release(address,uint256,bytes32,bytes)")[:4]
RELEASE_TOKEN = keccak(text="releaseToken(address,address,uint256,bytes32,bytes)")[:4]
BALANCE_OF = keccak(text="balanceOf(address)")[:4]
COMMITTEE_INDEX = keccak(text="committeeIndex()")[:4]
THRESHOLD = keccak(text="threshold()")[:4]
SIGNERS = keccak(text="signers()")[:4]
DEFAULT_GAS_CAP = 300_000  # a t-of-n release to an EOA costs ~60-120k
_RPC_ERRORS = (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)

log = logging.getLogger("creditbridge.refunds")


def token_contracts(chain: str, tokens: dict[str, PayableToken] | None) -> dict[str, bytes]:
    """symbol -> 20-byte ERC-20 contract of the chain's configured non-native tokens."""
    out: dict[str, bytes] = {}
    for symbol, t in (tokens or {}).items():
        if t.native or t.chain != chain:
            continue
        if not t.contract:
            raise ConfigError(f"chain {chain}: token {symbol} has no contract address")
        out[symbol] = bytes.fromhex(t.contract[2:])
    return out


class EvmLockReleaser:
    def __init__(self, cfg: EvmChainConfig, private_key: bytes | str, *, timeout: float = 60.0,
                 gas_cap: int = DEFAULT_GAS_CAP, tokens: dict[str, PayableToken] | None = None) -> None:
        if "lock" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.lock is required for refunds")
        self.cfg = cfg
        self.chain = cfg.name
        self.lock = cfg.contracts["lock"]
        self.domain = lock_domain(cfg.chain_id, bytes.fromhex(self.lock[2:]))
        self.tokens = token_contracts(cfg.name, tokens)
        self._key = private_key
        self._sender = Account.from_key(private_key).address
        self.timeout = timeout
        self.gas_cap = gas_cap
        self.w3 = AsyncWeb3(AsyncHTTPProvider(cfg.rpc[0], request_kwargs={"timeout": cfg.request_timeout}))
        # tx hash -> (block number, block hash) where this releaser saw it mined, until the
        # worker has a verdict on it: tells "dropped by a reorg" from "never known"
        self._mined: dict[bytes, tuple[int, bytes]] = {}

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

    def _contract(self, token: str) -> bytes:
        try:
            return self.tokens[token]
        except KeyError:
            raise ConfigError(f"chain {self.chain}: release in the unconfigured token {token}") from None

    def verify(self, to: bytes, amount: int, release_id: bytes, signer: bytes, signature: bytes,
               token: str | None = None) -> None:
        if len(to) != 20:
            raise VerificationError("release signature does not match its signer")
        d = (digest.release_digest(self.domain, to, amount, release_id) if token is None
             else digest.token_release_digest(self.domain, self._contract(token), to, amount, release_id))
        if digest.recover(d, signature) != signer:
            raise VerificationError("release signature does not match its signer")

    async def release(self, to: bytes, amount: int, release_id: bytes, signatures: list[tuple[bytes, bytes]],
                      token: str | None = None) -> bytes:
        packed = digest.pack_signatures(sorted(signatures))  # the lock wants ascending signers
        if token is None:
            data = RELEASE + abi_encode(["address", "uint256", "bytes32", "bytes"],
                                        [to_checksum_address(to), amount, release_id, packed])
        else:
            data = RELEASE_TOKEN + abi_encode(["address", "address", "uint256", "bytes32", "bytes"],
                                              [to_checksum_address(self._contract(token)), to_checksum_address(to),
                                               amount, release_id, packed])
        tx = {"from": self._sender, "to": to_checksum_address(self.lock), "data": "0x" + data.hex()}
        try:
            gas = await self.w3.eth.estimate_gas(tx)
        except ContractLogicError as e:
            raise await self._refusal(e, to, amount, token=token) from None
        except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
            raise ChainError(f"chain {self.chain}: estimating a release failed: {e.__class__.__name__}") from None
        if gas > self.gas_cap:
            raise RefundRefused(f"the release to 0x{to.hex()} needs {gas} gas, above the cap of {self.gas_cap} "
                                "(the payer's contract burns gas on receipt)")
        tx["gas"] = min(self.gas_cap, gas + gas // 5)
        try:
            receipt = await send_transaction(self.w3, tx, self._key, timeout=self.timeout)
        except TransactionFailed as e:
            if not (e.detail.startswith("transaction 0x") and e.detail.endswith(" reverted")):
                raise
            # mined and reverted (status 0): its gas is spent. Why? Simulate it again.
            try:
                await self.w3.eth.call(tx)
            except ContractLogicError as again:
                raise await self._refusal(again, to, amount, mined=e.detail, token=token) from None
            except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                pass
            raise ReleaseReverted(f"{e.detail} (gas limit {tx['gas']})") from None
        tx_hash = bytes(receipt["transactionHash"])
        self._mined[tx_hash] = (int(receipt["blockNumber"]), bytes(receipt["blockHash"]))
        return tx_hash

    async def _final_height(self) -> int:
        """Highest final block under ``cfg.finality`` (as ``RpcPool.finalized_height``)."""
        finality = self.cfg.finality
        if isinstance(finality, str):
            return int((await self.w3.eth.get_block(finality))["number"])
        return max(await self.w3.eth.block_number - finality, 0)

    async def confirmed(self, tx_hash: bytes) -> bool | None:
        """True once ``tx_hash`` is final and succeeded, False when it is provably gone (a
        reorg dropped it, or it reverted), None when not final yet or the node cannot tell."""
        try:
            verdict = await self._confirmed(tx_hash)
        except _RPC_ERRORS as e:
            log.info("chain %s: finality check of tx 0x%s failed (%s); asking again later", self.chain,
                     tx_hash.hex(), e.__class__.__name__)
            return None
        if verdict is not None:
            self._mined.pop(tx_hash, None)
        return verdict

    async def _confirmed(self, tx_hash: bytes) -> bool | None:
        try:
            receipt = await self.w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            receipt = None
        if receipt is not None and receipt.get("blockNumber") is not None:
            if receipt["status"] != 1:
                return False
            number, block_hash = int(receipt["blockNumber"]), bytes(receipt["blockHash"])
        else:
            try:
                pending = await self.w3.eth.get_transaction(tx_hash)
            except TransactionNotFound:
                pending = None
            if pending is not None:
                return None  # in the node's pool again (re-injected after a reorg): it will be mined
            if tx_hash not in self._mined:
                return None  # not sent by this releaser and unknown to the node: cannot tell
            number, block_hash = self._mined[tx_hash]
            receipt = None
        if number > await self._final_height():
            return None
        try:
            canonical = bytes((await self.w3.eth.get_block(number))["hash"])
        except BlockNotFound:
            return None  # a node lagging behind its own head: ask again
        if canonical != block_hash:
            return False  # the block at that height was replaced
        if receipt is None:
            return None  # same block and no receipt: an inconsistent node, ask again
        return True

    async def _held(self, token: str | None) -> int:
        if token is None:
            return await self.w3.eth.get_balance(to_checksum_address(self.lock))
        got = await self.w3.eth.call({"to": to_checksum_address(self._contract(token)),
                                      "data": "0x" + (BALANCE_OF + bytes(12) + bytes.fromhex(self.lock[2:])).hex()})
        return int.from_bytes(bytes(got)[:32], "big") if len(got) >= 32 else 0

    async def _refusal(self, e: ContractLogicError, to: bytes, amount: int, mined: str = "",
                       token: str | None = None) -> BaseException:
        """The error for a release the lock refuses (``e``, from an estimate or a call)."""
        decoded = decode_error(LOCK, revert_data(e))
        name = decoded[0] if decoded else ""
        if name in ("TransferFailed", "TokenTransferFailed"):
            try:
                held = await self._held(token)
            except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as err:
                return ChainError(f"chain {self.chain}: lock balance look-up failed: {err.__class__.__name__}")
            if held < amount:  # not the payer's fault: the lock is short (for now)
                return ChainError(f"chain {self.chain}: the lock holds {held}, less than the release's {amount}")
            where = f" ({mined})" if mined else ""
            return RefundRefused(f"the payout to 0x{to.hex()} reverts: the payer contract refuses it "
                                 f"(TransferFailed){where}")
        if mined:
            return ReleaseReverted(f"{mined}: {describe_revert(e)}")
        return TransactionFailed(f"transaction would revert: {describe_revert(e)}", retryable=False)

    async def aclose(self) -> None:
        await self.w3.provider.disconnect()
