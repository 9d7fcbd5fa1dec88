"""Unit tests of the FunC lock contract, run on the real TVM: the C++ transaction emulator that
pytvm bundles executes the committed code (contracts/ton/build/lock.boc) inside the local
chain's state machine (devnet.ton.localchain.LocalChain), with @ton/sandbox's mainnet config.
No liteserver, no network. Every exit code of lock.fc is provoked here."""

from __future__ import annotations

import os

import pytest
from pytoniq_core import Address, Builder, Cell
from pytoniq_core.tlb.transaction import Transaction

from bridge.errors import InputError
from relayers.ton import lock as L
from devnet.ton.localchain import LOCAL_GLOBAL_ID as GID
from devnet.ton.localchain import LocalChain, MessageRejected
from relayers.ton.watcher import deposit_of

MIN = 10**7
TON = 10**9


def tx(rec) -> Transaction:
    return Transaction.deserialize(rec.cell.begin_parse())


def exit_code(rec) -> int:
    return tx(rec).description.compute_ph.exit_code


@pytest.fixture(scope="module")
def committee():
    seeds = [os.urandom(32) for _ in range(4)]
    return seeds, [L.ed25519_public(s) for s in seeds]


@pytest.fixture
def env(committee):
    seeds, pubs = committee
    chain = LocalChain()
    lock = L.lock_address(pubs, 3, MIN, global_id=GID)
    chain.mint(lock, 5 * TON, L.state_init(pubs, 3, MIN, global_id=GID), L.top_up_body())
    chain.seal_block()
    return chain, lock, seeds, pubs


PAYER = Address((0, b"\x42" * 32))


def pay(chain, lock, amount, body, src=PAYER, **kw):
    return chain.send_internal(src, lock, amount, body=body, **kw)


def get(chain, lock, method, stack=None):
    from pytoniq_core.tlb import VmStack
    import base64

    chain.seal_block()
    from pytvm.utils import get_method_id

    res = chain.get_method(chain.last, lock.hash_part, get_method_id(method), VmStack.serialize(stack or []))
    assert res["vm_exit_code"] == 0, res
    from pytoniq_core import Slice

    return VmStack.deserialize(Slice.one_from_boc(base64.b64decode(res["stack"])))


def test_get_methods_report_storage(env):
    chain, lock, seeds, pubs = env
    assert get(chain, lock, "get_deposit_seq") == [0]
    assert get(chain, lock, "get_release_count") == [0]
    assert get(chain, lock, "get_min_amount") == [MIN]
    assert get(chain, lock, "get_global_id") == [GID]
    assert get(chain, lock, "get_min_release") == [L.DEFAULT_MIN_RELEASE]
    threshold, keys = get(chain, lock, "get_committee")
    assert L.parse_committee(threshold, keys) == (3, sorted(pubs))
    data = L.parse_lock_data(L.initial_data(pubs, 3, MIN, global_id=GID))
    assert data == L.LockData(MIN, 3, GID, L.DEFAULT_MIN_RELEASE, sorted(pubs), 0)
    assert get(chain, lock, "get_committee_index") == [0]


def test_deposit_logs_and_counts_densely(env):
    chain, lock, *_ = env
    refs = [os.urandom(32) for _ in range(3)]
    for i, ref in enumerate(refs):
        recs = pay(chain, lock, MIN + i, L.deposit_body(ref, query_id=77))
        t = tx(recs[0])
        assert exit_code(recs[0]) == 0 and not t.description.aborted
        index, lg = deposit_of(t, lock)
        assert (lg.seq, lg.amount, lg.reference, lg.query_id) == (i, MIN + i, ref, 77)
        assert lg.sender.hash_part == PAYER.hash_part and lg.sender.wc == 0
        assert len(recs) == 1  # nothing bounced
    assert get(chain, lock, "get_deposit_seq") == [3]


def test_top_up_is_accepted_without_a_log(env):
    chain, lock, *_ = env
    recs = pay(chain, lock, TON, L.top_up_body())
    assert exit_code(recs[0]) == 0 and deposit_of(tx(recs[0]), lock) is None
    assert get(chain, lock, "get_deposit_seq") == [0]


@pytest.mark.parametrize("body,code", [
    # an empty body and a text comment (op 0) are deposits since issue 14: test_ton_comment_deposits.py
    (Builder().store_uint(0xABCD, 16).end_cell(), L.ERR_SHORT_BODY),
    (Builder().store_uint(0, 31).end_cell(), L.ERR_SHORT_BODY),
    (Builder().store_uint(L.OP_DEPOSIT, 32).store_uint(1, 64).store_uint(5, 100).end_cell(), L.ERR_SHORT_BODY),
    (Builder().store_uint(0xDEADBEEF, 32).store_uint(0, 64).store_bytes(b"\x01" * 32).end_cell(), L.ERR_UNKNOWN_OP),
    (Builder().store_uint(1, 32).store_snake_string("op 1 is not a comment").end_cell(), L.ERR_UNKNOWN_OP),
])
def test_malformed_payments_throw_and_bounce(env, body, code):
    chain, lock, *_ = env
    recs = pay(chain, lock, TON, body)
    t = tx(recs[0])
    assert exit_code(recs[0]) == code
    assert t.description.aborted and t.description.bounce is not None
    assert deposit_of(t, lock) is None
    bounce = tx(recs[1])  # the bounced message arrives back at the payer
    assert bounce.account_addr == PAYER.hash_part and bounce.in_msg.info.bounced
    assert get(chain, lock, "get_deposit_seq") == [0]


def test_too_small_deposit_throws_and_bounces(env):
    chain, lock, *_ = env
    recs = pay(chain, lock, MIN - 1, L.deposit_body(os.urandom(32)))
    assert exit_code(recs[0]) == L.ERR_TOO_SMALL
    assert tx(recs[0]).description.aborted and deposit_of(tx(recs[0]), lock) is None
    assert len(recs) == 2
    assert get(chain, lock, "get_deposit_seq") == [0]


def test_deposit_from_another_workchain_throws_and_bounces(env):
    """Refunds go to the sender's basechain address, so the lock takes basechain deposits only."""
    chain, lock, *_ = env
    master = Address((-1, b"\x42" * 32))
    # non-bounceable here only because the local chain models workchain 0 alone (the bounce
    # to a masterchain sender could not be delivered); a bounceable deposit bounces back
    recs = pay(chain, lock, TON, L.deposit_body(os.urandom(32)), src=master, bounce=False)
    assert exit_code(recs[0]) == L.ERR_NOT_BASECHAIN
    assert tx(recs[0]).description.aborted and deposit_of(tx(recs[0]), lock) is None
    assert get(chain, lock, "get_deposit_seq") == [0]


def test_bounced_messages_are_kept_silently(env):
    chain, lock, *_ = env
    recs = pay(chain, lock, TON, Builder().store_uint(0xFFFFFFFF, 32).end_cell(), bounce=False, bounced=True)
    assert exit_code(recs[0]) == 0 and deposit_of(tx(recs[0]), lock) is None


# ------------------------------------------------------------------------------------ releases
DEST = Address((0, b"\x77" * 32))


RID = b"\x09" * 32


def release(chain, lock, seeds, signers, *, amount=TON, lock_addr=None, payload=None, sig_override=None,
            release_id=RID, global_id=GID):
    payload = payload or L.release_payload(global_id=global_id, lock=lock_addr or lock, destination=DEST,
                                           amount=amount, release_id=release_id)
    sigs = {L.ed25519_public(seeds[i]): L.sign_release(payload, seeds[i]) for i in signers}
    sigs.update({L.ed25519_public(seeds[i]) if isinstance(i, int) else i: sig
                 for i, sig in (sig_override or {}).items()})
    return chain.send_external(L.release_message(lock, L.release_body(payload, sigs)).to_boc())


def rejected(code, fn, *args, **kw):
    with pytest.raises(MessageRejected) as e:
        fn(*args, **kw)
    assert e.value.exit_code == code, str(e.value)


def test_release_with_threshold_signatures_pays_once(env):
    chain, lock, seeds, _ = env
    before = chain.balance(DEST)
    recs = release(chain, lock, seeds, [0, 2, 3])
    assert exit_code(recs[0]) == 0 and not tx(recs[0]).description.aborted
    # non-bounceable payment to a fresh address; the release's fees came out of its amount
    assert TON - L.RELEASE_FEE_BOUND < chain.balance(DEST) - before < TON
    assert get(chain, lock, "get_release_count") == [1]
    assert get(chain, lock, "is_released", [int.from_bytes(RID, "big")]) == [-1]
    assert get(chain, lock, "is_released", [int.from_bytes(b"\x08" * 32, "big")]) == [0]
    # the very same message again, or the same release id signed by other members: paid once
    for _ in range(3):
        chain.seal_block()  # past the duplicate window a validator would apply
    rejected(L.ERR_RELEASE_USED, release, chain, lock, seeds, [0, 2, 3])
    rejected(L.ERR_RELEASE_USED, release, chain, lock, seeds, [0, 1, 2])
    paid = chain.balance(DEST) - before
    assert paid < TON
    # another release id is another refund; signatures made in any order are all valid
    release(chain, lock, seeds, [1, 2, 3], release_id=b"\x08" * 32)
    # DEST now exists (uninitialized) and pays a few nanotons of storage fee per second held
    assert paid + TON - L.RELEASE_FEE_BOUND < chain.balance(DEST) - before < paid + TON
    assert get(chain, lock, "get_release_count") == [2]


def test_release_rejections(env):
    chain, lock, seeds, _ = env
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, release, chain, lock, seeds, [0, 1])
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, release, chain, lock, seeds, [])
    rejected(L.ERR_BAD_SIGNATURE, release, chain, lock, seeds, [0, 1], sig_override={2: L.sign_release(
        L.release_payload(global_id=GID, lock=lock, destination=DEST, amount=2 * TON, release_id=RID), seeds[2])})
    rejected(L.ERR_BAD_SIGNATURE, release, chain, lock, seeds, [0, 1], sig_override={3: L.sign_release(
        L.release_payload(global_id=GID, lock=lock, destination=DEST, amount=TON, release_id=RID), seeds[2])})
    rejected(L.ERR_UNKNOWN_SIGNER, release, chain, lock, seeds, [0, 1], sig_override={b"\x07" * 32: b"\x01" * 64})
    rejected(L.ERR_WRONG_CONTRACT, release, chain, lock, seeds, [0, 1, 2], lock_addr=Address((0, b"\x01" * 32)))
    rejected(L.ERR_INSUFFICIENT_BALANCE, release, chain, lock, seeds, [0, 1, 2], amount=100 * TON)
    not_release = Builder().store_uint(L.OP_DEPOSIT, 32).store_uint(0, 32).end_cell()
    rejected(L.ERR_NOT_RELEASE, release, chain, lock, seeds, [0, 1, 2], payload=not_release)
    assert get(chain, lock, "get_release_count") == [0]  # nothing was accepted, nothing paid
    assert chain.balance(DEST) == 0


# ------------------------------------------------------------------ issue 11: network binding
def test_same_keys_on_two_networks_give_two_lock_addresses(committee):
    """The address commits to code and initial data; the global id is in the data, so the same
    committee's lock on testnet and on mainnet are two contracts."""
    _, pubs = committee
    addrs = {gid: L.lock_address(pubs, 3, MIN, global_id=gid)
             for gid in (L.MAINNET_GLOBAL_ID, L.TESTNET_GLOBAL_ID, GID)}
    assert len({a.hash_part for a in addrs.values()}) == 3
    for gid in addrs:
        assert L.parse_lock_data(L.initial_data(pubs, 3, MIN, global_id=gid)).global_id == gid


def test_release_signed_for_another_network_is_refused(committee):
    """A testnet release (public at GET /v1/releases) replayed on a mainnet lock: even a lock
    at the very same address (same code and data but the global id) refuses it (418), and the
    mainnet lock pays the release signed for mainnet."""
    seeds, pubs = committee
    chain = LocalChain(global_id=L.MAINNET_GLOBAL_ID)
    lock = L.lock_address(pubs, 3, MIN, global_id=L.MAINNET_GLOBAL_ID)
    chain.mint(lock, 5 * TON, L.state_init(pubs, 3, MIN, global_id=L.MAINNET_GLOBAL_ID), L.top_up_body())
    chain.seal_block()
    rejected(L.ERR_WRONG_NETWORK, release, chain, lock, seeds, [0, 1, 2], global_id=L.TESTNET_GLOBAL_ID)
    assert chain.balance(DEST) == 0
    recs = release(chain, lock, seeds, [0, 1, 2], global_id=L.MAINNET_GLOBAL_ID)
    assert exit_code(recs[0]) == 0 and chain.balance(DEST) > 0


# ------------------------------------------------------------------ issue 11: committee keys
def test_initial_data_refuses_duplicate_keys_and_minority_thresholds(committee):
    _, pubs = committee
    with pytest.raises(InputError, match="distinct"):
        L.initial_data([pubs[0], pubs[1], pubs[0]], 2, MIN, global_id=GID)
    with pytest.raises(InputError, match="distinct"):
        L.lock_address([pubs[0], pubs[0], pubs[1], pubs[2]], 3, MIN, global_id=GID)
    with pytest.raises(InputError, match="majority"):
        L.initial_data(pubs, 2, MIN, global_id=GID)  # 2 of 4: two disjoint pairs could each sign
    with pytest.raises(InputError):
        L.initial_data(pubs, 5, MIN, global_id=GID)
    with pytest.raises(InputError):
        L.initial_data(pubs, 0, MIN, global_id=GID)
    with pytest.raises(InputError, match="fees"):
        L.initial_data(pubs, 3, MIN, global_id=GID, min_release=L.RELEASE_FEE_BOUND - 1)
    L.initial_data(pubs[:3], 2, MIN, global_id=GID)  # 2 of 3 is a majority


def test_one_member_counts_once_on_chain(env):
    """The committee and the signatures are dicts keyed by public key: a member cannot be
    listed twice, so one key's signature never counts as two members' (below threshold: 415)."""
    from pytoniq_core import HashMap

    chain, lock, seeds, pubs = env
    payload = L.release_payload(global_id=GID, lock=lock, destination=DEST, amount=TON, release_id=RID)
    sig = L.sign_release(payload, seeds[0])
    hm = HashMap(256, value_serializer=lambda src, dest: dest.store_bytes(src))
    hm.set_int_key(int.from_bytes(pubs[0], "big"), sig)
    hm.set_int_key(int.from_bytes(pubs[0], "big"), sig)  # a dict holds the key once
    hm.set_int_key(int.from_bytes(pubs[1], "big"), L.sign_release(payload, seeds[1]))
    body = Builder().store_maybe_ref(hm.serialize()).store_ref(payload).end_cell()
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, chain.send_external, L.release_message(lock, body).to_boc())
    assert chain.balance(DEST) == 0


# ------------------------------------------------------------------ issue 11: refund fees, dust
def test_a_release_pays_its_own_fees(env):
    """The lock's balance drops by exactly the released amount (the storage fee due anyway
    aside): gas, the external message's import and the payout's forwarding fee come out of the
    amount, never out of other payers' funds."""
    chain, lock, seeds, _ = env
    for n, signers in enumerate(([0, 1, 2], [0, 1, 2, 3])):
        for amount in (TON, L.DEFAULT_MIN_RELEASE):
            chain.seal_block()
            before, dest_before = chain.balance(lock), chain.balance(DEST)
            rid = bytes([n, amount % 251]) + b"\x05" * 30
            recs = release(chain, lock, seeds, signers, amount=amount, release_id=rid)
            t = tx(recs[0])
            assert exit_code(recs[0]) == 0 and t.description.action.success
            storage = t.description.storage_ph.storage_fees_collected if t.description.storage_ph else 0
            assert before - chain.balance(lock) - storage == amount
            got = chain.balance(DEST) - dest_before
            assert amount - L.RELEASE_FEE_BOUND < got < amount  # the payer bears the fees
            assert amount - got >= t.total_fees.grams  # at least this transaction's fees


def test_release_below_the_minimum_is_refused(env):
    chain, lock, seeds, _ = env
    rejected(L.ERR_BELOW_MIN_RELEASE, release, chain, lock, seeds, [0, 1, 2], amount=L.DEFAULT_MIN_RELEASE - 1)
    rejected(L.ERR_BELOW_MIN_RELEASE, release, chain, lock, seeds, [0, 1, 2], amount=1)
    assert chain.balance(DEST) == 0 and get(chain, lock, "get_release_count") == [0]
    release(chain, lock, seeds, [0, 1, 2], amount=L.DEFAULT_MIN_RELEASE)
    assert get(chain, lock, "get_release_count") == [1]


def test_a_padded_release_message_pays_its_own_import(env):
    """The only padding an untrusted submitter can add to a valid release is a state init, and
    for an active account only the lock's own (its hash is the address) passes: the bigger
    import is paid out of the refund as well, and the lock still loses exactly the amount."""
    from pytoniq_core.tlb.transaction import ExternalMsgInfo, MessageAny

    chain, lock, seeds, pubs = env
    payload = L.release_payload(global_id=GID, lock=lock, destination=DEST, amount=L.DEFAULT_MIN_RELEASE,
                                release_id=RID)
    body = L.release_body(payload, {pubs[i]: L.sign_release(payload, seeds[i]) for i in (0, 1, 2)})

    def send(init):
        return chain.send_external(MessageAny(info=ExternalMsgInfo(None, lock, 0), init=init, body=body)
                                   .serialize().to_boc())

    other = L.state_init(pubs, 3, MIN + 1, global_id=GID)  # not the lock's: refused by the chain
    with pytest.raises(MessageRejected):
        send(other)
    chain.seal_block()
    before = chain.balance(lock)
    recs = send(L.state_init(pubs, 3, MIN, global_id=GID))
    t = tx(recs[0])
    assert exit_code(recs[0]) == 0 and t.description.action.success
    storage = t.description.storage_ph.storage_fees_collected if t.description.storage_ph else 0
    assert before - chain.balance(lock) - storage == L.DEFAULT_MIN_RELEASE
    assert 0 < chain.balance(DEST) < L.DEFAULT_MIN_RELEASE - t.total_fees.grams


def test_every_exit_code_is_covered():
    """Keeps this module honest when lock.fc grows a new exit code."""
    import inspect
    import sys

    src = inspect.getsource(sys.modules[__name__])
    # the jetton exit codes (issue 15) are provoked in test_ton_jetton_lock.py
    from pathlib import Path

    src += (Path(__file__).parent / "test_ton_jetton_lock.py").read_text()
    names = {name for name, value in vars(L).items() if name.startswith("ERR_")}
    assert {n for n in names if f"L.{n}" not in src} == set()
    assert set(L.EXIT_CODES) == {getattr(L, n) for n in names}


# ------------------------------------------------------------------ issue 13: committee rotation
def rotate(chain, lock, seeds, signers, new_pubs, new_threshold, *, new_index=1, lock_addr=None, global_id=GID,
           payload=None, extra=None):
    payload = payload or L.rotation_payload(global_id=global_id, lock=lock_addr or lock, new_index=new_index,
                                            public_keys=new_pubs, threshold=new_threshold)
    sigs = {L.ed25519_public(seeds[i]): L.sign_payload(payload, seeds[i]) for i in signers}
    sigs.update(extra or {})
    recs = pay(chain, lock, L.ROTATION_VALUE, L.rotation_body(payload, sigs))
    code = exit_code(recs[0])
    if code != 0:  # refused: thrown and bounced, like a bad payment
        assert tx(recs[0]).description.aborted and len(recs) == 2
        raise MessageRejected(f"rotation refused ({code})", code)
    return recs


@pytest.fixture(scope="module")
def new_committee():
    seeds = [os.urandom(32) for _ in range(7)]
    return seeds, [L.ed25519_public(s) for s in seeds]


def test_rotation_by_the_current_set_replaces_the_committee(env, new_committee):
    chain, lock, seeds, pubs = env
    new_seeds, new_pubs = new_committee
    assert get(chain, lock, "get_committee_index") == [0]
    recs = rotate(chain, lock, seeds, [0, 1, 3], new_pubs, 4)
    assert exit_code(recs[0]) == 0 and not tx(recs[0]).description.aborted
    assert get(chain, lock, "get_committee_index") == [1]
    threshold, keys = get(chain, lock, "get_committee")
    assert L.parse_committee(threshold, keys) == (4, sorted(new_pubs))
    from pytoniq_core.tlb.account import Account

    acc = Account.deserialize(chain.shard_account(lock.hash_part).refs[0].begin_parse())
    data = L.parse_lock_data(acc.storage.state.state_init.data)  # what the watcher checks
    assert (data.committee_index, data.threshold, data.keys, data.global_id) == (1, 4, sorted(new_pubs), GID)
    # releases now need the new set: the old members are unknown signers, three new ones too few
    rejected(L.ERR_UNKNOWN_SIGNER, release, chain, lock, seeds, [0, 1, 2])
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, release, chain, lock, new_seeds, [0, 1, 2])
    recs = release(chain, lock, new_seeds, [0, 2, 4, 6])
    assert exit_code(recs[0]) == 0 and chain.balance(DEST) > 0
    # a second rotation needs the new set and index 2; back to the first committee is allowed
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, rotate, chain, lock, new_seeds, [0, 1, 2], pubs, 3, new_index=2)
    rotate(chain, lock, new_seeds, [1, 2, 3, 5], pubs, 3, new_index=2)
    assert get(chain, lock, "get_committee_index") == [2]
    assert L.parse_committee(*get(chain, lock, "get_committee")) == (3, sorted(pubs))


def test_an_old_rotation_cannot_be_replayed(env, new_committee):
    """Index 1 was applied: the very same signed message, sent again after the committee rotated
    back to the same keys, is refused (420): the index only moves forward."""
    chain, lock, seeds, pubs = env
    _, new_pubs = new_committee
    other = [L.ed25519_public(os.urandom(32)) for _ in range(3)]
    first = L.rotation_payload(global_id=GID, lock=lock, new_index=1, public_keys=other, threshold=2)
    rotate(chain, lock, seeds, [0, 1, 2], None, None, payload=first)
    for _ in range(3):
        chain.seal_block()
    rejected(L.ERR_BAD_ROTATION_INDEX, rotate, chain, lock, seeds, [0, 1, 2], None, None, payload=first)
    rejected(L.ERR_BAD_ROTATION_INDEX, rotate, chain, lock, seeds, [0, 1, 2], new_pubs, 4, new_index=3)
    assert get(chain, lock, "get_committee_index") == [1]
    assert L.parse_committee(*get(chain, lock, "get_committee")) == (2, sorted(other))


def test_rotation_rejections(env, new_committee):
    chain, lock, seeds, pubs = env
    _, new_pubs = new_committee
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, rotate, chain, lock, seeds, [0, 1], new_pubs, 4)  # a minority
    rejected(L.ERR_UNKNOWN_SIGNER, rotate, chain, lock, seeds, [0, 1],
             new_pubs, 4, extra={new_pubs[0]: b"\x01" * 64})  # the new set cannot appoint itself
    bogus = L.sign_payload(L.rotation_payload(global_id=GID, lock=lock, new_index=1, public_keys=new_pubs,
                                              threshold=5), seeds[2])
    rejected(L.ERR_BAD_SIGNATURE, rotate, chain, lock, seeds, [0, 1], new_pubs, 4, extra={pubs[2]: bogus})
    rejected(L.ERR_WRONG_CONTRACT, rotate, chain, lock, seeds, [0, 1, 2], new_pubs, 4,
             lock_addr=Address((0, b"\x01" * 32)))
    rejected(L.ERR_WRONG_NETWORK, rotate, chain, lock, seeds, [0, 1, 2], new_pubs, 4,
             global_id=L.MAINNET_GLOBAL_ID)
    rejected(L.ERR_BAD_ROTATION_INDEX, rotate, chain, lock, seeds, [0, 1, 2], new_pubs, 4, new_index=2)

    def raw(threshold, keys):  # what the off-chain builder refuses to make: the contract refuses it too
        from pytoniq_core import HashMap

        hm = HashMap(256, value_serializer=lambda src, dest: dest)
        for k in keys:
            hm.set_int_key(int.from_bytes(k, "big"), b"")
        return (Builder().store_uint(L.OP_ROTATE, 32).store_int(GID, 32).store_address(lock).store_uint(1, 32)
                .store_uint(threshold, 8).store_maybe_ref(hm.serialize() if keys else None).end_cell())

    for threshold, keys in ((3, new_pubs), (0, new_pubs[:1]), (1, []), (4, new_pubs[:3] + new_pubs[:3])):
        rejected(L.ERR_INVALID_COMMITTEE, rotate, chain, lock, seeds, [0, 1, 2], None, None,
                 payload=raw(threshold, keys))
    with pytest.raises(InputError, match="majority"):
        L.rotation_payload(global_id=GID, lock=lock, new_index=1, public_keys=new_pubs, threshold=3)
    with pytest.raises(InputError, match="distinct"):
        L.rotation_payload(global_id=GID, lock=lock, new_index=1, public_keys=[pubs[0], pubs[0], pubs[1]],
                           threshold=2)
    assert get(chain, lock, "get_committee_index") == [0]
    assert L.parse_committee(*get(chain, lock, "get_committee")) == (3, sorted(pubs))
    # the current committee still releases
    assert exit_code(release(chain, lock, seeds, [0, 1, 2])[0]) == 0


def test_rotation_only_as_an_internal_message_and_large_sets_fit_its_value(env):
    """A rotation sent from outside is not a release (417); an internal one to 101 members
    (threshold 51) is paid by the attached ROTATION_VALUE with room to spare."""
    chain, lock, seeds, pubs = env
    big = [L.ed25519_public(os.urandom(32)) for _ in range(101)]
    payload = L.rotation_payload(global_id=GID, lock=lock, new_index=1, public_keys=big, threshold=51)
    sigs = {pubs[i]: L.sign_payload(payload, seeds[i]) for i in (0, 1, 2)}
    rejected(L.ERR_NOT_RELEASE, chain.send_external, L.release_message(lock, L.release_body(payload, sigs)).to_boc())
    short = Builder().store_uint(L.OP_ROTATE, 32).store_uint(0, 32).end_cell()
    recs = pay(chain, lock, L.ROTATION_VALUE, short)
    assert exit_code(recs[0]) == L.ERR_SHORT_BODY
    before = chain.balance(lock)
    recs = rotate(chain, lock, seeds, [0, 1, 2], big, 51)
    t = tx(recs[0])
    assert t.description.compute_ph.gas_fees < L.ROTATION_VALUE // 4
    assert chain.balance(lock) > before  # the rest of the value stays on the lock
    assert L.parse_committee(*get(chain, lock, "get_committee")) == (51, sorted(big))
