"""Payment instructions for Asset Hub chains (registered by ``bridge.node.payment_instructions``).

The payer signs ``Utility.batch_all([Balances.transfer_keep_alive(to, amount),
System.remark_with_event(remark)])``: ``to`` is the committee's multisig account in the
chain's SS58 format, ``amount`` base units of the chain's native token (a decimal string),
``remark`` the exact 32 bytes of the payment reference as ``0x`` hex.
"""

from __future__ import annotations

from bridge.config import SubstrateChainConfig
from bridge.errors import InputError
from relayers.substrate.multisig import committee_address


def substrate_instructions(chain_cfg: SubstrateChainConfig, reference: bytes, amount: int) -> dict:
    if len(reference) != 32:
        raise InputError("a payment reference is 32 bytes")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InputError("amount must be a positive integer of base units")
    return {
        "chain": chain_cfg.name,
        "to": committee_address(chain_cfg.committee, chain_cfg.ss58_prefix),
        "amount": str(amount),
        "remark": "0x" + reference.hex(),
    }
