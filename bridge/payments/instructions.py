"""Per-chain payment instructions: what the payer's wallet must do to pay a payment.

The EVM form is built here (it needs no chain SDK). Other families register their builder
from the composition root (``bridge/api/wiring.py``), so the core stays SDK-free::

    evm:       {"chain", "chain_id", "contract", "method": "lock(bytes32)", "reference", "value"}
    substrate: {"chain", "to" (SS58 multisig account), "amount", "remark": "0x<hex>"}
    ton:       {"chain", "contract", "amount", "body" (base64 BOC), "link": "ton://transfer/..."}
"""

from __future__ import annotations

import inspect
from typing import Callable, Mapping

from bridge.errors import ConfigError

# (chain config, reference, amount, *, code=None) -> instructions; since issue 14 a builder also
# returns "transfer" ({"to", "amount", "comment"}: a plain transfer that pays) and "uri" (a wallet link)
Builder = Callable[..., dict]


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

    def __call__(self, chain, reference: bytes, amount: int, code: str | None = None) -> dict:
        """The instructions to pay ``amount`` for the payment ``reference`` (whose payment code is
        ``code``: None for payments made before codes). A builder that takes no ``code`` keyword
        (one written before issue 14) is called without it."""
        try:
            build = self.builders[chain.family]
        except KeyError:
            raise ConfigError(f"no payment instructions for chain family {chain.family!r}") from None
        if _takes_code(build):
            return build(chain, reference, amount, code=code)
        return build(chain, reference, amount)


def _takes_code(build: Builder) -> bool:
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no introspection, call it the old way
        return False
    return "code" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
