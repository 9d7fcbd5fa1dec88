"""The committee's account on Asset Hub: a ``pallet_multisig`` account of its members' keys.

``pallet_multisig::Pallet::multi_account_id(who, threshold)`` is::

    AccountId::decode(TrailingZeroInput(blake2_256(
        ("modlpy/utilisuba", who, threshold).encode())))

where ``who`` is the *sorted* list of 32-byte account ids (SCALE: compact length prefix then
the ids) and ``threshold`` a ``u16`` (little endian). For 32-byte account ids the hash is the
account id itself. Funds sent there can only move by ``threshold`` of the members approving
(``Multisig.as_multi`` / ``approve_as_multi``).

Members are the committee's Ed25519 public keys: an Ed25519 public key *is* its Substrate
account id (``AccountId32``), so each member can sign multisig approvals with its key.
The derivation is checked against the real runtime's ``Multisig.NewMultisig`` event in
``tests/integration/substrate/test_multisig.py``.
"""

from __future__ import annotations

from typing import Iterable

from scalecodec.utils.ss58 import ss58_encode

from bridge.config import SubstrateCommittee
from bridge.errors import ConfigError, InputError
from relayers.substrate.decode import blake2_256, compact

MULTISIG_SALT = b"modlpy/utilisuba"
MAX_SIGNATORIES = 100  # pallet_multisig MaxSignatories on Polkadot and Kusama Asset Hub


def multisig_account_id(members: Iterable[bytes], threshold: int) -> bytes:
    """The 32-byte account id of the multisig of ``members`` (any order) and ``threshold``."""
    ids = [bytes(m) for m in members]
    if any(len(m) != 32 for m in ids):
        raise InputError("multisig members must be 32-byte account ids")
    if len(set(ids)) != len(ids):
        raise InputError("multisig members must be distinct")
    if not 2 <= len(ids) <= MAX_SIGNATORIES:
        # pallet_multisig needs at least one *other* signatory: a 1-member multisig account
        # could never move its funds.
        raise InputError(f"a multisig needs 2..{MAX_SIGNATORIES} members, got {len(ids)}")
    if not 1 <= threshold <= len(ids):
        raise InputError("multisig threshold must be between 1 and the number of members")
    ids.sort()
    return blake2_256(MULTISIG_SALT + compact(len(ids)) + b"".join(ids) + threshold.to_bytes(2, "little"))


def committee_account_id(committee: SubstrateCommittee) -> bytes:
    """The multisig account id of a configured committee (ConfigError if it cannot be one)."""
    try:
        return multisig_account_id((bytes.fromhex(m[2:]) for m in committee.members), committee.threshold)
    except InputError as e:
        raise ConfigError(f"substrate committee: {e.detail}") from None


def ss58(account_id: bytes, prefix: int) -> str:
    """SS58 text of a 32-byte account id under the chain's prefix (0 Polkadot, 2 Kusama)."""
    if len(account_id) != 32:
        raise InputError("an account id is 32 bytes")
    return ss58_encode(account_id, ss58_format=prefix)


def committee_address(committee: SubstrateCommittee, prefix: int) -> str:
    return ss58(committee_account_id(committee), prefix)


# --- per-payment accounts (issue 14: any wallet can pay with a plain transfer) ----------------
PAYMENT_TAG_DOMAIN = b"creditbridge/payment"


def payment_tag(reference: bytes) -> bytes:
    """The extra "signatory" of a payment account: ``blake2_256(b"creditbridge/payment" +
    reference)``. Nobody holds a key for it (it is a hash, not a public key), so it never
    approves: only ``threshold`` committee members can move the account's funds."""
    if not isinstance(reference, (bytes, bytearray)) or len(reference) != 32:
        raise InputError("a payment reference is 32 bytes")
    return blake2_256(PAYMENT_TAG_DOMAIN + bytes(reference))


def payment_signatories(committee: SubstrateCommittee, reference: bytes) -> list[bytes]:
    """The sorted signatories of a payment account: the committee's members and the tag."""
    return sorted([*(bytes.fromhex(m[2:]) for m in committee.members), payment_tag(reference)])


def payment_account(committee: SubstrateCommittee, reference: bytes) -> bytes:
    """The 32-byte account id where a plain transfer pays the payment ``reference``: the
    ``pallet_multisig`` account of the committee's members plus :func:`payment_tag` with the
    committee's threshold. The signers collect it into the committee account
    (``relayers/substrate/collect.py``); the watcher sees that collection as the deposit."""
    signatories = payment_signatories(committee, reference)  # InputError for a malformed reference
    try:
        return multisig_account_id(signatories, committee.threshold)
    except InputError as e:
        raise ConfigError(f"substrate committee: {e.detail}") from None


def payment_address(committee: SubstrateCommittee, reference: bytes, prefix: int) -> str:
    return ss58(payment_account(committee, reference), prefix)
