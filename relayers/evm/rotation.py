"""Committee rotation on an EVM custody (the CreditLedger or a CreditLock: both inherit
contracts/ethereum/Committee.sol): read its committee, submit ``rotateCommittee``.

The caller (``creditbridge committee rotate submit``) brings the current members' signatures
over ``RotateCommittee(newIndex, signers, threshold)`` (bridge/committee/rotation.py); the key
sending the transaction only pays gas.
"""

from __future__ import annotations

import asyncio

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from bridge.errors import ChainError, TransactionFailed
from relayers.evm.contracts import LEDGER, LOCK, decode_error
from relayers.evm.rpc import JsonRpcError, RpcPool

ROTATE = keccak(text="rotateCommittee(address[],uint256,bytes)")[:4]
COMMITTEE_INDEX = keccak(text="committeeIndex()")[:4]
THRESHOLD = keccak(text="threshold()")[:4]
SIGNERS = keccak(text="signers()")[:4]


def encode_rotate(signers: list[bytes], threshold: int, signatures: bytes) -> bytes:
    return ROTATE + abi_encode(["address[]", "uint256", "bytes"],
                               [[to_checksum_address(s) for s in signers], threshold, signatures])


async def committee_of(pool: RpcPool, contract: bytes) -> tuple[int, list[bytes], int]:
    """(committeeIndex, signers, threshold) of a Committee contract."""
    try:
        idx, sg, thr = await asyncio.gather(pool.call(contract, COMMITTEE_INDEX), pool.call(contract, SIGNERS),
                                            pool.call(contract, THRESHOLD))
        (index,) = abi_decode(["uint64"], idx)
        (signers,) = abi_decode(["address[]"], sg)
        (threshold,) = abi_decode(["uint256"], thr)
    except DecodingError:
        raise ChainError(f"0x{contract.hex()} is not a committee contract", retryable=False) from None
    return int(index), [bytes.fromhex(a[2:]) for a in signers], int(threshold)


def _reason(data: bytes | None) -> str:
    for name in (LEDGER, LOCK):
        found = decode_error(name, data)
        if found is not None:
            return f"{found[0]}{found[1] if found[1] else ''}"
    return "reverted"


async def submit_rotation(pool: RpcPool, contract: bytes, signers: list[bytes], threshold: int, signatures: bytes,
                          payer_key: bytes | str, *, timeout: float = 120.0) -> bytes:
    """Send ``rotateCommittee`` and wait for its receipt; the transaction hash. A revert the
    node predicts (estimate) or a mined revert is a non-retryable TransactionFailed."""
    account = Account.from_key(payer_key)
    data = encode_rotate(signers, threshold, signatures)
    to = to_checksum_address(contract)
    try:
        gas = await pool.request("eth_estimateGas", [{"from": account.address, "to": to, "data": "0x" + data.hex()}])
    except JsonRpcError as e:
        if e.is_revert:
            raise TransactionFailed(f"rotateCommittee on {to} would revert: {_reason(e.revert_data)}",
                                    retryable=False) from None
        raise
    chain_id = int(await pool.request("eth_chainId", []), 16)
    nonce = int(await pool.request("eth_getTransactionCount", [account.address, "pending"]), 16)
    block = await pool.request("eth_getBlockByNumber", ["latest", False])
    tx = {"to": to, "data": data, "gas": int(int(gas, 16) * 1.25) + 10_000, "nonce": nonce, "chainId": chain_id,
          "value": 0}
    base = block.get("baseFeePerGas") if isinstance(block, dict) else None
    if base is not None:
        tip = int(await pool.request("eth_maxPriorityFeePerGas", []), 16)
        tx.update(type=2, maxPriorityFeePerGas=tip, maxFeePerGas=2 * int(base, 16) + tip)
    else:
        tx["gasPrice"] = int(await pool.request("eth_gasPrice", []), 16)
    signed = account.sign_transaction(tx)
    tx_hash = await pool.request("eth_sendRawTransaction", ["0x" + signed.raw_transaction.hex()])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        receipt = await pool.request("eth_getTransactionReceipt", [tx_hash])
        if receipt:
            if int(receipt["status"], 16) != 1:
                raise TransactionFailed(f"rotateCommittee {tx_hash} on {to} reverted", retryable=False)
            return bytes.fromhex(tx_hash[2:])
        if loop.time() > deadline:
            raise ChainError(f"rotateCommittee {tx_hash} on {to}: no receipt within {timeout:.0f}s")
        await asyncio.sleep(0.2)
