"""Payment instructions for Asset Hub chains (registered by ``bridge.node.payment_instructions``).

Two ways to pay, both accepted:

* **Plain transfer** (any wallet: Nova, Talisman, Polkadot Vault, an exchange withdrawal): send
  ``amount`` base units to ``transfer.to``, the payment's own account (the SS58 form of
  ``multisig.payment_account``: a multisig of the committee and a tag of the reference that the
  signers collect into the committee account). No memo is needed. ``uri`` is that address too:
  Asset Hub has no payment-URI standard, the page shows the amount next to it.
* **Call-based**: ``Utility.batch_all([Balances.transfer_keep_alive(to, amount),
  System.remark_with_event(remark)])``: ``to`` is the committee's multisig account in the
  chain's SS58 format, ``amount`` base units of the chain's native token (a decimal string),
  ``remark`` the exact 32 bytes of the payment reference as ``0x`` hex.
"""

from __future__ import annotations

from bridge.config import SubstrateChainConfig
from bridge.errors import InputError
from relayers.substrate.multisig import committee_address, payment_address


def substrate_instructions(chain_cfg: SubstrateChainConfig, reference: bytes, amount: int,
                           code: str | None = None) -> dict:
    if len(reference) != 32:
        raise InputError("a payment reference is 32 bytes")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InputError("amount must be a positive integer of base units")
    to = payment_address(chain_cfg.committee, reference, chain_cfg.ss58_prefix)
    return {
        "chain": chain_cfg.name,
        "to": committee_address(chain_cfg.committee, chain_cfg.ss58_prefix),
        "amount": str(amount),
        "remark": "0x" + reference.hex(),
        "transfer": {"to": to, "amount": str(amount), "comment": None},
        "uri": to,
    }
