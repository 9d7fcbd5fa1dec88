"""Earned funds and sweeps (``bridge.payments.treasury``): hypothesis properties over payments
decided by the real deposit rule -- never more than earned, never leaving less than owed, the
same result for any order of the same facts, epochs telescoping."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import InputError
from bridge.payments import refunds, rules
from bridge.payments import treasury as tr

SOURCE = b"\x07" * 32
EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)
DEADLINE = int(EXPIRES.timestamp())


@st.composite
def custody(draw):
    """Deposits of several payments into one custody, decided by ``rules.decide``, some credited
    at settlement blocks, some undecided; and which refunds were paid."""
    facts: list[tr.DepositFacts] = []
    seq = 0
    for p in range(draw(st.integers(1, 4))):
        amount = draw(st.integers(1, 10**6))
        credits = draw(st.integers(1, 1000))
        terms = rules.Terms("ethereum", "ETH", amount, credits, EXPIRES)
        deps = []
        for _ in range(draw(st.integers(1, 4))):
            seq += draw(st.integers(1, 3))
            late = draw(st.booleans()) and draw(st.booleans())
            token = "ETH" if draw(st.integers(0, 9)) else "USDC"
            deps.append(rules.DepositFact((SOURCE, seq), "ethereum", token, draw(st.integers(1, 2 * amount)),
                                          DEADLINE + (10 if late else -10)))
        for d, dec in zip(deps, rules.decide_all(terms, deps, 0)):
            undecided = draw(st.integers(0, 9)) == 0
            credited_at = draw(st.one_of(st.none(), st.integers(0, 50))) if dec.credits > 0 else None
            rid = refunds.release_id(SOURCE, d.key[1], dec.refund_purpose) if dec.refund_purpose else None
            if undecided:
                facts.append(tr.DepositFacts(d.key, bytes([p]) * 32, d.amount, None))
            else:
                facts.append(tr.DepositFacts(d.key, bytes([p]) * 32, d.amount, dec.outcome, dec.credits, dec.counted,
                                             dec.refundable, rid, credited_at))
    paid = {f.refund_id: f.refundable for f in facts if f.refund_id is not None and draw(st.booleans())}
    return facts, paid


@given(custody(), st.integers(0, 60))
def test_never_more_than_earned(c, at):
    facts, _ = c
    items = tr.earned_items(facts, at)
    by_key = {f.key: f for f in facts}
    for key, v in items.items():
        f = by_key[key]
        assert 0 < v == f.counted <= f.amount - f.refundable  # never a refundable unit
        assert f.outcome is not None
        if f.credits > 0:
            assert f.credited_at is not None and f.credited_at <= at
        else:  # below one credit: a later deposit of its payment with credits is recorded by ``at``
            assert f.outcome == rules.BELOW_ONE_CREDIT
            assert any(g.payment == f.payment and g.key > f.key and g.credits > 0 and g.outcome is not None
                       and g.credited_at is not None and g.credited_at <= at for g in facts)
    assert tr.earned(facts, at) <= sum(f.counted for f in facts if f.outcome is not None)


@given(custody(), st.integers(1, 20), st.randoms())
def test_same_result_for_any_order(c, epoch_blocks, rnd):
    facts, paid = c
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    for k in range(0, 60 // epoch_blocks + 2):
        assert tr.epoch_items(facts, k, epoch_blocks) == tr.epoch_items(shuffled, k, epoch_blocks)
    assert tr.owed(facts, paid, 30) == tr.owed(shuffled, paid, 30)
    assert tr.stranded(facts, 30) == tr.stranded(shuffled, 30)


@given(custody(), st.integers(1, 20))
def test_epochs_telescope_and_never_go_back(c, epoch_blocks):
    facts, _ = c
    last = 60 // epoch_blocks + 1
    amounts = [tr.epoch_amount(facts, k, epoch_blocks) for k in range(last + 1)]
    assert all(a >= 0 for a in amounts)
    assert sum(amounts) == tr.earned(facts, tr.cutoff(last, epoch_blocks))
    # an epoch's items add up to its amount, and no deposit is covered by two epochs beyond its counted
    covered: dict = {}
    for k in range(last + 1):
        for key, v in tr.epoch_items(facts, k, epoch_blocks).items():
            covered[key] = covered.get(key, 0) + v
    assert covered == tr.earned_items(facts, tr.cutoff(last, epoch_blocks))


@given(custody(), st.integers(1, 20), st.integers(0, 10**6))
@settings(max_examples=200)
def test_a_sweep_never_leaves_less_than_owed(c, epoch_blocks, gift):
    """Replay every epoch against an exact custody (deposits in, paid refunds and sweeps out):
    each sweep passes the solvency check and leaves at least what is owed; one unit short of
    that and the check refuses."""
    facts, paid = c
    balance = sum(f.amount for f in facts) - sum(paid.values()) + gift
    for k in range(60 // epoch_blocks + 2):
        at = tr.cutoff(k, epoch_blocks)
        amount = tr.epoch_amount(facts, k, epoch_blocks)
        still = tr.owed(facts, paid, at)
        assert tr.solvent(balance, amount, still)
        if amount:
            assert not tr.solvent(balance - gift - 1, amount, still)
        balance -= amount
        assert balance >= still
    # everything is accounted: what is left is owed + stranded-free remainder + the gift
    assert balance == tr.owed(facts, paid, tr.cutoff(60 // epoch_blocks + 1, epoch_blocks)) + gift


def test_below_one_credit_is_earned_with_the_deposit_that_completes_it():
    p = b"\x01" * 32
    first = tr.DepositFacts((SOURCE, 1), p, 3, rules.BELOW_ONE_CREDIT, 0, 3, 0)
    second = tr.DepositFacts((SOURCE, 2), p, 10, rules.CREDIT, 5, 7, 3, b"r" * 32, credited_at=12)
    assert tr.earned_items([first, second], 11) == {}
    assert tr.earned_items([first, second], 12) == {(SOURCE, 1): 3, (SOURCE, 2): 7}
    assert tr.stranded([first, second], 11) == 3 and tr.stranded([first, second], 12) == 0
    # a trailing remainder nothing completes stays (reported, never swept)
    third = tr.DepositFacts((SOURCE, 3), p, 1, rules.BELOW_ONE_CREDIT, 0, 1, 0)
    assert tr.earned([first, second, third], 100) == 10 and tr.stranded([first, second, third], 100) == 1
    # governor-held / not yet credited: nothing
    held = tr.DepositFacts((SOURCE, 4), b"\x02" * 32, 9, rules.CREDIT, 9, 9, 0)
    assert tr.earned([held], 10**9) == 0 and tr.owed([held], {}, 10**9) == 9


def test_facts_are_checked():
    with pytest.raises(InputError):
        tr.DepositFacts((SOURCE, 1), b"", 5, rules.CREDIT, 1, 3, 3)
    with pytest.raises(InputError):
        tr.DepositFacts((SOURCE, 1), b"", -1, None)
    with pytest.raises(InputError):
        tr.cutoff(1, 0)


# --- the [treasury] section: addresses checked per chain family -------------------------------------
def _settings(treasury: dict):
    from bridge.config import settings_from_dict

    return settings_from_dict({
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": "0x" + "11" * 20}},
            {"family": "evm", "name": "settlement", "chain_id": 2, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": "0x" + "22" * 20}},
            {"family": "substrate", "name": "polkadot", "rpc": ["ws://127.0.0.1:1"], "token": "DOT",
             "ss58_prefix": 0,
             "committee": {"members": ["0x" + "33" * 32], "threshold": 1}},
            {"family": "ton", "name": "ton", "toncenter": ["http://127.0.0.1:1"],
             "contracts": {"lock": "0:" + "44" * 32}},
        ],
        "settlement_chain": "settlement", "treasury": treasury})


def test_treasury_config_checks_each_address_in_its_family():
    from bridge import addresses
    from bridge.errors import ConfigError

    dot = addresses.ss58_encode(b"\x05" * 32, 0)
    ok = _settings({"addresses": {"ethereum": "0x" + "aa" * 20, "polkadot": dot, "ton": "0:" + "bb" * 32},
                    "epoch_blocks": 10, "reserve": {"polkadot": 10**10}})
    assert ok.treasury.epoch_blocks == 10 and addresses.ss58_address(dot) == b"\x05" * 32
    bad = [
        ({"addresses": {"ethereum": dot}}, "treasury.addresses.ethereum"),
        ({"addresses": {"polkadot": "0x" + "aa" * 20}}, "treasury.addresses.polkadot"),
        ({"addresses": {"polkadot": dot[:-1] + ("A" if dot[-1] != "A" else "B")}}, "checksum"),
        ({"addresses": {"ton": "0:" + "bb" * 31}}, "treasury.addresses.ton"),
        ({"addresses": {"settlement": "0x" + "aa" * 20}}, "not a source chain"),
        ({"addresses": {"ethereum": "0x" + "00" * 20}}, "zero address"),
        ({"addresses": {"ethereum": "0x" + "11" * 20}}, "custody itself"),
        ({"addresses": {"ton": "0:" + "44" * 32}}, "custody itself"),
        ({"epoch_blocks": 0}, "epoch_blocks"),
        ({"reserve": {"ethereum": -1}}, "reserve"),
    ]
    for section, words in bad:
        with pytest.raises(ConfigError) as e:
            _settings(section)
        assert words in str(e.value) and "\n" not in str(e.value), (section, str(e.value))


@given(custody(), st.integers(1, 20), st.integers(0, 10**6))
@settings(max_examples=200)
def test_small_epochs_roll_into_the_next_and_still_telescope(c, epoch_blocks, minimum):
    """A sweep below the chain's minimum (a TON lock's min_release) is skipped, not lost: the next
    epoch that reaches the minimum sweeps everything earned since the last swept epoch, so the
    sweeps add up to E(B_last swept), and what was skipped stays earned for a later sweep."""
    facts, _ = c
    last, swept, covered = 0, 0, {}
    top = 60 // epoch_blocks + 2
    for k in range(1, top + 1):
        items = tr.span_items(facts, last, k, epoch_blocks)
        amount = sum(items.values())
        if amount == 0 or amount < minimum:
            continue
        assert amount == tr.earned(facts, tr.cutoff(k, epoch_blocks)) - tr.earned(facts, tr.cutoff(last, epoch_blocks))
        for key, v in items.items():
            covered[key] = covered.get(key, 0) + v
        swept += amount
        last = k
    # (epoch 0 closes at settlement block 0, the genesis: no sweep covers it)
    e0 = tr.earned(facts, 0)
    assert swept + e0 == tr.earned(facts, tr.cutoff(last, epoch_blocks)) <= tr.earned(facts, tr.cutoff(top, epoch_blocks))
    for key, v in tr.earned_items(facts, 0).items():
        covered[key] = covered.get(key, 0) + v
    assert covered == tr.earned_items(facts, tr.cutoff(last, epoch_blocks))  # each deposit once, in full
    # with no minimum it is the plain epoch-by-epoch sweep
    for k in range(1, top + 1):
        assert tr.span_items(facts, k - 1, k, epoch_blocks) == tr.epoch_items(facts, k, epoch_blocks)
    with pytest.raises(InputError):
        tr.span_items(facts, 3, 3, epoch_blocks)
