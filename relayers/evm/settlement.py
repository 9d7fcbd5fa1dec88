"""Submitter for the CreditLedger contract on the settlement chain (``bridge.chains.Submitter``).

Calldata is encoded and logs are decoded with ``eth_abi`` by hand; transactions are built and
signed locally with ``eth_account`` (EIP-1559 when the chain has a base fee, legacy
otherwise) and sent through the failover :class:`~relayers.evm.rpc.RpcPool`.

The committee's signatures cover the *whole* batch (``CreditBatch(committeeIndex,
Credit[])``), so already settled items cannot be dropped from a batch without invalidating
them. The contract skips settled items itself; :meth:`EvmSettlement.submit` therefore only
checks whether *every* item is settled already (then there is nothing to do and it returns
``b""``) and otherwise submits the batch as signed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from bridge.chains import CreditRecord
from bridge.committee.digest import credit_digest, pack_signatures, recover
from bridge.config import EvmChainConfig
from bridge.errors import ChainError, ConfigError, InputError, TransactionFailed, VerificationError
from bridge.types import Attestation, Credit, CreditMessage, SettlementDomain
from relayers.evm.fees import FeeAboveCap, FeePolicy
from relayers.evm.rpc import JsonRpcError, RpcPool, hex_bytes, hex_int

log = logging.getLogger(__name__)

CREDIT_TUPLE = "(bytes32,uint64,address,uint256,bytes32)"


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SETTLE = _selector(f"settle({CREDIT_TUPLE}[],bytes)")
IS_SETTLED = _selector("isSettled(bytes32,uint64)")
COMMITTEE_INDEX = _selector("committeeIndex()")
THRESHOLD = _selector("threshold()")
SIGNERS = _selector("signers()")
CREDITS_OF = _selector("creditsOf(address)")
CREDITED_TOPIC = keccak(text="Credited(bytes32,uint64,address,uint256,bytes32)")
_CREDITED_TOPIC_HEX = "0x" + CREDITED_TOPIC.hex()

# Custom errors of CreditLedger (and its Committee base), plus Solidity's built-in ones.
_ERRORS: dict[bytes, tuple[str, tuple[str, ...]]] = {
    _selector(f"{name}({','.join(types)})"): (name, types)
    for name, types in (
        ("NothingToSettle", ()),
        ("NotProvider", ()),
        ("InsufficientCredits", ("uint256", "uint256")),
        ("BadSignatureLength", ()),
        ("BelowThreshold", ("uint256", "uint256")),
        ("InvalidSignature", ()),
        ("HighS", ()),
        ("SignersNotAscending", ()),
        ("UnknownSigner", ("address",)),
        ("InvalidCommittee", ()),
        ("Error", ("string",)),
        ("Panic", ("uint256",)),
    )
}


def decode_revert(data: bytes | None) -> tuple[str, tuple]:
    """``(error name, args)`` of revert data; unknown selectors come back as their hex."""
    if not data:
        return "", ()
    known = _ERRORS.get(bytes(data[:4]))
    if known is None:
        return "0x" + bytes(data[:4]).hex(), ()
    name, types = known
    try:
        return name, tuple(abi_decode(list(types), bytes(data[4:]))) if types else ()
    except DecodingError:
        return name, ()


def _describe(name: str, args: tuple) -> str:
    return f"{name}({', '.join(str(a) for a in args)})" if args else name


def _addr20(value: str) -> bytes:
    return bytes.fromhex(value[2:])


def encode_settle(credits: tuple[Credit, ...] | list[Credit], signatures: bytes) -> bytes:
    items = [(c.source, c.sequence, c.beneficiary, c.credits, c.quote_id) for c in credits]
    return SETTLE + abi_encode([f"{CREDIT_TUPLE}[]", "bytes"], [items, signatures])


class EvmSettlement:
    """Reads and writes the CreditLedger at ``cfg.contracts["credits"]``.

    ``private_key`` pays the gas of ``submit`` (it holds no authority; None: read-only).
    """

    def __init__(
        self,
        cfg: EvmChainConfig,
        private_key: bytes | str | None,
        pool: RpcPool | None = None,
        *,
        registry: Any = None,
        receipt_timeout: float = 120.0,
        receipt_poll: float = 0.25,
        drop_grace: float = 30.0,
        gas_margin: float = 1.25,
        priority_fee: int | None = None,
        fees: FeePolicy | None = None,
        metrics: Any = None,
    ) -> None:
        if "credits" not in cfg.contracts:
            raise ConfigError(f"chain {cfg.name}: contracts.credits is required for settlement")
        self.cfg = cfg
        self.chain = cfg.name
        self.ledger = bytes.fromhex(cfg.contracts["credits"][2:])
        self._ledger_checksum = to_checksum_address(self.ledger)
        self.domain = SettlementDomain(chain_id=cfg.chain_id, contract=self.ledger)
        self._own_pool = pool is None
        self.pool = pool if pool is not None else RpcPool.from_config(cfg, registry=registry)
        self._account = Account.from_key(private_key) if private_key is not None else None
        self.sender: bytes | None = _addr20(self._account.address) if self._account is not None else None
        self.receipt_timeout = receipt_timeout
        self.receipt_poll = receipt_poll
        self.drop_grace = drop_grace
        self.gas_margin = gas_margin
        if fees is None:
            fees = FeePolicy(priority_fee=priority_fee, bump_after=receipt_timeout + 1, max_bumps=0)
        self.fees = fees
        self.priority_fee = fees.priority_fee
        # optional counters (bridge.committee.http.AggregatorMetrics): fee_cap_refusals, fee_bumps
        self.metrics = metrics
        self._nonce: int | None = None
        self._nonce_lock = asyncio.Lock()

    # ------------------------------------------------------------------ reads
    async def _call(self, data: bytes, block: int | str = "latest") -> bytes:
        try:
            return await self.pool.call(self.ledger, data, block)
        except JsonRpcError as e:
            if e.is_revert:
                raise ChainError(f"ledger call reverted: {_describe(*decode_revert(e.revert_data))}", retryable=False) from None
            raise

    def _decode(self, types: list[str], data: bytes, what: str) -> tuple:
        try:
            return tuple(abi_decode(types, data))
        except DecodingError:
            raise ChainError(f"chain {self.chain}: undecodable {what} from {self._ledger_checksum} (is it a CreditLedger?)") from None

    async def is_settled(self, source: bytes, sequence: int) -> bool:
        out = await self._call(IS_SETTLED + abi_encode(["bytes32", "uint64"], [source, sequence]))
        return bool(self._decode(["bool"], out, "isSettled")[0])

    async def committee(self) -> tuple[int, list[bytes], int]:
        idx, signers, thr = await asyncio.gather(
            self._call(COMMITTEE_INDEX), self._call(SIGNERS), self._call(THRESHOLD)
        )
        (index,) = self._decode(["uint64"], idx, "committeeIndex")
        (addrs,) = self._decode(["address[]"], signers, "signers")
        (threshold,) = self._decode(["uint256"], thr, "threshold")
        return index, [_addr20(a) for a in addrs], threshold

    async def credits_of(self, account: bytes) -> int:
        out = await self._call(CREDITS_OF + abi_encode(["address"], [account]))
        return self._decode(["uint256"], out, "creditsOf")[0]

    async def height(self) -> int:
        """Highest settlement-chain block that is final under ``cfg.finality``."""
        return await self.pool.finalized_height(self.cfg.finality)

    async def credited(self, start: int, end: int) -> list[CreditRecord]:
        """Credited events in blocks ``start..end`` (chunked), in chain order. Callers should
        stay at or below :meth:`height` so that what they read cannot be reorged away."""
        keyed: list[tuple[tuple[int, int], CreditRecord]] = []
        a = start
        while a <= end:
            b = min(a + self.cfg.max_block_range - 1, end)
            for raw in await self.pool.get_logs(a, b, self.ledger, [CREDITED_TOPIC]):
                rec = self._credit_record(raw)
                if rec is not None:
                    keyed.append(((rec.block_number, hex_int(raw.get("logIndex"), "log index")), rec))
            a = b + 1
        keyed.sort(key=lambda kv: kv[0])
        return [rec for _, rec in keyed]

    def _credit_record(self, raw: dict) -> CreditRecord | None:
        topics = raw.get("topics") or []
        if (
            raw.get("removed")
            or str(raw.get("address", "")).lower() != "0x" + self.ledger.hex()
            or len(topics) != 4
            or str(topics[0]).lower() != _CREDITED_TOPIC_HEX
        ):
            return None
        head = b"".join(hex_bytes(t, "topic") for t in topics[1:])
        source, sequence, beneficiary = self._decode(["bytes32", "uint64", "address"], head, "Credited topics")
        credits, quote_id = self._decode(["uint256", "bytes32"], hex_bytes(raw.get("data"), "log data"), "Credited data")
        try:
            credit = Credit(source=source, sequence=sequence, beneficiary=_addr20(beneficiary), credits=credits, quote_id=quote_id)
        except InputError as e:
            log.warning("chain %s: skipping Credited event out of the core's range: %s", self.chain, e)
            return None
        return CreditRecord(
            credit=credit,
            tx_hash=hex_bytes(raw.get("transactionHash"), "transaction hash"),
            block_number=hex_int(raw.get("blockNumber"), "block number"),
        )

    # ------------------------------------------------------------------ submit
    async def submit(self, message: CreditMessage, signatures: list[Attestation]) -> bytes:
        """Settle a committee-signed batch; the tx hash once mined with status 1, or ``b""``
        when there was nothing to do (every item settled already, here or by a competitor).

        Raises TransactionFailed: ``retryable=False`` when the contract rejects the batch
        (decoded custom error in the message), ``retryable=True`` when the transaction was
        dropped or not mined in time; ChainError/RpcUnavailable for RPC trouble.
        """
        if self._account is None:
            raise ConfigError(f"chain {self.chain}: no submitter key configured")
        if await self._all_settled(message):
            return b""
        index, members, threshold = await self.committee()
        if message.committee_index != index:
            raise TransactionFailed(
                f"batch is signed for committee {message.committee_index}, the ledger's is {index}", retryable=False
            )
        sigs = self._select_signatures(message, signatures, set(members), threshold)
        data = encode_settle(message.credits, sigs)
        sent = await self._send(data)
        if sent is None:  # the estimate said NothingToSettle: settled meanwhile
            return b""
        tx_hash, raw, tx = sent
        receipt, cancelled = await self._wait_receipt(tx_hash, raw, tx, message)
        mined = hex_bytes(receipt.get("transactionHash"), "transaction hash") if receipt.get("transactionHash") else tx_hash
        if cancelled:  # our stuck settle was replaced by a no-op: someone else settled the batch
            log.info("chain %s: batch settled by someone else; our stuck tx was replaced by 0x%s", self.chain, mined.hex())
            return b""
        if hex_int(receipt.get("status"), "status") == 1:
            return mined
        # Reverted on chain: a competitor may have settled the batch first.
        if await self._all_settled(message):
            log.info("chain %s: batch settled by someone else first (tx 0x%s reverted)", self.chain, mined.hex())
            return b""
        reason = await self._replay_reason(data)
        raise TransactionFailed(
            f"settle tx 0x{mined.hex()} reverted: {reason or 'unknown reason'}", retryable=not reason
        )

    async def _all_settled(self, message: CreditMessage) -> bool:
        done = await asyncio.gather(*(self.is_settled(c.source, c.sequence) for c in message.credits))
        return all(done)

    def _select_signatures(
        self, message: CreditMessage, attestations: list[Attestation], members: set[bytes], threshold: int
    ) -> bytes:
        """Valid signatures of distinct current members over this message, ascending by
        signer, at most ``threshold`` of them (each extra one costs ~7.8k gas). Invalid ones
        are dropped here; if fewer than ``threshold`` remain the contract's estimate says
        ``BelowThreshold`` and submit raises it."""
        digest = credit_digest(self.domain, message)
        chosen: dict[bytes, bytes] = {}
        for att in attestations:
            if att.message != message:
                log.warning("chain %s: ignoring an attestation over another message", self.chain)
                continue
            try:
                who = recover(digest, att.signature)
            except VerificationError:
                who = None
            if who is None or who != att.signer or who not in members:
                log.warning("chain %s: ignoring an invalid signature claimed by 0x%s", self.chain, bytes(att.signer).hex())
                continue
            chosen.setdefault(who, att.signature)
        pairs = sorted(chosen.items())[: max(threshold, 0)]
        return pack_signatures(pairs)

    async def _fees(self) -> dict[str, int]:
        """Fee fields of a new transaction under the fee policy; FeeAboveCap (nothing sent)
        when the chain asks more than the cap."""
        base = await self.pool.base_fee()
        if base is None:
            return self._capped(None, None, await self.pool.gas_price())
        tip = self.priority_fee
        if tip is None:
            try:
                tip = await self.pool.max_priority_fee()
            except JsonRpcError:  # method unknown on this node
                tip = max(await self.pool.gas_price() - base, 1)
            if self.fees.max_fee_per_gas is not None:
                tip = min(tip, max(self.fees.max_fee_per_gas - base, 0))
        return self._capped(base, tip, None)

    def _capped(self, base: int | None, tip: int | None, gas_price: int | None) -> dict[str, int]:
        try:
            return self.fees.initial(base, tip, gas_price)
        except FeeAboveCap as e:
            self._count("fee_cap_refusals")
            log.warning("chain %s: settle tx %s", self.chain, e.detail)
            raise

    def _count(self, what: str) -> None:
        metric = getattr(self.metrics, what, None) if self.metrics is not None else None
        if metric is not None:
            metric.inc()

    async def _send(self, data: bytes) -> tuple[bytes, bytes, dict[str, Any]] | None:
        """Estimate, sign and send under the nonce lock; None if the contract says
        NothingToSettle. Any failure drops the cached nonce (re-read from ``pending``)."""
        assert self._account is not None and self.sender is not None
        async with self._nonce_lock:
            try:
                if self._nonce is None:
                    self._nonce = await self.pool.nonce(self.sender, "pending")
                call = {"from": self._account.address, "to": self._ledger_checksum, "data": "0x" + data.hex(), "value": "0x0"}
                try:
                    gas = await self.pool.estimate_gas(call)
                except JsonRpcError as e:
                    if not e.is_revert:
                        raise
                    name, args = decode_revert(e.revert_data)
                    if name == "NothingToSettle":
                        return None
                    raise TransactionFailed(
                        f"settle would revert: {_describe(name, args) if name else e.rpc_message}", retryable=False
                    ) from None
                tx: dict[str, Any] = {
                    "chainId": self.cfg.chain_id,
                    "nonce": self._nonce,
                    "to": self._ledger_checksum,
                    "value": 0,
                    "data": data,
                    "gas": int(gas * self.gas_margin) + 10_000,
                    **(await self._fees()),
                }
                if "maxFeePerGas" in tx:
                    tx["type"] = 2
                signed = self._account.sign_transaction(tx)
                raw = bytes(signed.raw_transaction)
                tx_hash = keccak(raw)
                try:
                    await self.pool.send_raw_transaction(raw)
                except JsonRpcError as e:
                    msg = e.rpc_message.lower()
                    if "already known" in msg or "known transaction" in msg or "already imported" in msg:
                        pass  # a retry of a send the node had accepted
                    elif "nonce too low" in msg or "underpriced" in msg or "nonce too high" in msg:
                        raise TransactionFailed(f"send rejected: {e.rpc_message}", retryable=True) from None
                    elif "insufficient funds" in msg:
                        raise TransactionFailed(
                            f"submitter 0x{self.sender.hex()} cannot pay for gas: {e.rpc_message}", retryable=True
                        ) from None
                    else:
                        raise TransactionFailed(f"send rejected: {e.rpc_message}", retryable=False) from None
                self._nonce += 1
                log.info("chain %s: sent settle tx 0x%s (nonce %d)", self.chain, tx_hash.hex(), tx["nonce"])
                return tx_hash, raw, tx
            except BaseException:
                self._nonce = None
                raise

    async def _wait_receipt(self, tx_hash: bytes, raw: bytes, tx: dict[str, Any],
                            message: CreditMessage) -> tuple[dict, bool]:
        """Poll for the receipt of the transaction or of one of its replacements (same nonce);
        ``(receipt, cancelled)``, cancelled when the one mined is the no-op that replaced a
        settle made pointless by a competitor. A transaction still unmined after
        ``fees.bump_after`` s is replaced with bumped fees (at most ``fees.max_bumps`` times,
        never above the cap). A transaction the node stops knowing (a restarted node, a
        failover to an endpoint that never saw it) is re-broadcast; it counts as dropped only
        after ``drop_grace`` seconds unknown. Dropped, or unmined ``receipt_timeout`` s after
        the last send: TransactionFailed, retryable."""
        loop = asyncio.get_running_loop()
        last_send = last_try = loop.time()
        unknown_since: float | None = None
        sent = [tx_hash]  # every hash sent with this nonce, oldest first: any of them may be mined
        cancels: set[bytes] = set()
        bumps = 0
        while True:
            try:
                for h in reversed(sent):
                    receipt = await self.pool.get_receipt(h)
                    if receipt is not None:
                        return receipt, h in cancels
                known = await self.pool.get_transaction(sent[-1]) is not None
            except ChainError as e:
                if not e.retryable:
                    raise
                log.warning("chain %s: waiting for receipt of 0x%s: %s", self.chain, sent[-1].hex(), e)
                known = True  # cannot tell; keep waiting
            now = loop.time()
            if known:
                unknown_since = None
            elif unknown_since is None:
                unknown_since = now
                await self._rebroadcast(raw)
            dropped = unknown_since is not None and now - unknown_since >= self.drop_grace
            if not dropped and known and bumps < self.fees.max_bumps and now - last_try >= self.fees.bump_after:
                bumps += 1
                last_try = now
                replaced = await self._replace(tx, message, bumps)
                if replaced is not None:
                    new_hash, raw, tx, cancel = replaced
                    sent.append(new_hash)
                    if cancel:
                        cancels.add(new_hash)
                    last_send = now
                    continue
            if dropped or now - last_send > self.receipt_timeout:
                async with self._nonce_lock:
                    self._nonce = None
                what = "was dropped" if dropped else f"was not mined within {self.receipt_timeout:g} s"
                raise TransactionFailed(f"settle tx 0x{sent[-1].hex()} {what}", retryable=True)
            await asyncio.sleep(self.receipt_poll)

    async def _replace(self, tx: dict[str, Any], message: CreditMessage,
                       attempt: int) -> tuple[bytes, bytes, dict[str, Any], bool] | None:
        """Send the replacement of the unmined ``tx`` (same nonce, bumped fees): the same settle,
        or, when every credit of the batch is settled already (a competitor), a no-op transfer
        to ourselves, which costs 21k gas instead of a revert. None when not sent (the bump
        would pass the cap, or the node refused it)."""
        assert self._account is not None
        fee_keys = ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas")
        try:
            base = await self.pool.base_fee() if "maxFeePerGas" in tx else None
            fees = self.fees.bumped({k: tx[k] for k in fee_keys if k in tx}, base)
            if fees is None:
                self._count("fee_cap_refusals")
                log.warning("chain %s: settle tx (nonce %d) unmined after %.0f s; not bumped: its fees raised by %d%% "
                            "would pass the cap of %s wei per gas", self.chain, tx["nonce"], self.fees.bump_after,
                            self.fees.bump_percent, self.fees.max_fee_per_gas)
                return None
            cancel = tx.get("data") == b"" or await self._all_settled(message)
        except ChainError as e:
            log.warning("chain %s: could not prepare the replacement of nonce %d: %s", self.chain, tx["nonce"], e)
            return None
        new = {**tx, **fees}
        if cancel:
            new.update({"to": self._account.address, "data": b"", "gas": 21_000, "value": 0})
        signed = self._account.sign_transaction(new)
        raw = bytes(signed.raw_transaction)
        new_hash = keccak(raw)
        try:
            await self.pool.send_raw_transaction(raw)
        except JsonRpcError as e:  # "nonce too low": mined meanwhile; "underpriced": refused
            log.info("chain %s: replacement of nonce %d refused: %s", self.chain, tx["nonce"], e.rpc_message)
            return None
        except ChainError as e:
            log.warning("chain %s: replacement of nonce %d not sent: %s", self.chain, tx["nonce"], e)
            return None
        self._count("fee_bumps")
        log.info("chain %s: %s tx (nonce %d) unmined: replaced by 0x%s with fees %s (bump %d of %d)", self.chain,
                 "settle" if not cancel else "pointless settle", tx["nonce"], new_hash.hex(),
                 {k: v for k, v in fees.items()}, attempt, self.fees.max_bumps)
        return new_hash, raw, new, cancel

    async def _rebroadcast(self, raw: bytes) -> None:
        try:
            await self.pool.send_raw_transaction(raw)
        except ChainError as e:  # "already known", "nonce too low" (mined meanwhile) ...
            log.info("chain %s: re-broadcast answered: %s", self.chain, e)

    async def _replay_reason(self, data: bytes) -> str:
        assert self.sender is not None
        try:
            await self.pool.call(self.ledger, data, "latest", sender=self.sender)
        except JsonRpcError as e:
            if e.is_revert:
                name, args = decode_revert(e.revert_data)
                return _describe(name, args) if name else e.rpc_message
            raise
        return ""

    async def aclose(self) -> None:
        if self._own_pool:
            await self.pool.aclose()
