"""Compiled contract artifacts (contracts/ethereum/build), deployment and ABI constants.

``node contracts/ethereum/build.js`` (run by ``make setup``) writes one JSON file per contract:
``{"abi": [...], "bytecode": "0x...", "deployedBytecode": "0x..."}``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any, Sequence

import aiohttp
from eth_abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_account import Account
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception

from bridge.errors import ChainError, ConfigError, TransactionFailed

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = REPO_ROOT / "contracts" / "ethereum" / "build"

LEDGER = "CreditLedger"
LOCK = "CreditLock"

# Event signatures and topic0 values (keccak of the canonical signature).
LOCKED_SIGNATURE = "Locked(uint64,address,uint256,bytes32)"
CREDITED_SIGNATURE = "Credited(bytes32,uint64,address,uint256,bytes32)"
RELEASED_SIGNATURE = "Released(bytes32,address,uint256)"
COMMITTEE_ROTATED_SIGNATURE = "CommitteeRotated(uint64,address[],uint256)"
SPENT_SIGNATURE = "Spent(address,uint256,bytes32)"
LOCKED_TOPIC: bytes = keccak(text=LOCKED_SIGNATURE)
CREDITED_TOPIC: bytes = keccak(text=CREDITED_SIGNATURE)
RELEASED_TOPIC: bytes = keccak(text=RELEASED_SIGNATURE)
COMMITTEE_ROTATED_TOPIC: bytes = keccak(text=COMMITTEE_ROTATED_SIGNATURE)
SPENT_TOPIC: bytes = keccak(text=SPENT_SIGNATURE)
# Non-indexed fields of the events, in order (for eth_abi.decode of log data).
LOCKED_DATA_TYPES = ("uint256",)  # amount; topics: nonce, sender, ref
CREDITED_DATA_TYPES = ("uint256", "bytes32")  # credits, quoteId; topics: source, sequence, beneficiary
# The tuple type of CreditLedger.Credit, for encoding settle() calldata by hand.
CREDIT_TUPLE_TYPE = "(bytes32,uint64,address,uint256,bytes32)"


class ArtifactMissing(ConfigError):
    """A compiled contract artifact is missing or unreadable."""

    code = "artifact-missing"


@functools.lru_cache(maxsize=None)
def _artifact(name: str, build_dir: Path) -> tuple[tuple, str]:
    path = build_dir / f"{name}.json"
    try:
        data = json.loads(path.read_text())
        abi, bytecode = data["abi"], data["bytecode"]
    except FileNotFoundError:
        raise ArtifactMissing(
            f"{path} not found: compile the contracts with `make setup` (or `node contracts/ethereum/build.js`)"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactMissing(f"{path} is unreadable ({e.__class__.__name__}); rebuild with `make setup`") from None
    if not (isinstance(bytecode, str) and bytecode.startswith("0x") and len(bytecode) > 2):
        raise ArtifactMissing(f"{path} has no bytecode; rebuild with `make setup`")
    return tuple(abi), bytecode


def load_artifact(name: str, build_dir: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """``(abi, bytecode)`` of a compiled contract (``"CreditLedger"``, ``"CreditLock"``)."""
    abi, bytecode = _artifact(name, (build_dir or BUILD_DIR).resolve())
    return [dict(x) for x in abi], bytecode


def load_abi(name: str) -> list[dict[str, Any]]:
    return load_artifact(name)[0]


@functools.lru_cache(maxsize=None)
def error_selectors(name: str) -> dict[bytes, tuple[str, tuple[str, ...]]]:
    """4-byte selector -> (error name, argument types) of a contract's custom errors."""
    out: dict[bytes, tuple[str, tuple[str, ...]]] = {}
    for item in load_abi(name):
        if item.get("type") == "error":
            types = tuple(_abi_type(i) for i in item.get("inputs", []))
            out[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = (item["name"], types)
    return out


def decode_error(name: str, data: bytes | str | None) -> tuple[str, tuple] | None:
    """Decode revert data as one of ``name``'s custom errors: ``(error, args)``, else None.

    Addresses come back checksummed, as web3 returns them elsewhere."""
    if isinstance(data, str):
        try:
            data = bytes.fromhex(data[2:] if data.startswith("0x") else data)
        except ValueError:
            return None
    if not data or len(data) < 4:
        return None
    known = error_selectors(name).get(bytes(data[:4]))
    if known is None:
        return None
    err, types = known
    try:
        values = abi_decode(list(types), bytes(data[4:])) if types else ()
    except DecodingError:
        return None
    return err, tuple(to_checksum_address(v) if t == "address" else v for t, v in zip(types, values))


def revert_data(exc: BaseException) -> str | None:
    """The hex revert data carried by a web3 ContractLogicError (or None)."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some nodes nest it
        data = data.get("data")
    return data if isinstance(data, str) else None


def describe_revert(exc: BaseException) -> str:
    """``Name(args)`` of a revert carrying one of our contracts' custom errors, else the message."""
    data = revert_data(exc)
    for name in (LEDGER, LOCK):
        try:
            decoded = decode_error(name, data)
        except ConfigError:  # artifact not built: fall back to the raw message
            decoded = None
        if decoded is not None:
            return f"{decoded[0]}({', '.join(map(str, decoded[1]))})"
    return str(exc)


def _abi_type(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple") :]
    return t


async def send_transaction(
    w3: AsyncWeb3, tx: dict[str, Any], private_key: str | bytes, *, timeout: float = 60.0
) -> dict[str, Any]:
    """Fill nonce/chainId/gas/fees, sign locally, send, wait for the receipt.

    Raises TransactionFailed if the transaction reverts (status 0) and ChainError on RPC or
    transport failures. Returns the receipt.
    """
    account = Account.from_key(private_key)
    tx = dict(tx)
    tx.setdefault("from", account.address)
    try:
        if "nonce" not in tx:
            tx["nonce"] = await w3.eth.get_transaction_count(account.address, "pending")
        if "chainId" not in tx:
            tx["chainId"] = await w3.eth.chain_id
        if "gasPrice" not in tx and "maxFeePerGas" not in tx:
            base = (await w3.eth.get_block("latest"))["baseFeePerGas"]
            tip = await w3.eth.max_priority_fee
            tx["maxPriorityFeePerGas"] = tip
            tx["maxFeePerGas"] = 2 * base + tip
        if "gas" not in tx:
            tx["gas"] = await w3.eth.estimate_gas(tx)
        signed = account.sign_transaction(tx)
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout, poll_latency=0.05)
    except ContractLogicError as e:
        raise TransactionFailed(f"transaction would revert: {describe_revert(e)}", retryable=False) from e
    except TimeExhausted as e:
        raise TransactionFailed(f"no receipt within {timeout:g} s") from e
    except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
        raise ChainError(f"sending transaction failed: {e.__class__.__name__}: {e}") from e
    if receipt["status"] != 1:
        raise TransactionFailed(f"transaction {receipt['transactionHash'].to_0x_hex()} reverted", retryable=False)
    return dict(receipt)


async def deploy(
    w3: AsyncWeb3, name: str, args: Sequence[Any], private_key: str | bytes, *, value: int = 0
) -> ChecksumAddress:
    """Deploy the compiled contract ``name`` with constructor ``args``; its checksum address."""
    abi, bytecode = load_artifact(name)
    factory = w3.eth.contract(abi=abi, bytecode=bytecode)
    account = Account.from_key(private_key)
    try:
        tx = await factory.constructor(*args).build_transaction({"from": account.address, "value": value})
    except ContractLogicError as e:
        raise TransactionFailed(f"deploying {name} would revert: {describe_revert(e)}", retryable=False) from e
    except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
        raise ChainError(f"preparing {name} deployment failed: {e.__class__.__name__}: {e}") from e
    tx.pop("to", None)
    receipt = await send_transaction(w3, tx, private_key)
    address = receipt.get("contractAddress")
    if not address:
        raise TransactionFailed(f"deploying {name}: receipt has no contract address", retryable=False)
    return to_checksum_address(address)
