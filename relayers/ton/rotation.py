"""Committee rotation on a TON lock (contracts/ton/lock.fc ``rotate#43425243``).

The current set signs the payload's cell hash (``payload_hash``, used by
bridge/committee/rotation.py through the composition root); anyone then sends the signed
rotation as an internal message from a funded wallet (``submit_rotation``): it pays the gas,
the rest of the attached value stays on the lock. The lock's address does not change (it was
fixed by its initial data): configs and the manifest keep naming it.
"""

from __future__ import annotations

from pytoniq_core import Address

from bridge.committee.rotation import NewCommittee, TonCustody
from bridge.errors import ChainError, InputError, TransactionFailed
from relayers.ton import lock as L
from relayers.ton import wallet as tw


def payload(custody: TonCustody, committee: NewCommittee):
    try:
        lock = Address(custody.lock)
    except Exception:  # pytoniq-core raises assorted errors on malformed addresses
        raise InputError(f"{custody.id}: {custody.lock!r} is not a TON address") from None
    return L.rotation_payload(global_id=custody.global_id, lock=lock, new_index=committee.index,
                              public_keys=committee.ed25519_keys(), threshold=committee.threshold)


def payload_hash(custody: TonCustody, committee: NewCommittee) -> bytes:
    return payload(custody, committee).hash


async def committee_of(provider, lock: Address | str) -> tuple[int, list[bytes], int]:
    """(committee index, members' keys, threshold) of a lock, through a LiteBalancer-like provider."""
    threshold, keys = await provider.run_get_method(lock, "get_committee", [])
    threshold, members = L.parse_committee(int(threshold), keys)
    (index,) = await provider.run_get_method(lock, "get_committee_index", [])
    return int(index), members, threshold


async def submit_rotation(provider, wallet_mnemonic: str, custody: TonCustody, committee: NewCommittee,
                          signatures: list[tuple[bytes, bytes]], *, timeout: float = 60.0) -> bytes:
    """Send the rotation from the wallet and wait until the lock reports the new index; the
    external message's hash. TransactionFailed if the lock kept its old committee."""
    lock = Address(custody.lock)
    body = L.rotation_body(payload(custody, committee), dict(signatures))
    wallet = await tw.open_wallet(provider, wallet_mnemonic)
    sent = await tw.transfer(wallet, lock, L.ROTATION_VALUE, body)

    async def applied():
        index, _, _ = await committee_of(provider, lock)
        return index >= committee.index

    try:
        await tw.wait_for(applied, timeout)
    except ChainError:
        index, _, _ = await committee_of(provider, lock)
        raise TransactionFailed(f"{custody.id}: the lock is still at committee index {index} after the rotation "
                                f"message 0x{sent.hex()[:16]}.. (refused: see lock.fc exit codes 412-421)",
                                retryable=False) from None
    return sent
