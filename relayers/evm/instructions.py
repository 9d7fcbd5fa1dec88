"""Payment instructions of an EVM chain, native ETH or an ERC-20 (issue 15).

``evm_instructions(chain, reference, amount, code=None, token=None)``: ``token`` is the
payment's non-native ``PayableToken`` (an ERC-20 of this chain) or None (ETH, the core's form,
``bridge.payments.instructions.evm_instructions``). For an ERC-20 the payer sends an ordinary
``transfer(to, amount)`` of the token to the payment's deposit address (the same address as
for ETH), or calls ``lockToken(token, amount, reference)`` on the lock after ``approve``::

    {"chain", "chain_id", "contract" (the lock), "method": "lockToken(address,uint256,bytes32)",
     "reference", "token": <contract>, "value": amount,
     "transfer": {"to": <deposit address>, "amount", "comment": None, "token": <contract>},
     "uri": "ethereum:<token>@<chain id>/transfer?address=<deposit address>&uint256=<amount>"}  (EIP-681)
"""

from __future__ import annotations

from bridge.config import PayableToken
from bridge.errors import ConfigError
from bridge.payments import instructions as core
from bridge.payments.evm_deposit import checksum_address, deposit_address


def evm_instructions(chain, reference: bytes, amount: int, code: str | None = None,
                     token: PayableToken | None = None) -> dict:
    if token is None or token.native:
        return core.evm_instructions(chain, reference, amount, code)
    if token.chain != chain.name or not token.contract:
        raise ConfigError(f"token {token.symbol} is not an ERC-20 of chain {chain.name}")
    lock = chain.contracts["lock"]
    to = checksum_address(deposit_address(bytes.fromhex(lock[2:]), reference))
    contract = checksum_address(bytes.fromhex(token.contract[2:]))
    return {
        "chain": chain.name,
        "chain_id": chain.chain_id,
        "contract": lock,
        "method": "lockToken(address,uint256,bytes32)",
        "reference": "0x" + reference.hex(),
        "token": contract,
        "value": str(amount),
        "transfer": {"to": to, "amount": str(amount), "comment": None, "token": contract},
        "uri": f"ethereum:{contract}@{chain.chain_id}/transfer?address={to}&uint256={amount}",
    }
