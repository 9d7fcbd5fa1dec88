"""The payment state machine, transition by transition."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InputError
from bridge.payments.state import (
    CONFIRMED,
    CREDITED,
    EXPIRED,
    FINAL_STATES,
    NEW,
    OPEN_STATES,
    SEEN,
    STATES,
    UPDATED,
    Facts,
    PaymentView,
    Settled,
    evaluate,
)

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
EXPIRES = T0 + timedelta(minutes=15)
BEFORE = T0 + timedelta(minutes=5)
AFTER = EXPIRES + timedelta(seconds=1)
TX = b"\xaa" * 32
TX2 = b"\xbb" * 32


def pay(state: str = NEW, **kw) -> PaymentView:
    return PaymentView(id="p1", state=state, amount=1000, credits=500, expires_at=EXPIRES, **kw)


def one(result):
    state, events = result
    assert len(events) == 1
    return state, events[0]


# --- new --------------------------------------------------------------------------------------
def test_new_stays_new_before_expiry():
    assert evaluate(pay(), Facts(), BEFORE) == (NEW, [])


def test_new_expires_when_nothing_seen():
    state, ev = one(evaluate(pay(), Facts(), EXPIRES))  # at expires_at exactly
    assert state == EXPIRED and ev.kind == EXPIRED and ev.previous == NEW and ev.state == EXPIRED
    assert ev.paid_amount == 0 and ev.balance == ""


def test_new_to_seen():
    state, ev = one(evaluate(pay(), Facts(seen=(1000,)), BEFORE))
    assert state == SEEN and ev.kind == SEEN and ev.seen_amount == 1000 and ev.paid_amount == 0


def test_new_to_seen_even_if_first_noticed_after_expiry():
    # lateness is the committee's decision (block time + grace), not the API's
    assert evaluate(pay(), Facts(seen=(1000,)), AFTER)[0] == SEEN


def test_new_to_confirmed_directly():
    state, ev = one(evaluate(pay(), Facts(confirmed=(1000,)), BEFORE))
    assert state == CONFIRMED and ev.kind == CONFIRMED and ev.paid_amount == 1000 and ev.balance == "paid"


def test_new_to_credited_directly():
    state, ev = one(evaluate(pay(), Facts(confirmed=(1000,), settled=(Settled(500, TX),)), BEFORE))
    assert state == CREDITED and ev.previous == NEW and ev.credited == 500 and ev.settlement_tx == TX


# --- seen -------------------------------------------------------------------------------------
def test_seen_stays_seen():
    assert evaluate(pay(SEEN), Facts(seen=(1000,)), BEFORE) == (SEEN, [])
    assert evaluate(pay(SEEN), Facts(seen=(1000,)), AFTER) == (SEEN, [])  # seen in time: no expiry


def test_seen_to_confirmed():
    state, ev = one(evaluate(pay(SEEN), Facts(confirmed=(1000,)), BEFORE))
    assert state == CONFIRMED and ev.previous == SEEN and ev.paid_amount == 1000


def test_seen_back_to_new_when_the_deposit_disappears():
    state, ev = one(evaluate(pay(SEEN), Facts(), BEFORE))
    assert state == NEW and ev.kind == NEW and ev.previous == SEEN


def test_seen_to_expired_when_the_deposit_disappears_after_expiry():
    state, ev = one(evaluate(pay(SEEN), Facts(), AFTER))
    assert state == EXPIRED and ev.previous == SEEN


# --- confirmed --------------------------------------------------------------------------------
def test_confirmed_stays_confirmed_until_credited():
    assert evaluate(pay(CONFIRMED, paid_amount=1000), Facts(confirmed=(1000,)), AFTER) == (CONFIRMED, [])


def test_confirmed_never_goes_back_or_expires():
    # a final deposit cannot vanish; an empty snapshot (e.g. a restarted watcher) changes nothing
    assert evaluate(pay(CONFIRMED, paid_amount=1000), Facts(), AFTER) == (CONFIRMED, [])


def test_confirmed_to_credited():
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=1000), Facts(confirmed=(1000,), settled=(Settled(500, TX),)),
                             AFTER))
    assert state == CREDITED and ev.kind == CREDITED and ev.credited == 500 and ev.settlement_tx == TX
    assert ev.balance == "paid"


def test_underpaid_is_confirmed_and_credited_pro_rata():
    state, ev = one(evaluate(pay(SEEN), Facts(confirmed=(400,)), BEFORE))
    assert state == CONFIRMED and ev.balance == "underpaid" and ev.paid_amount == 400
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=400), Facts(confirmed=(400,), settled=(Settled(200, TX),)),
                             BEFORE))
    assert state == CREDITED and ev.credited == 200


def test_overpaid_balance():
    _, ev = one(evaluate(pay(), Facts(confirmed=(1500,)), BEFORE))
    assert ev.balance == "overpaid"


def test_a_second_deposit_updates_the_figures_without_a_state_change():
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=400), Facts(confirmed=(400, 600)), BEFORE))
    assert state == CONFIRMED and ev.kind == UPDATED and ev.paid_amount == 1000 and ev.balance == "paid"


def test_not_credited_while_a_deposit_is_in_flight():
    facts = Facts(seen=(600,), confirmed=(400,), settled=(Settled(200, TX),))
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=400), facts, BEFORE))
    assert state == CONFIRMED and ev.kind == UPDATED and ev.credited == 200 and ev.settlement_tx == TX


def test_not_credited_until_every_final_deposit_is():
    facts = Facts(confirmed=(400, 600), settled=(Settled(200, TX),))
    assert evaluate(pay(CONFIRMED, paid_amount=1000, credited=200, settlement_tx=TX), facts, BEFORE) == (CONFIRMED, [])
    facts = replace(facts, settled=(Settled(200, TX), Settled(300, TX2)))
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=1000, credited=200, settlement_tx=TX), facts, BEFORE))
    assert state == CREDITED and ev.credited == 500 and ev.settlement_tx == TX2


def test_a_recorded_credit_implies_a_final_deposit():
    # credits recorded but the source watcher still shows the deposit as unconfirmed
    state, ev = one(evaluate(pay(SEEN), Facts(seen=(1000,), settled=(Settled(500, TX),)), BEFORE))
    assert state == CONFIRMED and ev.credited == 500


# --- final states -----------------------------------------------------------------------------
@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_are_final(state):
    facts = Facts(seen=(5,), confirmed=(1000,), settled=(Settled(500, TX),))
    assert evaluate(pay(state), facts, AFTER) == (state, [])
    assert evaluate(pay(state), Facts(), AFTER) == (state, [])


def test_unknown_state_is_an_error():
    with pytest.raises(InputError):
        evaluate(pay("paid"), Facts(), BEFORE)


@pytest.mark.parametrize("bad", [(0,), (-1,), (1.5,), (True,)])
def test_facts_validate_amounts(bad):
    with pytest.raises(InputError):
        Facts(seen=bad)
    with pytest.raises(InputError):
        Facts(confirmed=bad)


def test_state_sets():
    assert set(OPEN_STATES) | FINAL_STATES == set(STATES) and not set(OPEN_STATES) & FINAL_STATES


# --- properties -------------------------------------------------------------------------------
AMOUNTS = st.lists(st.integers(1, 10**20), max_size=3).map(tuple)
SETTLED = st.lists(st.builds(Settled, st.integers(0, 10**6), st.sampled_from([TX, TX2])), max_size=3).map(tuple)


@given(st.sampled_from(STATES), AMOUNTS, AMOUNTS, SETTLED, st.sampled_from([BEFORE, EXPIRES, AFTER]))
def test_evaluate_is_idempotent(state, seen, confirmed, settled, now):
    """Saving what an evaluation returned and evaluating again changes nothing, and events are
    returned exactly when something the loop must save changed."""
    p = pay(state)
    facts = Facts(seen=seen, confirmed=confirmed, settled=settled)
    new_state, events = evaluate(p, facts, now)
    assert new_state in STATES
    if not events:
        assert new_state == state
        return
    ev = events[-1]
    assert ev.state == new_state and ev.previous == state
    saved = replace(p, state=new_state, paid_amount=ev.paid_amount, credited=ev.credited,
                    settlement_tx=ev.settlement_tx)
    assert evaluate(saved, facts, now) == (new_state, [])


@given(st.sampled_from(OPEN_STATES), AMOUNTS, AMOUNTS, SETTLED)
def test_confirmed_or_later_is_never_left_backwards(state, seen, confirmed, settled):
    p = pay(state, paid_amount=1000) if state == CONFIRMED else pay(state)
    new_state, _ = evaluate(p, Facts(seen=seen, confirmed=confirmed, settled=settled), AFTER)
    order = {NEW: 0, SEEN: 1, EXPIRED: 1, CONFIRMED: 2, CREDITED: 3}
    if state == CONFIRMED:
        assert order[new_state] >= 2
    if confirmed or settled:
        assert new_state in (CONFIRMED, CREDITED)
