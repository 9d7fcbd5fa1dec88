"""The checkout page's issue-14 parts as served for real: the QR code carries ``instructions.uri``,
the "Pay with your wallet" button, the TON Connect bundle (pinned npm @tonconnect/ui, served by
the API) and its manifest, and the Content-Security-Policy: strict everywhere, relaxed only as
much as TON Connect needs on a TON payment's page."""

from __future__ import annotations

import hashlib
import io
import re

import pytest
import segno

from bridge.api import checkout
from bridge.payments.instructions import Instructions, evm_instructions
from relayers.ton.instructions import ton_instructions
from tests.integration.api.test_api import Gateway
from tests.integration.api.test_api import start  # noqa: F401 - the gateway fixture

TON_CHAIN = {"family": "ton", "name": "ton", "toncenter": ["http://127.0.0.1:1"], "contracts": {"lock": "0:" + "33" * 32}}
TON_PRICING = {"fixed_usd": {"ETH": "3000", "TON": "5"}, "min_amount": {"ETH": 1000, "TON": 1000}}


def evm_with_transfer(chain, reference, amount, *, code=None):
    """An EVM builder of the issue-14 shape (engineer A's has a CREATE2 address; any address works here)."""
    to = "0x" + hashlib.sha256(b"deposit" + reference).hexdigest()[:40]
    return {**evm_instructions(chain, reference, amount),
            "transfer": {"to": to, "amount": str(amount), "comment": None},
            "uri": f"ethereum:{to}@{chain.chain_id}?value={amount}"}


async def page(gw: Gateway, pid: str) -> tuple[str, str]:
    async with gw.http.get(f"{gw.url}/pay/{pid}") as r:
        assert r.status == 200 and r.content_type == "text/html"
        return await r.text(), r.headers["Content-Security-Policy"]


async def test_the_qr_code_carries_the_instructions_uri(start):  # noqa: F811
    gw = await start(instructions=Instructions({"evm": evm_with_transfer}))
    p = await gw.payment((await gw.quote(credits="500"))["id"])
    uri = p["instructions"]["uri"]
    assert checkout.payment_uri(p) == uri and "/lock?" not in uri
    async with gw.http.get(f"{gw.url}/pay/{p['id']}/qr.svg") as r:
        served = await r.read()
    expected = segno.make(uri, error="m")
    out = io.BytesIO()
    expected.save(out, kind="svg", scale=5, border=2, xmldecl=False, svgns=True, title="payment QR code")
    assert served == out.getvalue()


async def test_evm_page_has_the_wallet_button_under_a_strict_csp(start):  # noqa: F811
    gw = await start(instructions=Instructions({"evm": evm_with_transfer}))
    p = await gw.payment((await gw.quote(credits="500"))["id"])
    html, csp = await page(gw, p["id"])
    assert 'data-family="evm"' in html and 'id="pay-wallet"' in html and "Pay with your wallet" in html
    assert 'id="transfer"' in html and "<details id=\"advanced\">" in html
    assert html.index('id="transfer"') < html.index('id="advanced"')  # the plain transfer first
    assert "tonconnect" not in html and "{{" not in html
    assert "https:" not in csp and "unsafe-inline" not in csp and "connect-src 'self';" in csp
    assert "img-src 'self' data:;" in csp  # EIP-6963 icons are data URIs
    assert not re.search(r"(src|href)=\"(https?:)?//", html)


async def test_ton_page_loads_ton_connect_from_this_origin(start):  # noqa: F811
    gw = await start(pricing=TON_PRICING, chains=[TON_CHAIN], instructions=Instructions({"ton": ton_instructions}))
    p = await gw.payment((await gw.quote(token="TON", credits="500"))["id"])
    html, csp = await page(gw, p["id"])
    assert 'data-family="ton"' in html
    assert '<script src="/pay/static/tonconnect-ui.min.js"></script>' in html
    assert html.index("tonconnect-ui.min.js") < html.index("checkout.js")
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # no CDN
    # what TON Connect needs, and no more: scripts stay this origin's
    assert "script-src 'self' 'unsafe-hashes' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=';" in csp
    assert "unsafe-inline" not in csp.split("style-src")[0]  # no inline script
    assert "connect-src 'self' https:;" in csp and "frame-ancestors 'none'" in csp
    assert "style-src 'self' 'unsafe-inline';" in csp and "unsafe-eval" not in csp
    async with gw.http.get(f"{gw.url}/pay/static/tonconnect-ui.min.js") as r:
        body = await r.read()
        assert r.status == 200 and r.content_type == "application/javascript"
    pinned = (checkout.ROOT / "node_modules" / "@tonconnect" / "ui" / "dist" / "tonconnect-ui.min.js").read_bytes()
    assert body == pinned and b"TON_CONNECT_UI" in body
    # an Ethereum payment's page next to it keeps the strict policy
    e = await gw.payment((await gw.quote(credits="500"))["id"])
    assert "https:" not in (await page(gw, e["id"]))[1]


async def test_without_the_bundle_a_ton_page_has_no_wallet_script_and_a_strict_csp(start, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setattr(checkout, "TONCONNECT_PATHS", (tmp_path / "missing.js",))
    gw = await start(pricing=TON_PRICING, chains=[TON_CHAIN], instructions=Instructions({"ton": ton_instructions}))
    p = await gw.payment((await gw.quote(token="TON", credits="500"))["id"])
    html, csp = await page(gw, p["id"])
    assert "tonconnect" not in html and "https:" not in csp and "unsafe-inline" not in csp
    async with gw.http.get(f"{gw.url}/pay/static/tonconnect-ui.min.js") as r:
        assert r.status == 404


async def test_tonconnect_manifest_and_icon(start):  # noqa: F811
    gw = await start()
    async with gw.http.get(f"{gw.url}/tonconnect-manifest.json") as r:
        assert r.status == 200 and r.content_type == "application/json"
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        m = await r.json()
    assert m == {"url": gw.url, "name": "creditbridge checkout", "iconUrl": gw.url + "/pay/static/icon.png"}
    async with gw.http.get(m["iconUrl"]) as r:
        icon = await r.read()
        assert r.status == 200 and r.content_type == "image/png" and icon.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("name", ["checkout.js", "checkout.css"])
async def test_page_assets_have_no_off_origin_urls(start, name):  # noqa: F811
    gw = await start()
    async with gw.http.get(f"{gw.url}/pay/static/{name}") as r:
        body = await r.text()
    assert r.status == 200 and "http://" not in body and "https://" not in body
