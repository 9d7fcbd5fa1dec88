"""Unit tests of the FunC lock contract, run on the real TVM: the C++ transaction emulator that
pytvm bundles executes the committed code (contracts/ton/build/lock.boc) inside the local
chain's state machine (relayers.ton.localchain.LocalChain), with @ton/sandbox's mainnet config.
No liteserver, no network. Every exit code of lock.fc is provoked here."""

from __future__ import annotations

import os

import pytest
from pytoniq_core import Address, Builder, Cell
from pytoniq_core.tlb.transaction import Transaction

from relayers.ton import lock as L
from relayers.ton.localchain import LocalChain, MessageRejected
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
    lock = L.lock_address(pubs, 3, MIN)
    chain.mint(lock, 5 * TON, L.state_init(pubs, 3, MIN), L.top_up_body())
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
    threshold, keys = get(chain, lock, "get_committee")
    assert L.parse_committee(threshold, keys) == (3, pubs)


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
    (Cell.empty(), L.ERR_SHORT_BODY),
    (Builder().store_uint(0xABCD, 16).end_cell(), L.ERR_SHORT_BODY),
    (Builder().store_uint(L.OP_DEPOSIT, 32).store_uint(1, 64).store_uint(5, 100).end_cell(), L.ERR_SHORT_BODY),
    (Builder().store_uint(0xDEADBEEF, 32).store_uint(0, 64).store_bytes(b"\x01" * 32).end_cell(), L.ERR_UNKNOWN_OP),
    (Builder().store_uint(0, 32).store_snake_string("a text comment").end_cell(), L.ERR_UNKNOWN_OP),
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
            release_id=RID):
    payload = payload or L.release_payload(lock=lock_addr or lock, destination=DEST, amount=amount,
                                           release_id=release_id)
    sigs = {i: L.sign_release(payload, seeds[i]) for i in signers}
    sigs.update(sig_override or {})
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
    assert chain.balance(DEST) - before == TON  # non-bounceable payment to a fresh address
    assert get(chain, lock, "get_release_count") == [1]
    assert get(chain, lock, "is_released", [int.from_bytes(RID, "big")]) == [-1]
    assert get(chain, lock, "is_released", [int.from_bytes(b"\x08" * 32, "big")]) == [0]
    # the very same message again, or the same release id signed by other members: paid once
    for _ in range(3):
        chain.seal_block()  # past the duplicate window a validator would apply
    rejected(L.ERR_RELEASE_USED, release, chain, lock, seeds, [0, 2, 3])
    rejected(L.ERR_RELEASE_USED, release, chain, lock, seeds, [0, 1, 2])
    assert chain.balance(DEST) - before == TON
    # another release id is another refund; signatures made in any order are all valid
    release(chain, lock, seeds, [1, 2, 3], release_id=b"\x08" * 32)
    # DEST now exists (uninitialized) and pays a few nanotons of storage fee per second held
    assert 2 * TON - 10**4 < chain.balance(DEST) - before <= 2 * TON
    assert get(chain, lock, "get_release_count") == [2]


def test_release_rejections(env):
    chain, lock, seeds, _ = env
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, release, chain, lock, seeds, [0, 1])
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, release, chain, lock, seeds, [])
    rejected(L.ERR_BAD_SIGNATURE, release, chain, lock, seeds, [0, 1], sig_override={2: L.sign_release(
        L.release_payload(lock=lock, destination=DEST, amount=2 * TON, release_id=RID), seeds[2])})
    rejected(L.ERR_BAD_SIGNATURE, release, chain, lock, seeds, [0, 1], sig_override={3: L.sign_release(
        L.release_payload(lock=lock, destination=DEST, amount=TON, release_id=RID), seeds[2])})
    rejected(L.ERR_UNKNOWN_SIGNER, release, chain, lock, seeds, [0, 1], sig_override={7: b"\x01" * 64})
    rejected(L.ERR_WRONG_CONTRACT, release, chain, lock, seeds, [0, 1, 2], lock_addr=Address((0, b"\x01" * 32)))
    rejected(L.ERR_INSUFFICIENT_BALANCE, release, chain, lock, seeds, [0, 1, 2], amount=100 * TON)
    not_release = Builder().store_uint(L.OP_DEPOSIT, 32).store_uint(0, 32).end_cell()
    rejected(L.ERR_NOT_RELEASE, release, chain, lock, seeds, [0, 1, 2], payload=not_release)
    assert get(chain, lock, "get_release_count") == [0]  # nothing was accepted, nothing paid
    assert chain.balance(DEST) == 0


def test_every_exit_code_is_covered():
    """Keeps this module honest when lock.fc grows a new exit code."""
    import inspect
    import sys

    src = inspect.getsource(sys.modules[__name__])
    names = {name for name, value in vars(L).items() if name.startswith("ERR_")}
    assert {n for n in names if f"L.{n}" not in src} == set()
    assert set(L.EXIT_CODES) == {getattr(L, n) for n in names}
