"""A payer's side, for the devnet and the tests: compose, sign and submit a payment.

These functions are synchronous (substrate-interface); async code calls them through
``asyncio.to_thread`` with a ``SubstrateInterface`` used only on that thread.
Dev accounts are the well-known ``//Alice`` ... seeds: never use them anywhere real.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from substrateinterface import Keypair, SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException

from bridge.errors import ChainError

DEV_SEEDS = ("//Alice", "//Bob", "//Charlie", "//Dave")


@dataclass(frozen=True)
class Receipt:
    block_hash: str
    block_number: int
    extrinsic_index: int
    extrinsic_hash: str
    success: bool
    error: Any = None
    events: list = field(default_factory=list)


def connect(url: str, ss58_format: int = 42, timeout: float = 60.0) -> SubstrateInterface:
    return SubstrateInterface(url=url, ss58_format=ss58_format, auto_discover=False, auto_reconnect=False,
                              ws_options={"timeout": timeout})


def keypair(seed: str, ss58_format: int = 42) -> Keypair:
    return Keypair.create_from_uri(seed, ss58_format=ss58_format)


def payment_call(si: SubstrateInterface, to: str, amount: int, remark: bytes | None, *, batch: str = "batch_all",
                 transfer: str = "transfer_keep_alive", remark_call: str = "remark_with_event",
                 extra_calls: Sequence[Any] = (), proxy_real: str | None = None):
    """``Utility.<batch>([Balances.<transfer>(to, amount), System.<remark_call>(remark), *extra])``,
    optionally wrapped in ``Proxy.proxy(real=proxy_real, None, call)``."""
    calls = [si.compose_call("Balances", transfer, {"dest": to, "value": amount})]
    if remark is not None:
        calls.append(si.compose_call("System", remark_call, {"remark": "0x" + remark.hex()}))
    calls.extend(extra_calls)
    call = si.compose_call("Utility", batch, {"calls": calls})
    if proxy_real is not None:
        call = si.compose_call("Proxy", "proxy", {"real": proxy_real, "force_proxy_type": None, "call": call})
    return call


def submit(si: SubstrateInterface, seed: str, call, *, wait: bool = True) -> Receipt | str:
    """Sign ``call`` with ``seed`` and submit it; with ``wait`` return its receipt once in a
    block, else the extrinsic hash right away."""
    kp = keypair(seed, si.ss58_format or 42)
    try:
        xt = si.create_signed_extrinsic(call=call, keypair=kp)
        r = si.submit_extrinsic(xt, wait_for_inclusion=wait)
        if not wait:
            return r.extrinsic_hash
        return Receipt(
            block_hash=r.block_hash,
            block_number=int(si.get_block_number(r.block_hash)),
            extrinsic_index=int(r.extrinsic_idx),
            extrinsic_hash=r.extrinsic_hash,
            success=bool(r.is_success),
            error=r.error_message,
            events=[e.value for e in r.triggered_events],
        )
    except SubstrateRequestException as e:
        raise ChainError(f"submitting the payment failed: {e}", retryable=False) from None


def pay(url: str, seed: str, to: str, amount: int, remark: bytes, *, ss58_format: int = 42, **kw) -> Receipt:
    """Pay ``amount`` base units to ``to`` with ``remark`` as the instructions say (one call)."""
    si = connect(url, ss58_format)
    try:
        return submit(si, seed, payment_call(si, to, amount, remark, **kw))
    finally:
        si.close()
