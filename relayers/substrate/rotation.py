"""Committee rotation on an Asset Hub chain: the old committee account hands everything to the
new committee's account.

The committee account is derived from its members and threshold (``multisig.py``), so a new
set has a new account. The old set moves the funds with one ``pallet_multisig`` operation of
the old account, approved on chain by ``t`` old members, each with its own key, exactly like a
refund (``refund.py``: same rules, same never-twice argument), with the call::

    Utility.batch_all([Balances.transfer_all(dest=new account, keep_alive=false),
                       System.remark(b"creditbridge/rotate/v1" + rotation id)])

``transfer_all`` moves the whole free balance at execution time, so payments that reached the
old account until then move too, and the call hash does not depend on the balance (every member
composes the same call). The rotation id is ``blake2_256("creditbridge/rotate/v1" || new
account || new index)``. Deposits that reach the old account *after* the migration stay there
and still need the old set's approvals (watchers keep watching the previous account until the
cut-off; see the README).
"""

from __future__ import annotations

import functools

from bridge.committee.rotation import SubstrateCustody
from bridge.config import SubstrateChainConfig, SubstrateCommittee
from bridge.errors import ChainError, ConfigError, InputError
from relayers.substrate.decode import blake2_256
from relayers.substrate.multisig import multisig_account_id
from relayers.substrate.refund import MultisigRefunder, Progress, RefundOrder, _short

REMARK_PREFIX = b"creditbridge/rotate/v1"


def rotation_id(new_account: bytes, new_index: int) -> bytes:
    return blake2_256(REMARK_PREFIX + new_account + new_index.to_bytes(8, "big"))


def migration_order(custody: SubstrateCustody, new_index: int) -> RefundOrder:
    new = bytes.fromhex(custody.new_account[2:])
    # amount is not used by the call (transfer_all): 1 keeps the order a valid RefundOrder
    return RefundOrder(release_id=rotation_id(new, new_index), to=new, amount=1, deposit_block=custody.from_block)


def check_custody(custody: SubstrateCustody, new_members: list[bytes], new_threshold: int) -> None:
    """The proposal's accounts are the derivations of the old and new committees."""
    old = multisig_account_id([bytes.fromhex(m[2:]) for m in custody.old_members], custody.old_threshold)
    if old.hex() != custody.old_account[2:].lower():
        raise InputError(f"{custody.id}: old_account is not the old members' multisig account")
    new = multisig_account_id(new_members, new_threshold)
    if new.hex() != custody.new_account[2:].lower():
        raise InputError(f"{custody.id}: new_account is not the new committee's multisig account")


class CommitteeMigrator(MultisigRefunder):
    """One old member's side of moving the old committee account's funds to the new account."""

    def __init__(self, cfg: SubstrateChainConfig, custody: SubstrateCustody, member_seed: bytes, **kw) -> None:
        old = SubstrateCommittee(members=list(custody.old_members), threshold=custody.old_threshold)
        super().__init__(cfg.model_copy(update={"committee": old}), member_seed, **kw)
        if self.committee.hex() != custody.old_account[2:].lower():
            raise ConfigError(f"{custody.id}: the proposal's old account is not its old members' multisig account")

    def _compose(self, si, order: RefundOrder, at: str):
        compose_call = functools.partial(si.compose_call, block_hash=at)  # pinned, as the refunder's
        try:
            transfer = compose_call("Balances", "transfer_all", {"dest": "0x" + order.to.hex(), "keep_alive": False})
            remark = compose_call("System", "remark", {"remark": "0x" + (REMARK_PREFIX + order.release_id).hex()})
            return compose_call("Utility", "batch_all", {"calls": [transfer, remark]})
        except (ValueError, TypeError, KeyError, NotImplementedError) as e:
            raise ChainError(f"chain {self.chain}: cannot compose the migration call ({_short(e)})",
                             retryable=False) from None

    async def migrate(self, custody: SubstrateCustody, new_index: int, last: Progress) -> Progress:
        return await self.step(migration_order(custody, new_index), last)
