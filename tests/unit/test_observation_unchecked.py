"""``Observation.unchecked`` (the EVM watcher's hot path) builds the very object the checked
constructor builds: equal, same hash, same fields, still frozen."""

from __future__ import annotations

import dataclasses

import pytest

from bridge.types import Observation

FIELDS = dict(chain="ethereum", source=b"s" * 32, sequence=2**64 - 1, tx_id=b"t" * 32, event_index=3,
              block_number=10, block_hash=b"h" * 32, timestamp=1_700_000_000, token="ETH", amount=10**18,
              payer=b"\x00" * 12 + b"p" * 20, reference=b"r" * 32)


def test_unchecked_equals_the_checked_construction():
    checked = Observation(**FIELDS)
    fast = Observation.unchecked(*FIELDS.values())
    assert fast == checked and hash(fast) == hash(checked)
    assert dataclasses.asdict(fast) == dataclasses.asdict(checked) == FIELDS
    assert type(fast) is Observation and fast.deposit_id == (FIELDS["source"], FIELDS["sequence"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.amount = 1  # type: ignore[misc]


def test_the_positional_order_is_the_field_order():
    """A field added to Observation must be added to unchecked (its signature mirrors it)."""
    import inspect

    params = list(inspect.signature(Observation.unchecked).parameters)
    assert params == [f.name for f in dataclasses.fields(Observation)]
