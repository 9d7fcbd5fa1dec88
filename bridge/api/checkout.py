"""The checkout page: ``GET /pay/{payment_id}`` (plain HTML + JS served by the API, no CDN).

* ``/pay/{id}``           the page (``static/checkout.html``); the payment id is read by the
                          script from the URL; everything else comes from the JSON API
* ``/pay/{id}/qr.svg``    a QR code made server-side (segno, SVG) of the payment's wallet link:
                          EIP-681 ``ethereum:<lock>@<chain id>/lock?bytes32=<ref>&value=<wei>``,
                          TON's ``ton://transfer/...`` link, or the Asset Hub address to pay
* ``/pay/static/{file}``  ``checkout.js`` and ``checkout.css``

The script polls ``GET /v1/payments/{id}`` every 1.5 s (live status without reloading),
counts down to the expiry, and explains underpaid, overpaid, late, invalid and expired
payments. "Pay with another token" asks for a fresh quote of the same credits in that token
(``POST /v1/quotes`` + ``POST /v1/payments`` for the same beneficiary) and opens its page.
Responses carry a strict Content-Security-Policy: only this origin's script, style and images.
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import segno
from aiohttp import web

from bridge.api.handlers import payment_json, payment_view, transaction
from bridge.api.keys import DB, INSTRUCTIONS, SETTINGS
from bridge.errors import NotFound

STATIC = Path(__file__).parent / "static"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_FILES = {"checkout.js": "application/javascript", "checkout.css": "text/css"}


def payment_uri(p: dict) -> str:
    """The wallet link a QR code carries for a payment's instructions."""
    ins = p["instructions"]
    if "link" in ins:  # ton://transfer/...
        return ins["link"]
    if ins.get("method") == "lock(bytes32)":
        return (f"ethereum:{ins['contract']}@{ins['chain_id']}/lock?bytes32={ins['reference']}"
                f"&value={ins['value']}")
    if "to" in ins:  # Asset Hub: the multisig address (the remark goes in by hand)
        return ins["to"]
    return p["reference"]


def _headers(content_type: str | None = None) -> dict:
    h = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
         "Cache-Control": "no-store"}
    if content_type:
        h["Content-Type"] = content_type
    return h


async def _payment(request: web.Request) -> dict:
    try:
        pid = str(uuid.UUID(request.match_info["id"]))
    except ValueError:
        raise NotFound("no such payment") from None
    async with transaction(request.app[DB]) as s:
        rec, late = await payment_view(s, pid)
    if rec is None:
        raise NotFound("no such payment")
    return payment_json(rec, request.app[SETTINGS], request.app[INSTRUCTIONS], late)


async def page(request: web.Request) -> web.Response:
    await _payment(request)  # 404 for unknown payments
    tokens = sorted({c.token for c in request.app[SETTINGS].source_chains() if c.token})
    html = (STATIC / "checkout.html").read_text().replace("{{TOKENS}}", ",".join(tokens))
    return web.Response(text=html, headers=_headers("text/html; charset=utf-8"))


async def qr(request: web.Request) -> web.Response:
    p = await _payment(request)
    out = io.BytesIO()
    segno.make(payment_uri(p), error="m").save(out, kind="svg", scale=5, border=2, xmldecl=False,
                                                 svgns=True, title="payment QR code")
    return web.Response(body=out.getvalue(), headers=_headers("image/svg+xml"))


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _FILES:
        raise NotFound("no such file")
    return web.Response(body=(STATIC / name).read_bytes(), headers=_headers(_FILES[name]))


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/pay/static/{name}", static, name="checkout_static")
    r.add_get("/pay/{id}", page, name="checkout")
    r.add_get("/pay/{id}/qr.svg", qr, name="checkout_qr")
