"""Issue 15 (TEP-74 jettons on TON), on the real TVM (the local chain's emulator, no network):
creditbridge's jetton minter and wallet (contracts/ton/jetton_*.fc), the lock's jetton set-up
(TEP-89), jetton deposits (transfer_notification only from the lock's own wallet of a
configured master), and committee-signed jetton releases (CBR3, the used-id set of CBR2)."""

from __future__ import annotations

import os

import pytest
from pytoniq_core import Address, Builder

from bridge.payments.codes import new_code, reference_for_code
from devnet.ton.localchain import LOCAL_GLOBAL_ID as GID
from devnet.ton.localchain import LocalChain, MessageRejected
from relayers.ton import jetton as J
from relayers.ton import lock as L
from relayers.ton.watcher import deposit_of, jetton_deposit_of

from tests.unit.ton.test_ton_lock_contract import exit_code, get, rejected, tx

MIN = 10**7
TON = 10**9
USDT = 10**6  # 6 decimals
ADMIN = Address((0, b"\xad" * 32))
PAYER = Address((0, b"\x42" * 32))
DEST = Address((0, b"\x77" * 32))
ANYONE = Address((0, b"\x55" * 32))


def deploy_minter(chain, uri):
    content = J.content_cell(uri)
    master = J.minter_address(ADMIN, content)
    chain.mint(master, TON, J.minter_state_init(ADMIN, content))
    return master


def mint(chain, master, owner, amount):
    return chain.send_internal(ADMIN, master, TON // 5, body=J.mint_body(owner, amount))


def jetton_balance(chain, master, owner) -> int:
    w = J.wallet_address(owner, master)
    if chain.shard_account(w.hash_part) is None:
        return 0
    return int(get(chain, w, "get_wallet_data")[0])


@pytest.fixture(scope="module")
def committee():
    seeds = [os.urandom(32) for _ in range(4)]
    return seeds, [L.ed25519_public(s) for s in seeds]


@pytest.fixture
def env(committee):
    seeds, pubs = committee
    chain = LocalChain()
    usdt = deploy_minter(chain, "https://example.invalid/usdt.json")
    other = deploy_minter(chain, "https://example.invalid/fake-usdt.json")
    lock = L.lock_address(pubs, 3, MIN, global_id=GID, jetton_masters=[usdt])
    chain.mint(lock, 5 * TON, L.state_init(pubs, 3, MIN, global_id=GID, jetton_masters=[usdt]), L.top_up_body())
    chain.send_internal(ANYONE, lock, L.JETTON_SETUP_VALUE, body=L.jetton_setup_body(usdt))
    mint(chain, usdt, PAYER, 1000 * USDT)
    mint(chain, other, PAYER, 10**6 * USDT)
    chain.seal_block()
    return chain, lock, usdt, other, seeds


def pay(chain, master, lock, amount, payload, *, owner=PAYER, forward=J.PAYMENT_FORWARD_TON):
    body = J.transfer_body(amount, lock, response=owner, forward_ton_amount=forward, forward_payload=payload)
    return chain.send_internal(owner, J.wallet_address(owner, master), J.TRANSFER_VALUE, body=body)


def lock_txs(recs, lock):
    return [tx(r) for r in recs if r.account == lock.hash_part]


def test_minter_and_wallets_follow_tep74(env):
    chain, lock, usdt, other, _ = env
    total, mintable, admin, _content, code = get(chain, usdt, "get_jetton_data")
    assert (total, mintable) == (1000 * USDT, -1) and code.hash == J.wallet_code().hash
    from pytoniq_core import Slice

    (addr,) = get(chain, usdt, "get_wallet_address", [Builder().store_address(PAYER).end_cell().begin_parse()])
    assert (addr.load_address() if isinstance(addr, Slice) else addr.begin_parse().load_address()) == \
        J.wallet_address(PAYER, usdt)
    bal, owner, master = J.parse_wallet_data(get(chain, J.wallet_address(PAYER, usdt), "get_wallet_data"))
    assert (bal, owner, master) == (1000 * USDT, PAYER, usdt)
    # a plain transfer between two owners; excesses back to the sender
    chain.send_internal(PAYER, J.wallet_address(PAYER, usdt), J.TRANSFER_VALUE,
                        body=J.transfer_body(5 * USDT, DEST, response=PAYER))
    assert jetton_balance(chain, usdt, DEST) == 5 * USDT and jetton_balance(chain, usdt, PAYER) == 995 * USDT
    # only the owner moves a wallet's jettons; nobody sends more than the balance
    recs = chain.send_internal(ANYONE, J.wallet_address(PAYER, usdt), J.TRANSFER_VALUE,
                               body=J.transfer_body(5 * USDT, ANYONE, response=ANYONE))
    assert exit_code(recs[0]) == 705
    recs = chain.send_internal(DEST, J.wallet_address(DEST, usdt), J.TRANSFER_VALUE,
                               body=J.transfer_body(6 * USDT, ANYONE, response=DEST))
    assert exit_code(recs[0]) == 706
    # burn: the supply shrinks
    chain.send_internal(DEST, J.wallet_address(DEST, usdt), J.TRANSFER_VALUE, body=J.burn_body(2 * USDT, response=DEST))
    assert jetton_balance(chain, usdt, DEST) == 3 * USDT
    assert get(chain, usdt, "get_jetton_data")[0] == 998 * USDT
    # only the admin mints
    recs = chain.send_internal(ANYONE, usdt, TON, body=J.mint_body(ANYONE, 1))
    assert exit_code(recs[0]) == 73


def test_lock_learns_its_wallet_from_the_master_once(env):
    chain, lock, usdt, other, _ = env
    wallet, held = get(chain, lock, "get_jetton", [int.from_bytes(usdt.hash_part, "big")])
    assert wallet == int.from_bytes(J.wallet_address(lock, usdt).hash_part, "big") and held == 0
    assert get(chain, lock, "get_jetton", [int.from_bytes(other.hash_part, "big")]) == [-1, 0]
    # set up twice, or for a master not configured: refused
    recs = chain.send_internal(ANYONE, lock, L.JETTON_SETUP_VALUE, body=L.jetton_setup_body(usdt))
    assert exit_code(recs[0]) == L.ERR_JETTON_SET_UP
    recs = chain.send_internal(ANYONE, lock, L.JETTON_SETUP_VALUE, body=L.jetton_setup_body(other))
    assert exit_code(recs[0]) == L.ERR_UNKNOWN_MASTER
    # a take_wallet_address from anyone but the master: refused (cannot redirect the wallet)
    forged = (Builder().store_uint(J.OP_TAKE_WALLET_ADDRESS, 32).store_uint(0, 64).store_address(ANYONE)
              .store_bit(0).end_cell())
    recs = chain.send_internal(ANYONE, lock, TON // 10, body=forged)
    assert exit_code(recs[0]) == L.ERR_UNKNOWN_MASTER
    recs = chain.send_internal(usdt, lock, TON // 10, body=forged)  # even the master, once set
    assert exit_code(recs[0]) == L.ERR_JETTON_SET_UP
    data = L.parse_lock_data(L.initial_data([os.urandom(32)], 1, MIN, global_id=GID, jetton_masters=[usdt]))
    assert data.jettons == {usdt.hash_part: (None, 0)}


def test_jetton_paid_with_the_code_is_logged_with_the_reference(env):
    chain, lock, usdt, *_ = env
    code = new_code()
    recs = pay(chain, usdt, lock, 25 * USDT, L.comment_body(code))
    (t,) = lock_txs(recs, lock)
    index, lg = jetton_deposit_of(t, lock)
    assert deposit_of(t, lock) is None  # not a TON deposit
    assert (lg.seq, lg.amount, lg.reference, lg.master) == (0, 25 * USDT, reference_for_code(code), usdt.hash_part)
    assert lg.sender == PAYER
    assert jetton_balance(chain, usdt, lock) == 25 * USDT
    assert get(chain, lock, "get_jetton", [int.from_bytes(usdt.hash_part, "big")])[1] == 25 * USDT
    # the binary deposit body works as forward payload too, and payload_reference mirrors lock.fc
    ref = os.urandom(32)
    (t,) = lock_txs(pay(chain, usdt, lock, USDT, L.deposit_body(ref, 9)), lock)
    _, lg = jetton_deposit_of(t, lock)
    assert (lg.seq, lg.reference, lg.query_id) == (1, ref, 9)
    assert L.payload_reference(L.deposit_body(ref)) == ref
    assert L.payload_reference(L.comment_body(code)) == reference_for_code(code)


@pytest.mark.parametrize("payload", [None, L.comment_body("not a code"),
                                     Builder().store_uint(0xDEAD, 16).end_cell(),
                                     Builder().store_uint(0xDEADBEEF, 32).store_uint(1, 64).end_cell()])
def test_jettons_without_a_reference_are_logged_unattributed(env, payload):
    chain, lock, usdt, *_ = env
    (t,) = lock_txs(pay(chain, usdt, lock, 3 * USDT, payload), lock)
    _, lg = jetton_deposit_of(t, lock)
    assert lg.amount == 3 * USDT and lg.reference == L.payload_reference(payload)
    from bridge.payments.codes import is_code  # noqa: F401  (no payment's reference: not sha256 of a code)
    assert jetton_balance(chain, usdt, lock) == 3 * USDT


def test_forged_notification_from_another_contract_credits_nothing(env):
    chain, lock, usdt, *_ = env
    code = new_code()
    forged = J.transfer_notification_body(10**6 * USDT, PAYER, L.comment_body(code))
    for src in (PAYER, usdt, J.wallet_address(PAYER, usdt), ANYONE):
        recs = chain.send_internal(src, lock, TON, body=forged)
        assert exit_code(recs[0]) == L.ERR_UNKNOWN_JETTON_WALLET
        assert jetton_deposit_of(tx(recs[0]), lock) is None and deposit_of(tx(recs[0]), lock) is None
    assert get(chain, lock, "get_deposit_seq") == [0]
    assert get(chain, lock, "get_jetton", [int.from_bytes(usdt.hash_part, "big")])[1] == 0


def test_notification_from_a_wallet_of_another_master_credits_nothing(env):
    chain, lock, usdt, other, _ = env
    # a real transfer of the OTHER jetton to the lock: its wallet of `other` notifies the lock
    recs = pay(chain, other, lock, 10**6 * USDT, L.comment_body(new_code()))
    (t,) = lock_txs(recs, lock)
    assert t.description.compute_ph.exit_code == L.ERR_UNKNOWN_JETTON_WALLET
    assert jetton_deposit_of(t, lock) is None
    assert get(chain, lock, "get_deposit_seq") == [0]
    assert get(chain, lock, "get_jetton", [int.from_bytes(usdt.hash_part, "big")])[1] == 0


def jrelease(chain, lock, master, seeds, signers, *, amount, release_id, dest=DEST, global_id=GID):
    payload = L.jetton_release_payload(global_id=global_id, lock=lock, destination=dest, amount=amount,
                                       release_id=release_id, master=master)
    sigs = {L.ed25519_public(seeds[i]): L.sign_release(payload, seeds[i]) for i in signers}
    return chain.send_external(L.release_message(lock, L.release_body(payload, sigs)).to_boc())


def test_jetton_release_pays_once_in_jettons(env):
    chain, lock, usdt, other, seeds = env
    pay(chain, usdt, lock, 40 * USDT, L.comment_body(new_code()))
    rid = os.urandom(32)
    ton_before = chain.balance(lock)
    jrelease(chain, lock, usdt, seeds, [0, 1, 2], amount=15 * USDT, release_id=rid)
    assert jetton_balance(chain, usdt, DEST) == 15 * USDT
    assert jetton_balance(chain, usdt, lock) == 25 * USDT
    assert get(chain, lock, "get_jetton", [int.from_bytes(usdt.hash_part, "big")])[1] == 25 * USDT
    assert get(chain, lock, "is_released", [int.from_bytes(rid, "big")]) == [-1]
    # the lock paid the transfer's TON from its reserve (the excess came back), a few hundredths
    assert 0 < ton_before - chain.balance(lock) < L.JETTON_RELEASE_VALUE
    for _ in range(3):
        chain.seal_block()
    # replay, the same id by other members, or as a TON release: refused (one used-id set)
    rejected(L.ERR_RELEASE_USED, jrelease, chain, lock, usdt, seeds, [0, 1, 2], amount=15 * USDT, release_id=rid)
    rejected(L.ERR_RELEASE_USED, jrelease, chain, lock, usdt, seeds, [1, 2, 3], amount=15 * USDT, release_id=rid)
    from tests.unit.ton.test_ton_lock_contract import release

    rejected(L.ERR_RELEASE_USED, release, chain, lock, seeds, [0, 1, 2], release_id=rid)
    assert jetton_balance(chain, usdt, DEST) == 15 * USDT


def test_jetton_release_rejections(env):
    chain, lock, usdt, other, seeds = env
    pay(chain, usdt, lock, 10 * USDT, None)
    rid = os.urandom(32)
    rejected(L.ERR_INSUFFICIENT_BALANCE, jrelease, chain, lock, usdt, seeds, [0, 1, 2], amount=10 * USDT + 1,
             release_id=rid)
    rejected(L.ERR_UNKNOWN_MASTER, jrelease, chain, lock, other, seeds, [0, 1, 2], amount=USDT, release_id=rid)
    rejected(L.ERR_NOT_ENOUGH_SIGNATURES, jrelease, chain, lock, usdt, seeds, [0, 1], amount=USDT, release_id=rid)
    rejected(L.ERR_WRONG_NETWORK, jrelease, chain, lock, usdt, seeds, [0, 1, 2], amount=USDT, release_id=rid,
             global_id=-239)
    assert jetton_balance(chain, usdt, DEST) == 0


def test_jetton_release_before_set_up_is_refused(committee):
    seeds, pubs = committee
    chain = LocalChain()
    usdt = deploy_minter(chain, "https://example.invalid/usdt.json")
    lock = L.lock_address(pubs, 3, MIN, global_id=GID, jetton_masters=[usdt])
    chain.mint(lock, 5 * TON, L.state_init(pubs, 3, MIN, global_id=GID, jetton_masters=[usdt]), L.top_up_body())
    rejected(L.ERR_JETTON_NOT_SET_UP, jrelease, chain, lock, usdt, seeds, [0, 1, 2], amount=USDT,
             release_id=os.urandom(32))
    bad = (Builder().store_uint(J.OP_TAKE_WALLET_ADDRESS, 32).store_uint(0, 64).store_uint(0, 2).store_bit(0)
           .end_cell())
    recs = chain.send_internal(usdt, lock, TON // 10, body=bad)  # the master answering addr_none
    assert exit_code(recs[0]) == L.ERR_BAD_JETTON_WALLET


def test_a_jetton_release_the_wallet_refuses_restores_the_lock_s_record(env):
    chain, lock, usdt, other, seeds = env
    pay(chain, usdt, lock, 10 * USDT, None)
    master_id = int.from_bytes(usdt.hash_part, "big")
    # the destination is on the masterchain: the lock's jetton wallet refuses (333) and bounces
    recs = jrelease(chain, lock, usdt, seeds, [0, 1, 2], amount=4 * USDT, release_id=os.urandom(32),
                    dest=Address((-1, b"\x77" * 32)))
    wallet_tx = [tx(r) for r in recs if r.account == J.wallet_address(lock, usdt).hash_part]
    assert wallet_tx and wallet_tx[0].description.compute_ph.exit_code == 333
    assert jetton_balance(chain, usdt, lock) == 10 * USDT
    assert get(chain, lock, "get_jetton", [master_id])[1] == 10 * USDT  # the record follows the wallet
    # a bounce from anyone else changes nothing
    fake_bounce = (Builder().store_uint(0xFFFFFFFF, 32).store_uint(J.OP_TRANSFER, 32).store_uint(0, 64)
                   .store_coins(10**6 * USDT).end_cell())
    chain.send_internal(ANYONE, lock, TON // 10, body=fake_bounce, bounced=True, bounce=False)
    assert get(chain, lock, "get_jetton", [master_id])[1] == 10 * USDT
