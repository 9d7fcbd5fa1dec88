"""Merchants' webhooks over HTTP (API-key authenticated, role ``merchant``)::

    POST   /v1/webhooks                           {"url"} -> 201 {id, url, secret (shown once), ...}
    GET    /v1/webhooks                           the merchant's active webhooks (no secrets)
    DELETE /v1/webhooks/{id}                      204; pending deliveries to it fail
    GET    /v1/webhooks/{id}/deliveries           the delivery log, newest first, with attempts
    POST   /v1/webhooks/deliveries/{id}/redeliver 202: a new delivery (new id) of the same event

Targets are validated (``bridge.webhooks.targets``) against ``payments.webhooks`` config.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from aiohttp import web

from bridge.api.auth import authenticate
from bridge.api.handlers import _fields, json_body, transaction
from bridge.api.keys import CLOCK, DB, SETTINGS
from bridge.errors import Conflict, NotFound
from bridge.pricing.quotes import rfc3339
from bridge.storage import webhooks as repo
from bridge.webhooks.signing import new_secret
from bridge.webhooks.targets import check_target

WAKE_DELIVERIES = web.AppKey("wake_deliveries", Callable[[], None])


def _cfg(request: web.Request):
    return request.app[SETTINGS].payments.webhooks


def _webhook_json(w: repo.Webhook) -> dict:
    return {"id": w.id, "url": w.url, "active": w.active, "created_at": rfc3339(w.created_at)}


def _uuid_path(request: web.Request, what: str) -> str:
    try:
        return str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise NotFound(f"no such {what}") from None


def _wake(request: web.Request) -> None:
    wake = request.app.get(WAKE_DELIVERIES)
    if wake is not None:
        wake()


async def create_webhook(request: web.Request) -> web.Response:
    me = await authenticate(request, request.app[DB], role="merchant")
    body = await json_body(request)
    _fields(body, {"url"})
    cfg = _cfg(request)
    url = body["url"]
    await check_target(url, allow_loopback=cfg.allow_loopback, allow_private=cfg.allow_private)
    now = request.app[CLOCK]()
    secret = new_secret()
    async with transaction(request.app[DB]) as s:
        if await repo.count_webhooks(s, me.key_id) >= cfg.max_webhooks_per_merchant:
            raise Conflict(f"at most {cfg.max_webhooks_per_merchant} webhooks per merchant")
        w = await repo.add_webhook(s, str(uuid.uuid4()), me.key_id, url, secret, now)
    return web.json_response({**_webhook_json(w), "secret": secret}, status=201,
                             headers={"Location": f"/v1/webhooks/{w.id}"})


async def list_webhooks(request: web.Request) -> web.Response:
    me = await authenticate(request, request.app[DB], role="merchant")
    async with transaction(request.app[DB]) as s:
        ws = await repo.list_webhooks(s, me.key_id)
    return web.json_response({"webhooks": [_webhook_json(w) for w in ws]})


async def _own_webhook(request: web.Request, s, merchant_id: str, webhook_id: str) -> repo.Webhook:
    w = await repo.get_webhook(s, webhook_id)
    if w is None or w.merchant_id != merchant_id:
        raise NotFound("no such webhook")  # another merchant's webhook does not exist for you
    return w


async def delete_webhook(request: web.Request) -> web.Response:
    me = await authenticate(request, request.app[DB], role="merchant")
    wid = _uuid_path(request, "webhook")
    async with transaction(request.app[DB]) as s:
        w = await _own_webhook(request, s, me.key_id, wid)
        if not w.active:
            raise NotFound("no such webhook")
        await repo.deactivate_webhook(s, wid)
    return web.Response(status=204)


def _delivery_json(d: repo.Delivery, attempts: list[repo.Attempt], event: repo.Event | None) -> dict:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event_type": event.type if event else None,
        "payment_id": event.payment_id if event else None,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status,
        "last_error": d.last_error or None,
        "next_attempt_at": rfc3339(d.next_attempt_at) if d.status == repo.PENDING else None,
        "redelivery_of": d.redelivery_of,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
        "log": [{"attempt": a.attempt, "at": rfc3339(a.at), "status_code": a.status_code, "error": a.error or None}
                for a in attempts],
    }


async def list_deliveries(request: web.Request) -> web.Response:
    me = await authenticate(request, request.app[DB], role="merchant")
    wid = _uuid_path(request, "webhook")
    async with transaction(request.app[DB]) as s:
        await _own_webhook(request, s, me.key_id, wid)
        ds = await repo.deliveries_of(s, wid)
        attempts = await repo.attempts_of(s, [d.id for d in ds])
        events = {d.event_id: await repo.get_event(s, d.event_id) for d in ds}
    return web.json_response({"deliveries": [_delivery_json(d, attempts[d.id], events[d.event_id]) for d in ds]})


async def redeliver(request: web.Request) -> web.Response:
    me = await authenticate(request, request.app[DB], role="merchant")
    did = _uuid_path(request, "delivery")
    now = request.app[CLOCK]()
    async with transaction(request.app[DB]) as s:
        d = await repo.get_delivery(s, did)
        if d is None:
            raise NotFound("no such delivery")
        w = await _own_webhook(request, s, me.key_id, d.webhook_id)
        if not w.active:
            raise Conflict("the webhook was deleted")
        new = await repo.add_redelivery(s, d, str(uuid.uuid4()), now)
        event = await repo.get_event(s, d.event_id)
    _wake(request)
    return web.json_response(_delivery_json(new, [], event), status=202,
                             headers={"Location": f"/v1/webhooks/{w.id}/deliveries"})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/webhooks", create_webhook, name="webhooks")
    r.add_get("/v1/webhooks", list_webhooks, name="webhooks_list")
    r.add_delete("/v1/webhooks/{id}", delete_webhook, name="webhook")
    r.add_get("/v1/webhooks/{id}/deliveries", list_deliveries, name="webhook_deliveries")
    r.add_post("/v1/webhooks/deliveries/{id}/redeliver", redeliver, name="webhook_redeliver")
