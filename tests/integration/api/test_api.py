"""The gateway API, served for real (AppRunner + TCPSite on 127.0.0.1) over a migrated SQLite
file database, with a keystore-loaded Ed25519 quote key and fixed prices. No chain node is
needed for these endpoints."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from bridge.payments.evm_deposit import checksum_address, deposit_address
from bridge.api.app import create_app
from bridge.api.keys import LIMITER
from bridge.config import Settings, settings_from_dict
from bridge.errors import PriceUnavailable
from bridge.payments.state import CREDITED
from bridge.pricing.credits import amount_for_credits, credits_for_amount
from bridge.pricing.quotes import (
    QuoteService,
    QuoteSigner,
    parse_rfc3339,
    quote_from_json,
    terms_from_json,
    verify_quote,
    verify_terms,
)
from bridge.pricing.aggregate import PriceAggregator
from bridge.pricing.sources.fixed import FixedPriceSource
from bridge.storage import payments as payments_repo
from bridge.storage.db import Database
from bridge.types import utcnow

LOCK = "0x" + "11" * 20
LEDGER = "0x" + "22" * 20
BENEFICIARY = "0x" + "ab" * 20
PASSWORD_ENV = "CB_API_TEST_QUOTE_PW"
SECRET = bytes(range(100, 132))
PROBLEM = "application/problem+json"


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


class BrokenSource:
    """A price source with a bug in it (raises a non-bridge exception)."""

    name = "broken"

    async def fetch(self, symbols):
        raise RuntimeError("internal detail that must not leak: db password hunter2")


def make_settings(home: Path, keystore: Path, pricing: dict | None = None, payments: dict | None = None,
                  storage_url: str | None = None, chains: list | None = None, **api) -> Settings:
    return settings_from_dict({
        "chains": [
            {"family": "evm", "name": "ethereum", "chain_id": 1, "rpc": ["http://127.0.0.1:1"], "token": "ETH",
             "contracts": {"lock": LOCK}},
            {"family": "evm", "name": "settlement", "chain_id": 31337, "rpc": ["http://127.0.0.1:1"],
             "contracts": {"credits": LEDGER}},
            *(chains or []),
        ],
        "settlement_chain": "settlement",
        "storage": {"url": storage_url or f"sqlite+aiosqlite:///{home}/api.sqlite"},
        "pricing": {"credit_price_usd": "0.01", "quote_ttl_seconds": 900, "fixed_usd": {"ETH": "3000"},
                    "min_amount": {"ETH": 1000}, **(pricing or {})},
        "api": {"quote_key": {"keystore": str(keystore), "password_env": PASSWORD_ENV},
                "rate_limit_per_minute": 6000, "rate_limit_burst": 1000, **api},
        **({"payments": payments} if payments else {}),
    })


@dataclass
class Gateway:
    url: str
    http: aiohttp.ClientSession
    app: web.Application
    db: Database
    clock: Clock
    signer: QuoteSigner
    settings: Settings

    async def request(self, method: str, path: str, **kw) -> tuple[int, dict | str, aiohttp.ClientResponse]:
        async with self.http.request(method, self.url + path, **kw) as r:
            text = await r.text()
            if r.content_type in ("application/json", PROBLEM):
                return r.status, json.loads(text), r
            return r.status, text, r

    async def post(self, path: str, body) -> tuple[int, dict, aiohttp.ClientResponse]:
        if isinstance(body, (bytes, str)):
            return await self.request("POST", path, data=body, headers={"Content-Type": "application/json"})
        return await self.request("POST", path, json=body)

    async def get(self, path: str):
        return await self.request("GET", path)

    async def quote(self, **body) -> dict:
        status, q, _ = await self.post("/v1/quotes", {"token": "ETH", **body})
        assert status == 201, q
        return q

    async def payment(self, quote_id: str, beneficiary: str = BENEFICIARY) -> dict:
        status, p, _ = await self.post("/v1/payments", {"quote_id": quote_id, "beneficiary": beneficiary})
        assert status == 201, p
        return p


@pytest.fixture
async def start(tmp_path, monkeypatch):
    """``await start(**api_settings, source=...)`` serves a fresh gateway; all are stopped after the test."""
    from bridge.keystore import write_keystore

    monkeypatch.setenv(PASSWORD_ENV, "api test password")
    write_keystore(tmp_path / "quote-key.json", "ed25519", SECRET, "api test password", n=2**10)
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []

    async def _start(source=None, pricing=None, payments=None, host="127.0.0.1", storage_url=None, instructions=None,
                     chains=None, **api) -> Gateway:
        home = tmp_path / f"gateway{len(runners)}"  # each gateway its own database, one key file
        home.mkdir()
        settings = make_settings(home, tmp_path / "quote-key.json", pricing, payments, storage_url, chains, **api)
        db = Database(settings.storage.url)
        await db.migrate()
        signer = QuoteSigner.from_ref(settings.api.quote_key)
        source = source or FixedPriceSource(settings.pricing.fixed_usd)
        clock = Clock()
        app = create_app(settings, db=db, quote_service=QuoteService.from_settings(settings, source, signer),
                         signer=signer, clock=clock, instructions=instructions)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, host, 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        http = aiohttp.ClientSession()
        sessions.append(http)
        netloc = f"[{host}]" if ":" in host else host
        return Gateway(f"http://{netloc}:{port}", http, app, db, clock, signer, settings)

    yield _start
    for s in sessions:
        await s.close()
    for r in runners:
        await r.cleanup()


@pytest.fixture
async def gw(start) -> Gateway:
    return await start()


def assert_problem(status: int, body, resp, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, body
    assert resp.content_type == PROBLEM
    assert set(body) >= {"type", "title", "status", "detail"}
    assert body["status"] == expected_status
    if code is not None:
        assert body["type"].endswith("/" + code), body["type"]
    text = json.dumps(body)
    assert "Traceback" not in text and "hunter2" not in text


# --- quotes -----------------------------------------------------------------------------------
async def test_quote_by_credits(gw):
    status, q, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "500"})
    assert status == 201, q
    assert resp.headers["Location"] == f"/v1/quotes/{q['id']}"
    assert {"id", "token", "chain", "amount", "credits", "rate", "expires_at", "created_at", "key_id",
            "signature"} <= set(q)
    assert q["token"] == "ETH" and q["chain"] == "ethereum" and q["credits"] == "500" and q["rate"] == "3000"
    # rounded up: the payer pays at least 500 credits' worth ($5 at $3000/ETH = 1666666666666666.67 wei)
    assert q["amount"] == "1666666666666667"
    assert int(q["amount"]) == amount_for_credits(500, Decimal("0.01"), Decimal("3000"), 18)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", q["expires_at"])
    created, expires = parse_rfc3339(q["created_at"]), parse_rfc3339(q["expires_at"])
    assert expires - created == timedelta(seconds=900)
    assert re.fullmatch(r"[0-9a-f]{128}", q["signature"]) and q["key_id"] == gw.signer.key_id
    _, key, _ = await gw.get("/v1/gateway")
    verify_quote(quote_from_json(q), key["public_key"])

    status, again, _ = await gw.get(f"/v1/quotes/{q['id']}")
    assert status == 200 and again == q


async def test_quote_by_amount_rounds_credits_down(gw):
    q = await gw.quote(amount="1666666666666666")  # a hair less than 500 credits' worth
    assert q["credits"] == "499" and q["amount"] == "1666666666666666"
    q = await gw.quote(amount=10**18)  # JSON integers are accepted too
    assert q["credits"] == "300000" and q["amount"] == str(10**18)
    assert int(q["credits"]) == credits_for_amount(10**18, Decimal("0.01"), Decimal("3000"), 18)


BAD_QUOTES = [
    (b"{", 400), (b"", 400), (b"[]", 400), (b'"ETH"', 400), (b"null", 400), (b"\xff\xfe", 400),
    (b'{"token": "ETH", "credits": NaN}', 400), (b'{"token": "ETH", "credits": Infinity}', 400),
    (b'{"token": "ETH", "credits": "5", "credits": "6"}', 400),
    (b"[" * 50_000 + b"]" * 10, 400),
    ({"token": "ETH", "credits": 1.5}, 400), ({"token": "ETH", "credits": 5.0}, 400),
    ({"token": "ETH", "credits": 1e3}, 400), ({"token": "ETH", "credits": "1e3"}, 400),
    ({"token": "ETH", "credits": "1.5"}, 400), ({"token": "ETH", "credits": "-5"}, 400),
    ({"token": "ETH", "credits": -5}, 400), ({"token": "ETH", "credits": 0}, 400),
    ({"token": "ETH", "credits": "0"}, 400), ({"token": "ETH", "credits": "abc"}, 400),
    ({"token": "ETH", "credits": " 5"}, 400), ({"token": "ETH", "credits": "+5"}, 400),
    ({"token": "ETH", "credits": "٥"}, 400),  # a non-ASCII digit
    ({"token": "ETH", "credits": "5\n"}, 400), ({"token": "ETH\n", "credits": "5"}, 400),
    ({"token": "ETH", "credits": "9" * 100}, 400), ({"token": "ETH", "credits": 10**80}, 400),
    (b'{"token": "ETH", "credits": ' + b"9" * 5000 + b"}", 400),
    ({"token": "ETH", "credits": 2**128}, 400), ({"token": "ETH", "amount": 2**256}, 400),
    ({"token": "ETH", "credits": True}, 400), ({"token": "ETH", "credits": None}, 400),
    ({"token": "ETH", "credits": ["5"]}, 400), ({"token": "ETH", "credits": {"v": 5}}, 400),
    ({"token": "DOGE", "credits": "5"}, 400), ({"token": "eth", "credits": "5"}, 400),
    ({"token": 5, "credits": "5"}, 400), ({"credits": "5"}, 400), ({"token": "ETH"}, 400),
    ({"token": "ETH", "credits": "5", "amount": "5"}, 400),
    ({"token": "ETH", "credits": "5", "beneficiary": BENEFICIARY}, 400),
    ({"token": "ETH", "amount": "999"}, 400),  # below the configured minimum
    ({"token": "ETH", "amount": "1000"}, 400),  # does not buy one credit
    (b'{"token": "ETH", "credits": "5", "pad": "' + b"x" * 70_000 + b'"}', 413),
]


@pytest.mark.parametrize("body,expected", BAD_QUOTES)
async def test_bad_quote_requests_are_problems(gw, body, expected):
    status, problem, resp = await gw.post("/v1/quotes", body)
    assert_problem(status, problem, resp, expected)


async def test_unknown_field_names_are_echoed_briefly(gw):
    body = {"token": "ETH", "credits": "5", **{f"{i:02d}" + "x" * 1000: 1 for i in range(20)}}
    status, problem, resp = await gw.post("/v1/quotes", body)
    assert_problem(status, problem, resp, 400, "invalid-input")
    assert len(problem["detail"]) < 300 and problem["detail"].startswith("unknown field(s): 00xxx")


async def test_unknown_quote(gw):
    for path in ("/v1/quotes/6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6", "/v1/quotes/not-a-uuid"):
        status, body, resp = await gw.get(path)
        assert_problem(status, body, resp, 404, "not-found")


# --- payments ---------------------------------------------------------------------------------
async def test_payment_creation_and_lookup(gw):
    q = await gw.quote(credits="500")
    status, p, resp = await gw.post("/v1/payments", {"quote_id": q["id"], "beneficiary": BENEFICIARY})
    assert status == 201, p
    assert resp.headers["Location"] == f"/v1/payments/{p['id']}"
    assert re.fullmatch(r"0x[0-9a-f]{64}", p["reference"])
    assert p["state"] == "new" and p["quote_id"] == q["id"] and p["token"] == "ETH"
    assert p["amount"] == q["amount"] and p["credits"] == q["credits"] and p["expires_at"] == q["expires_at"]
    assert p["beneficiary"] == BENEFICIARY
    to = checksum_address(deposit_address(bytes.fromhex(LOCK[2:]), bytes.fromhex(p["reference"][2:])))
    assert p["instructions"] == {"chain": "ethereum", "chain_id": 1, "contract": LOCK, "method": "lock(bytes32)",
                                 "reference": p["reference"], "value": q["amount"],
                                 "transfer": {"to": to, "amount": q["amount"], "comment": None},
                                 "uri": f"ethereum:{to}@1?value={q['amount']}"}
    assert "settlement" not in p
    _, key, _ = await gw.get("/v1/gateway")
    terms = terms_from_json(p["terms"])
    verify_terms(terms, key["public_key"])
    assert terms.reference.hex() == p["reference"][2:] and terms.payment_id == p["id"]
    assert terms.beneficiary.hex() == BENEFICIARY[2:] and terms.quote_id == q["id"]

    status, again, _ = await gw.get(f"/v1/payments/{p['id']}")
    assert status == 200 and again == p

    # two payments get different references
    p2 = await gw.payment((await gw.quote(credits="500"))["id"])
    assert p2["reference"] != p["reference"] and p2["id"] != p["id"]


async def test_payment_creation_is_idempotent_per_quote(gw):
    q = await gw.quote(credits="10")
    p = await gw.payment(q["id"])
    status, again, _ = await gw.post("/v1/payments", {"quote_id": q["id"], "beneficiary": BENEFICIARY.upper()
                                                      .replace("0X", "0x")})
    assert status == 200 and again == p
    status, body, resp = await gw.post("/v1/payments", {"quote_id": q["id"], "beneficiary": "0x" + "cd" * 20})
    assert_problem(status, body, resp, 409, "conflict")


async def test_a_quote_used_by_another_caller_is_a_409_not_their_payment(gw):
    from bridge.api.auth import create_key

    _, key_a = await create_key(gw.db, "shop-a", "merchant")
    _, key_b = await create_key(gw.db, "shop-b", "merchant")

    async def pay(quote_id: str, key: str | None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await gw.request("POST", "/v1/payments", json={"quote_id": quote_id, "beneficiary": BENEFICIARY},
                                headers=headers)

    # merchant A's payment: B and an anonymous caller get 409 quote-used, never A's payment
    q = await gw.quote(credits="10")
    status, mine, _ = await pay(q["id"], key_a)
    assert status == 201
    for other in (key_b, None):
        status, body, resp = await pay(q["id"], other)
        assert_problem(status, body, resp, 409, "quote-used")
        assert mine["id"] not in json.dumps(body) and mine["reference"] not in json.dumps(body)
    status, again, _ = await pay(q["id"], key_a)  # A itself keeps the idempotent answer
    assert status == 200 and again == mine

    # an anonymous payment: a merchant gets 409; anonymous again keeps the idempotent answer
    q = await gw.quote(credits="10")
    status, anon, _ = await pay(q["id"], None)
    assert status == 201
    status, body, resp = await pay(q["id"], key_a)
    assert_problem(status, body, resp, 409, "quote-used")
    status, again, _ = await pay(q["id"], None)
    assert status == 200 and again == anon
    async with gw.db.begin() as s:
        assert (await payments_repo.get_payment(s, anon["id"])).merchant_id is None


async def test_terms_by_reference_verify_with_the_gateway_key(gw):
    p = await gw.payment((await gw.quote(credits="42"))["id"])
    status, body, _ = await gw.get(f"/v1/payments/by-reference/{p['reference']}")
    assert status == 200
    assert body == p["terms"]
    _, key, _ = await gw.get("/v1/gateway")
    assert key == {"key_id": gw.signer.key_id, "public_key": gw.signer.public_key}
    terms = terms_from_json(body)
    verify_terms(terms, key["public_key"])
    assert terms.amount == int(p["amount"]) and terms.credits == 42
    assert terms.expires_at == parse_rfc3339(p["expires_at"])

    status, body, resp = await gw.get("/v1/payments/by-reference/0x" + "00" * 32)
    assert_problem(status, body, resp, 404, "not-found")
    for bad in ("0x1234", "ab" * 32, "0x" + "zz" * 32, "0x" + "ab" * 32 + "%0A", "0x" + "ab" * 31 + "%20ab"):
        status, body, resp = await gw.get(f"/v1/payments/by-reference/{bad}")
        assert_problem(status, body, resp, 400, "invalid-input")


async def test_expired_quote_is_refused(gw):
    q = await gw.quote(credits="5")
    gw.clock.now += timedelta(seconds=900)  # exactly at expiry
    status, body, resp = await gw.post("/v1/payments", {"quote_id": q["id"], "beneficiary": BENEFICIARY})
    assert_problem(status, body, resp, 409, "quote-expired")


async def test_unknown_quote_for_payment(gw):
    status, body, resp = await gw.post("/v1/payments", {"quote_id": "6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6",
                                                        "beneficiary": BENEFICIARY})
    assert_problem(status, body, resp, 404, "not-found")


CHECKSUMMED = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # the EIP-55 example


@pytest.mark.parametrize("body", [
    {"quote_id": "nope", "beneficiary": BENEFICIARY},
    {"quote_id": 5, "beneficiary": BENEFICIARY},
    {"quote_id": None, "beneficiary": BENEFICIARY},
    {"quote_id": "QUOTE", "beneficiary": "0x" + "ab" * 19},
    {"beneficiary": BENEFICIARY},
    {"quote_id": "6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6"},
    {"quote_id": "QUOTE", "beneficiary": "ab" * 20},
    {"quote_id": "QUOTE", "beneficiary": "0x" + "ab" * 21},
    {"quote_id": "QUOTE", "beneficiary": "0x" + "zz" * 20},
    {"quote_id": "QUOTE", "beneficiary": "0x" + "00" * 20},
    {"quote_id": "QUOTE", "beneficiary": CHECKSUMMED.replace("aA", "Aa")},  # broken checksum
    {"quote_id": "QUOTE", "beneficiary": 12345},
    {"quote_id": "QUOTE", "beneficiary": BENEFICIARY + "\n"},
    {"quote_id": "QUOTE", "beneficiary": "0x" + "ab" * 19 + " ab"},
    {"quote_id": "QUOTE", "beneficiary": BENEFICIARY, "credits": "5"},
])
async def test_bad_payment_requests_are_problems(gw, body):
    q = await gw.quote(credits="5")
    body = {k: (q["id"] if v == "QUOTE" else v) for k, v in body.items()}
    status, problem, resp = await gw.post("/v1/payments", body)
    assert_problem(status, problem, resp, 400, "invalid-input")


async def test_checksummed_beneficiary_is_accepted(gw):
    p = await gw.payment((await gw.quote(credits="5"))["id"], CHECKSUMMED)
    assert p["beneficiary"] == CHECKSUMMED.lower()


async def test_unknown_payment(gw):
    for path in ("/v1/payments/6f1c2a3e-0d4b-4c5e-9f60-718293a4b5c6", "/v1/payments/xyz"):
        status, body, resp = await gw.get(path)
        assert_problem(status, body, resp, 404, "not-found")


async def test_credited_payment_shows_its_settlement(gw):
    p = await gw.payment((await gw.quote(credits="500"))["id"])
    tx = bytes.fromhex("cd" * 32)
    async with gw.db.begin() as s:
        assert await payments_repo.update_payment(s, p["id"], now=utcnow(), state=CREDITED, paid_amount=int(p["amount"]),
                                                  credited=500, settlement_tx=tx, expected_state="new")
    status, body, _ = await gw.get(f"/v1/payments/{p['id']}")
    assert status == 200 and body["state"] == "credited"
    assert body["settlement"] == {"tx_hash": "0x" + tx.hex(), "credits": "500"}
    assert body["paid_amount"] == p["amount"] and body["terms"] == p["terms"]


# --- the plumbing -----------------------------------------------------------------------------
async def test_unknown_route_and_method_are_problems(gw):
    status, body, resp = await gw.get("/v1/nothing-here")
    assert_problem(status, body, resp, 404)
    status, body, resp = await gw.request("PUT", "/v1/quotes", json={})
    assert_problem(status, body, resp, 405)
    assert "POST" in resp.headers["Allow"]
    status, body, resp = await gw.request("DELETE", "/v1/health")
    assert_problem(status, body, resp, 405)


async def test_health(gw):
    status, body, _ = await gw.get("/v1/health")
    assert status == 200 and body == {"status": "ok"}


async def test_metrics(gw):
    await gw.quote(credits="5")
    await gw.post("/v1/quotes", {"token": "ETH", "credits": "-1"})
    await gw.get("/v1/no/such/route")
    status, text, resp = await gw.get("/metrics")
    assert status == 200 and resp.content_type == "text/plain"
    assert 'creditbridge_api_requests_total{method="POST",route="/v1/quotes",status="201"} 1.0' in text
    assert 'creditbridge_api_requests_total{method="POST",route="/v1/quotes",status="400"} 1.0' in text
    assert 'creditbridge_api_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    assert 'creditbridge_api_quotes_issued_total{chain="ethereum",token="ETH"} 1.0' in text
    assert 'creditbridge_api_request_duration_seconds_bucket{le="+Inf",method="POST",route="/v1/quotes"} 2.0' in text


async def test_metrics_registries_are_per_app(start):
    a, b = await start(), await start()
    await a.quote(credits="5")
    _, text_b, _ = await b.get("/metrics")
    assert 'quotes_issued_total{chain="ethereum",token="ETH"}' not in text_b


async def test_rate_limit(start):
    gw = await start(rate_limit_per_minute=1, rate_limit_burst=3)
    for _ in range(3):
        status, _, _ = await gw.get("/v1/gateway")
        assert status == 200
    status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "5"})
    assert_problem(status, body, resp, 429, "rate-limited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    # monitoring and the signer nodes' terms look-up are not limited
    for _ in range(5):
        assert (await gw.get("/v1/health"))[0] == 200
        assert (await gw.get("/v1/payments/by-reference/0x" + "00" * 32))[0] == 404
    _, text, _ = await gw.get("/metrics")
    assert 'route="/v1/quotes",status="429"} 1.0' in text


async def test_forwarded_for_is_ignored_unless_trusted(start):
    gw = await start(rate_limit_per_minute=1, rate_limit_burst=1)
    assert (await gw.request("GET", "/v1/gateway", headers={"X-Forwarded-For": "10.0.0.1"}))[0] == 200
    assert (await gw.request("GET", "/v1/gateway", headers={"X-Forwarded-For": "10.0.0.2"}))[0] == 429
    trusting = await start(rate_limit_per_minute=1, rate_limit_burst=1, trust_forwarded_for=True)
    for ip in ("10.0.0.1", "10.0.0.2"):
        h = {"X-Forwarded-For": f"6.6.6.6, {ip}"}  # the proxy appended the last entry
        assert (await trusting.request("GET", "/v1/gateway", headers=h))[0] == 200
    h = {"X-Forwarded-For": "7.7.7.7, 10.0.0.1"}  # a spoofed left part does not buy a new bucket
    assert (await trusting.request("GET", "/v1/gateway", headers=h))[0] == 429


async def test_ipv6_clients_are_limited_by_their_64(start):
    # a real IPv6 peer (::1) is limited like any client
    gw = await start(host="::1", rate_limit_per_minute=1, rate_limit_burst=1)
    assert (await gw.get("/v1/gateway"))[0] == 200
    assert (await gw.get("/v1/gateway"))[0] == 429
    assert list(gw.app[LIMITER]._buckets) == ["::/64"]
    # behind a proxy: every address of one /64 shares a bucket; another /64 has its own;
    # an IPv4-mapped address is its IPv4 address
    trusting = await start(host="::1", rate_limit_per_minute=1, rate_limit_burst=1, trust_forwarded_for=True)

    async def from_(ip: str) -> int:
        return (await trusting.request("GET", "/v1/gateway", headers={"X-Forwarded-For": ip}))[0]

    assert await from_("2001:db8:1:2::1") == 200
    assert await from_("2001:db8:1:2:ffff:ffff:ffff:fffe") == 429
    assert await from_("2001:db8:1:3::1") == 200
    assert await from_("::ffff:10.0.0.1") == 200
    assert await from_("10.0.0.1") == 429
    assert await from_("10.0.0.2") == 200  # IPv4 addresses count one by one


async def test_ipv4_peer_of_a_dual_stack_listener_counts_as_ipv4(start):
    import socket

    gw = await start(rate_limit_per_minute=1, rate_limit_burst=1)
    # a dual-stack IPv6 socket reports an IPv4 peer as ::ffff:127.0.0.1
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::ffff:127.0.0.1", 0))
    port = sock.getsockname()[1]
    runner = web.AppRunner(gw.app)  # a second listener on the same app
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        async with gw.http.get(f"http://127.0.0.1:{port}/v1/gateway") as r:
            assert r.status == 200
        assert list(gw.app[LIMITER]._buckets) == ["127.0.0.1"]
        # the same client through the plain IPv4 listener shares that bucket
        assert (await gw.get("/v1/gateway"))[0] == 429
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("field, value", [("quote_retention_seconds", -1), ("quote_prune_interval_seconds", 0),
                                          ("quote_prune_batch", 0), ("quote_retention_seconds", "a week")])
def test_quote_retention_config_is_validated(tmp_path, field, value):
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        make_settings(tmp_path, tmp_path / "k.json", **{field: value})
    assert f"config: api.{field}: " in str(e.value) and "\n" not in str(e.value)
    assert make_settings(tmp_path, tmp_path / "k.json").api.quote_retention_seconds == 7 * 86_400


async def test_unknown_exception_is_a_clean_500(start, caplog):
    gw = await start(source=BrokenSource())
    with caplog.at_level(logging.ERROR, logger="creditbridge.http"):
        status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "5"})
    assert_problem(status, body, resp, 500)
    assert "RuntimeError" not in json.dumps(body)
    assert any("RuntimeError" in (r.exc_text or "") or r.exc_info for r in caplog.records)


class NoPriceSource:
    name = "none"

    async def fetch(self, symbols):
        raise PriceUnavailable("every price source failed")


async def test_price_unavailable_is_503(start):
    gw = await start(source=FixedPriceSource({}))
    status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "5"})
    assert_problem(status, body, resp, 503, "price-unavailable")
    gw = await start(source=NoPriceSource())
    status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "5"})
    assert_problem(status, body, resp, 503, "price-unavailable")


# --- tokens, prices, credit spread, the aggregator behind quotes -----------------------------
def two_sources(a: str, b: str, clock=None) -> PriceAggregator:
    kw = {"clock": clock} if clock else {}
    return PriceAggregator(
        [FixedPriceSource({"ETH": Decimal(a)}, name="src-a", **kw), FixedPriceSource({"ETH": Decimal(b)}, name="src-b", **kw)],
        min_sources=2, max_deviation=Decimal("0.02"), max_age=timedelta(minutes=2),
        registry=CollectorRegistry(), symbols={"ETH"}, **kw)


async def test_tokens(gw):
    status, tokens, resp = await gw.get("/v1/tokens")
    assert status == 200 and resp.content_type == "application/json"
    assert tokens == [{"symbol": "ETH", "chain": "ethereum", "decimals": 18, "native": True, "min_amount": "1000"}]


async def test_public_catalogue_routes_are_rate_limited(start):
    gw = await start(rate_limit_per_minute=1, rate_limit_burst=3)
    for path in ("/v1/tokens", "/v1/prices", "/openapi.json"):
        assert (await gw.get(path))[0] == 200
    status, body, resp = await gw.get("/docs")
    assert_problem(status, body, resp, 429, "rate-limited")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_prices_of_a_single_source(gw):
    status, view, _ = await gw.get("/v1/prices")
    assert status == 200
    eth = view["prices"]["ETH"]
    assert eth["available"] is True and eth["price_usd"] == "3000"
    assert [s["name"] for s in eth["sources"]] == ["fixed"]
    assert view["sources"][0]["name"] == "fixed" and view["sources"][0]["last_error"] is None


async def test_quotes_use_the_median_of_the_aggregated_sources(start):
    agg = two_sources("3000", "3030")
    await agg.refresh()
    gw = await start(source=agg)
    q = await gw.quote(credits="500")
    assert q["rate"] == "3015" and q["sources"] == ["src-a", "src-b"]
    assert int(q["amount"]) == amount_for_credits(500, Decimal("0.01"), Decimal("3015"), 18)
    _, key, _ = await gw.get("/v1/gateway")
    verify_quote(quote_from_json(q), key["public_key"])  # the sources are signed too
    status, view, _ = await gw.get("/v1/prices")
    assert view["prices"]["ETH"]["price_usd"] == "3015" and view["min_sources"] == 2


async def test_sources_disagreeing_refuse_quotes(start):
    agg = two_sources("3000", "3100")  # 3.3% apart, 2% allowed
    await agg.refresh()
    gw = await start(source=agg)
    status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "500"})
    assert_problem(status, body, resp, 503, "price-unavailable")
    assert "disagree" in body["detail"] and "src-a=3000" in body["detail"] and "src-b=3100" in body["detail"]
    _, view, _ = await gw.get("/v1/prices")
    assert view["prices"]["ETH"]["available"] is False and "disagree" in view["prices"]["ETH"]["reason"]


async def test_stale_or_missing_prices_refuse_quotes(start):
    clock = Clock()
    agg = two_sources("3000", "3001", clock=clock)
    gw = await start(source=agg)
    status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "500"})  # never refreshed
    assert_problem(status, body, resp, 503, "price-unavailable")
    assert "0 fresh price source(s)" in body["detail"] and "no data" in body["detail"]
    await agg.refresh()
    gw.clock.now = clock.now = clock.now + timedelta(minutes=3)  # both older than max_age now
    status, body, resp = await gw.post("/v1/quotes", {"token": "ETH", "credits": "500"})
    assert_problem(status, body, resp, 503, "price-unavailable")
    assert "stale" in body["detail"]


async def test_credit_spread_is_added_to_the_credit_price(start):
    gw = await start(pricing={"credit_spread": "0.05"})
    q = await gw.quote(credits="500")
    assert q["credit_price_usd"] == "0.0105"
    assert int(q["amount"]) == amount_for_credits(500, Decimal("0.0105"), Decimal("3000"), 18)
    by_amount = await gw.quote(amount=q["amount"])
    assert by_amount["credits"] == "500"  # the round trip holds with the spread too
    _, key, _ = await gw.get("/v1/gateway")
    verify_quote(quote_from_json(q), key["public_key"])


async def test_openapi_and_docs(gw):
    status, spec, resp = await gw.get("/openapi.json")
    assert status == 200 and spec["openapi"] == "3.1.0"
    assert spec["components"]["schemas"]["QuoteRequest"]["properties"]["token"]["enum"] == ["ETH"]
    assert "/v1/quotes" in spec["paths"] and "503" in spec["paths"]["/v1/quotes"]["post"]["responses"]
    status, page, resp = await gw.get("/docs")
    assert status == 200 and resp.content_type == "text/html"
    assert "<h1>creditbridge gateway API</h1>" in page and 'id="createQuote"' in page
