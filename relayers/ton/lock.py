"""Bindings of the FunC lock contract (contracts/ton/lock.fc): its committed code, storage,
message bodies, release signing and the deposit log, with pytoniq-core cells.

Constants mirror lock.fc; tests/unit/ton checks every exit code on the real TVM.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pytoniq_core import Address, Builder, Cell, HashMap
from pytoniq_core.crypto.signature import sign_message
from pytoniq_core.tlb.account import StateInit

from bridge.errors import ConfigError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_BOC = REPO_ROOT / "contracts" / "ton" / "build" / "lock.boc"

OP_DEPOSIT = 0x43424431  # "CBD1"
OP_RELEASE = 0x43425231  # "CBR1"
OP_TOP_UP = 0x43424354  # "CBCT": funds the contract without a deposit log
LOG_DEPOSIT = 0x43424C31  # "CBL1": the log's topic (addr_extern of 32 bits) and its body tag

ERR_SHORT_BODY = 401
ERR_UNKNOWN_OP = 402
ERR_TOO_SMALL = 403
ERR_NOT_BASECHAIN = 404
ERR_RELEASE_USED = 410
ERR_WRONG_CONTRACT = 412
ERR_UNKNOWN_SIGNER = 413
ERR_BAD_SIGNATURE = 414
ERR_NOT_ENOUGH_SIGNATURES = 415
ERR_INSUFFICIENT_BALANCE = 416
ERR_NOT_RELEASE = 417
EXIT_CODES = {
    ERR_SHORT_BODY: "short body", ERR_UNKNOWN_OP: "unknown op", ERR_TOO_SMALL: "amount below minimum",
    ERR_NOT_BASECHAIN: "sender not on the basechain", ERR_RELEASE_USED: "release id used already",
    ERR_WRONG_CONTRACT: "release signed for another contract", ERR_UNKNOWN_SIGNER: "unknown signer",
    ERR_BAD_SIGNATURE: "invalid signature", ERR_NOT_ENOUGH_SIGNATURES: "not enough signatures",
    ERR_INSUFFICIENT_BALANCE: "balance too small", ERR_NOT_RELEASE: "not a release payload",
}
MIN_RESERVE = 50_000_000  # nanotons kept after a release (lock.fc min_reserve)


@functools.cache
def lock_code() -> Cell:
    try:
        return Cell.one_from_boc(CODE_BOC.read_bytes())
    except OSError:
        raise ConfigError(f"{CODE_BOC} is missing: run contracts/ton/build.py (make setup)") from None


def _keys_dict(public_keys: Sequence[bytes]) -> Cell | None:
    hm = HashMap(8, value_serializer=lambda src, dest: dest.store_bytes(src))
    for i, k in enumerate(public_keys):
        if len(k) != 32:
            raise InputError("committee keys must be 32-byte Ed25519 public keys")
        hm.set_int_key(i, k)
    return hm.serialize()


def initial_data(public_keys: Sequence[bytes], threshold: int, min_amount: int) -> Cell:
    if not 1 <= threshold <= len(public_keys) <= 255:
        raise InputError("need 1 <= threshold <= number of committee keys <= 255")
    if min_amount <= 0:
        raise InputError("min_amount must be positive")
    return (Builder().store_uint(0, 64).store_uint(0, 32).store_coins(min_amount).store_uint(threshold, 8)
            .store_maybe_ref(_keys_dict(public_keys)).store_maybe_ref(None).end_cell())


def state_init(public_keys: Sequence[bytes], threshold: int, min_amount: int) -> StateInit:
    return StateInit(code=lock_code(), data=initial_data(public_keys, threshold, min_amount))


def lock_address(public_keys: Sequence[bytes], threshold: int, min_amount: int, workchain: int = 0) -> Address:
    """The lock's address (bounceable form), a function of code and initial storage."""
    a = Address((workchain, state_init(public_keys, threshold, min_amount).serialize().hash))
    a.is_bounceable = True
    return a


def deposit_body(reference: bytes, query_id: int = 0) -> Cell:
    if len(reference) != 32:
        raise InputError("reference must be 32 bytes")
    return Builder().store_uint(OP_DEPOSIT, 32).store_uint(query_id, 64).store_bytes(reference).end_cell()


def top_up_body(query_id: int = 0) -> Cell:
    return Builder().store_uint(OP_TOP_UP, 32).store_uint(query_id, 64).end_cell()


# ---------------------------------------------------------------------------------- the log
@dataclass(frozen=True)
class DepositLog:
    seq: int
    sender: Address
    amount: int
    reference: bytes
    query_id: int


def is_deposit_log_dest(dest) -> bool:
    """True if an external-out message's ``dest`` is the deposit topic (addr_extern "CBL1")."""
    from pytoniq_core.boc.address import ExternalAddress

    return isinstance(dest, ExternalAddress) and dest.len == 32 and dest.external_address == LOG_DEPOSIT


def parse_deposit_log(body: Cell) -> DepositLog:
    """Parse a log body (the ``^[...]`` of lock.fc); raises ``InputError`` if malformed."""
    try:
        s = body.begin_parse()
        if s.remaining_refs == 1 and s.remaining_bits == 0:
            s = s.load_ref().begin_parse()
        if s.load_uint(32) != LOG_DEPOSIT:
            raise InputError("not a deposit log")
        seq = s.load_uint(64)
        sender = s.load_address()
        amount = s.load_coins()
        reference = s.load_bytes(32)
        query_id = s.load_uint(64)
    except InputError:
        raise
    except Exception as e:  # pytoniq-core raises assorted errors on short slices
        raise InputError(f"malformed deposit log ({e.__class__.__name__})") from None
    if sender is None:
        raise InputError("deposit log without a sender")
    return DepositLog(seq, sender, amount, reference, query_id)


# ---------------------------------------------------------------------------------- releases
def release_payload(*, lock: Address, destination: Address, amount: int, release_id: bytes) -> Cell:
    """The signed part of a release. No seqno and no expiry: the lock pays each release id
    once, so committee members sign a refund when they decide it, in any order."""
    if len(release_id) != 32:
        raise InputError("release id must be 32 bytes")
    if amount <= 0:
        raise InputError("a release amount must be positive")
    return (Builder().store_uint(OP_RELEASE, 32).store_address(lock).store_address(destination)
            .store_coins(amount).store_bytes(release_id).end_cell())


def basechain(account_id: bytes) -> Address:
    """The basechain (workchain 0) address of a 32-byte account id: where the lock's deposits
    come from (lock.fc refuses others) and so where refunds go."""
    if len(account_id) != 32:
        raise InputError("a TON account id is 32 bytes")
    return Address((0, account_id))


def sign_release(payload: Cell, private_key: bytes) -> bytes:
    """Ed25519 signature over the payload cell's hash (what check_signature verifies).
    ``private_key`` is the 32-byte seed or 64-byte nacl secret key."""
    from nacl.signing import SigningKey

    seed = private_key[:32]
    return sign_message(payload.hash, SigningKey(seed).encode() + bytes(SigningKey(seed).verify_key))


def release_body(payload: Cell, signatures: dict[int, bytes]) -> Cell:
    """External message body: ``signatures:(HashmapE 8 bits512) payload:^Release``."""
    hm = HashMap(8, value_serializer=lambda src, dest: dest.store_bytes(src))
    for i, sig in signatures.items():
        if len(sig) != 64:
            raise InputError("signatures are 64 bytes")
        hm.set_int_key(i, sig)
    return Builder().store_maybe_ref(hm.serialize()).store_ref(payload).end_cell()


def release_message(lock: Address, body: Cell) -> Cell:
    """The external-in message carrying a release (no state init)."""
    from pytoniq_core.tlb.transaction import ExternalMsgInfo, MessageAny

    return MessageAny(info=ExternalMsgInfo(None, lock, 0), init=None, body=body).serialize()


def parse_committee(threshold: int, keys: Cell | None) -> tuple[int, list[bytes]]:
    """Decode ``get_committee`` results."""
    out: dict[int, bytes] = {}
    if keys is not None:
        parsed = HashMap.parse(keys.begin_parse(), 8) or {}
        out = {k: v.load_bytes(32) for k, v in parsed.items()}
    return threshold, [out[i] for i in sorted(out)]


def ed25519_public(seed: bytes) -> bytes:
    from nacl.signing import SigningKey

    return bytes(SigningKey(seed[:32]).verify_key)


def bounceable(addr: Address) -> str:
    a = Address((addr.wc, addr.hash_part))
    a.is_bounceable = True
    return a.to_str(is_user_friendly=True, is_bounceable=True, is_url_safe=True)

