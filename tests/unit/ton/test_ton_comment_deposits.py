"""Plain-transfer deposits to the TON lock (issue 14), on the real TVM (the emulator the lock
contract tests use): a text comment (op 0 + text, what every wallet sends) or an empty body is a
deposit whose logged reference is sha256 of the comment's bytes, so the payment code as the
comment logs the payment's reference; any other text, an empty body, a long (multi-cell) or
bit-ragged comment logs a reference no payment has (refunded as unattributed off chain). The
minimum and the basechain rule still bounce."""

from __future__ import annotations

import hashlib

import pytest
from pytoniq_core import Address, Builder, Cell

from bridge.errors import InputError
from bridge.payments.codes import new_code, reference_for_code
from relayers.ton import lock as L
from relayers.ton.watcher import deposit_of
from tests.unit.ton.test_ton_lock_contract import MIN, PAYER, TON, committee, env, exit_code, get, pay, tx  # noqa: F401


def logged(recs, lock):
    """The deposit log of the lock's transaction (asserting it succeeded and nothing bounced)."""
    t = tx(recs[0])
    assert exit_code(recs[0]) == 0 and not t.description.aborted, exit_code(recs[0])
    assert len(recs) == 1  # nothing bounced
    dep = deposit_of(t, lock)
    assert dep is not None
    return dep[1]


def test_the_payment_code_as_a_text_comment_logs_the_payments_reference(env):
    chain, lock, *_ = env
    code = new_code()
    body = L.comment_body(code)
    lg = logged(pay(chain, lock, TON + 7, body), lock)
    assert lg.reference == reference_for_code(code) == L.comment_reference(body)
    assert (lg.seq, lg.amount, lg.query_id) == (0, TON + 7, 0)
    assert lg.sender.hash_part == PAYER.hash_part and lg.sender.wc == 0
    # deposits of both kinds share the one dense counter
    lg2 = logged(pay(chain, lock, MIN, L.deposit_body(b"\x05" * 32, query_id=9)), lock)
    lg3 = logged(pay(chain, lock, MIN, L.comment_body(code)), lock)  # paying twice is two deposits
    assert (lg2.seq, lg3.seq, lg3.reference) == (1, 2, reference_for_code(code))
    assert get(chain, lock, "get_deposit_seq") == [3]


def test_an_empty_body_is_a_deposit_of_the_empty_texts_hash(env):
    chain, lock, *_ = env
    lg = logged(pay(chain, lock, TON, Cell.empty()), lock)
    assert lg.reference == hashlib.sha256(b"").digest() == L.comment_reference(Cell.empty())
    # op 0 with no text: the same reference (an empty comment)
    lg = logged(pay(chain, lock, TON, Builder().store_uint(0, 32).end_cell()), lock)
    assert lg.reference == hashlib.sha256(b"").digest()
    assert get(chain, lock, "get_deposit_seq") == [2]


@pytest.mark.parametrize("text", ["cb" + "0" * 12, "CB0000000000000 ", " CB000000000000", "hello, world",
                                  "платёж ✓", "x" * 123])
def test_any_other_one_cell_text_logs_its_own_hash(env, text):
    """A mistyped code (lower case, spaces), a greeting, UTF-8: sha256 of the exact bytes, a
    reference no payment has (codes are upper case, 14 characters)."""
    chain, lock, *_ = env
    body = L.comment_body(text)
    assert not body.refs  # 123 bytes still fit the first cell
    lg = logged(pay(chain, lock, TON, body), lock)
    assert lg.reference == hashlib.sha256(text.encode()).digest() == L.comment_reference(body)


def test_a_multi_cell_comment_logs_the_hash_of_its_cell_never_a_code(env):
    """Past 123 bytes wallets continue the text in a reference: the lock logs the representation
    hash of the comment's cell, which commits to all of the text and is never a payment's
    reference -- not even when the first cell holds exactly a code and more text follows."""
    chain, lock, *_ = env
    long = "y" * 300
    body = L.comment_body(long)
    assert len(body.refs) == 1
    lg = logged(pay(chain, lock, TON, body), lock)
    first = long[:123].encode()  # what fits after the op; the rest is in the reference
    text_cell = Builder().store_bytes(first).store_ref(body.refs[0]).end_cell()
    assert lg.reference == text_cell.hash == L.comment_reference(body)
    assert lg.reference not in {hashlib.sha256(long.encode()).digest(), hashlib.sha256(long[:123].encode()).digest()}

    code = new_code()
    tail = Builder().store_bytes(b" and more").end_cell()
    sneaky = Builder().store_uint(0, 32).store_bytes(code.encode()).store_ref(tail).end_cell()
    lg = logged(pay(chain, lock, TON, sneaky), lock)
    assert lg.reference != reference_for_code(code)
    assert lg.reference == Builder().store_bytes(code.encode()).store_ref(tail).end_cell().hash
    assert lg.reference == L.comment_reference(sneaky)
    # an empty body carrying only a reference: the same rule (no op, the "text" is the cell)
    only_ref = Builder().store_ref(tail).end_cell()
    lg = logged(pay(chain, lock, TON, only_ref), lock)
    assert lg.reference == only_ref.hash == L.comment_reference(only_ref)


def test_a_comment_of_ragged_bits_is_logged_not_thrown(env):
    """Text bits that are not whole bytes cannot be sha256'd as text: the lock logs the cell's
    representation hash instead (an unattributed deposit: refunded), so even a non-bounceable
    message like that is never kept without a log."""
    chain, lock, *_ = env
    body = Builder().store_uint(0, 32).store_bytes(b"CB").store_uint(5, 3).end_cell()
    lg = logged(pay(chain, lock, TON, body, bounce=False), lock)
    assert lg.reference == Builder().store_bytes(b"CB").store_uint(5, 3).end_cell().hash
    assert lg.reference == L.comment_reference(body)


@pytest.mark.parametrize("body", [Cell.empty(), L.comment_body("CB0000000000000")])
def test_plain_transfers_below_the_minimum_bounce(env, body):
    chain, lock, *_ = env
    recs = pay(chain, lock, MIN - 1, body)
    assert exit_code(recs[0]) == L.ERR_TOO_SMALL
    assert tx(recs[0]).description.aborted and deposit_of(tx(recs[0]), lock) is None
    bounce = tx(recs[1])
    assert bounce.account_addr == PAYER.hash_part and bounce.in_msg.info.bounced
    assert get(chain, lock, "get_deposit_seq") == [0]
    # exactly the minimum is a deposit
    assert logged(pay(chain, lock, MIN, body), lock).amount == MIN


def test_a_plain_transfer_from_another_workchain_is_refused(env):
    chain, lock, *_ = env
    master = Address((-1, b"\x42" * 32))
    recs = pay(chain, lock, TON, L.comment_body(new_code()), src=master, bounce=False)
    assert exit_code(recs[0]) == L.ERR_NOT_BASECHAIN and deposit_of(tx(recs[0]), lock) is None
    assert get(chain, lock, "get_deposit_seq") == [0]


def test_non_zero_unknown_ops_still_throw(env):
    """What remains unlogged: a non-zero unknown op throws (402) -- bounced if bounceable, kept
    without a log if not (documented in lock.fc)."""
    chain, lock, *_ = env
    recs = pay(chain, lock, TON, Builder().store_uint(0x0F8A7EA5, 32).store_uint(0, 64).end_cell(), bounce=False)
    assert exit_code(recs[0]) == L.ERR_UNKNOWN_OP and len(recs) == 1 and deposit_of(tx(recs[0]), lock) is None
    assert get(chain, lock, "get_deposit_seq") == [0]


def test_comment_helpers_refuse_what_is_not_a_comment():
    with pytest.raises(InputError):
        L.comment_reference(L.deposit_body(b"\x01" * 32))
    with pytest.raises(InputError):
        L.comment_reference(Builder().store_uint(0, 8).end_cell())
    with pytest.raises(InputError):
        L.comment_body(b"CB")  # type: ignore[arg-type]
    code = new_code()
    assert L.comment_reference(L.comment_body(code)) == reference_for_code(code)
