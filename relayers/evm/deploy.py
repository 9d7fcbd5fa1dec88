"""``creditbridge deploy evm``: deploy CreditLock (a source chain) or CreditLedger (the
settlement chain) for the manifest's committee and record it in the manifest.

The deployer key comes from the project's keystore (the CLI decrypts it; the devnet passes its
own dev key through the same function). Fees are EIP-1559 with caps: the priority fee is the
node's suggestion capped by ``max_priority_fee``, the fee cap is ``2 * base fee + priority``
capped by ``max_fee``; a base fee above ``max_fee`` refuses to send (retry later). The function
waits until the deployment has ``confirmations`` blocks on top (and is still in the chain),
then records address, runtime code hash and deploy block.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.exceptions import Web3Exception

from bridge import manifest as mf
from bridge.errors import ChainError, ConfigError
from relayers.evm.contracts import LEDGER, LOCK, load_artifact, send_transaction

log = logging.getLogger("creditbridge.deploy.evm")

# chain ids that tell the network apart: a mainnet manifest never gets a testnet contract
MAINNET_CHAIN_IDS = {1: "Ethereum", 8453: "Base", 10: "OP Mainnet", 42161: "Arbitrum One"}
TESTNET_CHAIN_IDS = {11155111: "Sepolia", 17000: "Holesky", 560048: "Hoodi", 84532: "Base Sepolia",
                     11155420: "OP Sepolia", 421614: "Arbitrum Sepolia"}
# the chain id a chain of that name must have on that network (config/testnet calls its
# Ethereum chain "sepolia")
KNOWN_CHAIN_IDS = {("mainnet", "ethereum"): 1, ("testnet", "ethereum"): 11155111, ("testnet", "sepolia"): 11155111}

KINDS = {"lock": LOCK, "credits": LEDGER}


@dataclass(frozen=True)
class EvmDeployment:
    chain: str
    kind: str  # "lock" | "credits"
    address: str
    code_hash: str
    block: int
    tx_hash: str
    manifest_hash: str


def check_chain_id(network: str, chain: str, actual: int, expected: int | None) -> None:
    """ConfigError (one line) if the RPC's chain id is not the one this network/chain needs."""
    if expected is not None and actual != expected:
        raise ConfigError(f"{chain}: the RPC's chain id is {actual}, the manifest's is {expected}")
    known = KNOWN_CHAIN_IDS.get((network, chain))
    if known is not None and actual != known:
        raise ConfigError(f"{chain}: the RPC's chain id is {actual}, {network} {chain} is {known}")
    if network != "mainnet" and actual in MAINNET_CHAIN_IDS:
        raise ConfigError(f"{chain}: chain id {actual} is {MAINNET_CHAIN_IDS[actual]} mainnet, "
                          f"not a {network} chain")
    if network == "mainnet" and actual in TESTNET_CHAIN_IDS:
        raise ConfigError(f"{chain}: chain id {actual} is {TESTNET_CHAIN_IDS[actual]}, a testnet")


async def fee_caps(w3: AsyncWeb3, max_fee: int | None, max_priority_fee: int | None) -> dict:
    block = await w3.eth.get_block("latest")
    base = int(block.get("baseFeePerGas") or 0)
    tip = int(await w3.eth.max_priority_fee)
    if max_priority_fee is not None:
        tip = min(tip, max_priority_fee)
    if max_fee is not None and base + tip > max_fee:
        raise ChainError(f"base fee {base} + priority fee {tip} wei exceed --max-fee {max_fee} wei; "
                         "retry later or raise the cap")
    cap = 2 * base + tip
    if max_fee is not None:
        cap = min(cap, max_fee)
    return {"maxFeePerGas": cap, "maxPriorityFeePerGas": tip}


async def wait_confirmations(w3: AsyncWeb3, tx_hash, block: int, block_hash: bytes, confirmations: int,
                             timeout: float) -> None:
    """Until ``confirmations`` blocks sit on the receipt's block and the receipt is unchanged."""
    deadline = time.monotonic() + timeout
    while await w3.eth.block_number < block + confirmations:
        if time.monotonic() > deadline:
            raise ChainError(f"deployment not {confirmations} block(s) deep within {timeout:.0f}s")
        await asyncio.sleep(0.25)
    receipt = await w3.eth.get_transaction_receipt(tx_hash)
    if receipt is None or bytes(receipt["blockHash"]) != bytes(block_hash):
        raise ChainError("the deployment was reorganized out while waiting for confirmations; deploy again")


async def deploy_evm(manifest_path: str | Path, *, network: str, chain: str, rpc: str, private_key: bytes,
                     kind: str, min_amount: int | None = None, provider: str | None = None, token: str = "ETH",
                     confirmations: int = 0, max_fee: int | None = None, max_priority_fee: int | None = None,
                     treasury: str | None = None, timeout: float = 600.0) -> EvmDeployment:
    """Deploy ``kind`` ("lock": CreditLock with ``min_amount`` wei; "credits": CreditLedger with
    ``provider``, default the deployer) for the manifest's committee on ``chain``; record it."""
    if kind not in KINDS:
        raise ConfigError(f"unknown contract kind {kind!r} (lock or credits)")
    manifest = mf.load_or_new(manifest_path, network)
    if manifest.committee is None:
        raise ConfigError(f"manifest {manifest_path} has no committee: run `creditbridge committee init` first")
    entry = manifest.chains.get(chain)
    if entry is not None and entry.family != "evm":
        raise ConfigError(f"manifest chain {chain!r} is a {entry.family} chain, not evm")
    if kind == "lock" and (min_amount is None or min_amount <= 0):
        raise ConfigError("a lock needs --min-amount (wei, > 0)")
    account = Account.from_key(private_key)
    signers = [AsyncWeb3.to_checksum_address(a) for a in manifest.committee.addresses()]
    threshold = manifest.committee.threshold
    args = [signers, threshold, min_amount] if kind == "lock" else \
        [signers, threshold, AsyncWeb3.to_checksum_address(provider or account.address)]
    abi, bytecode = load_artifact(KINDS[kind])
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc, request_kwargs={"timeout": 30}))
    try:
        try:
            chain_id = await w3.eth.chain_id
        except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
            raise ChainError(f"{chain}: cannot reach {rpc} ({e.__class__.__name__})") from None
        check_chain_id(network, chain, chain_id, entry.chain_id if entry is not None else None)
        factory = w3.eth.contract(abi=abi, bytecode=bytecode)
        try:
            tx = await factory.constructor(*args).build_transaction(
                {"from": account.address, "chainId": chain_id, **await fee_caps(w3, max_fee, max_priority_fee)})
        except (Web3Exception, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as e:
            raise ChainError(f"{chain}: preparing the {KINDS[kind]} deployment failed: {e.__class__.__name__}: {e}") \
                from None
        tx.pop("to", None)
        log.info("%s: deploying %s from %s (committee %d of %d)", chain, KINDS[kind], account.address, threshold,
                 len(signers))
        receipt = await send_transaction(w3, tx, private_key, timeout=timeout)
        address = AsyncWeb3.to_checksum_address(receipt["contractAddress"])
        block = int(receipt["blockNumber"])
        if confirmations:
            await wait_confirmations(w3, receipt["transactionHash"], block, receipt["blockHash"], confirmations,
                                     timeout)
        code = bytes(await w3.eth.get_code(address))
        if not code:
            raise ChainError(f"{chain}: no code at {address} after the deployment")
        code_hash = "0x" + AsyncWeb3.keccak(code).hex()
    finally:
        await w3.provider.disconnect()

    def change(m: mf.Manifest) -> mf.Manifest:
        current = m.chains.get(chain)
        doc = current.model_dump(mode="json", exclude_none=True) if current is not None else \
            {"family": "evm", "chain_id": chain_id}
        doc.setdefault("contracts", {})[kind] = {"address": address, "code_hash": code_hash, "block": block}
        if kind == "lock":
            doc["token"] = token
            doc["start_block"] = block
        if treasury is not None:
            doc["treasury"] = treasury
        return mf.with_chain(m, chain, doc, settlement=kind == "credits")

    saved = mf.update_manifest(manifest_path, network, change)
    log.info("%s: %s at %s (block %d, code %s)", chain, KINDS[kind], address, block, code_hash)
    return EvmDeployment(chain, kind, address, code_hash, block, receipt["transactionHash"].to_0x_hex(), saved.hash)
