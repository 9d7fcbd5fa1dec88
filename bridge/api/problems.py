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


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except BridgeError as e:
        if e.http_status >= 500:
            log.warning("%s %s -> %s", request.method, request.path, e)
        return problem_from_error(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return problem(e.status, f"http-{e.status}", e.reason, e.text if e.text and e.text != f"{e.status}: {e.reason}" else e.reason,
                       headers={k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After")})
    except Exception:  # the one place that turns unknown failures into a clean 500
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal", "Internal error", "the server failed; the error was logged")
