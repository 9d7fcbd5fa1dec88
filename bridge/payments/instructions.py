"""Per-chain payment instructions: what the payer's wallet must do to pay a payment.

The EVM form is built here (it needs no chain SDK). Other families register their builder
from the composition root (``bridge/api/wiring.py``), so the core stays SDK-free::

    evm:       {"chain", "chain_id", "contract", "method": "lock(bytes32)", "reference", "value"}
    substrate: {"chain", "to" (SS58 multisig account), "amount", "remark": "0x<hex>"}
    ton:       {"chain", "contract", "amount", "body" (base64 BOC), "link": "ton://transfer/..."}
"""

from __future__ import annotations

from typing import Callable, Mapping

from bridge.errors import ConfigError

Builder = Callable[[object, bytes, int], dict]  # (chain config, reference, amount) -> instructions


def evm_instructions(chain, reference: bytes, amount: int) -> dict:
    return {
        "chain": chain.name,
        "chain_id": chain.chain_id,
        "contract": chain.contracts["lock"],
        "method": "lock(bytes32)",
        "reference": "0x" + reference.hex(),
        "value": str(amount),
    }


DEFAULT_BUILDERS: Mapping[str, Builder] = {"evm": evm_instructions}


class Instructions:
    def __init__(self, builders: Mapping[str, Builder] | None = None) -> None:
        self.builders = dict(DEFAULT_BUILDERS)
        self.builders.update(builders or {})

    def __call__(self, chain, reference: bytes, amount: int) -> dict:
        try:
            build = self.builders[chain.family]
        except KeyError:
            raise ConfigError(f"no payment instructions for chain family {chain.family!r}") from None
        return build(chain, reference, amount)
