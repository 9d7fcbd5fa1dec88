"""The quote endpoint's fast paths give exactly what the plain code gives (issue 16, item 3).

Each fast path replaced a generic one on the busiest request path; these tests pin the
equivalence on awkward inputs so a later edit cannot drift from the documented formats.
"""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bridge.pricing import quotes as Q
from bridge.pricing.credits import amount_for_credits, credits_for_amount
from bridge.storage.db import Database
from bridge.storage.quotes import _SqliteBatch
from bridge.types import Quote

NOW = datetime(2026, 12, 6, 19, 0, 0, tzinfo=timezone.utc)


def _quote(**kw) -> Quote:
    d = dict(id=str(uuid.uuid4()), token="ETH", chain="ethereum", amount=1666666666666667, credits=500,
             rate=Decimal("3000.50"), credit_price_usd=Decimal("0.01"), created_at=NOW,
             expires_at=NOW + timedelta(minutes=15), key_id="79b5562e8fe654f9", sources=("coinbase", "kraken"))
    d.update(kw)
    return Quote(**d)


AWKWARD = [
    {},
    {"token": 'É"\\/\n\t\x00\x7f\u2028', "sources": ("x\u00e9", "\U0001F600", "")},
    {"chain": "", "sources": (), "key_id": ""},
    {"created_at": datetime(2026, 1, 1, 1, 2, 3, 4567, tzinfo=timezone(timedelta(hours=5))),
     "rate": Decimal("1E-30"), "credit_price_usd": Decimal("12.3400")},
    {"amount": 2**256 - 1, "credits": 2**128 - 1},
]


@pytest.mark.parametrize("kw", AWKWARD)
def test_canonical_quote_bytes_equal_the_generic_json(kw):
    q = _quote(**kw)
    assert Q.canonical_quote_bytes(q) == Q.QUOTE_DOMAIN + Q._canonical_json(Q.quote_fields(q))


def test_pooled_ids_are_random_version_4_uuids():
    pool = Q._UuidPool(per_draw=3)  # refills every third id
    ids = [pool() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 4 and u.variant == uuid.RFC_4122


def test_integer_credit_maths_equals_credits_module():
    rnd = random.Random(16)
    for _ in range(5000):
        price = Decimal(rnd.randint(1, 10**6)).scaleb(-rnd.randint(0, 8))
        rate = Decimal(rnd.randint(1, 10**9)).scaleb(-rnd.randint(0, 8))
        decimals = rnd.randint(0, 24)
        credits, amount = rnd.randint(1, 10**rnd.randint(1, 30)), rnd.randint(1, 10**rnd.randint(1, 40))
        num, den = Q._credit_value(price, rate, decimals)
        assert -(-credits * num // den) == amount_for_credits(credits, price, rate, decimals)
        assert amount * den // num == credits_for_amount(amount, price, rate, decimals)


def test_writer_rows_equal_the_generic_conversion(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/q.sqlite")
    batch = _SqliteBatch.for_db(db)
    assert batch is not None
    quotes = [_quote(**kw) for kw in AWKWARD]
    quotes.append(_quote(signature=b"\x01" * 64, merkle_root=b"\x02" * 32, merkle_path=(b"\x03" * 32,)))
    fast, generic = batch._rows(quotes), batch._rows_generic(quotes)
    assert len(fast) == len(generic)
    for f, g in zip(fast, generic):
        # bytes may differ only in their wrapper (sqlite3.Binary is a memoryview): same BLOB
        assert [bytes(v) if isinstance(v, memoryview) else v for v in f] == \
               [bytes(v) if isinstance(v, memoryview) else v for v in g]
    # and sqlite stores them alike
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (" + ", ".join(f"c{i}" for i in range(len(fast[0]))) + ")")
    ins = "INSERT INTO t VALUES (" + ", ".join("?" * len(fast[0])) + ")"
    conn.executemany(ins, fast)
    conn.executemany(ins, generic)
    rows = conn.execute("SELECT * FROM t").fetchall()
    assert rows[:len(fast)] == rows[len(fast):]
