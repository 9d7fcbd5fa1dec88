"""The cyclic garbage collector, tuned for a long-running service process.

A service imports a large graph (web3, SQLAlchemy, aiohttp, the migrations, the ABIs): some
200,000 tracked objects that live as long as the process. CPython's full (oldest generation)
collection scans every one of them each time, and it runs whenever enough objects survived
the younger collections -- which a burst of work always produces. On a relayer catching up
(bench/relayer_scan.py: 10,000 deposits) one full collection cost 69 ms of a 0.33 s scan;
in the API it was a share of every quote's CPU.

``service_gc()`` (a context manager; ``Supervisor.run`` and the API app hold it while they run):

* ``gc.collect()`` then ``gc.freeze()``: what exists at start-up (modules, the wired
  components) moves to the permanent generation, out of every later collection's sight;
  objects made afterwards are collected as before;
* the young generation's threshold rises from 700 to ``YOUNG_THRESHOLD``: a collection runs
  when tracked allocations minus deallocations pass it, and a batch of work in flight (64
  quote requests waiting for their commit, a range of 1,000 logs being decoded) crossed 700
  every few dozen items -- each time scanning every young object, although that work makes
  no cyclic garbage (its objects are freed by reference counting). Cyclic garbage, should
  there be any, is still collected, a little later.

Nested holders (an API app inside a supervised process, tests starting several) share one
tuning: the first to enter applies it, the last to leave restores the thresholds and unfreezes.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

YOUNG_THRESHOLD = 10_000

_lock = threading.Lock()
_holders = 0
_saved: tuple[int, ...] | None = None


def _enter() -> None:
    global _holders, _saved
    with _lock:
        _holders += 1
        if _holders > 1:
            return
        gc.collect()
        gc.freeze()
        _saved = gc.get_threshold()
        gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), *_saved[1:])


def _leave() -> None:
    global _holders, _saved
    with _lock:
        _holders -= 1
        if _holders > 0:
            return
        if _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
        gc.unfreeze()


@contextlib.contextmanager
def service_gc() -> Iterator[None]:
    """Tune the collector while the block runs (see the module's docstring)."""
    _enter()
    try:
        yield
    finally:
        _leave()
