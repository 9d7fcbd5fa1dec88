"""The payment state machine and the deposit rule, state by state and transition by transition."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import InputError
from bridge.payments import rules
from bridge.payments.late import CREDIT as LATE_CREDIT
from bridge.payments.late import HOLD, LateDecision, decide_late
from bridge.payments.state import (
    CONFIRMED,
    CREDITED,
    EXPIRED,
    FINAL_STATES,
    INVALID,
    LATE,
    NEW,
    OPEN_STATES,
    OVERPAID,
    SEEN,
    STATES,
    UNDERPAID,
    UPDATED,
    Deposit,
    Facts,
    REOPENED_BY_LATE_CREDIT,
    PaymentView,
    Settled,
    evaluate,
)
from bridge.pricing.credits import credits_for_deposit

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
EXPIRES = T0 + timedelta(minutes=15)
EXP_TS = int(EXPIRES.timestamp())
BEFORE = T0 + timedelta(minutes=5)
B_TS = int(BEFORE.timestamp())
AFTER = EXPIRES + timedelta(seconds=1)
TX = b"\xaa" * 32
TX2 = b"\xbb" * 32
SRC = b"\x01" * 32


def pay(state: str = NEW, **kw) -> PaymentView:
    return PaymentView(id="p1", state=state, amount=1000, credits=500, expires_at=EXPIRES, chain="ethereum",
                       token="ETH", **kw)


def dep(seq: int, amount: int, ts: int = B_TS, *, final: bool = True, settled: int | None = None,
        tx: bytes = TX, chain: str = "", token: str = "", late: LateDecision | None = None) -> Deposit:
    return Deposit((SRC, seq), amount, ts, final, chain, token,
                   Settled(settled, tx) if settled is not None else None, late)


def facts(*deposits: Deposit, horizon: int | None = None) -> Facts:
    return Facts(tuple(deposits), horizon)


def one(result):
    state, events = result
    assert len(events) == 1
    return state, events[0]


def saved(p: PaymentView, state: str, ev) -> PaymentView:
    return replace(p, state=state, paid_amount=ev.paid_amount, credited=ev.credited, settlement_tx=ev.settlement_tx,
                   refundable=ev.refundable)


# --- the deposit rule ---------------------------------------------------------------------------
TERMS = rules.Terms("ethereum", "ETH", 1000, 500, EXPIRES)


def fact(seq, amount, ts=B_TS, chain="ethereum", token="ETH"):
    return rules.DepositFact((SRC, seq), chain, token, amount, ts)


def test_rule_full_payment_is_credited_in_full():
    assert rules.decide(TERMS, fact(1, 1000), [], 0) == rules.Decision(rules.CREDIT, 500, 1000, 0)


def test_rule_overpayment_credits_the_quote_and_holds_the_excess():
    d = rules.decide(TERMS, fact(1, 1500), [], 0)
    assert d == rules.Decision(rules.CREDIT, 500, 1000, 500) and d.refund_purpose == rules.EXCESS


def test_rule_partial_deposits_add_up_without_losing_a_floor():
    deps = [fact(1, 333), fact(2, 333), fact(3, 334)]
    ds = rules.decide_all(TERMS, deps, 0)
    assert [d.credits for d in ds] == [166, 167, 167]  # per-deposit floors would give 166+166+167
    assert sum(d.credits for d in ds) == 500 and all(d.refundable == 0 for d in ds)


def test_rule_a_deposit_after_full_payment_is_excess():
    d = rules.decide(TERMS, fact(2, 700), [fact(1, 1000)], 0)
    assert d == rules.Decision(rules.EXCESS, 0, 0, 700) and d.refund_purpose == rules.EXCESS


def test_rule_top_up_crossing_the_quote():
    d = rules.decide(TERMS, fact(2, 700), [fact(1, 600)], 0)
    assert d == rules.Decision(rules.CREDIT, 200, 400, 300)


def test_rule_order_is_by_deposit_id_not_by_the_list():
    later = fact(2, 1000)
    assert rules.decide(TERMS, fact(1, 1000), [later], 0).credits == 500  # later ones are ignored


def test_rule_late_and_grace():
    assert rules.decide(TERMS, fact(1, 1000, EXP_TS), [], 0).outcome == rules.CREDIT  # exactly at expiry
    late = rules.decide(TERMS, fact(1, 1000, EXP_TS + 1), [], 0)
    assert late == rules.Decision(rules.LATE, 0, 0, 1000) and late.refund_purpose == rules.LATE
    assert rules.decide(TERMS, fact(1, 1000, EXP_TS + 30), [], 30).outcome == rules.CREDIT


def test_rule_late_and_invalid_deposits_do_not_count_for_later_ones():
    earlier = [fact(1, 900, EXP_TS + 5), fact(2, 900, chain="ton", token="TON")]
    assert rules.decide(TERMS, fact(3, 1000, EXP_TS), earlier, 0).credits == 500


@pytest.mark.parametrize("chain,token", [("ton", "ETH"), ("ethereum", "TON")])
def test_rule_wrong_chain_or_token_is_invalid(chain, token):
    d = rules.decide(TERMS, fact(1, 1000, chain=chain, token=token), [], 0)
    assert d == rules.Decision(rules.INVALID, 0, 0, 1000) and d.refund_purpose == rules.INVALID


def test_rule_dust_is_carried_to_the_next_deposit():
    d1 = rules.decide(TERMS, fact(1, 1), [], 0)
    assert d1 == rules.Decision(rules.BELOW_ONE_CREDIT, 0, 1, 0) and d1.refund_purpose is None
    assert rules.decide(TERMS, fact(2, 1), [fact(1, 1)], 0).credits == 1


@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(-5, 5), st.booleans()), max_size=6),
       st.integers(1, 10**6), st.integers(1, 10**6))
def test_rule_never_over_credits_and_never_loses_a_unit(items, amount, credits):
    terms = rules.Terms("ethereum", "ETH", amount, credits, EXPIRES)
    deps = [fact(i, a, EXP_TS + dt, token="ETH" if ok else "TON") for i, (a, dt, ok) in enumerate(items)]
    ds = rules.decide_all(terms, deps, 0)
    counted_total = sum(d.amount for d in deps if rules.is_counted(terms, d, 0))
    assert sum(x.credits for x in ds) == credits_for_deposit(min(counted_total, amount), amount, credits) <= credits
    for d, x in zip(deps, ds):
        assert x.counted + x.refundable == d.amount and x.counted >= 0 and x.refundable >= 0
    assert sum(x.counted for x in ds) == min(counted_total, amount)


# --- new --------------------------------------------------------------------------------------
def test_new_stays_new_before_expiry():
    assert evaluate(pay(), facts(), BEFORE) == (NEW, [])


def test_new_stays_new_at_expiry_exactly_a_deposit_then_still_counts():
    assert evaluate(pay(), facts(), EXPIRES) == (NEW, [])
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, EXP_TS)), EXPIRES + timedelta(minutes=1)))
    assert state == CONFIRMED and ev.paid_amount == 1000 and ev.expected_credits == 500


def test_new_expires_once_the_window_closed():
    state, ev = one(evaluate(pay(), facts(), AFTER))
    assert state == EXPIRED and ev.kind == EXPIRED and ev.previous == NEW and ev.paid_amount == 0 and ev.balance == ""


def test_window_closes_on_final_chain_time_not_wall_clock():
    # wall clock is past expiry but the chain's final blocks are not: a deposit may still come
    assert evaluate(pay(), facts(horizon=EXP_TS), AFTER) == (NEW, [])
    assert evaluate(pay(), facts(horizon=EXP_TS + 1), BEFORE)[0] == EXPIRED


def test_new_to_seen():
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, final=False)), BEFORE))
    assert state == SEEN and ev.kind == SEEN and ev.seen_amount == 1000 and ev.paid_amount == 0


def test_new_to_seen_even_if_first_noticed_after_expiry():
    assert evaluate(pay(), facts(dep(1, 1000, EXP_TS + 60, final=False)), AFTER)[0] == SEEN


def test_new_to_confirmed_directly():
    state, ev = one(evaluate(pay(), facts(dep(1, 1000)), BEFORE))
    assert state == CONFIRMED and ev.kind == CONFIRMED and ev.paid_amount == 1000 and ev.balance == "paid"


def test_new_to_credited_directly():
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, settled=500)), BEFORE))
    assert state == CREDITED and ev.previous == NEW and ev.credited == 500 and ev.settlement_tx == TX


def test_new_to_underpaid_and_overpaid_directly():
    assert evaluate(pay(), facts(dep(1, 400)), BEFORE)[0] == UNDERPAID
    state, ev = one(evaluate(pay(), facts(dep(1, 1500)), BEFORE))
    assert state == OVERPAID and ev.excess == 500 and ev.refundable == 500 and ev.balance == "overpaid"


# --- seen -------------------------------------------------------------------------------------
def test_seen_stays_seen():
    assert evaluate(pay(SEEN), facts(dep(1, 1000, final=False)), BEFORE) == (SEEN, [])
    assert evaluate(pay(SEEN), facts(dep(1, 1000, final=False)), AFTER) == (SEEN, [])  # in flight: no expiry


def test_seen_to_confirmed():
    state, ev = one(evaluate(pay(SEEN), facts(dep(1, 1000)), BEFORE))
    assert state == CONFIRMED and ev.previous == SEEN and ev.paid_amount == 1000


def test_seen_back_to_new_when_the_deposit_disappears():
    state, ev = one(evaluate(pay(SEEN), facts(), BEFORE))
    assert state == NEW and ev.kind == NEW and ev.previous == SEEN


def test_seen_to_expired_when_the_deposit_disappears_after_expiry():
    state, ev = one(evaluate(pay(SEEN), facts(), AFTER))
    assert state == EXPIRED and ev.previous == SEEN


def test_seen_to_late():
    state, ev = one(evaluate(pay(SEEN), facts(dep(1, 1000, EXP_TS + 1)), AFTER))
    assert state == LATE and ev.late_amount == 1000 and ev.refundable == 1000 and ev.paid_amount == 0
    assert ev.expected_credits == 0


def test_seen_to_invalid_once_the_window_closed():
    wrong = dep(1, 1000, chain="ton", token="TON")
    state, ev = one(evaluate(pay(SEEN), facts(wrong), AFTER))
    assert state == INVALID and ev.invalid_amount == 1000 and ev.refundable == 1000


def test_invalid_deposit_before_expiry_keeps_the_payment_open():
    wrong = dep(1, 1000, chain="ton", token="TON")
    state, ev = one(evaluate(pay(), facts(wrong), BEFORE))
    assert state == NEW and ev.kind == UPDATED and ev.invalid_amount == 1000
    # ... and a correct payment afterwards still counts
    p = saved(pay(), state, ev)
    assert evaluate(p, facts(wrong, dep(2, 1000)), BEFORE)[0] == CONFIRMED


# --- underpaid ----------------------------------------------------------------------------------
def test_underpaid_stays_open_for_top_ups_until_expiry():
    p = pay(UNDERPAID, paid_amount=400)
    assert evaluate(p, facts(dep(1, 400)), BEFORE) == (UNDERPAID, [])
    assert evaluate(p, facts(dep(1, 400, settled=200)), BEFORE)[0] == UNDERPAID  # partial credit recorded


def test_several_partial_deposits_sum_up_to_confirmed_and_credited():
    p = pay()
    state, ev = one(evaluate(p, facts(dep(1, 300)), BEFORE))
    assert state == UNDERPAID and ev.balance == "underpaid" and ev.expected_credits == 150
    p = saved(p, state, ev)
    state, ev = one(evaluate(p, facts(dep(1, 300), dep(2, 300)), BEFORE))
    assert state == UNDERPAID and ev.kind == UPDATED and ev.paid_amount == 600
    p = saved(p, state, ev)
    # a top-up in flight changes nothing to save
    assert evaluate(p, facts(dep(1, 300), dep(2, 300), dep(3, 400, final=False)), BEFORE) == (UNDERPAID, [])
    state, ev = one(evaluate(p, facts(dep(1, 300), dep(2, 300), dep(3, 400)), BEFORE))
    assert state == CONFIRMED and ev.paid_amount == 1000 and ev.expected_credits == 500 and ev.refundable == 0
    p = saved(p, state, ev)
    done = facts(dep(1, 300, settled=150), dep(2, 300, settled=150, tx=TX2), dep(3, 400, settled=200, tx=TX2))
    state, ev = one(evaluate(p, done, BEFORE))
    assert state == CREDITED and ev.credited == 500 and ev.settlement_tx == TX2


def test_underpaid_top_up_overpays():
    state, ev = one(evaluate(pay(UNDERPAID, paid_amount=600), facts(dep(1, 600), dep(2, 600)), BEFORE))
    assert state == OVERPAID and ev.excess == 200 and ev.refundable == 200 and ev.expected_credits == 500


def test_underpaid_at_window_close_is_credited_pro_rata():
    p = pay(UNDERPAID, paid_amount=400)
    assert evaluate(p, facts(dep(1, 400)), AFTER)[0] == UNDERPAID  # its credit is not recorded yet
    state, ev = one(evaluate(p, facts(dep(1, 400, settled=200)), AFTER))
    assert state == CREDITED and ev.balance == "underpaid" and ev.credited == 200


def test_underpaid_waits_for_an_in_time_deposit_still_in_flight():
    p = pay(UNDERPAID, paid_amount=400, credited=200, settlement_tx=TX)
    in_flight = dep(2, 600, EXP_TS - 1, final=False)
    assert evaluate(p, facts(dep(1, 400, settled=200), in_flight), AFTER) == (UNDERPAID, [])
    late_in_flight = dep(2, 600, EXP_TS + 10, final=False)
    assert evaluate(p, facts(dep(1, 400, settled=200), late_in_flight), AFTER)[0] == CREDITED


def test_underpaid_below_one_credit_expires():
    state, ev = one(evaluate(pay(UNDERPAID, paid_amount=1), facts(dep(1, 1)), AFTER))
    assert state == EXPIRED and ev.paid_amount == 1 and ev.expected_credits == 0


def test_underpaid_then_a_late_top_up_is_held():
    state, ev = one(evaluate(pay(UNDERPAID, paid_amount=400), facts(dep(1, 400, settled=200), dep(2, 600, EXP_TS + 5)),
                             AFTER))
    assert state == CREDITED and ev.credited == 200 and ev.late_amount == 600 and ev.refundable == 600


# --- confirmed / overpaid -------------------------------------------------------------------------
def test_confirmed_stays_confirmed_until_credited():
    assert evaluate(pay(CONFIRMED, paid_amount=1000), facts(dep(1, 1000)), AFTER) == (CONFIRMED, [])


def test_paid_states_never_go_back_or_expire():
    # a counted deposit cannot vanish; an incomplete snapshot changes nothing
    for state in (CONFIRMED, UNDERPAID, OVERPAID):
        assert evaluate(pay(state, paid_amount=1000), facts(), AFTER) == (state, [])
        assert evaluate(pay(state, paid_amount=1000), facts(dep(1, 400)), AFTER) == (state, [])


def test_confirmed_to_credited():
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=1000), facts(dep(1, 1000, settled=500)), AFTER))
    assert state == CREDITED and ev.kind == CREDITED and ev.credited == 500 and ev.balance == "paid"


def test_confirmed_to_overpaid_by_a_second_deposit():
    state, ev = one(evaluate(pay(CONFIRMED, paid_amount=1000), facts(dep(1, 1000), dep(2, 50)), BEFORE))
    assert state == OVERPAID and ev.excess == 50


def test_overpaid_to_credited_keeps_the_excess_refundable():
    p = pay(OVERPAID, paid_amount=1500, refundable=500)
    state, ev = one(evaluate(p, facts(dep(1, 1500, settled=500)), BEFORE))
    assert state == CREDITED and ev.credited == 500 and ev.refundable == 500 and ev.balance == "overpaid"


def test_not_credited_until_every_due_deposit_is():
    p = pay(CONFIRMED, paid_amount=1000, credited=200, settlement_tx=TX)
    assert evaluate(p, facts(dep(1, 400, settled=200), dep(2, 600)), BEFORE) == (CONFIRMED, [])
    state, ev = one(evaluate(p, facts(dep(1, 400, settled=200), dep(2, 600, settled=300, tx=TX2)), BEFORE))
    assert state == CREDITED and ev.credited == 500 and ev.settlement_tx == TX2


def test_excess_deposits_need_no_credit_to_be_credited():
    state, _ = evaluate(pay(OVERPAID, paid_amount=1700), facts(dep(1, 1000, settled=500), dep(2, 700)), BEFORE)
    assert state == CREDITED


def test_a_figure_change_without_state_change_is_an_update():
    p = pay(CONFIRMED, paid_amount=1000)
    state, ev = one(evaluate(p, facts(dep(1, 1000), dep(2, 10, EXP_TS + 5, chain="ton", token="TON")), BEFORE))
    assert state == CONFIRMED and ev.kind == UPDATED and ev.invalid_amount == 10


# --- late / expired / invalid ------------------------------------------------------------------
def test_new_to_late():
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, EXP_TS + 1)), AFTER))
    assert state == LATE and ev.previous == NEW and ev.refundable == 1000


def test_late_and_invalid_together_is_late():
    wrong = dep(2, 10, chain="ton", token="TON")
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, EXP_TS + 1), wrong), AFTER))
    assert state == LATE and ev.refundable == 1010


def test_grace_moves_the_deadline():
    p = replace(pay(), grace_seconds=60)
    assert evaluate(p, facts(dep(1, 1000, EXP_TS + 30)), AFTER)[0] == CONFIRMED
    assert evaluate(p, facts(), AFTER) == (NEW, [])  # window open until expiry + grace


# --- late deposits credited at a fresh quote (bridge/payments/late.py) ---------------------------------
LATE_TS = EXP_TS + 60


def late_dec(amount: int, fresh: int | None, tolerance: int = 200, others: int = 0) -> LateDecision:
    return decide_late(terms_amount=1000, terms_credits=500, deposit_amount=amount, other_deposits=others,
                       fresh_amount=fresh, tolerance_bps=tolerance)


def test_late_then_credited_at_a_fresh_quote():
    d = late_dec(1000, 1000)
    assert d.decision == LATE_CREDIT and d.credits == 500
    # the window closed before the late deposit came: expired; the gateway decides "credit"
    p = pay(EXPIRED)
    state, ev = one(evaluate(p, facts(dep(1, 1000, LATE_TS, late=d)), AFTER))
    assert state == LATE and ev.kind == LATE and ev.previous == EXPIRED
    assert ev.expected_credits == 500 and ev.refundable == 0 and ev.late_amount == 0 and ev.late_counted == 1000
    assert ev.paid_amount == 0 and ev.credited == 0
    p = saved(p, state, ev)
    assert evaluate(p, facts(dep(1, 1000, LATE_TS, late=d)), AFTER) == (LATE, [])  # waiting for the credit
    # the committee's credit is recorded on the settlement chain
    state, ev = one(evaluate(p, facts(dep(1, 1000, LATE_TS, late=d, settled=500)), AFTER))
    assert state == CREDITED and ev.kind == CREDITED and ev.previous == LATE
    assert ev.credited == 500 and ev.settlement_tx == TX and ev.refundable == 0
    assert evaluate(saved(p, state, ev), facts(dep(1, 1000, LATE_TS, late=d, settled=500)), AFTER) == (CREDITED, [])


def test_new_with_a_decided_late_deposit_goes_late_then_credited():
    d = late_dec(1000, 1010)  # the price rose 1 %: pro-rata at the fresh price
    assert d.credits == 1000 * 500 // 1010 == 495 and d.refundable == 0
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, LATE_TS, late=d)), AFTER))
    assert state == LATE and ev.previous == NEW and ev.expected_credits == 495 and ev.refundable == 0
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, LATE_TS, late=d, settled=495)), AFTER))
    assert state == CREDITED and ev.previous == NEW and ev.credited == 495  # skipped states are not replayed


def test_late_credited_with_a_refundable_remainder_when_the_price_fell():
    d = late_dec(1000, 990)  # the same 500 credits cost 990 now: 10 is held for refund
    assert (d.decision, d.credits, d.counted, d.refundable) == (LATE_CREDIT, 500, 990, 10)
    p = pay(LATE, refundable=1000)  # held in full before the decision
    state, ev = one(evaluate(p, facts(dep(1, 1000, LATE_TS, late=d)), AFTER))
    assert state == LATE and ev.kind == UPDATED and ev.refundable == 10 and ev.late_amount == 10
    assert ev.expected_credits == 500 and ev.late_counted == 990
    state, ev = one(evaluate(saved(p, state, ev), facts(dep(1, 1000, LATE_TS, late=d, settled=500)), AFTER))
    assert state == CREDITED and ev.credited == 500 and ev.refundable == 10 and ev.late_amount == 10


def test_late_held_keeps_todays_behaviour():
    for d in (late_dec(1000, 1100), late_dec(1000, None), late_dec(1000, 1000, tolerance=0),
              late_dec(1000, 1000, others=1)):
        assert d.decision == HOLD
        state, ev = one(evaluate(pay(), facts(dep(1, 1000, LATE_TS, late=d)), AFTER))
        assert state == LATE and ev.refundable == 1000 and ev.late_amount == 1000 and ev.expected_credits == 0
        for final in (LATE, EXPIRED, INVALID, CREDITED):  # final, and not reopened by a hold
            assert evaluate(pay(final), facts(dep(1, 1000, LATE_TS, late=d)), AFTER) == (final, [])


def test_a_credit_decision_outside_the_bounds_is_ignored():
    bad = [LateDecision(LATE_CREDIT, 501, 1000, 0, "x"),  # more than the quoted credits
           LateDecision(LATE_CREDIT, 500, 900, 0, "x"),  # counted + refundable != amount
           LateDecision(LATE_CREDIT, 0, 1000, 0, "x")]  # no credits
    for d in bad:
        state, ev = one(evaluate(pay(), facts(dep(1, 1000, LATE_TS, late=d)), AFTER))
        assert state == LATE and ev.refundable == 1000 and ev.expected_credits == 0
        assert evaluate(pay(EXPIRED), facts(dep(1, 1000, LATE_TS, late=d)), AFTER) == (EXPIRED, [])


def test_a_credit_decision_on_an_in_time_deposit_changes_nothing():
    d = LateDecision(LATE_CREDIT, 400, 1000, 0, "x")
    state, ev = one(evaluate(pay(), facts(dep(1, 1000, late=d)), AFTER))
    assert state == CONFIRMED and ev.expected_credits == 500  # the deposit rule decides: not late


def test_late_credit_next_to_counted_deposits_is_waited_for():
    # (the gateway holds late deposits of a payment with other deposits; a decision stored
    # before the API saw the others is followed by the signers all the same)
    d = LateDecision(LATE_CREDIT, 100, 200, 0, "x")
    p = pay(UNDERPAID, paid_amount=400)
    deps = (dep(1, 400, settled=200), dep(2, 200, LATE_TS, late=d))
    state, ev = one(evaluate(p, facts(*deps), AFTER))
    assert state == UNDERPAID and ev.kind == UPDATED and ev.expected_credits == 300 and ev.credited == 200
    state, ev = one(evaluate(p, facts(deps[0], dep(2, 200, LATE_TS, late=d, settled=100, tx=TX2)), AFTER))
    assert state == CREDITED and ev.credited == 300 and ev.settlement_tx == TX2


def test_late_decisions_need_a_final_deposit():
    with pytest.raises(InputError):
        Deposit((SRC, 1), 5, LATE_TS, final=False, late=late_dec(5, 1000))


# --- final states -----------------------------------------------------------------------------
@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_are_final(state):
    assert evaluate(pay(state), facts(dep(1, 1000, settled=500), dep(2, 5, final=False)), AFTER) == (state, [])
    assert evaluate(pay(state), facts(), AFTER) == (state, [])


def test_unknown_state_is_an_error():
    with pytest.raises(InputError):
        evaluate(pay("paid"), facts(), BEFORE)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_deposits_validate_amounts(bad):
    with pytest.raises(InputError):
        Deposit((SRC, 1), bad, B_TS)


def test_recorded_credits_imply_a_final_deposit():
    with pytest.raises(InputError):
        Deposit((SRC, 1), 5, B_TS, final=False, settled=Settled(1, TX))


def test_state_sets():
    assert set(OPEN_STATES) | FINAL_STATES == set(STATES) and not set(OPEN_STATES) & FINAL_STATES


# --- properties -------------------------------------------------------------------------------
DEPS = st.lists(st.builds(lambda seq, a, dt, final, s, ok: dep(seq, a, EXP_TS + dt, final=final,
                                                                settled=(s if final and s is not None else None),
                                                                token="" if ok else "TON",
                                                                chain="" if ok else "ethereum"),
                          st.integers(0, 5), st.integers(1, 3000), st.integers(-600, 600), st.booleans(),
                          st.one_of(st.none(), st.integers(0, 600)), st.booleans()),
                max_size=4, unique_by=lambda d: d.key).map(tuple)
NOWS = st.sampled_from([BEFORE, EXPIRES, AFTER, AFTER + timedelta(hours=1)])


@given(st.sampled_from(STATES), DEPS, NOWS)
def test_evaluate_is_idempotent(state, deposits, now):
    """Saving what an evaluation returned and evaluating again changes nothing, and events are
    returned exactly when something the loop must save changed."""
    p = pay(state)
    f = Facts(deposits)
    new_state, events = evaluate(p, f, now)
    assert new_state in STATES
    if not events:
        assert new_state == state
        return
    ev = events[-1]
    assert ev.state == new_state and ev.previous == state
    assert evaluate(saved(p, new_state, ev), f, now) == (new_state, [])


@given(DEPS, NOWS)
def test_figures_match_the_rule(deposits, now):
    _, events = evaluate(pay(), Facts(deposits), now)
    if not events:
        return
    ev = events[0]
    final = [d for d in deposits if d.final]
    total = sum(d.amount for d in final)
    assert ev.paid_amount + ev.late_amount + ev.invalid_amount == total
    assert ev.refundable == ev.excess + ev.late_amount + ev.invalid_amount
    assert ev.expected_credits <= 500


@given(st.sampled_from(OPEN_STATES), DEPS)
def test_paid_states_are_never_left_backwards(state, deposits):
    p = pay(state, paid_amount=1) if state in (CONFIRMED, UNDERPAID, OVERPAID) else pay(state)
    new_state, _ = evaluate(p, Facts(deposits), AFTER)
    if state in (CONFIRMED, UNDERPAID, OVERPAID):
        assert new_state in (UNDERPAID, CONFIRMED, OVERPAID, CREDITED, EXPIRED)


LATE_DEPS = st.lists(st.builds(
    lambda seq, a, dt, fresh, others, s: dep(
        seq, a, EXP_TS + dt,
        late=late_dec(a, fresh, others=others) if dt > 0 else None,
        settled=(late_dec(a, fresh, others=others).credits or None) if s and dt > 0 else None),
    st.integers(0, 5), st.integers(1, 3000), st.integers(-600, 600), st.one_of(st.none(), st.integers(950, 1050)),
    st.integers(0, 1), st.booleans()),
    max_size=3, unique_by=lambda d: d.key).map(tuple)


@given(st.sampled_from(STATES), LATE_DEPS, NOWS)
def test_evaluate_with_late_decisions_is_idempotent(state, deposits, now):
    p = pay(state)
    new_state, events = evaluate(p, Facts(deposits), now)
    if not events:
        assert new_state == state
        return
    ev = events[-1]
    assert state not in FINAL_STATES or state in REOPENED_BY_LATE_CREDIT
    total = sum(d.amount for d in deposits)
    assert ev.paid_amount + ev.late_counted + ev.late_amount + ev.invalid_amount == total
    assert ev.refundable == ev.excess + ev.late_amount + ev.invalid_amount
    assert ev.expected_credits <= 500 + sum(d.late.credits for d in deposits if d.late is not None)
    assert evaluate(saved(p, new_state, ev), Facts(deposits), now) == (new_state, [])
