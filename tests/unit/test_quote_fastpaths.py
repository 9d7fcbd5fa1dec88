"""The quote endpoint's fast paths give exactly what the plain code gives (issue 16, item 3).

Each fast path replaced a generic one on the busiest request path; these tests pin the
equivalence on awkward inputs so a later edit cannot drift from the documented formats.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import uuid
from dataclasses import FrozenInstanceError, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from bridge.api import handlers as H
from bridge.errors import InputError
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


def test_pooled_ids_are_time_ordered_version_7_uuids():
    pool = Q._UuidPool(per_draw=3)  # refills every third id
    before = time.time_ns() // 1_000_000
    ids = [pool() for _ in range(3000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for s in ids:
        u = uuid.UUID(s)
        assert str(u) == s and u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after  # the 48-bit millisecond timestamp
    assert [u.int >> 80 for u in map(uuid.UUID, ids)] == sorted(u.int >> 80 for u in map(uuid.UUID, ids))
    # the 74 random bits vary: each random field takes many values
    us = [uuid.UUID(s).int for s in ids]
    assert len({(x >> 64) & 0xFFF for x in us}) > 2000  # rand_a, 12 bits
    assert len({x & (2**62 - 1) for x in us}) == len(ids)  # rand_b, 62 bits
    assert {(x >> 62) & 3 for x in us} == {2}  # the variant


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
        # bytes may differ only in their wrapper (sqlite3.Binary is a memoryview; the fast rows
        # send bytearray): same BLOB
        assert [bytes(v) if isinstance(v, (memoryview, bytearray)) else v for v in f] == \
               [bytes(v) if isinstance(v, (memoryview, bytearray)) else v for v in g]
    # and sqlite stores them alike
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (" + ", ".join(f"c{i}" for i in range(len(fast[0]))) + ")")
    ins = "INSERT INTO t VALUES (" + ", ".join("?" * len(fast[0])) + ")"
    conn.executemany(ins, fast)
    conn.executemany(ins, generic)
    rows = conn.execute("SELECT * FROM t").fetchall()
    assert rows[:len(fast)] == rows[len(fast):]


def test_evolve_equals_dataclasses_replace():
    q = _quote()
    changes = {"signature": b"\x01" * 64, "merkle_root": b"\x02" * 32, "merkle_path": (b"\x03" * 32,)}
    e = Q._evolve(q, **changes)
    assert type(e) is Quote and e == replace(q, **changes) and hash(e) == hash(replace(q, **changes))
    assert q.signature == b"" and e is not q  # the original is untouched
    with pytest.raises(FrozenInstanceError):
        e.amount = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Q._evolve(q, colour="red")


@pytest.mark.parametrize("kw", AWKWARD)
def test_response_body_equals_the_serialized_quote_json(kw):
    signer = Q.QuoteSigner.from_secret(b"\x07" * 32)
    quotes = [_quote(**kw)]
    for n in (1, 2, 5):  # a batch of one (empty path), and real paths
        quotes += signer.sign_quotes([_quote(**kw) for _ in range(n)])
    for q in quotes:
        assert Q.quote_body(q) == Q._dumps(Q.quote_to_json(q))
        assert json.loads(Q.quote_body(q)) == Q.quote_to_json(q)
    listed = _quote(sources=["a", "b"])  # not hashable: the generic serialization
    assert Q.quote_body(listed) == Q._dumps(Q.quote_to_json(listed))


QUOTE_BODIES = [
    b'{"token": "ETH", "credits": "500"}', b'{"credits":"500","token":"ETH"}', b' \r\n{ "amount" :\t"12" , "token":"DOT"}\n',
    b'{"token": "ETH", "credits": "0"}', b'{"token": "ETH", "credits": "0500"}', b'{"token": "ETH", "amount": "0"}',
    b'{"token": "ETH", "credits": "' + b"9" * 78 + b'"}', b'{"token": "ETH", "credits": "' + b"9" * 79 + b'"}',
    b'{"token": "ETH", "amount": "' + b"9" * 78 + b'"}', b'{"token": "eth", "credits": "5"}',
    b'{"token": "E", "credits": "5"}', b'{"token": "ETH", "credits": 5}', b'{"token": "ETH", "credits": "5", "chain": "x"}',
    b'{"token": "ETH", "credits": "5", "amount": "5"}', b'{"token": "ETH", "token": "ETH"}',
    b'{"credits": "5", "credits": "6"}', b'{"token": "ETH", "credits": "-5"}', b'{"token": "ETH", "credits": "5.0"}',
    b'{"token": "ETH", "credits": 5.0}', b'{"token": "ETH", "credits": "5"} x', b'{"token": "ETH", "credits": "5"',
    b'{"token": "\\u0045TH", "credits": "5"}', b'{"token": "ETH", "credit": "5"}', b'[]', b'', b'\xef\xbb\xbf{"token": "ETH", "credits": "5"}',
    b'{"token": "ETH", "credits": "5"}\x0b', b'{"token": "ETH", "credits": "\xd9\xa5"}',
]


@pytest.mark.parametrize("raw", QUOTE_BODIES)
def test_quote_request_fast_path_answers_as_the_json_path(raw):
    """The raw-bytes match of the common body gives what decoding the JSON gives: the same
    request, or the same error."""
    def outcome(f):
        try:
            return f()
        except InputError as e:
            return ("error", e.detail)

    fast = outcome(lambda: H._quote_request(raw))
    generic = outcome(lambda: H._quote_request_generic(H._decode_json(raw)))
    assert fast == generic


async def test_quote_template_follows_the_aggregator_within_a_second():
    """make_quote reuses its per-price work within a second; a refresh that moves the price
    in that very second is still taken at once (the cache is keyed by the price object)."""
    from prometheus_client import CollectorRegistry

    from bridge.config import PricingConfig
    from bridge.pricing.aggregate import PriceAggregator
    from bridge.pricing.sources.fixed import FixedPriceSource

    clock = [NOW]
    source = FixedPriceSource({"ETH": Decimal("3000"), "DOT": Decimal("5")}, name="a", clock=lambda: clock[0])
    agg = PriceAggregator([source], min_sources=1, max_deviation=Decimal("0.01"), max_age=timedelta(minutes=10),
                          registry=CollectorRegistry(), symbols={"ETH", "DOT"}, clock=lambda: clock[0])
    await agg.refresh()
    signer = Q.QuoteSigner.from_secret(b"\x07" * 32)
    svc = Q.QuoteService(PricingConfig(credit_price_usd=Decimal("0.01")), agg, signer,
                         token_chains={"ETH": "ethereum", "DOT": "polkadot"})
    a = await svc.make_quote("ETH", credits=500, now=NOW, sign=False)
    b = await svc.make_quote("ETH", amount=10**18, now=NOW + timedelta(microseconds=5), sign=False)
    d = await svc.make_quote("DOT", credits=500, now=NOW, sign=False)
    assert (a.rate, b.rate, d.rate) == (Decimal("3000"), Decimal("3000"), Decimal("5"))
    assert a.id != b.id and b.credits == credits_for_amount(10**18, Decimal("0.01"), Decimal("3000"), 18)
    assert a.created_at == b.created_at == NOW and b.created_at.tzinfo is timezone.utc  # truncated to the second
    east = (NOW + timedelta(seconds=2, microseconds=999_999)).astimezone(timezone(timedelta(hours=3)))
    e = await svc.make_quote("ETH", credits=500, now=east, sign=False)
    assert e.created_at == NOW + timedelta(seconds=2) and e.created_at.tzinfo is timezone.utc
    assert (await svc.make_quote("ETH", credits=500, now=NOW - timedelta(microseconds=1), sign=False)).created_at \
        == NOW - timedelta(seconds=1)  # an earlier clock reading is not taken for the cached second
    assert (d.token, d.chain, d.amount) == ("DOT", "polkadot", amount_for_credits(500, Decimal("0.01"), Decimal("5"), 10))
    source._prices["ETH"] = Decimal("2000")
    await agg.refresh()  # same second
    c = await svc.make_quote("ETH", credits=500, now=NOW, sign=False)
    assert c.rate == Decimal("2000") and c.amount == amount_for_credits(500, Decimal("0.01"), Decimal("2000"), 18)
    later = await svc.make_quote("ETH", credits=500, now=NOW + timedelta(seconds=1), sign=False)
    assert later.created_at == NOW + timedelta(seconds=1) and later.expires_at == later.created_at + svc.ttl
    for q in (a, b, c, d, later):  # what the generic constructor would have made
        assert q == Quote(id=q.id, token=q.token, chain=q.chain, amount=q.amount, credits=q.credits, rate=q.rate,
                          credit_price_usd=Decimal("0.01"), created_at=q.created_at, expires_at=q.expires_at,
                          key_id=signer.key_id, sources=("a",))
