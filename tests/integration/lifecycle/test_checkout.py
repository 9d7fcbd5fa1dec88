"""The checkout page as served: HTML/JS/CSS from this origin only, a server-side QR code that
encodes the wallet link, a strict CSP, 404 for unknown payments."""

from __future__ import annotations

import re
import uuid

import segno

from bridge.api.checkout import payment_uri


async def test_checkout_page_and_qr(lifecycle):
    lc = await lifecycle()
    p = await lc.payment(None)
    async with lc.http.get(f"{lc.url}/pay/{p['id']}") as r:
        html = await r.text()
        assert r.status == 200 and r.content_type == "text/html"
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert 'src="/pay/static/checkout.js"' in html and 'data-tokens="ETH"' in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN, nothing off-origin
    for name, ctype in (("checkout.js", "application/javascript"), ("checkout.css", "text/css")):
        async with lc.http.get(f"{lc.url}/pay/static/{name}") as r:
            body = await r.text()
            assert r.status == 200 and r.content_type == ctype and "http://" not in body and "https://" not in body
    async with lc.http.get(f"{lc.url}/pay/{p['id']}/qr.svg") as r:
        svg = await r.text()
        assert r.status == 200 and r.content_type == "image/svg+xml" and svg.startswith("<svg")
    uri = payment_uri(p)
    # the builder's plain-transfer link (issue 14), else the lock call's EIP-681 link
    assert uri == p["instructions"].get("uri") or uri == (
        f"ethereum:{p['instructions']['contract']}@1/lock?bytes32={p['reference']}&value={p['amount']}")
    assert segno.make(uri, error="m").svg_inline(scale=5, border=2) is not None
    for path in (f"/pay/{uuid.uuid4()}", "/pay/not-a-uuid", f"/pay/{uuid.uuid4()}/qr.svg", "/pay/static/../x"):
        async with lc.http.get(lc.url + path) as r:
            assert r.status == 404, path
