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

A payment in a ``pallet_assets`` token (``token`` with an ``asset_id``: USDT 1984, USDC 1337 on
Polkadot Hub, issue 15) is paid the same two ways with ``Assets.transfer_keep_alive(asset_id,
to, amount)`` in place of the balances transfer; ``transfer`` and the top level carry
``asset_id``, and ``uri`` is still the payment account (Asset Hub has no payment-URI standard).
"""

from __future__ import annotations

from bridge.config import PayableToken, SubstrateChainConfig
from bridge.errors import InputError
from relayers.substrate.multisig import committee_address, payment_address


def substrate_instructions(chain_cfg: SubstrateChainConfig, reference: bytes, amount: int,
                           code: str | None = None, token: PayableToken | None = None) -> dict:
    if len(reference) != 32:
        raise InputError("a payment reference is 32 bytes")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InputError("amount must be a positive integer of base units")
    asset_id = None
    if token is not None and not token.native:
        if token.asset_id is None or token.chain != chain_cfg.name:
            raise InputError(f"token {token.symbol} is no pallet_assets token of chain {chain_cfg.name}")
        asset_id = token.asset_id
    to = payment_address(chain_cfg.committee, reference, chain_cfg.ss58_prefix)
    out = {
        "chain": chain_cfg.name,
        "to": committee_address(chain_cfg.committee, chain_cfg.ss58_prefix),
        "amount": str(amount),
        "remark": "0x" + reference.hex(),
        "transfer": {"to": to, "amount": str(amount), "comment": None},
        "uri": to,
    }
    if asset_id is not None:
        out["asset_id"] = asset_id
        out["transfer"]["asset_id"] = asset_id
    return out
