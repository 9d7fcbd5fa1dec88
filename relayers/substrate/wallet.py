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


def asset_payment_call(si: SubstrateInterface, asset_id: int, to: str, amount: int, remark: bytes | None, *,
                       batch: str = "batch_all", transfer: str = "transfer_keep_alive",
                       remark_call: str = "remark_with_event", proxy_real: str | None = None):
    """A payment in a ``pallet_assets`` token (issue 15): ``Assets.<transfer>(asset_id, to,
    amount)`` alone when ``remark`` is None (a plain transfer to a payment account), else
    ``Utility.<batch>([Assets.<transfer>(asset_id, to, amount), System.<remark_call>(remark)])``;
    optionally wrapped in ``Proxy.proxy(real=proxy_real, None, call)``."""
    call = si.compose_call("Assets", transfer, {"id": asset_id, "target": to, "amount": amount})
    if remark is not None:
        call = si.compose_call("Utility", batch, {"calls": [
            call, si.compose_call("System", remark_call, {"remark": "0x" + remark.hex()})]})
    if proxy_real is not None:
        call = si.compose_call("Proxy", "proxy", {"real": proxy_real, "force_proxy_type": None, "call": call})
    return call


def pay_asset(url: str, seed: str, asset_id: int, to: str, amount: int, remark: bytes | None = None, *,
              ss58_format: int = 42, wait: bool = True, **kw) -> Receipt | str:
    """Pay ``amount`` base units of asset ``asset_id`` to ``to`` from the dev account ``seed``: a
    plain ``Assets.transfer_keep_alive`` to a payment's ``transfer.to`` (``remark`` None), or the
    call-based batch to the committee account with the payment reference as ``remark``. With
    ``wait`` (default) it returns the receipt once in a block (on a Manual-mode chopsticks
    someone must build that block: the devnet's clock keeper does); else the extrinsic hash."""
    si = connect(url, ss58_format)
    try:
        return submit(si, seed, asset_payment_call(si, asset_id, to, amount, remark, **kw), wait=wait)
    finally:
        si.close()


def asset_balance(url: str, asset_id: int, account: str, *, block_hash: str | None = None) -> int:
    """``Assets.Account(asset_id, account).balance`` (0 when the account holds none of it)."""
    si = connect(url, 42)
    try:
        v = si.query("Assets", "Account", [asset_id, account], block_hash=block_hash).value
        return int(v["balance"]) if v else 0
    finally:
        si.close()


def top_up_call(si: SubstrateInterface, committee: str, amount: int):
    """An operator's top-up of the committee account (existential deposit, fee reserve):
    ``Utility.batch_all([Balances.transfer_keep_alive(committee, amount),
    System.remark_with_event(b"creditbridge:top-up")])``. The watchers do not take it for a
    deposit (a plain transfer to the committee account would be refunded as unattributed)."""
    from relayers.substrate.decode import TOP_UP_REMARK

    return payment_call(si, committee, amount, TOP_UP_REMARK)


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


# --- an extrinsic the runtime executes but scalecodec cannot decode (tests, chaos harness) ------
NESTING = 150  # the runtime decodes calls nested up to 256 deep; scalecodec 1.2.12 recurses out near 60


def nested_batch(si: SubstrateInterface, inner, depth: int = NESTING) -> bytes:
    """The encoded call ``Utility.batch([Utility.batch([... inner ...])])``, ``depth`` batches
    deep. The runtime runs it (``MAX_EXTRINSIC_DEPTH`` is 256); scalecodec 1.2.12 decodes nested
    calls recursively and raises ``RecursionError`` long before that depth (about 60)."""
    from relayers.substrate.decode import compact

    raw = bytes(inner.data.data)
    prefix = bytes(si.compose_call("Utility", "batch", {"calls": []}).data.data)[:2]  # pallet, call index
    for _ in range(depth):
        raw = prefix + compact(1) + raw
    return raw


def signed_raw_extrinsic(si: SubstrateInterface, kp: Keypair, call: bytes, nonce: int) -> bytes:
    """A signed, immortal extrinsic (``0x84`` version) of the encoded ``call`` bytes with
    ``nonce``, assembled without re-encoding the call (substrate-interface encodes calls from
    their decoded value, which it cannot do for the calls :func:`nested_batch` builds)."""
    from scalecodec.base import ScaleBytes

    from relayers.substrate.decode import compact, read_compact

    if kp.crypto_type not in (0, 1):  # MultiSignature::Ed25519 / Sr25519: 64-byte signatures
        raise ChainError("signed_raw_extrinsic takes ed25519 or sr25519 keys")

    class _Encoded:  # what generate_signature_payload reads of a call
        data = ScaleBytes(bytearray(call))

    signature = kp.sign(si.generate_signature_payload(call=_Encoded(), nonce=nonce))
    # the signed extensions' bytes (era, nonce, tip, fee asset) of a plain remark with this nonce
    remark = si.compose_call("System", "remark", {"remark": "0x00"})
    plain = bytes(si.create_signed_extrinsic(call=remark, keypair=kp, nonce=nonce).data.data)
    _, k = read_compact(plain, 0)
    body, remark_bytes = plain[k:], bytes(remark.data.data)
    signer, sig_start = body[1:34], 34  # version, MultiAddress::Id(account)
    extra = body[sig_start + 65:len(body) - len(remark_bytes)]  # after MultiSignature::Sr25519/Ed25519
    if body[0] != 0x84 or signer[0] != 0 or not body.endswith(remark_bytes):
        raise ChainError("unexpected extrinsic layout; cannot assemble a raw extrinsic")
    new = bytes([0x84]) + signer + bytes([kp.crypto_type]) + signature + extra + call
    return compact(len(new)) + new
