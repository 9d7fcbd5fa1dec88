"""Per-payment deposit addresses on EVM chains (issue 14: any wallet can pay).

``CreditLock.collect(ref, fundingTx)`` (ETH) and ``collectToken(token, ref, fundingTx)``
(ERC-20, issue 15) deploy, with CREATE2 and salt ``ref``, a forwarder whose init code is
hand-assembled (its opcodes are listed in ``contracts/ethereum/CreditLock.sol``): it asks the
lock which token is being collected, transfers its whole balance of that token to the lock
(empty return data or ``true`` accepted), then ``SELFDESTRUCT``s to the lock, which moves any
ETH as well and leaves the address empty (created and destroyed in the same transaction,
EIP-6780). One address per payment therefore takes every asset, the address is a pure
function of (lock, reference), and it can be collected again. The init code is a constant, never compiler output, so a
recompiled lock derives the same addresses. Core code (no chain SDK): the payment
instructions, the relay's collector and every watcher compute the address here.
"""

from __future__ import annotations

from bridge.errors import InputError
from bridge.hashing import keccak256, keccak256_many

FORWARDER_INITCODE = bytes.fromhex(
    "63285e37c960e01b5f5260205f60045f335afa1560785760203d106078575f518015607c576370a0823160e01b5f5230"
    "6004526020602460245f845afa1560785760203d1060785763a9059cbb60e01b5f523360045260205f60445f5f855af1"
    "156078573d15607c5760203d106078575f51600114607c575b5f80fd5b33ff"
)  # the 127 bytes of CreditLock.FORWARDER_INITCODE
FORWARDER_INITCODE_HASH = keccak256(FORWARDER_INITCODE)


def deposit_address(lock: bytes, reference: bytes) -> bytes:
    """The 20-byte deposit address of payment ``reference`` at lock contract ``lock``
    (``keccak256(0xff ++ lock ++ reference ++ keccak256(initcode))[12:]``, EIP-1014)."""
    return keccak256(_create2_preimages(lock, [reference])[0])[12:]


def deposit_addresses(lock: bytes, references: list[bytes]) -> list[bytes]:
    """``[deposit_address(lock, r) for r in references]``, hashed in one call (a catch-up scan
    derives one a deposit: bench/relayer_scan.py)."""
    return [h[12:] for h in keccak256_many(_create2_preimages(lock, references))]


def _create2_preimages(lock: bytes, references: list[bytes]) -> list[bytes]:
    """What CREATE2 hashes for each reference's deposit address (both functions above)."""
    lock = bytes(lock)
    if len(lock) != 20:
        raise InputError("an EVM lock address is 20 bytes")
    prefix = b"\xff" + lock
    out = []
    for r in references:
        r = bytes(r)
        if len(r) != 32:
            raise InputError("a payment reference is 32 bytes")
        out.append(prefix + r + FORWARDER_INITCODE_HASH)
    return out


def checksum_address(address: bytes) -> str:
    """EIP-55 mixed-case hex of a 20-byte address."""
    if len(address) != 20:
        raise InputError("an EVM address is 20 bytes")
    hexed = bytes(address).hex()
    digest = keccak256(hexed.encode()).hex()
    return "0x" + "".join(c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(hexed))
