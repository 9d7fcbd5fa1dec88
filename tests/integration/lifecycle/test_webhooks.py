"""Signed webhooks end to end: a merchant registers a URL, the payment watcher's state
changes go through the outbox to a real receiver server that verifies each signature;
redelivery with backoff after 500s, the delivery log, manual redelivery, SSRF guard, auth."""

from __future__ import annotations

import asyncio
import time

import pytest

from bridge.payments.state import CONFIRMED, UNDERPAID
from bridge.webhooks import signing
from bridge.webhooks.targets import GuardedResolver, address_allowed, parse_target, TargetRefused


async def register(lc, key: str, url: str | None = None) -> dict:
    status, w = await lc.request("POST", "/v1/webhooks", key, json={"url": url or lc.receiver.url})
    assert status == 201, w
    lc.receiver.secret = w["secret"]
    return w


async def test_state_changes_are_delivered_signed(lifecycle):
    lc = await lifecycle()
    key = await lc.merchant()
    w = await register(lc, key)
    assert w["secret"].startswith("whsec_") and w["url"] == lc.receiver.url
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]) // 2)
    assert await lc.watcher.step() == 1
    await lc.deposit(p, int(p["amount"]) - int(p["amount"]) // 2)
    assert await lc.watcher.step() == 1
    got = sorted(await lc.wait_delivered(2), key=lambda g: g["body"]["type"], reverse=True)
    await lc.worker.drain()
    assert lc.receiver.rejected == 0
    types = [g["body"]["type"] for g in got]
    assert types == ["payment.underpaid", "payment.confirmed"]
    first = got[0]["body"]
    assert first["data"]["payment_id"] == p["id"] and first["data"]["state"] == UNDERPAID
    assert first["data"]["previous_state"] == "new" and first["data"]["balance"] == "underpaid"
    assert got[1]["body"]["data"]["state"] == CONFIRMED and got[1]["body"]["data"]["paid_amount"] == p["amount"]
    assert got[0]["event"] == first["id"] and got[0]["delivery"] != got[1]["delivery"]
    # the log
    status, log = await lc.request("GET", f"/v1/webhooks/{w['id']}/deliveries", key)
    assert status == 200
    assert {d["status"] for d in log["deliveries"]} == {"succeeded"}
    assert all(d["attempts"] == 1 and d["log"][0]["status_code"] == 200 for d in log["deliveries"])
    # the list never shows the secret again
    status, ws = await lc.request("GET", "/v1/webhooks", key)
    assert status == 200 and [x["id"] for x in ws["webhooks"]] == [w["id"]] and "secret" not in ws["webhooks"][0]


async def test_redelivery_with_backoff_after_500s(lifecycle):
    lc = await lifecycle()
    key = await lc.merchant()
    w = await register(lc, key)
    lc.receiver.script = [500, 503]
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]))
    await lc.watcher.step()
    got = await lc.wait_delivered(1)
    assert [r["status"] for r in lc.receiver.received] == [500, 503, 200]
    assert len({r["delivery"] for r in lc.receiver.received}) == 1  # the same delivery, retried
    assert got[0]["body"]["type"] == "payment.confirmed"
    await lc.worker.drain()
    _, log = await lc.request("GET", f"/v1/webhooks/{w['id']}/deliveries", key)
    (d,) = log["deliveries"]
    assert d["status"] == "succeeded" and d["attempts"] == 3
    assert [a["status_code"] for a in d["log"]] == [500, 503, 200]


async def test_gives_up_after_max_attempts_and_4xx_is_final(lifecycle):
    lc = await lifecycle()
    key = await lc.merchant()
    w = await register(lc, key)
    lc.receiver.script = [500, 500, 500, 500, 404]
    p1 = await lc.payment(key)
    await lc.deposit(p1, int(p1["amount"]))
    await lc.watcher.step()
    deadline = time.monotonic() + 20
    while len(lc.receiver.received) < 4:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await lc.worker.drain()
    p2 = await lc.payment(key)
    await lc.deposit(p2, int(p2["amount"]))
    await lc.watcher.step()
    while len(lc.receiver.received) < 5:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await lc.worker.drain()
    _, log = await lc.request("GET", f"/v1/webhooks/{w['id']}/deliveries", key)
    by_payment = {d["payment_id"]: d for d in log["deliveries"]}
    assert by_payment[p1["id"]]["status"] == "failed" and by_payment[p1["id"]]["attempts"] == 4
    assert by_payment[p2["id"]]["status"] == "failed" and by_payment[p2["id"]]["attempts"] == 1
    assert by_payment[p2["id"]]["last_status_code"] == 404


async def test_manual_redelivery(lifecycle):
    lc = await lifecycle()
    key = await lc.merchant()
    w = await register(lc, key)
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]))
    await lc.watcher.step()
    (first,) = await lc.wait_delivered(1)
    await lc.worker.drain()
    _, log = await lc.request("GET", f"/v1/webhooks/{w['id']}/deliveries", key)
    did = log["deliveries"][0]["id"]
    status, again = await lc.request("POST", f"/v1/webhooks/deliveries/{did}/redeliver", key)
    assert status == 202 and again["redelivery_of"] == did and again["id"] != did
    got = await lc.wait_delivered(2)
    assert got[1]["event"] == first["event"] and got[1]["delivery"] == again["id"]
    assert got[1]["body"] == first["body"]
    other = await lc.merchant("other shop")
    status, _ = await lc.request("POST", f"/v1/webhooks/deliveries/{did}/redeliver", other)
    assert status == 404


async def test_outbox_survives_a_crash_before_delivery(lifecycle):
    """The event is committed with the state change; a worker started afterwards (a restarted
    process) delivers it."""
    lc = await lifecycle(run_worker=False)
    key = await lc.merchant()
    await register(lc, key)
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]))
    assert await lc.watcher.step() == 1  # committed; nothing delivered: the worker is "down"
    assert lc.receiver.received == []
    task = asyncio.create_task(lc.worker.run())
    try:
        got = await lc.wait_delivered(1)
        assert got[0]["body"]["type"] == "payment.confirmed"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_payments_without_a_merchant_produce_no_deliveries(lifecycle):
    lc = await lifecycle()
    key = await lc.merchant()
    await register(lc, key)
    p = await lc.payment(None)
    await lc.deposit(p, int(p["amount"]))
    assert await lc.watcher.step() == 1
    await asyncio.sleep(0.3)
    assert lc.receiver.received == []


@pytest.mark.parametrize("url", [
    "ftp://example.com/hook", "http://10.0.0.1/hook", "http://169.254.169.254/latest", "http://[fe80::1]/x",
    "http://0.0.0.0/x", "http://user:pw@127.0.0.1/x", "javascript:alert(1)", "http:///nohost", "http://[::1]:1/x",
    "http://127.0.0.1/x",
])
async def test_targets_are_validated(lifecycle, url):
    lc = await lifecycle(payments={"webhooks": {"allow_loopback": False}})
    key = await lc.merchant()
    status, body = await lc.request("POST", "/v1/webhooks", key, json={"url": url})
    assert status == 400 and body["type"].endswith("webhook-target-refused"), body


async def test_loopback_refused_at_delivery_time_too(lifecycle):
    """Registered while allowed; a gateway whose config forbids loopback never sends to it."""
    lc = await lifecycle(payments={"webhooks": {"allow_loopback": False}})
    key = await lc.merchant()
    from bridge.storage import webhooks as repo

    async with lc.db.begin() as s:  # as if registered under an older, looser config
        w = await repo.add_webhook(s, "00000000-0000-4000-8000-000000000001", key.split("_")[1], lc.receiver.url,
                                   "whsec_x", lc.clock.now)
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]))
    await lc.watcher.step()
    deadline = time.monotonic() + 10
    while True:
        _, log = await lc.request("GET", f"/v1/webhooks/{w.id}/deliveries", key)
        if log["deliveries"] and log["deliveries"][0]["status"] == "failed":
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert lc.receiver.received == [] and "not allowed" in log["deliveries"][0]["last_error"]


def _link_local_address() -> str | None:
    """A link-local IPv6 address of this machine with its zone ("fe80::...%eth0"), if any."""
    import ipaddress

    try:
        with open("/proc/net/if_inet6") as f:
            rows = [line.split() for line in f]
    except OSError:
        return None
    for addr, _index, _prefix, scope, _flags, dev in rows:
        if scope == "20":  # link scope
            return f"{ipaddress.IPv6Address(bytes.fromhex(addr))}%{dev}"
    return None


@pytest.fixture
async def link_local_receiver():
    """A real HTTP server on this machine's link-local IPv6 address; records every hit."""
    from aiohttp import web

    address = _link_local_address()
    if address is None:
        pytest.skip("no link-local IPv6 address on this machine")
    hits: list[str] = []

    async def handle(request):
        hits.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, address, 0).start()
    port = runner.addresses[0][1]
    yield f"http://[{address}]:{port}/hook", hits
    await runner.cleanup()


PERMISSIVE = {"webhooks": {"allow_loopback": True, "allow_private": True, "max_attempts": 2,
                           "backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.1, "timeout_seconds": 5}}


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data", "http://[fe80::1]/x", "http://0.0.0.1/x", "http://[fd00:ec2::254]/x",
    "http://100.100.100.200/x", "http://[::ffff:169.254.169.254]/x", "http://[64:ff9b::a9fe:a9fe]/x",
    "http://224.0.0.1/x", "http://255.255.255.255/x",
])
async def test_never_allowed_targets_are_refused_even_when_private_is_allowed(lifecycle, url):
    lc = await lifecycle(payments=PERMISSIVE)
    key = await lc.merchant()
    status, body = await lc.request("POST", "/v1/webhooks", key, json={"url": url})
    assert status == 400 and body["type"].endswith("webhook-target-refused"), body
    # private and loopback targets stay allowed under this config
    assert (await lc.request("POST", "/v1/webhooks", key, json={"url": "http://10.0.0.1/x"}))[0] == 201


async def test_link_local_receiver_is_refused_at_registration_and_delivery(lifecycle, link_local_receiver):
    url, hits = link_local_receiver
    lc = await lifecycle(payments=PERMISSIVE)
    key = await lc.merchant()
    status, body = await lc.request("POST", "/v1/webhooks", key, json={"url": url})
    assert status == 400 and body["type"].endswith("webhook-target-refused"), body
    from bridge.storage import webhooks as repo

    async with lc.db.begin() as s:  # as if registered before this rule
        w = await repo.add_webhook(s, "00000000-0000-4000-8000-000000000002", key.split("_")[1], url,
                                   "whsec_x", lc.clock.now)
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]))
    await lc.watcher.step()
    deadline = time.monotonic() + 10
    while True:
        _, log = await lc.request("GET", f"/v1/webhooks/{w.id}/deliveries", key)
        if log["deliveries"] and log["deliveries"][0]["status"] in ("failed", "succeeded"):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert hits == [] and "not allowed" in log["deliveries"][0]["last_error"], log
    # the delivery client's own resolver refuses it too (DNS rebinding to link-local)
    host = url.split("[", 1)[1].split("]", 1)[0]
    resolver = GuardedResolver(allow_loopback=True, allow_private=True)
    try:
        with pytest.raises(OSError):
            await resolver.resolve(host, 80, 0)
        assert await resolver.resolve("127.0.0.1", 80, 0)
    finally:
        await resolver.close()


async def test_authentication(lifecycle):
    lc = await lifecycle()
    key = await lc.merchant()
    admin = await lc.merchant("ops", role="admin")
    assert (await lc.request("GET", "/v1/webhooks"))[0] == 401
    assert (await lc.request("GET", "/v1/webhooks", "cbk_000000000000_" + "A" * 43))[0] == 401
    assert (await lc.request("GET", "/v1/webhooks", key[:-1] + ("A" if key[-1] != "A" else "B")))[0] == 401
    status, body = await lc.request("GET", "/v1/webhooks", headers={"Authorization": "Basic abc"})
    assert status == 401
    assert (await lc.request("GET", "/v1/webhooks", admin))[0] == 403
    assert (await lc.request("GET", "/v1/admin/status", key))[0] == 403
    w = await register(lc, key)
    other = await lc.merchant("other")
    assert (await lc.request("GET", f"/v1/webhooks/{w['id']}/deliveries", other))[0] == 404
    assert (await lc.request("DELETE", f"/v1/webhooks/{w['id']}", other))[0] == 404
    assert (await lc.request("DELETE", f"/v1/webhooks/{w['id']}", key))[0] == 204
    assert (await lc.request("DELETE", f"/v1/webhooks/{w['id']}", key))[0] == 404
    status, body = await lc.request("POST", "/v1/payments", "cbk_bad", json={})
    assert status == 401 and key not in str(body)


def test_signature_verification():
    body = b'{"a":1}'
    h = signing.header("whsec_k", 1000, body)
    assert signing.verify("whsec_k", h, body, 1000)
    assert signing.verify("whsec_k", h, body, 1200)
    assert not signing.verify("whsec_k", h, body, 1400)  # too old: replay window
    assert not signing.verify("whsec_other", h, body, 1000)
    assert not signing.verify("whsec_k", h, b'{"a":2}', 1000)
    assert not signing.verify("whsec_k", "garbage", body, 1000)


@pytest.mark.parametrize("ip,loop,private,ok", [
    ("8.8.8.8", False, False, True), ("127.0.0.1", False, False, False), ("127.0.0.1", True, False, True),
    ("::1", True, False, True), ("10.1.2.3", True, False, False), ("10.1.2.3", False, True, True),
    ("100.64.0.1", False, False, False), ("::ffff:127.0.0.1", False, False, False), ("224.0.0.1", True, True, False),
    ("169.254.1.1", True, False, False), ("fc00::1", False, False, False), ("2001:4860::8888", False, False, True),
    # never allowed, whatever the config
    ("169.254.169.254", True, True, False), ("169.254.1.1", False, True, False), ("fe80::1", True, True, False),
    ("fe80::1%eth0", True, True, False), ("0.0.0.0", True, True, False), ("0.1.2.3", True, True, False),
    ("fd00:ec2::254", True, True, False), ("100.100.100.200", True, True, False), ("192.0.0.192", True, True, False),
    ("ff02::1", True, True, False), ("239.1.1.1", True, True, False), ("255.255.255.255", True, True, False),
    ("::ffff:169.254.169.254", True, True, False), ("64:ff9b::a9fe:a9fe", True, True, False),
    ("2002:a9fe:a9fe::1", True, True, False), ("fec0::1", True, True, False),
    # still allowed when the config says so
    ("fd00::1", False, True, True), ("100.64.0.1", False, True, True), ("::ffff:10.0.0.1", False, True, True),
    ("64:ff9b::808:808", False, False, True), ("2002:808:808::1", False, False, True),
])
def test_address_rules(ip, loop, private, ok):
    assert address_allowed(ip, allow_loopback=loop, allow_private=private) is ok


def test_parse_target():
    assert parse_target("https://example.com/x") == ("https", "example.com", 443)
    with pytest.raises(TargetRefused):
        parse_target("http://example.com:99999/")


async def test_a_deposit_stored_before_a_crash_is_evaluated_after_the_restart(lifecycle):
    """The follower stored the deposit (and its cursor) but the process died before the payment
    was evaluated: a new watcher (the restarted process) evaluates it and the event reaches the
    outbox; nothing is lost and nothing is evaluated twice."""
    from bridge.payments.watcher import PaymentWatcher
    from bridge.webhooks.outbox import record_event
    from bridge.storage import webhooks as repo

    lc = await lifecycle()
    key = await lc.merchant()
    await register(lc, key)
    p = await lc.payment(key)
    await lc.deposit(p, int(p["amount"]))  # observed and committed; then the crash
    restarted = PaymentWatcher(db=lc.db, watchers={}, settlement=None, settlement_chain="settlement",
                               publish=lc.worker.publish, record=record_event, clock=lc.clock)
    assert await restarted.step() == 1
    assert await restarted.step() == 0
    _, got = await lc.request("GET", f"/v1/payments/{p['id']}")
    assert got["state"] == "confirmed"
    async with lc.db.begin() as s:
        events = await repo.events_for_payment(s, p["id"])
    assert [e.type for e in events] == ["payment.confirmed"]
    assert (await lc.wait_delivered(1))[0]["body"]["id"] == events[0].id
