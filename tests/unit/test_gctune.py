"""``bridge.gctune.service_gc``: the collector tuned while a service runs, restored after."""

from __future__ import annotations

import gc

from bridge.gctune import YOUNG_THRESHOLD, service_gc


def test_the_start_up_heap_is_frozen_and_the_thresholds_restored_after():
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    with service_gc():
        assert gc.get_freeze_count() > 0  # what existed at start-up: out of every collection
        assert gc.get_threshold() == (max(before[0], YOUNG_THRESHOLD), *before[1:])
        made_after = [[] for _ in range(10)]
        made_after.append(made_after)  # cyclic garbage made while serving is still collected
        del made_after
        assert gc.collect() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_nested_holders_share_one_tuning_until_the_last_leaves():
    """An API app inside a supervised process: the inner holder neither re-tunes nor restores."""
    before = gc.get_threshold()
    with service_gc():
        frozen = gc.get_freeze_count()
        with service_gc():
            assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
        assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
        assert gc.get_freeze_count() >= frozen
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
