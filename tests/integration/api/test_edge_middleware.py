"""The API's one middleware does what the three it replaced did, in their order (bridge/api/edge.py):
the rate limit (exempt routes aside, unmatched paths included) first, every error a problem
response, redirects passed through, and every request counted with its final status."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from prometheus_client import generate_latest

from bridge.api.edge import edge_middleware
from bridge.api.metrics import ApiMetrics
from bridge.api.ratelimit import TokenBucketLimiter
from bridge.errors import InputError


async def _serve(app: web.Application):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_edge_middleware_limits_answers_problems_and_counts():
    metrics = ApiMetrics()
    limiter = TokenBucketLimiter(1, 4, clock=lambda: 0.0)  # 4 requests, no refill

    async def ok(request):
        return web.json_response({"ok": True})

    async def bad(request):
        raise InputError("no such thing")

    async def boom(request):
        raise RuntimeError("secret internals")

    async def moved(request):
        raise web.HTTPFound("/ok")

    app = web.Application(middlewares=[edge_middleware(metrics, limiter, exempt_routes={"free"})])
    app.router.add_get("/ok", ok, name="ok")
    app.router.add_get("/bad", bad, name="bad")
    app.router.add_get("/boom", boom, name="boom")
    app.router.add_get("/moved", moved, name="moved")
    app.router.add_get("/free", ok, name="free")
    runner, url = await _serve(app)
    try:
        async with aiohttp.ClientSession() as s:
            async def get(path):
                async with s.get(url + path, allow_redirects=False) as r:
                    return r.status, r.headers, await r.read()

            status, headers, body = await get("/bad")
            assert status == 400 and headers["Content-Type"].startswith("application/problem+json")
            assert b'"detail": "no such thing"' in body
            status, _, body = await get("/boom")
            assert status == 500 and b"secret" not in body and b"problems/internal" in body
            status, headers, _ = await get("/moved")
            assert status == 302 and headers["Location"] == "/ok"
            status, _, body = await get("/nowhere")  # unmatched: limited too, a 404 problem
            assert status == 404 and b"problems/http-404" in body
            status, headers, body = await get("/ok")  # the fifth limited request
            assert status == 429 and headers["Retry-After"] and b"problems/rate-limited" in body
            for _ in range(3):
                assert (await get("/free"))[0] == 200  # exempt
            assert (await get("/nowhere"))[0] == 429
    finally:
        await runner.cleanup()
    text = generate_latest(metrics.registry).decode()
    for route, status, n in (("/bad", 400, 1), ("/boom", 500, 1), ("/moved", 302, 1), ("unmatched", 404, 1),
                             ("/ok", 429, 1), ("/free", 200, 3), ("unmatched", 429, 1)):
        assert f'creditbridge_api_requests_total{{method="GET",route="{route}",status="{status}"}} {n}.0' in text
    assert 'creditbridge_api_request_duration_seconds_count{method="GET",route="/free"} 3.0' in text
