"""Canonical, domain-separated digests of everything the committee signs (EIP-712).

These digests are the contract between the Python signers and the Solidity contracts in
``contracts/ethereum``; ``tests/integration/evm/test_contracts.py`` checks that both sides
compute the same bytes. Static ABI encoding is done by hand (32-byte words), so the core
needs only keccak and secp256k1, no chain SDK.

Type strings (EIP-712 ``encodeType``)::

    EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
    Credit(bytes32 source,uint64 sequence,address beneficiary,uint256 credits,bytes32 quoteId)
    CreditBatch(uint64 committeeIndex,Credit[] credits)Credit(...)
    RotateCommittee(uint64 newIndex,address[] signers,uint256 threshold)
    Release(address to,uint256 amount,bytes32 releaseId)

Settlement domain: name "CreditBridge Ledger", version "1"; lock contract domain: name
"CreditBridge Lock", version "1". Signatures are 65 bytes ``r || s || v`` (v = 27/28, low s),
and a signature set is their concatenation ordered by signer address, ascending.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import coincurve

from bridge.errors import VerificationError
from bridge.hashing import keccak256
from bridge.types import Credit, CreditMessage, SettlementDomain

DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
CREDIT_TYPE = b"Credit(bytes32 source,uint64 sequence,address beneficiary,uint256 credits,bytes32 quoteId)"
BATCH_TYPE = b"CreditBatch(uint64 committeeIndex,Credit[] credits)" + CREDIT_TYPE
ROTATE_TYPE = b"RotateCommittee(uint64 newIndex,address[] signers,uint256 threshold)"
RELEASE_TYPE = b"Release(address to,uint256 amount,bytes32 releaseId)"

DOMAIN_TYPEHASH = keccak256(DOMAIN_TYPE)
CREDIT_TYPEHASH = keccak256(CREDIT_TYPE)
BATCH_TYPEHASH = keccak256(BATCH_TYPE)
ROTATE_TYPEHASH = keccak256(ROTATE_TYPE)
RELEASE_TYPEHASH = keccak256(RELEASE_TYPE)
# a release of an ERC-20 the lock holds (issue 15): the token is part of what the committee signs
TOKEN_RELEASE_TYPE = b"TokenRelease(address token,address to,uint256 amount,bytes32 releaseId)"
TOKEN_RELEASE_TYPEHASH = keccak256(TOKEN_RELEASE_TYPE)

LEDGER_NAME = "CreditBridge Ledger"
LOCK_NAME = "CreditBridge Lock"

# secp256k1 group order, for the low-s rule the contracts enforce
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def _u(n: int) -> bytes:
    return n.to_bytes(32, "big")


def _addr(a: bytes) -> bytes:
    if len(a) != 20:
        raise ValueError("address must be 20 bytes")
    return b"\x00" * 12 + a


def domain_separator(domain: SettlementDomain) -> bytes:
    return keccak256(
        DOMAIN_TYPEHASH
        + keccak256(domain.name.encode())
        + keccak256(domain.version.encode())
        + _u(domain.chain_id)
        + _addr(domain.contract)
    )


def credit_hash(c: Credit) -> bytes:
    return keccak256(
        CREDIT_TYPEHASH + c.source + _u(c.sequence) + _addr(c.beneficiary) + _u(c.credits) + c.quote_id
    )


def batch_struct_hash(msg: CreditMessage) -> bytes:
    items = keccak256(b"".join(credit_hash(c) for c in msg.credits))
    return keccak256(BATCH_TYPEHASH + _u(msg.committee_index) + items)


def typed_digest(domain: SettlementDomain, struct_hash: bytes) -> bytes:
    return keccak256(b"\x19\x01" + domain_separator(domain) + struct_hash)


def credit_digest(domain: SettlementDomain, msg: CreditMessage) -> bytes:
    return typed_digest(domain, batch_struct_hash(msg))


def rotate_digest(domain: SettlementDomain, new_index: int, signers: Sequence[bytes], threshold: int) -> bytes:
    arr = keccak256(b"".join(_addr(s) for s in signers))
    return typed_digest(domain, keccak256(ROTATE_TYPEHASH + _u(new_index) + arr + _u(threshold)))


def release_digest(domain: SettlementDomain, to: bytes, amount: int, release_id: bytes) -> bytes:
    return typed_digest(domain, keccak256(RELEASE_TYPEHASH + _addr(to) + _u(amount) + release_id))


def token_release_digest(domain: SettlementDomain, token: bytes, to: bytes, amount: int, release_id: bytes) -> bytes:
    """EIP-712 ``TokenRelease(token, to, amount, releaseId)`` under the lock's domain."""
    return typed_digest(domain, keccak256(TOKEN_RELEASE_TYPEHASH + _addr(token) + _addr(to) + _u(amount)
                                          + release_id))


# --- secp256k1 -----------------------------------------------------------------------------
def address_of(private_key: bytes) -> bytes:
    pub = coincurve.PrivateKey(private_key).public_key.format(compressed=False)[1:]
    return keccak256(pub)[12:]


def sign_digest(private_key: bytes, digest: bytes) -> bytes:
    """65-byte ``r || s || v`` signature over a 32-byte digest (libsecp256k1 gives low s)."""
    sig = coincurve.PrivateKey(private_key).sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def recover(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that produced ``signature``; raises VerificationError."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        raise VerificationError("signature must be 65 bytes with v 27 or 28")
    if int.from_bytes(signature[32:64], "big") > SECP256K1_N // 2:
        raise VerificationError("signature has high s")
    try:
        pub = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except Exception as e:  # coincurve raises plain Exception/ValueError on bad points
        raise VerificationError(f"unrecoverable signature ({e.__class__.__name__})") from None
    return keccak256(pub.format(compressed=False)[1:])[12:]


def pack_signatures(pairs: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Concatenate (signer, signature) pairs ordered by signer address, as the contracts want."""
    return b"".join(sig for _, sig in sorted(pairs, key=lambda p: p[0]))
