"""Bindings of creditbridge's TEP-74 jetton contracts (contracts/ton/jetton_minter.fc,
jetton_wallet.fc): committed code, storage, addresses and message bodies, with pytoniq-core.

The message layouts are TEP-74's (transfer, internal_transfer, transfer_notification, excesses,
burn, burn_notification) and TEP-89's (provide_wallet_address, take_wallet_address); ``mint``
is this minter's admin op. A jetton wallet's address is the hash of its state init (code = the
wallet code, data = balance 0, owner, master, code), so ``wallet_address(owner, master)`` is
what the master's ``get_wallet_address`` returns.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pytoniq_core import Address, Builder, Cell
from pytoniq_core.tlb.account import StateInit

from bridge.errors import ConfigError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD = REPO_ROOT / "contracts" / "ton" / "build"

OP_TRANSFER = 0x0F8A7EA5
OP_TRANSFER_NOTIFICATION = 0x7362D09C
OP_INTERNAL_TRANSFER = 0x178D4519
OP_EXCESSES = 0xD53276DB
OP_BURN = 0x595F07BC
OP_BURN_NOTIFICATION = 0x7BDD97DE
OP_PROVIDE_WALLET_ADDRESS = 0x2C76B973
OP_TAKE_WALLET_ADDRESS = 0xD1735400
OP_MINT = 0x642B7D07

# TON a wallet app attaches to a jetton transfer: the wallets' gas and the forward amount
TRANSFER_VALUE = 100_000_000  # 0.1 TON (the excess comes back to response_destination)
# forward_ton_amount of a payment: the lock needs a transfer_notification, which the payer's
# wallet sends only with forward_ton_amount > 0; it also pays the lock's gas for the log
PAYMENT_FORWARD_TON = 20_000_000  # 0.02 TON


def _code(name: str) -> Cell:
    try:
        return Cell.one_from_boc((BUILD / f"{name}.boc").read_bytes())
    except OSError:
        raise ConfigError(f"{BUILD / (name + '.boc')} is missing: run contracts/ton/build.py") from None


@functools.cache
def minter_code() -> Cell:
    return _code("jetton_minter")


@functools.cache
def wallet_code() -> Cell:
    return _code("jetton_wallet")


def content_cell(uri: str) -> Cell:
    """TEP-64 off-chain content: 0x01 + the URI."""
    return Builder().store_uint(1, 8).store_snake_string(uri).end_cell()


def minter_data(admin: Address, content: Cell, total_supply: int = 0) -> Cell:
    return (Builder().store_coins(total_supply).store_address(admin).store_ref(content)
            .store_ref(wallet_code()).end_cell())


def minter_state_init(admin: Address, content: Cell) -> StateInit:
    return StateInit(code=minter_code(), data=minter_data(admin, content))


def minter_address(admin: Address, content: Cell) -> Address:
    a = Address((0, minter_state_init(admin, content).serialize().hash))
    a.is_bounceable = True
    return a


def wallet_state_init(owner: Address, master: Address) -> StateInit:
    data = (Builder().store_coins(0).store_address(owner).store_address(master)
            .store_ref(wallet_code()).end_cell())
    return StateInit(code=wallet_code(), data=data)


def wallet_address(owner: Address, master: Address) -> Address:
    """The jetton wallet of ``owner`` for the jetton ``master`` (what get_wallet_address says)."""
    a = Address((0, wallet_state_init(owner, master).serialize().hash))
    a.is_bounceable = True
    return a


def mint_body(to: Address, amount: int, *, ton_amount: int = 50_000_000, query_id: int = 0) -> Cell:
    """Admin-only: mint ``amount`` to ``to``'s wallet (deploying it), attaching ``ton_amount``."""
    if amount <= 0:
        raise InputError("mint amount must be positive")
    return (Builder().store_uint(OP_MINT, 32).store_uint(query_id, 64).store_address(to).store_coins(amount)
            .store_coins(ton_amount).end_cell())


def transfer_body(amount: int, destination: Address, *, response: Address | None = None,
                  forward_ton_amount: int = 0, forward_payload: Cell | None = None, query_id: int = 0) -> Cell:
    """TEP-74 ``transfer`` (sent by the owner to its own jetton wallet). ``forward_payload`` goes
    in a reference (``Either`` right), as wallet apps write a comment."""
    if amount < 0:
        raise InputError("a jetton amount is not negative")
    b = (Builder().store_uint(OP_TRANSFER, 32).store_uint(query_id, 64).store_coins(amount)
         .store_address(destination).store_address(response).store_bit(0).store_coins(forward_ton_amount))
    if forward_payload is None:
        b.store_bit(0)
    else:
        b.store_bit(1).store_ref(forward_payload)
    return b.end_cell()


def burn_body(amount: int, *, response: Address | None = None, query_id: int = 0) -> Cell:
    return (Builder().store_uint(OP_BURN, 32).store_uint(query_id, 64).store_coins(amount)
            .store_address(response).store_bit(0).end_cell())


def provide_wallet_address_body(owner: Address, *, include_address: bool = False, query_id: int = 0) -> Cell:
    return (Builder().store_uint(OP_PROVIDE_WALLET_ADDRESS, 32).store_uint(query_id, 64).store_address(owner)
            .store_bit(int(include_address)).end_cell())


def transfer_notification_body(amount: int, sender: Address, forward_payload: Cell | None = None,
                               query_id: int = 0) -> Cell:
    """A ``transfer_notification`` body, as a jetton wallet sends it to its owner (tests use it
    to forge one from a contract that is not the lock's wallet)."""
    b = (Builder().store_uint(OP_TRANSFER_NOTIFICATION, 32).store_uint(query_id, 64).store_coins(amount)
         .store_address(sender))
    if forward_payload is None:
        b.store_bit(0)
    else:
        b.store_bit(1).store_ref(forward_payload)
    return b.end_cell()


def parse_wallet_data(stack: list) -> tuple[int, Address, Address]:
    """``get_wallet_data`` results: (balance, owner, master)."""
    try:
        balance, owner, master = int(stack[0]), stack[1], stack[2]
        if isinstance(owner, Cell):
            owner = owner.begin_parse().load_address()
        elif not isinstance(owner, Address):
            owner = owner.load_address()
        if isinstance(master, Cell):
            master = master.begin_parse().load_address()
        elif not isinstance(master, Address):
            master = master.load_address()
    except Exception as e:  # pytoniq-core raises assorted errors on unexpected stacks
        raise InputError(f"not a jetton wallet's get_wallet_data ({e.__class__.__name__})") from None
    return balance, owner, master


# ------------------------------------------------------------------ wallet side (dev tools, tests, chaos)
async def jetton_wallet_of(provider, master: Address, owner: Address) -> Address:
    """``owner``'s jetton wallet, as the master's ``get_wallet_address`` says (any TEP-74 master)."""
    from bridge.errors import ChainError

    try:
        (res,) = await provider.run_get_method(master, "get_wallet_address",
                                               [Builder().store_address(owner).end_cell().begin_parse()])
        addr = res.load_address() if hasattr(res, "load_address") else res.begin_parse().load_address()
    except Exception as e:  # pytoniq raises assorted errors (not deployed, exit code, decoding)
        raise ChainError(f"get_wallet_address of {master.to_str()} failed ({e.__class__.__name__}: {e})") from None
    addr.is_bounceable = True
    return addr


async def jetton_balance(provider, master: Address | str, owner: Address | str) -> int:
    """The jetton balance (base units) of ``owner`` for the jetton ``master``: its wallet's
    ``get_wallet_data`` (0 while the wallet is not deployed). ``provider``: a LiteBalancer."""
    master = Address(master) if isinstance(master, str) else master
    owner = Address(owner) if isinstance(owner, str) else owner
    wallet = await jetton_wallet_of(provider, master, owner)
    state = await provider.get_account_state(wallet)
    if getattr(state, "state", None) is None or getattr(state.state, "type_", None) != "active":
        return 0
    balance, _, _ = parse_wallet_data(await provider.run_get_method(wallet, "get_wallet_data", []))
    return balance


async def pay_jettons(wallet, master: Address | str, to: Address | str, amount: int, *, code: str | None = None,
                      reference: bytes | None = None, forward_ton_amount: int = PAYMENT_FORWARD_TON,
                      ton_amount: int = TRANSFER_VALUE) -> bytes:
    """Pay ``amount`` jetton base units from ``wallet`` (a pytoniq WalletV4R2 holding them) to
    ``to`` (the lock) as a wallet app does: a TEP-74 ``transfer`` to the payer's own jetton
    wallet, ``forward_ton_amount`` so the lock is notified, the payment ``code`` as the forward
    payload's text comment (or the binary deposit body of ``reference``; neither: no payload).
    Excess TON comes back to the wallet. Returns the external message's hash."""
    from relayers.ton import lock as L
    from relayers.ton import wallet as tw

    master = Address(master) if isinstance(master, str) else master
    to = Address(to) if isinstance(to, str) else to
    if code is not None and reference is not None:
        raise InputError("give a code or a reference, not both")
    payload = L.comment_body(code) if code is not None else L.deposit_body(reference) if reference is not None else None
    body = transfer_body(amount, to, response=wallet.address, forward_ton_amount=forward_ton_amount,
                         forward_payload=payload)
    return await tw.transfer(wallet, await jetton_wallet_of(wallet.provider, master, wallet.address), ton_amount, body)


async def deploy_minter(admin_wallet, uri: str, *, value: int = 200_000_000) -> Address:
    """Deploy this repo's TEP-74 minter with ``admin_wallet`` as admin (the dev USDT)."""
    from relayers.ton import wallet as tw

    content = content_cell(uri)
    master = minter_address(admin_wallet.address, content)
    await tw.transfer(admin_wallet, master, value, None, state_init=minter_state_init(admin_wallet.address, content))
    return master


async def mint(admin_wallet, master: Address, to: Address, amount: int, *, value: int = 100_000_000) -> bytes:
    """Admin: mint ``amount`` base units to ``to`` (its wallet is deployed by the mint)."""
    from relayers.ton import wallet as tw

    return await tw.transfer(admin_wallet, master, value, mint_body(to, amount, ton_amount=value // 2))
