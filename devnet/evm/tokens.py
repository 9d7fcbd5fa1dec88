"""ERC-20 test stablecoins on a local EVM chain (issue 15): deploy, fund, pay, read.

The tokens are the repo's own Solidity test tokens (``contracts/ethereum/TestTokens.sol``,
compiled by ``contracts/ethereum/build.js``): ``TestToken`` (USDC-like: 6 decimals, returns
``true``) and ``TestTetherToken`` (USDT-like: ``transfer``/``transferFrom``/``approve`` return
nothing). Both have an open ``mint``: test tokens only, never for a real network.

For the chaos harness and scripts::

    tokens = await deploy_dev_tokens(rpc, deployer_key, holders)       # {"USDC": "0x..", "USDT": "0x.."}
    tx = await pay_token(rpc, payer_key, tokens["USDC"], instructions["transfer"]["to"], amount)
    held = await token_balance(rpc, tokens["USDC"], address)

``pay_token`` is a plain ``transfer(to, amount)`` from the payer (what a wallet sends to the
payment's deposit address); the relay's collector moves it into the lock.
"""

from __future__ import annotations

from typing import Iterable

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.errors import ChainError

# symbol -> (contract name in contracts/ethereum/build, token name)
DEV_TOKENS = {"USDC": ("TestToken", "USD Coin (devnet)"), "USDT": ("TestTetherToken", "Tether USD (devnet)")}
DEV_TOKEN_DECIMALS = 6
DEV_TOKEN_FUNDS = 1_000_000 * 10**DEV_TOKEN_DECIMALS  # minted to each funded dev account

TRANSFER = keccak(text="transfer(address,uint256)")[:4]
APPROVE = keccak(text="approve(address,uint256)")[:4]
MINT = keccak(text="mint(address,uint256)")[:4]
BALANCE_OF = keccak(text="balanceOf(address)")[:4]


def _addr(a: str | bytes) -> str:
    return to_checksum_address(a if isinstance(a, str) else "0x" + bytes(a).hex())


async def _send(w3: AsyncWeb3, key: str | bytes, to: str, data: bytes, timeout: float) -> dict:
    from relayers.evm.contracts import send_transaction

    return await send_transaction(w3, {"to": to, "data": "0x" + data.hex()}, key, timeout=timeout)


async def deploy_token(rpc: str, key: str | bytes, symbol: str, kind: str = "TestToken", *,
                       name: str | None = None, decimals: int = DEV_TOKEN_DECIMALS, fee_bps: int | None = None) -> str:
    """Deploy one test token (``TestToken``, ``TestTetherToken``, ``TestFeeToken`` with ``fee_bps``);
    its checksum address."""
    from relayers.evm.contracts import deploy

    args = [name or symbol, symbol, decimals] + ([fee_bps] if kind == "TestFeeToken" else [])
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        return await deploy(w3, kind, args, key)
    finally:
        await w3.provider.disconnect()


async def mint(rpc: str, key: str | bytes, token: str, holders: Iterable[str | bytes], amount: int,
               *, timeout: float = 60.0) -> None:
    """``mint(holder, amount)`` for every holder: sent together (explicit nonces), so a chain
    with a block time mines them in one block."""
    import asyncio

    from eth_account import Account

    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        nonce = await w3.eth.get_transaction_count(Account.from_key(key).address, "pending")
        await asyncio.gather(*(
            send_tx(w3, key, {"to": _addr(token), "nonce": nonce + i, "gas": 120_000,
                              "data": "0x" + (MINT + abi_encode(["address", "uint256"], [_addr(h), amount])).hex()},
                    timeout)
            for i, h in enumerate(holders)))
    finally:
        await w3.provider.disconnect()


async def send_tx(w3: AsyncWeb3, key: str | bytes, tx: dict, timeout: float) -> dict:
    from relayers.evm.contracts import send_transaction

    return await send_transaction(w3, tx, key, timeout=timeout)


async def deploy_dev_tokens(rpc: str, key: str | bytes, holders: Iterable[str | bytes],
                            amount: int = DEV_TOKEN_FUNDS) -> dict[str, str]:
    """Deploy the devnet's USDC and USDT and mint ``amount`` of each to every holder."""
    holders = list(holders)
    out = {}
    for symbol, (kind, name) in DEV_TOKENS.items():
        out[symbol] = await deploy_token(rpc, key, symbol, kind, name=name)
        await mint(rpc, key, out[symbol], holders, amount)
    return out


async def pay_token(rpc: str, private_key: str | bytes, token: str | bytes, to: str | bytes, amount: int,
                    *, timeout: float = 60.0) -> bytes:
    """A plain ERC-20 ``transfer(to, amount)`` from the key's account (a payment to its deposit
    address); the transaction hash once mined (TransactionFailed if it reverts)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        receipt = await _send(w3, private_key, _addr(token),
                              TRANSFER + abi_encode(["address", "uint256"], [_addr(to), amount]), timeout)
    finally:
        await w3.provider.disconnect()
    return bytes(receipt["transactionHash"])


async def token_balance(rpc: str, token: str | bytes, holder: str | bytes, block: int | str = "latest") -> int:
    """``balanceOf(holder)`` of the ERC-20 ``token`` at ``block``."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        got = await w3.eth.call({"to": _addr(token), "data": "0x" + (BALANCE_OF + bytes(12) +
                                                                    bytes.fromhex(_addr(holder)[2:])).hex()}, block)
    except Exception as e:  # noqa: BLE001 -- web3/aiohttp errors, converted (never swallowed)
        raise ChainError(f"balanceOf on {_addr(token)} failed: {e.__class__.__name__}") from None
    finally:
        await w3.provider.disconnect()
    if len(got) != 32:
        raise ChainError(f"balanceOf on {_addr(token)} answered {len(got)} bytes")
    return int.from_bytes(bytes(got), "big")
