"""What a wallet or a dApp does on an EVM chain, for the devnet, its demo and tests:
deploy a contract, pay into the lock contract, read a credit balance."""

from __future__ import annotations

from eth_account import Account
from web3 import AsyncHTTPProvider, AsyncWeb3

from bridge.errors import ChainError


async def deploy_to(rpc: str, name: str, args: list, private_key: str) -> str:
    from relayers.evm.contracts import deploy

    def checksum(v):
        if isinstance(v, list):
            return [checksum(x) for x in v]
        if isinstance(v, str) and len(v) == 42 and v.startswith("0x"):
            return AsyncWeb3.to_checksum_address(v)
        return v

    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        return await deploy(w3, name, [checksum(a) for a in args], private_key)
    finally:
        await w3.provider.disconnect()


async def send_lock(rpc: str, private_key: str, contract: str, reference: str, value: int,
                    *, wait: bool = True) -> str:
    """Call ``lock(bytes32)`` with ``value`` wei as the payer would; return the tx hash (0x)."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        acct = Account.from_key(private_key)
        data = "0x" + (w3.keccak(text="lock(bytes32)")[:4] + bytes.fromhex(reference[2:])).hex()
        tx = {"from": acct.address, "to": w3.to_checksum_address(contract), "value": value, "data": data,
              "nonce": await w3.eth.get_transaction_count(acct.address, "pending"),
              "chainId": await w3.eth.chain_id, "gasPrice": await w3.eth.gas_price}
        tx["gas"] = int(await w3.eth.estimate_gas(tx) * 1.2)
        signed = acct.sign_transaction(tx)
        h = await w3.eth.send_raw_transaction(signed.raw_transaction)
        if wait:
            receipt = await w3.eth.wait_for_transaction_receipt(h, timeout=60)
            if receipt["status"] != 1:
                raise ChainError("lock transaction reverted", retryable=False)
        return h.to_0x_hex()
    finally:
        await w3.provider.disconnect()


async def credits_of(rpc: str, ledger: str, account: str) -> int:
    """``creditsOf(account)`` on the settlement contract."""
    w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        data = w3.keccak(text="creditsOf(address)")[:4] + bytes(12) + bytes.fromhex(account[2:])
        out = await w3.eth.call({"to": w3.to_checksum_address(ledger), "data": "0x" + data.hex()})
        return int.from_bytes(out, "big")
    finally:
        await w3.provider.disconnect()
