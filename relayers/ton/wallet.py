"""Wallet side of TON payments with pytoniq's WalletV4R2 (dev tooling, tests, the demo): pay the
lock contract, deploy-and-pay from a funded but never-used wallet, and wait for the result.

A funded, never-used v4r2 wallet has no code yet (its seqno get-method fails): wallet apps then
send the first transfer with the wallet's state init attached and seqno 0, which deploys the
wallet and pays in one message. ``transfer`` does the same.
"""

from __future__ import annotations

import asyncio
import time

from pytoniq import LiteBalancer, WalletV4R2
from pytoniq_core import Address, Cell

from bridge.errors import ChainError, InputError


async def open_wallet(provider, mnemonic: str | list[str]) -> WalletV4R2:
    words = mnemonic.split() if isinstance(mnemonic, str) else list(mnemonic)
    if len(words) != 24:
        raise InputError("a TON mnemonic has 24 words")
    return await WalletV4R2.from_mnemonic(provider, words)


async def transfer(wallet: WalletV4R2, destination: Address | str, amount: int, body: Cell | None = None, *,
                   bounce: bool = True, state_init=None) -> bytes:
    """Send ``amount`` nanotons (fees paid on top, send mode 3) with ``body``; returns the
    external message's hash. Deploys the wallet in the same message if it is not active yet."""
    dest = Address(destination) if isinstance(destination, str) else destination
    await wallet.update()
    msg = wallet.create_wallet_internal_message(destination=dest, value=amount, body=body or Cell.empty(),
                                                state_init=state_init, bounce=bounce)
    if wallet.is_active:
        seqno = await wallet.get_seqno()
        signed = wallet.raw_create_transfer_msg(wallet.private_key, seqno, wallet.wallet_id, [msg],
                                                valid_until=int(time.time()) + 120)
        ext = wallet.create_external_msg(dest=wallet.address, body=signed)
    else:  # deploy + pay: state init attached, seqno 0
        signed = wallet.raw_create_transfer_msg(wallet.private_key, 0, wallet.wallet_id, [msg])
        ext = wallet.create_external_msg(dest=wallet.address, state_init=wallet.state_init, body=signed)
    cell = ext.serialize()
    await wallet.provider.raw_send_message(cell.to_boc())
    return cell.hash


async def connect(config: dict, trust_level: int = 2, timeout: int = 10, attempts: int = 5) -> LiteBalancer:
    """A started LiteBalancer. pytoniq gives each peer 3 s to connect; on a loaded machine that
    can pass, so start-up is retried a few times before giving up."""
    for attempt in range(attempts):
        lb = LiteBalancer.from_config(config, trust_level=trust_level, timeout=timeout)
        await lb.start_up()
        if lb.alive_peers_num:
            return lb
        await lb.close_all()
        await asyncio.sleep(0.5 * (attempt + 1))
    raise ChainError("no liteserver of the config answered")


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):
    """Poll ``await predicate()`` until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        v = await predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise ChainError(f"condition not met within {timeout:.0f}s")
        await asyncio.sleep(interval)
