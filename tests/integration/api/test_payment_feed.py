"""Issue 14 on the gateway: payment codes (reference = sha256(code)) and the reference feed that
collectors of per-payment addresses read (``GET /v1/payment-references``, ``GatewayClient.references``,
``DatabaseReferenceFeed``), served for real on 127.0.0.1 over SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import aiohttp
import pytest
from aiohttp import web

from bridge.committee.gateway import GatewayClient
from bridge.errors import GatewayUnavailable, VerificationError
from bridge.payments import codes
from bridge.payments.feed import FeedEntry, WatchedReferences
from bridge.payments.instructions import Instructions, evm_instructions
from bridge.storage import payments as payments_repo
from bridge.types import PaymentTerms, utcnow
from tests.conftest import PG_URL, _fresh_pg, require_pg
from tests.integration.api.test_api import Gateway, assert_problem
from tests.integration.api.test_api import start  # noqa: F401 - the gateway fixture

DAY = 86_400


@pytest.fixture(params=["sqlite", "postgres"])
async def fgw(request, start) -> Gateway:  # noqa: F811
    if request.param == "sqlite":
        return await start()
    require_pg()
    await _fresh_pg(PG_URL)
    return await start(storage_url=PG_URL)


async def new_payment(gw: Gateway) -> dict:
    return await gw.payment((await gw.quote(credits="500"))["id"])


async def feed(gw: Gateway, query: str) -> dict:
    status, body, _ = await gw.get("/v1/payment-references?" + query)
    assert status == 200, body
    return body


# --- payment codes ------------------------------------------------------------------------------
async def test_new_payments_have_a_code_that_hashes_to_their_reference(fgw):
    p = await new_payment(fgw)
    assert codes.is_code(p["code"])
    assert p["reference"] == "0x" + hashlib.sha256(p["code"].encode()).hexdigest()
    assert p["terms"]["reference"] == p["reference"]  # the signed terms name the same reference
    status, again, _ = await fgw.get(f"/v1/payments/{p['id']}")
    assert status == 200 and again["code"] == p["code"]
    # by code, in any case (a payer may type it in lower case)
    for code in (p["code"], p["code"].lower()):
        status, by_code, _ = await fgw.get(f"/v1/payments/by-code/{code}")
        assert status == 200 and by_code == again
    for code in (codes.new_code(), "CB123", "nonsense", "CBIIIIIIIIIIII"):
        status, body, resp = await fgw.get(f"/v1/payments/by-code/{code}")
        assert_problem(status, body, resp, 404, "not-found")
    p2 = await new_payment(fgw)
    assert p2["code"] != p["code"] and p2["reference"] != p["reference"]


async def test_a_code_colliding_with_a_stored_one_is_drawn_again(fgw, monkeypatch):
    p = await new_payment(fgw)
    fresh = codes.new_code()
    drawn = iter([p["code"], fresh])
    monkeypatch.setattr(codes, "new_code", lambda: next(drawn))
    p2 = await new_payment(fgw)
    assert p2["code"] == fresh and p2["reference"] == "0x" + codes.reference_for_code(fresh).hex()


async def test_payments_made_before_codes_show_a_null_code(fgw):
    """A payment stored without a code (made before migration 0010) still answers, with code null,
    and is still listed in the feed (its address is derived from its reference alone)."""
    q = await fgw.quote(credits="500")
    ref = bytes(range(32))
    terms = fgw.signer.sign_terms(PaymentTerms(
        payment_id=str(uuid.uuid4()), reference=ref, beneficiary=bytes.fromhex("ab" * 20), quote_id=q["id"],
        chain="ethereum", token="ETH", amount=int(q["amount"]), credits=500,
        expires_at=fgw.clock.now + timedelta(minutes=15)))
    async with fgw.db.begin() as s:
        await payments_repo.add_payment(s, terms, now=fgw.clock.now)
    status, p, _ = await fgw.get(f"/v1/payments/{terms.payment_id}")
    assert status == 200 and p["code"] is None and p["instructions"]["reference"] == "0x" + ref.hex()
    assert [e["reference"] for e in (await feed(fgw, "chain=ethereum"))["entries"]] == ["0x" + ref.hex()]


async def test_builders_get_the_payment_code(start):  # noqa: F811
    """``Instructions`` hands builders that take it the payment's code (TON puts it in the comment);
    builders written before codes are still called the old way."""
    seen = []

    def evm_with_code(chain, reference, amount, *, code=None):
        seen.append(code)
        return {**evm_instructions(chain, reference, amount), "transfer": {"to": "0x" + "77" * 20,
                                                                         "amount": str(amount), "comment": code}}

    gw = await start(instructions=Instructions({"evm": evm_with_code}))
    p = await new_payment(gw)
    assert seen[-1] == p["code"] and p["instructions"]["transfer"]["comment"] == p["code"]
    old = await start(instructions=Instructions({"evm": lambda chain, reference, amount: {"old": str(amount)}}))
    p = await new_payment(old)
    assert p["instructions"] == {"old": p["amount"]}


# --- the reference feed -------------------------------------------------------------------------
async def test_reference_feed_pages_in_cursor_order(fgw):
    ps = [await new_payment(fgw) for _ in range(4)]
    page = await feed(fgw, "chain=ethereum")
    entries = page["entries"]
    assert [e["reference"] for e in entries] == [p["reference"] for p in ps]
    cursors = [e["cursor"] for e in entries]
    assert cursors == sorted(cursors) and len(set(cursors)) == 4 and page["next"] == cursors[-1]
    expiry = int(fgw.clock.now.timestamp()) + 900
    assert all(abs(e["expires_at"] - expiry) <= 1 for e in entries)
    assert set(entries[0]) == {"cursor", "reference", "expires_at"}
    # paging: limit and after
    first = await feed(fgw, "chain=ethereum&limit=3")
    assert first["entries"] == entries[:3] and first["next"] == cursors[2]
    rest = await feed(fgw, f"chain=ethereum&after={first['next']}&limit=3")
    assert rest["entries"] == entries[3:] and rest["next"] == cursors[3]
    empty = await feed(fgw, f"chain=ethereum&after={cursors[3]}")
    assert empty == {"entries": [], "next": cursors[3]}
    # a payment made later comes after every cursor seen
    p5 = await new_payment(fgw)
    assert [e["reference"] for e in (await feed(fgw, f"chain=ethereum&after={cursors[3]}"))["entries"]] == \
        [p5["reference"]]


async def test_reference_feed_drops_payments_expired_30_days_ago(fgw):
    p = await new_payment(fgw)
    now = fgw.clock.now
    fgw.clock.now = now + timedelta(days=30)  # expired 30 days minus 15 minutes ago: still listed
    assert [e["reference"] for e in (await feed(fgw, "chain=ethereum"))["entries"]] == [p["reference"]]
    fgw.clock.now = now + timedelta(days=30, minutes=16)
    assert (await feed(fgw, "chain=ethereum"))["entries"] == []


async def test_reference_feed_lists_only_the_chain_asked_for(fgw):
    p = await new_payment(fgw)
    q = await fgw.quote(credits="500")
    other = fgw.signer.sign_terms(PaymentTerms(
        payment_id=str(uuid.uuid4()), reference=bytes([7]) * 32, beneficiary=bytes.fromhex("ab" * 20),
        quote_id=q["id"], chain="polkadot", token="DOT", amount=10**10, credits=500,
        expires_at=fgw.clock.now + timedelta(minutes=15)))
    async with fgw.db.begin() as s:
        await payments_repo.add_payment(s, other, now=fgw.clock.now, code=codes.new_code())
        rows = await payments_repo.references_after(s, "polkadot", 0, 10, expired_since=fgw.clock.now)
    assert [r.reference for r in rows] == [other.reference]
    assert [e["reference"] for e in (await feed(fgw, "chain=ethereum"))["entries"]] == [p["reference"]]


@pytest.mark.parametrize("query", [
    "", "after=0", "chain=", "chain=nope", "chain=settlement", "chain=ethereum&limit=0", "chain=ethereum&limit=1001",
    "chain=ethereum&limit=abc", "chain=ethereum&after=-1", "chain=ethereum&after=1.5", "chain=ethereum&after=01",
    "chain=ethereum&after=" + "9" * 30,
])
async def test_bad_feed_requests_are_400_problems(start, query):  # noqa: F811
    gw = await start()
    status, body, resp = await gw.get("/v1/payment-references?" + query)
    assert_problem(status, body, resp, 400)


async def test_reference_feed_is_rate_limited(start):  # noqa: F811
    gw = await start(rate_limit_per_minute=1, rate_limit_burst=2)
    for _ in range(2):
        assert (await gw.get("/v1/payment-references?chain=ethereum"))[0] == 200
    status, body, resp = await gw.get("/v1/payment-references?chain=ethereum")
    assert_problem(status, body, resp, 429, "rate-limited")


async def test_gateway_client_and_database_feed_serve_the_same_entries(fgw):
    ps = [await new_payment(fgw) for _ in range(5)]
    client = GatewayClient(fgw.url, fgw.http)
    got = await client.references("ethereum", 0, 500)
    assert all(isinstance(e, FeedEntry) and e.chain == "ethereum" for e in got)
    assert ["0x" + e.reference.hex() for e in got] == [p["reference"] for p in ps]
    in_process = payments_repo.DatabaseReferenceFeed(fgw.db, clock=lambda: fgw.clock.now)
    assert await in_process.references("ethereum", 0, 500) == got
    assert await in_process.references("ethereum", got[1].cursor, 2) == got[2:4]
    # WatchedReferences pages through the gateway (page 2: three round trips) to every payment
    watched = WatchedReferences("ethereum", client, lambda ref: hashlib.sha256(b"addr" + ref).digest()[:20],
                                page=2, clock=lambda: fgw.clock.now.timestamp())
    assert await watched.refresh() == 5 and len(watched) == 5 and watched.cursor == got[-1].cursor
    p6 = await new_payment(fgw)
    assert await watched.refresh() == 1
    ref6 = bytes.fromhex(p6["reference"][2:])
    assert watched.lookup(hashlib.sha256(b"addr" + ref6).digest()[:20]) == ref6


# --- a gateway answering nonsense: typed errors, never a crash --------------------------------------
GOOD = {"cursor": 3, "reference": "0x" + "ab" * 32, "expires_at": 1_800_000_000}


@pytest.mark.parametrize("answer,error", [
    ((200, {"entries": [GOOD], "next": 3}), None),
    ((200, {"entries": "x"}), VerificationError),
    ((200, [GOOD]), VerificationError),
    ((200, {"entries": [GOOD, GOOD]}), VerificationError),  # not ascending
    ((200, {"entries": [{**GOOD, "cursor": 1}]}), VerificationError),  # not after the cursor asked for
    ((200, {"entries": [{**GOOD, "cursor": "3"}]}), VerificationError),
    ((200, {"entries": [{**GOOD, "cursor": True}]}), VerificationError),
    ((200, {"entries": [{**GOOD, "reference": "0x" + "ab" * 31}]}), VerificationError),
    ((200, {"entries": [{**GOOD, "reference": "ab" * 32}]}), VerificationError),
    ((200, {"entries": [{**GOOD, "expires_at": -1}]}), VerificationError),
    ((200, {"entries": [{**GOOD, "expires_at": 2**64}]}), VerificationError),
    ((200, {"entries": [{k: v for k, v in GOOD.items() if k != "expires_at"}]}), VerificationError),
    ((200, {"entries": [GOOD, {**GOOD, "cursor": 4}, {**GOOD, "cursor": 5}]}), VerificationError),  # > limit
    ((200, {"entries": [GOOD], "next": 2}), VerificationError),
    ((200, "not json"), GatewayUnavailable),
    ((500, {}), GatewayUnavailable),
    ((404, {}), GatewayUnavailable),
])
async def test_gateway_client_checks_every_field_of_the_feed(answer, error):
    status, body = answer

    async def handle(request: web.Request) -> web.Response:
        assert request.query["chain"] == "ethereum" and request.query["after"] == "2"
        if body == "not json":
            return web.Response(status=status, text="<html>", content_type="application/json")
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/v1/payment-references", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as http:
            client = GatewayClient(f"http://{host}:{port}", http)
            if error is None:
                assert await client.references("ethereum", 2, 2) == [
                    FeedEntry(3, "ethereum", bytes.fromhex("ab" * 32), 1_800_000_000)]
            else:
                with pytest.raises(error):
                    await client.references("ethereum", 2, 2)
    finally:
        await runner.cleanup()


# --- migration 0010 on a database that has payments already -------------------------------------------
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_numbers_existing_payments_in_creation_order(tmp_path, backend):
    from alembic import command
    from sqlalchemy import text

    from bridge.storage.db import Database, _alembic_config

    if backend == "postgres":
        require_pg()
        await _fresh_pg(PG_URL)
    db = Database(PG_URL if backend == "postgres" else f"sqlite+aiosqlite:///{tmp_path}/old.sqlite")

    def upgrade(conn, to):
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, to)

    try:
        async with db.engine.begin() as c:
            await c.run_sync(upgrade, "0009")
        now = utcnow()
        async with db.engine.begin() as c:
            for i, created in enumerate([now, now - timedelta(hours=1)]):  # the second is older
                qid = str(uuid.uuid4())
                await c.execute(text(
                    "INSERT INTO quotes (id, token, chain, amount, credits, rate, credit_price_usd, sources, "
                    "created_at, expires_at, key_id, signature) VALUES (:id, 'ETH', 'ethereum', 1, 1, '1', '1', '', "
                    ":t, :t, 'k', :sig)"), {"id": qid, "t": created, "sig": bytes(64)})
                await c.execute(text(
                    "INSERT INTO payments (id, reference, quote_id, beneficiary, chain, token, amount, credits, "
                    "expires_at, state, key_id, terms_signature, paid_amount, credited, created_at, updated_at, "
                    "refundable) VALUES (:id, :ref, :q, :b, 'ethereum', 'ETH', 1, 1, :t, 'new', 'k', :sig, 0, 0, :t, "
                    ":t, 0)"), {"id": f"00000000-0000-0000-0000-00000000000{i}", "ref": bytes([i + 1]) * 32, "q": qid,
                                "b": bytes(20), "t": created, "sig": bytes(64)})
        await db.migrate()
        feed_ = payments_repo.DatabaseReferenceFeed(db, clock=lambda: now)
        got = await feed_.references("ethereum", 0, 10)
        assert [e.reference for e in got] == [bytes([2]) * 32, bytes([1]) * 32]  # oldest first
        assert got[0].cursor < got[1].cursor
        async with db.begin() as s:
            assert (await payments_repo.get_payment(s, "00000000-0000-0000-0000-000000000000")).code is None
    finally:
        await db.dispose()


async def test_openapi_documents_codes_transfers_and_the_feed(start):  # noqa: F811
    gw = await start()
    status, spec, _ = await gw.get("/openapi.json")
    assert status == 200
    feed_op = spec["paths"]["/v1/payment-references"]["get"]
    assert {p["name"] for p in feed_op["parameters"]} == {"chain", "after", "limit"}
    assert feed_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReferenceFeed"}
    assert "/v1/payments/by-code/{code}" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert set(schemas["Instructions"]["properties"]) >= {"transfer", "uri"}
    assert schemas["Instructions"]["properties"]["transfer"]["required"] == ["to", "amount", "comment"]
    assert schemas["Payment"]["properties"]["code"]["type"] == ["string", "null"]
    assert set(schemas["ReferenceFeed"]["required"]) == {"entries", "next"}


async def test_database_feed_failure_is_a_typed_storage_error(tmp_path):
    from bridge.errors import StorageError
    from bridge.storage.db import Database

    db = Database(f"sqlite+aiosqlite:///{tmp_path}/never-migrated.sqlite")  # no tables
    try:
        with pytest.raises(StorageError):
            await payments_repo.DatabaseReferenceFeed(db).references("ethereum", 0, 10)
    finally:
        await db.dispose()


async def test_concurrent_creations_of_one_payment_answer_the_same_payment(fgw):
    """A dApp that retries ``POST /v1/payments`` while its first request is still running (the
    chaos harness does, after an API restart): every request for the quote and beneficiary is
    answered with the one payment (201 once, 200 otherwise), none with a bare 409 "retry" from
    the loser of the unique quote index (seen on PostgreSQL before the loser asked again)."""
    import asyncio

    from tests.integration.api.test_api import BENEFICIARY

    for _ in range(5):
        q = await fgw.quote(credits="500")
        answers = await asyncio.gather(*(fgw.post("/v1/payments", {"quote_id": q["id"], "beneficiary": BENEFICIARY})
                                         for _ in range(8)))
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] * 7 + [201], [body for _, body, _ in answers]
        assert len({body["id"] for _, body, _ in answers}) == 1
