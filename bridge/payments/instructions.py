"""Per-chain payment instructions: what the payer's wallet must do to pay a payment.

The EVM form is built here (it needs no chain SDK). Other families register their builder
from the composition root (``bridge/api/wiring.py``), so the core stays SDK-free::

    evm:       {"chain", "chain_id", "contract", "method": "lock(bytes32)", "reference", "value",
                "transfer": {"to" (the payment's deposit address), "amount", "comment": None},
                "uri": EIP-681 "ethereum:<deposit address>@<chain id>?value=<wei>"}
    substrate: {"chain", "to" (SS58 multisig account), "amount", "remark": "0x<hex>"}
    ton:       {"chain", "contract", "amount", "body" (base64 BOC), "link": "ton://transfer/..."}
"""

from __future__ import annotations

import inspect
from typing import Callable, Mapping

from bridge.errors import ConfigError
from bridge.payments.evm_deposit import checksum_address, deposit_address

# (chain config, reference, amount, *, code=None) -> instructions; since issue 14 a builder also
# returns "transfer" ({"to", "amount", "comment"}: a plain transfer that pays) and "uri" (a wallet link)
Builder = Callable[..., dict]


def evm_instructions(chain, reference: bytes, amount: int, code: str | None = None) -> dict:
    """Two ways to pay: ``lock(reference)`` on the lock with ``value`` wei (a dApp), or a plain
    transfer of ``amount`` wei to the payment's deposit address (any wallet; the relay collects
    it into the lock). ``code`` is not needed on EVM chains (the address names the payment)."""
    lock = chain.contracts["lock"]
    to = checksum_address(deposit_address(bytes.fromhex(lock[2:]), reference))
    return {
        "chain": chain.name,
        "chain_id": chain.chain_id,
        "contract": chain.contracts["lock"],
        "method": "lock(bytes32)",
        "reference": "0x" + reference.hex(),
        "value": str(amount),
        "transfer": {"to": to, "amount": str(amount), "comment": None},
        "uri": f"ethereum:{to}@{chain.chain_id}?value={amount}",
    }


DEFAULT_BUILDERS: Mapping[str, Builder] = {"evm": evm_instructions}


class Instructions:
    def __init__(self, builders: Mapping[str, Builder] | None = None) -> None:
        self.builders = dict(DEFAULT_BUILDERS)
        self.builders.update(builders or {})

    def __call__(self, chain, reference: bytes, amount: int, code: str | None = None, token=None) -> dict:
        """The instructions to pay ``amount`` for the payment ``reference`` (whose payment code is
        ``code``: None for payments made before codes) in ``token`` (a non-native
        ``PayableToken``: an ERC-20, a ``pallet_assets`` asset, a jetton; None for the chain's own
        token). A builder that takes no ``code`` keyword (one written before issue 14) is called
        without it; a token payment needs a builder that takes ``token``."""
        try:
            build = self.builders[chain.family]
        except KeyError:
            raise ConfigError(f"no payment instructions for chain family {chain.family!r}") from None
        kw = {}
        if token is not None and not getattr(token, "native", True):
            if not _takes(build, "token"):
                raise ConfigError(f"no payment instructions for {token.symbol} on chain {chain.name!r}")
            kw["token"] = token
        if _takes(build, "code"):
            kw["code"] = code
        return build(chain, reference, amount, **kw)


def _takes(build: Builder, name: str) -> bool:
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):  # a builtin or C callable: no introspection, call it the old way
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
