"""Per-payment deposit addresses on EVM chains (issue 14: any wallet can pay).

``CreditLock.collect(ref, fundingTx)`` deploys, with CREATE2 and salt ``ref``, a forwarder whose
init code is the two hand-written opcodes ``CALLER SELFDESTRUCT`` (``0x33ff``): it sends what
its address holds to the lock and leaves the address empty (created and destroyed in the same
transaction, EIP-6780), so the address of a payment is a pure function of (lock, reference)
and can be collected again. The init code is a constant, never compiler output, so a
recompiled lock derives the same addresses. Core code (no chain SDK): the payment
instructions, the relay's collector and every watcher compute the address here.
"""

from __future__ import annotations

from bridge.errors import InputError
from bridge.hashing import keccak256

FORWARDER_INITCODE = bytes.fromhex("33ff")  # CALLER SELFDESTRUCT
FORWARDER_INITCODE_HASH = keccak256(FORWARDER_INITCODE)


def deposit_address(lock: bytes, reference: bytes) -> bytes:
    """The 20-byte deposit address of payment ``reference`` at lock contract ``lock``
    (``keccak256(0xff ++ lock ++ reference ++ keccak256(initcode))[12:]``, EIP-1014)."""
    lock, reference = bytes(lock), bytes(reference)
    if len(lock) != 20:
        raise InputError("an EVM lock address is 20 bytes")
    if len(reference) != 32:
        raise InputError("a payment reference is 32 bytes")
    return keccak256(b"\xff" + lock + reference + FORWARDER_INITCODE_HASH)[12:]


def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case hex of a 20-byte address."""
    if len(address) != 20:
        raise InputError("an EVM address is 20 bytes")
    hexed = bytes(address).hex()
    digest = keccak256(hexed.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(hexed))
