"""The gateway API's one middleware: request metrics, problem responses and the rate limit.

They were three middlewares (outermost first: metrics, problems, rate limit), and each
aiohttp middleware is one more coroutine and ``functools.partial`` call on every request, on
top of the layer aiohttp adds to any app that has middlewares at all. Fused, a request pays
for one layer. What each did is unchanged, in the same order:

* the rate limit runs first, on every route but the exempt ones (unmatched paths included);
  a refused request raises ``RateLimited`` like any handler error;
* any ``Exception`` from the limit or the handler becomes its RFC 9457 problem response
  (``problems.problem_for``: a ``BridgeError`` its status and code, aiohttp's HTTP errors
  theirs, anything else a logged 500); a redirect (an HTTP exception below 400) passes through;
* every request is counted with its final status and latency (the problem's status for an
  error, the redirect's status, 499 when the client went away: ``CancelledError``).

``problems.problem_middleware`` stays for servers that want it alone (the committee's HTTP
servers); the metrics recording is ``metrics.request_recorder``, the refusal
``ratelimit.refuse``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Container

from aiohttp import web

from bridge.api.metrics import ApiMetrics, request_recorder
from bridge.api.problems import problem_for
from bridge.api.ratelimit import TokenBucketLimiter, client_key, refuse


def edge_middleware(metrics: ApiMetrics, limiter: TokenBucketLimiter, *, exempt_routes: Container[str],
                    trust_forwarded_for: bool = False):
    record = request_recorder(metrics)
    take = limiter.take
    perf_counter = time.perf_counter

    @web.middleware
    async def edge(request: web.Request, handler):
        start = perf_counter()
        status = 500
        try:
            try:
                name = request.match_info.route.name
                if name is None or name not in exempt_routes:
                    wait = take(client_key(request, trust_forwarded_for))
                    if wait > 0:
                        raise refuse(wait)
                resp = await handler(request)
            except Exception as e:  # a redirect is re-raised by problem_for
                resp = problem_for(request, e)
            status = resp.status
            return resp
        except web.HTTPException as e:  # only non-error ones get here (redirects)
            status = e.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away (nginx's convention)
            raise
        finally:
            record(request, status, start)

    return edge
