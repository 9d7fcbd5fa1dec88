"""RFC 9457 problem responses: the one error middleware of every creditbridge HTTP server.

``BridgeError`` maps to its ``http_status`` and ``code``; aiohttp's own HTTP errors (404,
405, 413) become problems too; anything else is a 500 problem with no internals in it (the
traceback goes to the log only).
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from bridge.errors import BridgeError, RateLimited

log = logging.getLogger("creditbridge.http")
PROBLEM_BASE = "https://creditbridge.dev/problems/"


def problem(status: int, code: str, title: str, detail: str, headers: dict | None = None) -> web.Response:
    body = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json",
                        headers=headers)


def problem_from_error(e: BridgeError) -> web.Response:
    title = (e.__class__.__doc__ or e.code).strip().splitlines()[0]
    headers = None
    if isinstance(e, RateLimited) and getattr(e, "retry_after", None):
        headers = {"Retry-After": str(int(e.retry_after))}
    return problem(e.http_status, e.code, title, e.detail, headers)


def problem_for(request: web.Request, exc: Exception) -> web.Response:
    """The problem response for ``exc`` raised while handling ``request`` (what the problem
    middleware answers); an aiohttp HTTP exception below 400 (a redirect) is re-raised."""
    if isinstance(exc, BridgeError):
        if exc.http_status >= 500:
            log.warning("%s %s -> %s", request.method, request.path, exc)
        return problem_from_error(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        return problem(exc.status, f"http-{exc.status}", exc.reason,
                       exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else exc.reason,
                       headers={k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")})
    # the one place that turns unknown failures into a clean 500
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return problem(500, "internal", "Internal error", "the server failed; the error was logged")


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except Exception as e:  # BridgeError, aiohttp's HTTP errors, anything else: see problem_for
        return problem_for(request, e)
