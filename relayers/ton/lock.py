"""Bindings of the FunC lock contract (contracts/ton/lock.fc): its committed code, storage,
message bodies, release signing and the deposit log, with pytoniq-core cells.

Constants mirror lock.fc; tests/unit/ton checks every exit code on the real TVM.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pytoniq_core import Address, Builder, Cell, HashMap
from pytoniq_core.crypto.signature import sign_message
from pytoniq_core.tlb.account import StateInit

from bridge.errors import ConfigError, InputError

REPO_ROOT = Path(__file__).resolve().parents[2]
CODE_BOC = REPO_ROOT / "contracts" / "ton" / "build" / "lock.boc"

OP_DEPOSIT = 0x43424431  # "CBD1"
OP_COMMENT = 0  # a wallet's text comment (op 0 + text): a plain-transfer deposit (issue 14)
OP_RELEASE = 0x43425232  # "CBR2": release#43425232 global_id:int32 lock destination amount release_id
OP_TOP_UP = 0x43424354  # "CBCT": funds the contract without a deposit log
OP_ROTATE = 0x43425243  # "CBRC": rotate#43425243 global_id:int32 lock new_index:uint32 threshold:uint8 keys
LOG_DEPOSIT = 0x43424C31  # "CBL1": the log's topic (addr_extern of 32 bits) and its body tag
OP_RELEASE_JETTON = 0x43425233  # "CBR3": release_jetton#43425233 ... release_id master:^MsgAddressInt
OP_JETTON_SETUP = 0x43424A53  # "CBJS": jetton_setup#43424A53 query_id:uint64 master:MsgAddressInt
LOG_JETTON_DEPOSIT = 0x43424A31  # "CBJ1": a jetton deposit's log topic and body tag

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
ERR_WRONG_NETWORK = 418
ERR_BELOW_MIN_RELEASE = 419
ERR_BAD_ROTATION_INDEX = 420
ERR_INVALID_COMMITTEE = 421
ERR_UNKNOWN_JETTON_WALLET = 405
ERR_UNKNOWN_MASTER = 430
ERR_JETTON_SET_UP = 431
ERR_BAD_JETTON_WALLET = 432
ERR_JETTON_NOT_SET_UP = 434
EXIT_CODES = {
    ERR_SHORT_BODY: "short body", ERR_UNKNOWN_OP: "unknown op", ERR_TOO_SMALL: "amount below minimum",
    ERR_NOT_BASECHAIN: "sender not on the basechain", ERR_RELEASE_USED: "release id used already",
    ERR_WRONG_CONTRACT: "release signed for another contract", ERR_UNKNOWN_SIGNER: "unknown signer",
    ERR_BAD_SIGNATURE: "invalid signature", ERR_NOT_ENOUGH_SIGNATURES: "not enough signatures",
    ERR_INSUFFICIENT_BALANCE: "balance too small", ERR_NOT_RELEASE: "not a release or rotation payload",
    ERR_WRONG_NETWORK: "release signed for another network", ERR_BELOW_MIN_RELEASE: "release below the minimum",
    ERR_BAD_ROTATION_INDEX: "rotation index is not the committee index + 1 (replayed or out of order)",
    ERR_INVALID_COMMITTEE: "invalid new committee (no keys, over 255, or not a majority threshold)",
    ERR_UNKNOWN_JETTON_WALLET: "transfer_notification not from the lock's wallet of a configured jetton",
    ERR_UNKNOWN_MASTER: "not a configured jetton master", ERR_JETTON_SET_UP: "the jetton's wallet is set up already",
    ERR_BAD_JETTON_WALLET: "take_wallet_address without a basechain wallet",
    ERR_JETTON_NOT_SET_UP: "the lock's wallet of this jetton is not set up",
}
# TON the lock attaches to a jetton release's transfer, from its reserve (lock.fc)
JETTON_RELEASE_VALUE = 50_000_000
# TON to send with jetton_setup (lock.fc forwards jetton_setup_value of it to the master)
JETTON_SETUP_VALUE = 100_000_000
# configured jetton masters per lock, at most (a notification looks its wallet up among them)
MAX_JETTONS = 16
MIN_RESERVE = 50_000_000  # nanotons kept after a release (lock.fc min_reserve)

# TON global ids (ConfigParam 19): the lock's initial data and every release payload carry one
MAINNET_GLOBAL_ID = -239
TESTNET_GLOBAL_ID = -3
REAL_GLOBAL_IDS = {MAINNET_GLOBAL_ID: "mainnet", TESTNET_GLOBAL_ID: "testnet"}

# A release pays its own fees out of its amount (lock.fc: reserve, mode 128): the gas of the
# release transaction, the import of the external message and the payout's forwarding fee.
# Measured on the real TVM with @ton/sandbox's mainnet config (tests/unit/ton): 0.006-0.008 TON
# with 3-4 signatures. RELEASE_FEE_BOUND is a generous upper bound of them (and the lowest
# min_release a lock may be built with); DEFAULT_MIN_RELEASE is the smallest refund signed and
# paid (the payer gets over 80% of it). Gas before acceptance (10k credit) limits a release to
# 6 signatures: committees up to 11 members (threshold 6) can release.
RELEASE_FEE_BOUND = 20_000_000  # 0.02 TON
DEFAULT_MIN_RELEASE = 50_000_000  # 0.05 TON


@functools.cache
def lock_code() -> Cell:
    try:
        return Cell.one_from_boc(CODE_BOC.read_bytes())
    except OSError:
        raise ConfigError(f"{CODE_BOC} is missing: run contracts/ton/build.py (make setup)") from None


def _keys_dict(public_keys: Sequence[bytes]) -> Cell | None:
    """The committee as a set: ``HashmapE 256 bits0`` keyed by the Ed25519 public key."""
    hm = HashMap(256, value_serializer=lambda src, dest: dest)
    for k in public_keys:
        if len(k) != 32:
            raise InputError("committee keys must be 32-byte Ed25519 public keys")
        hm.set_int_key(int.from_bytes(k, "big"), b"")
    return hm.serialize()


def check_global_id(global_id: int) -> int:
    if not isinstance(global_id, int) or not -(2**31) <= global_id < 2**31:
        raise InputError("a TON global id is a signed 32-bit integer")
    return global_id


def check_committee(public_keys: Sequence[bytes], threshold: int) -> None:
    """A lock committee: distinct 32-byte keys, ``1 <= threshold <= n <= 255`` and
    ``2 * threshold > n`` (it signs refunds, so two disjoint groups must never both reach it)."""
    n = len(public_keys)
    if not 1 <= threshold <= n <= 255:
        raise InputError("need 1 <= threshold <= number of committee keys <= 255")
    if 2 * threshold <= n:
        raise InputError(f"threshold {threshold} of {n} is not a majority: need 2 * threshold > number of keys")
    if len({bytes(k) for k in public_keys}) != n:
        raise InputError("committee keys must be distinct (a duplicate would let one member sign twice)")


def _jettons_dict(masters: Sequence[Address]) -> Cell | None:
    """``jettons:(HashmapE 256 JettonEntry)`` at deployment: each configured master's basechain
    account id -> wallet 0 (set up later by TEP-89), balance 0."""
    if len(masters) > MAX_JETTONS:
        raise InputError(f"at most {MAX_JETTONS} jetton masters per lock")
    hm = HashMap(256, value_serializer=lambda src, dest: dest.store_uint(0, 256).store_coins(0))
    for m in masters:
        if m.wc != 0:
            raise InputError("a jetton master must be in the basechain")
        hm.set_int_key(int.from_bytes(m.hash_part, "big"), b"")
    if len({m.hash_part for m in masters}) != len(masters):
        raise InputError("jetton masters must be distinct")
    return hm.serialize()


def initial_data(public_keys: Sequence[bytes], threshold: int, min_amount: int, *, global_id: int,
                 min_release: int = DEFAULT_MIN_RELEASE, jetton_masters: Sequence[Address] = ()) -> Cell:
    """The lock's storage at deployment (committee index 0; a rotation signed by the current
    set replaces the committee): distinct keys, ``1 <= threshold <= n <= 255`` and
    ``2 * threshold > n`` (it signs refunds, so two disjoint groups must never both reach the threshold). ``global_id`` is the network's
    (mainnet -239, testnet -3): it changes the lock's address per network and every release
    must name it. ``min_release`` is the smallest release the lock pays (it pays its own fees)."""
    check_committee(public_keys, threshold)
    if min_amount <= 0:
        raise InputError("min_amount must be positive")
    if min_release < RELEASE_FEE_BOUND:
        raise InputError(f"min_release must cover a release's fees (at least {RELEASE_FEE_BOUND} nanotons)")
    return (Builder().store_uint(0, 64).store_uint(0, 32).store_coins(min_amount).store_uint(threshold, 8)
            .store_int(check_global_id(global_id), 32).store_coins(min_release).store_uint(0, 32)
            .store_maybe_ref(_keys_dict(public_keys)).store_maybe_ref(None)
            .store_maybe_ref(_jettons_dict(list(jetton_masters))).end_cell())


@dataclass(frozen=True)
class LockData:
    """The parts of a lock's storage its watchers and releasers check against their config."""

    min_amount: int
    threshold: int
    global_id: int
    min_release: int
    keys: list[bytes]
    committee_index: int = 0
    jettons: dict[bytes, tuple[bytes | None, int]] = field(default_factory=dict)  # master id -> (wallet id, held)


def parse_lock_data(data: Cell) -> LockData:
    """Decode a lock's storage (``code``/``data`` of its account state); ``InputError`` if it is
    not this contract's layout."""
    try:
        s = data.begin_parse()
        s.skip_bits(64 + 32)
        min_amount = s.load_coins()
        threshold = s.load_uint(8)
        global_id = s.load_int(32)
        min_release = s.load_coins()
        committee_index = s.load_uint(32)
        keys = s.load_maybe_ref()
        s.load_maybe_ref()
        jettons = parse_jettons(s.load_maybe_ref())
        if s.remaining_bits or s.remaining_refs:
            raise InputError("trailing data")
        _, members = parse_committee(threshold, keys)
    except InputError as e:
        raise InputError(f"not a lock's storage ({e.detail})") from None
    except Exception as e:  # pytoniq-core raises assorted errors on short slices
        raise InputError(f"not a lock's storage ({e.__class__.__name__})") from None
    return LockData(min_amount, threshold, global_id, min_release, members, committee_index, jettons)


def parse_jettons(cell: Cell | None) -> dict[bytes, tuple[bytes | None, int]]:
    """The lock's ``jettons`` dict (``get_jettons``): master account id -> (its wallet's account
    id, or None before set-up; the jettons the lock holds for logged deposits minus releases)."""
    if cell is None:
        return {}

    def value(s):
        return s.load_uint(256), s.load_coins()

    parsed = HashMap.parse(cell.begin_parse(), 256, value_deserializer=value) or {}
    return {k.to_bytes(32, "big"): ((w.to_bytes(32, "big") if w else None), held) for k, (w, held) in parsed.items()}


def state_init(public_keys: Sequence[bytes], threshold: int, min_amount: int, *, global_id: int,
               min_release: int = DEFAULT_MIN_RELEASE, jetton_masters: Sequence[Address] = ()) -> StateInit:
    return StateInit(code=lock_code(), data=initial_data(public_keys, threshold, min_amount, global_id=global_id,
                                                         min_release=min_release, jetton_masters=jetton_masters))


def lock_address(public_keys: Sequence[bytes], threshold: int, min_amount: int, *, global_id: int,
                 min_release: int = DEFAULT_MIN_RELEASE, workchain: int = 0,
                 jetton_masters: Sequence[Address] = ()) -> Address:
    """The lock's address (bounceable form), a function of code and initial storage: the same
    committee gets a different address on each network (``global_id``), and the configured
    jetton masters are part of it too."""
    si = state_init(public_keys, threshold, min_amount, global_id=global_id, min_release=min_release,
                    jetton_masters=jetton_masters)
    a = Address((workchain, si.serialize().hash))
    a.is_bounceable = True
    return a


def deposit_body(reference: bytes, query_id: int = 0) -> Cell:
    if len(reference) != 32:
        raise InputError("reference must be 32 bytes")
    return Builder().store_uint(OP_DEPOSIT, 32).store_uint(query_id, 64).store_bytes(reference).end_cell()


def comment_body(text: str) -> Cell:
    """The standard wallet text comment: op 0 and the UTF-8 text, continued in references
    ("snake") past the first cell's 123 bytes, as wallets write it. Sent to the lock it is a
    deposit whose reference is ``comment_reference`` of it (for a payment code, the payment's)."""
    if not isinstance(text, str):
        raise InputError("a comment is text")
    return Builder().store_uint(OP_COMMENT, 32).store_snake_string(text).end_cell()


def comment_reference(body: Cell) -> bytes:
    """The reference lock.fc logs for a deposit with this body when it is empty or a text
    comment (op 0): SHA-256 of the comment's bytes if they fit one cell in whole bytes (so
    ``comment_reference(comment_body(code)) == reference_for_code(code)``), otherwise the
    representation hash of the comment's cell (a reference no payment has). ``InputError``
    for a body that is not a comment (lock.fc treats those otherwise)."""
    import hashlib

    s = body.begin_parse()
    if s.remaining_bits:
        if s.remaining_bits < 32 or s.load_uint(32) != OP_COMMENT:
            raise InputError("not a text comment (op 0) or an empty body")
    if s.remaining_refs == 0 and s.remaining_bits % 8 == 0:
        return hashlib.sha256(s.load_bytes(s.remaining_bits // 8)).digest()
    return Builder().store_slice(s).end_cell().hash


def top_up_body(query_id: int = 0) -> Cell:
    return Builder().store_uint(OP_TOP_UP, 32).store_uint(query_id, 64).end_cell()


def jetton_setup_body(master: Address, query_id: int = 0) -> Cell:
    """``jetton_setup#43424A53``: the lock asks ``master`` for its wallet (TEP-89) and stores the
    ``take_wallet_address`` answer if it comes from that master. Anyone may send it, with
    ``JETTON_SETUP_VALUE``; once per master."""
    return Builder().store_uint(OP_JETTON_SETUP, 32).store_uint(query_id, 64).store_address(master).end_cell()


def payload_reference(payload: Cell | None) -> bytes:
    """The reference lock.fc logs for a jetton deposit with this ``forward_payload``: a text
    comment (op 0) or nothing -> ``comment_reference``; the binary deposit body (op CBD1) -> its
    reference; anything else -> the payload cell's representation hash (no payment's)."""
    if payload is None:
        return comment_reference(Cell.empty())
    s = payload.begin_parse()
    if s.remaining_bits == 0 or (s.remaining_bits >= 32 and s.preload_uint(32) == OP_COMMENT):
        return comment_reference(payload)
    if s.remaining_bits >= 32 + 64 + 256 and s.preload_uint(32) == OP_DEPOSIT:
        s.skip_bits(32 + 64)
        return s.load_bytes(32)
    return payload.hash


# ---------------------------------------------------------------------------------- the log
@dataclass(frozen=True)
class DepositLog:
    seq: int
    sender: Address
    amount: int
    reference: bytes
    query_id: int


@dataclass(frozen=True)
class JettonDepositLog:
    """A jetton deposit's log: ``sender`` is the jettons' original sender (the payer, refunds
    go back to it), ``amount`` what the lock's wallet credited, ``master`` the jetton's master
    (basechain account id)."""

    seq: int
    sender: Address
    amount: int
    reference: bytes
    query_id: int
    master: bytes


def is_jetton_log_dest(dest) -> bool:
    from pytoniq_core.boc.address import ExternalAddress

    return isinstance(dest, ExternalAddress) and dest.len == 32 and dest.external_address == LOG_JETTON_DEPOSIT


def parse_jetton_deposit_log(body: Cell) -> JettonDepositLog:
    """Parse a jetton deposit log (``CBJ1``: a deposit log's fields and the master's account id)."""
    seq, sender, amount, reference, query_id, (master,) = _parse_log(body, LOG_JETTON_DEPOSIT, "jetton deposit log",
                                                                     jetton=True)
    return JettonDepositLog(seq, sender, amount, reference, query_id, master)


def is_deposit_log_dest(dest) -> bool:
    """True if an external-out message's ``dest`` is the deposit topic (addr_extern "CBL1")."""
    from pytoniq_core.boc.address import ExternalAddress

    return isinstance(dest, ExternalAddress) and dest.len == 32 and dest.external_address == LOG_DEPOSIT


def parse_deposit_log(body: Cell) -> DepositLog:
    """Parse a log body (the ``^[...]`` of lock.fc); raises ``InputError`` if malformed."""
    seq, sender, amount, reference, query_id, _ = _parse_log(body, LOG_DEPOSIT, "deposit log")
    return DepositLog(seq, sender, amount, reference, query_id)


def _parse_log(body: Cell, tag: int, what: str, jetton: bool = False) -> tuple:
    """The common fields of a deposit log (seq, sender, amount, reference, query_id) and, for a
    jetton log, the master's account id; ``InputError`` if malformed."""
    try:
        s = body.begin_parse()
        if s.remaining_refs == 1 and s.remaining_bits == 0:
            s = s.load_ref().begin_parse()
        if s.load_uint(32) != tag:
            raise InputError(f"not a {what}")
        seq = s.load_uint(64)
        sender = s.load_address()
        amount = s.load_coins()
        reference = s.load_bytes(32)
        query_id = s.load_uint(64)
        extra = (s.load_bytes(32),) if jetton else ()
    except InputError:
        raise
    except Exception as e:  # pytoniq-core raises assorted errors on short slices
        raise InputError(f"malformed {what} ({e.__class__.__name__})") from None
    if sender is None:
        raise InputError(f"{what} without a sender")
    return seq, sender, amount, reference, query_id, extra


# ---------------------------------------------------------------------------------- releases
def release_payload(*, global_id: int, lock: Address, destination: Address, amount: int, release_id: bytes) -> Cell:
    """The signed part of a release. No seqno and no expiry: the lock pays each release id
    once, so committee members sign a refund when they decide it, in any order. ``global_id``
    (the network's) and ``lock`` bind it to one contract on one network."""
    if len(release_id) != 32:
        raise InputError("release id must be 32 bytes")
    if amount <= 0:
        raise InputError("a release amount must be positive")
    return (Builder().store_uint(OP_RELEASE, 32).store_int(check_global_id(global_id), 32).store_address(lock)
            .store_address(destination).store_coins(amount).store_bytes(release_id).end_cell())


def jetton_release_payload(*, global_id: int, lock: Address, destination: Address, amount: int,
                           release_id: bytes, master: Address) -> Cell:
    """The signed part of a jetton release (lock.fc ``release_jetton#43425233``): like a TON
    release, plus the jetton's master in a reference; the same used-id set."""
    if len(release_id) != 32:
        raise InputError("release id must be 32 bytes")
    if amount <= 0:
        raise InputError("a release amount must be positive")
    return (Builder().store_uint(OP_RELEASE_JETTON, 32).store_int(check_global_id(global_id), 32).store_address(lock)
            .store_address(destination).store_coins(amount).store_bytes(release_id)
            .store_ref(Builder().store_address(master).end_cell()).end_cell())


def rotation_payload(*, global_id: int, lock: Address, new_index: int, public_keys: Sequence[bytes],
                     threshold: int) -> Cell:
    """The signed part of a committee rotation (lock.fc ``rotate#43425243``): the current set
    signs it, the lock applies it once (``new_index`` must be its committee index + 1)."""
    check_committee(public_keys, threshold)
    if not isinstance(new_index, int) or not 1 <= new_index < 2**32:
        raise InputError("a rotation's new index is 1 .. 2**32 - 1")
    return (Builder().store_uint(OP_ROTATE, 32).store_int(check_global_id(global_id), 32).store_address(lock)
            .store_uint(new_index, 32).store_uint(threshold, 8).store_maybe_ref(_keys_dict(public_keys)).end_cell())


def sign_payload(payload: Cell, private_key: bytes) -> bytes:
    """Ed25519 signature over a payload cell's hash (releases and rotations alike)."""
    return sign_release(payload, private_key)


def rotation_body(payload: Cell, signatures: dict[bytes, bytes], query_id: int = 0) -> Cell:
    """Internal message body of a rotation: ``rotate#43425243 query_id:uint64
    signatures:(HashmapE 256 bits512) payload:^Rotate``. Sent by anyone (it pays the gas; the
    value stays on the lock); lock.fc checks the current committee's signatures."""
    sigs = release_body(payload, signatures).begin_parse().load_maybe_ref()
    return (Builder().store_uint(OP_ROTATE, 32).store_uint(query_id, 64).store_maybe_ref(sigs)
            .store_ref(payload).end_cell())


# value to attach to a rotation message: its gas (a rotation to 255 keys stays far below it);
# what is left stays on the lock as reserve
ROTATION_VALUE = 200_000_000  # 0.2 TON


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


def release_body(payload: Cell, signatures: dict[bytes, bytes]) -> Cell:
    """External message body: ``signatures:(HashmapE 256 bits512) payload:^Release``, keyed by
    the signer's public key."""
    hm = HashMap(256, value_serializer=lambda src, dest: dest.store_bytes(src))
    for k, sig in signatures.items():
        if len(k) != 32 or len(sig) != 64:
            raise InputError("signatures are 64 bytes by 32-byte keys")
        hm.set_int_key(int.from_bytes(k, "big"), sig)
    return Builder().store_maybe_ref(hm.serialize()).store_ref(payload).end_cell()


def release_message(lock: Address, body: Cell) -> Cell:
    """The external-in message carrying a release (no state init)."""
    from pytoniq_core.tlb.transaction import ExternalMsgInfo, MessageAny

    return MessageAny(info=ExternalMsgInfo(None, lock, 0), init=None, body=body).serialize()


def parse_committee(threshold: int, keys: Cell | None) -> tuple[int, list[bytes]]:
    """Decode ``get_committee`` results: the threshold and the members' keys, sorted."""
    members: list[bytes] = []
    if keys is not None:
        parsed = HashMap.parse(keys.begin_parse(), 256) or {}
        members = [k.to_bytes(32, "big") for k in sorted(parsed)]
    return threshold, members


def ed25519_public(seed: bytes) -> bytes:
    from nacl.signing import SigningKey

    return bytes(SigningKey(seed[:32]).verify_key)


def bounceable(addr: Address) -> str:
    a = Address((addr.wc, addr.hash_part))
    a.is_bounceable = True
    return a.to_str(is_user_friendly=True, is_bounceable=True, is_url_safe=True)

