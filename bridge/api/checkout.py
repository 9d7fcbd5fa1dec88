"""The checkout page: ``GET /pay/{payment_id}`` (plain HTML + JS served by the API, no CDN).

* ``/pay/{id}``           the page (``static/checkout.html``); the payment id is read by the
                          script from the URL; everything else comes from the JSON API
* ``/pay/{id}/qr.svg``    a QR code made server-side (segno, SVG) of the payment's wallet link:
                          ``instructions.uri`` (issue 14: the plain transfer's link, e.g. EIP-681
                          ``ethereum:<deposit address>@<chain id>?value=<wei>``,
                          ``ton://transfer/<lock>?amount=<n>&text=<code>``, the Asset Hub payment
                          address); payments without one fall back to the call-based link
* ``/pay/static/{file}``  ``checkout.js``, ``checkout.css`` and ``tonconnect-ui.min.js`` (TON Connect
                          UI from the pinned npm package ``@tonconnect/ui``: vendored under
                          ``static/vendor/`` by ``scripts/vendor_tonconnect.sh``, else read from
                          ``node_modules``; never a CDN)
* ``/tonconnect-manifest.json``  the TON Connect app manifest wallets fetch (name, url, icon)
* ``/pay/static/icon.png`` its icon

The page shows the plain transfer first ("send exactly X to ADDRESS", with the comment on TON),
then a "Pay with your wallet" button (EVM: EIP-1193 wallets found by EIP-6963 discovery, or
``window.ethereum``; TON: TON Connect), then the call-based method as "advanced".
The script polls ``GET /v1/payments/{id}`` every 1.5 s (live status without reloading),
counts down to the expiry, and explains underpaid, overpaid, late, invalid and expired
payments. "Pay with another token" asks for a fresh quote of the same credits in that token
(``POST /v1/quotes`` + ``POST /v1/payments`` for the same beneficiary) and opens its page.

Responses carry a strict Content-Security-Policy: only this origin's script, style and images
(plus ``data:`` images: EIP-6963 wallets announce their icons as data URIs). A TON payment's
page is the one exception, because TON Connect needs it and nothing less works: it fetches the
wallet list (config.ton.org) and talks to each wallet's bridge (a different https host per
wallet, over server-sent events), shows wallet icons from their hosts, and injects its
styles; so that page allows ``connect-src https:``, ``img-src https:`` and inline styles
(still no inline or foreign script: only the empty ``ontouchstart=""`` handler it sets, by hash). Its telemetry is switched off in ``checkout.js``.
"""

from __future__ import annotations

import html as html_lib
import io
import struct
import uuid
import zlib
from pathlib import Path

import segno
from aiohttp import web

from bridge.api.handlers import payment_json, payment_view, transaction
from bridge.api.keys import DB, INSTRUCTIONS, SETTINGS
from bridge.errors import NotFound

STATIC = Path(__file__).parent / "static"
ROOT = Path(__file__).resolve().parents[2]
TONCONNECT_JS = "tonconnect-ui.min.js"
# where the pinned @tonconnect/ui bundle is looked for: vendored into the package first (the
# runtime image has no node_modules), then the checkout's node_modules (development, tests)
TONCONNECT_PATHS = (STATIC / "vendor" / TONCONNECT_JS, ROOT / "node_modules" / "@tonconnect" / "ui" / "dist" / TONCONNECT_JS)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# TON Connect (see the module docstring): wallet list and bridges on any https host, wallet icons,
# injected styles; scripts stay this origin's only
# 'unsafe-hashes' + the hash of the empty string: TON Connect sets <body ontouchstart=""> (an iOS
# :active hack); only an empty, do-nothing inline handler is allowed, never inline script
EMPTY_HANDLER = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
CSP_TON = (f"default-src 'none'; script-src 'self' 'unsafe-hashes' {EMPTY_HANDLER}; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
           "connect-src 'self' https:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_FILES = {"checkout.js": "application/javascript", "checkout.css": "text/css"}
APP_NAME = "creditbridge checkout"


def tonconnect_bundle() -> Path | None:
    """The TON Connect UI bundle to serve, or None when it is not installed (no TON wallet button)."""
    return next((p for p in TONCONNECT_PATHS if p.is_file()), None)


def _png(size: int = 180, rgb: tuple[int, int, int] = (0x1a, 0x7f, 0x37)) -> bytes:
    """A plain square PNG (the TON Connect manifest's icon; wallets want PNG, not SVG)."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


ICON = _png()


def payment_uri(p: dict) -> str:
    """The wallet link a QR code carries for a payment's instructions: the builders' ``uri`` (the
    plain transfer, issue 14), else the call-based link of payments built before it."""
    ins = p["instructions"]
    if ins.get("uri"):
        return ins["uri"]
    if "link" in ins:  # ton://transfer/...
        return ins["link"]
    if ins.get("method") == "lock(bytes32)":
        return (f"ethereum:{ins['contract']}@{ins['chain_id']}/lock?bytes32={ins['reference']}"
                f"&value={ins['value']}")
    if "to" in ins:  # Asset Hub: the multisig address (the remark goes in by hand)
        return ins["to"]
    return p["reference"]


def _headers(content_type: str | None = None, csp: str = CSP) -> dict:
    h = {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
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
    p = await _payment(request)  # 404 for unknown payments
    settings = request.app[SETTINGS]
    tokens = sorted({c.token for c in settings.source_chains() if c.token})
    family = settings.chain(p["chain"]).family
    ton_connect = family == "ton" and tonconnect_bundle() is not None
    script = f'<script src="/pay/static/{TONCONNECT_JS}"></script>\n' if ton_connect else ""
    html = ((STATIC / "checkout.html").read_text().replace("{{TOKENS}}", ",".join(tokens))
            .replace("{{FAMILY}}", html_lib.escape(family)).replace("{{TONCONNECT}}\n", script))
    return web.Response(text=html, headers=_headers("text/html; charset=utf-8", CSP_TON if ton_connect else CSP))


async def qr(request: web.Request) -> web.Response:
    p = await _payment(request)
    out = io.BytesIO()
    segno.make(payment_uri(p), error="m").save(out, kind="svg", scale=5, border=2, xmldecl=False,
                                                 svgns=True, title="payment QR code")
    return web.Response(body=out.getvalue(), headers=_headers("image/svg+xml"))


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == TONCONNECT_JS and (bundle := tonconnect_bundle()) is not None:
        h = _headers("application/javascript")
        h["Cache-Control"] = "public, max-age=86400"  # a pinned package version
        return web.Response(body=bundle.read_bytes(), headers=h)
    if name == "icon.png":
        return web.Response(body=ICON, headers=_headers("image/png"))
    if name not in _FILES:
        raise NotFound("no such file")
    return web.Response(body=(STATIC / name).read_bytes(), headers=_headers(_FILES[name]))


async def tonconnect_manifest(request: web.Request) -> web.Response:
    """The TON Connect manifest (https://github.com/ton-connect/docs/blob/main/requests-responses.md):
    the wallet shows this name and icon when it is asked to connect; ``url`` is this origin."""
    origin = str(request.url.origin())
    h = _headers()
    h["Access-Control-Allow-Origin"] = "*"  # wallets' web views fetch it cross-origin
    return web.json_response({"url": origin, "name": APP_NAME, "iconUrl": origin + "/pay/static/icon.png"},
                             headers=h)


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/tonconnect-manifest.json", tonconnect_manifest, name="tonconnect_manifest")
    r.add_get("/pay/static/{name}", static, name="checkout_static")
    r.add_get("/pay/{id}", page, name="checkout")
    r.add_get("/pay/{id}/qr.svg", qr, name="checkout_qr")
