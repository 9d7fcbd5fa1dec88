"""Per-client token buckets for the public endpoints.

Each client IP has a bucket of ``burst`` tokens refilled at ``per_minute / 60`` tokens a
second; a request takes one token or is refused with a 429 problem and ``Retry-After``.
Full buckets carry no information, so they are dropped by a periodic sweep (and at once if
the table grows past ``max_clients``), which bounds memory under address scans.

The client IP is the peer address; with ``trust_forwarded_for`` (the API runs behind one
reverse proxy) it is the last ``X-Forwarded-For`` entry -- the one that proxy appended.
Entries further left are written by the client and are not trusted.

Buckets are keyed by ``bucket_key``: an IPv4 address counts on its own, an IPv6 address by
its /64 (one end site gets a whole /64 and can pick any of its 2**64 addresses, so keying by
the full address would give it unlimited buckets), and an IPv4-mapped IPv6 address
(``::ffff:a.b.c.d``, what a dual-stack listener reports for IPv4 clients) as its IPv4 address.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import time
from collections.abc import Callable

from aiohttp import web

from bridge.errors import RateLimited

log = logging.getLogger("creditbridge.api.ratelimit")


class TokenBucketLimiter:
    def __init__(self, per_minute: int, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 100_000) -> None:
        if per_minute <= 0 or burst <= 0:
            raise ValueError("rate limits must be positive")
        self.rate = per_minute / 60  # tokens per second (time, not money)
        self.burst = burst
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Take one token for ``key``: 0 if allowed, else the seconds until one is available."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens >= 1:
            self._buckets[key] = (tokens - 1, now)
            if len(self._buckets) > self.max_clients:
                self.sweep()
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1 - tokens) / self.rate

    def sweep(self) -> int:
        """Drop the buckets that have refilled completely; return how many were dropped."""
        now = self.clock()
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        return len(full)

    async def run_sweeper(self, interval: float = 60.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()


IPV6_PREFIX = 64


@functools.lru_cache(maxsize=4096)
def bucket_key(ip: str) -> str:
    """The rate-limit bucket of client address ``ip``: the IPv4 address itself, the /64 of an
    IPv6 address (zone id dropped), the IPv4 address of an IPv4-mapped one. Anything that is
    not an address is its own key. Cached (a pure function of the string; parsing an address
    costs more than the rest of the limiter): the clients of the last moment hit the cache."""
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:
            return str(a.ipv4_mapped)
        return str(ipaddress.IPv6Network((a, IPV6_PREFIX), strict=False))
    return str(a)


def client_key(request: web.Request, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
        if hops:
            return bucket_key(hops[-1])
    return bucket_key(request.remote or "unknown")


def refuse(wait: float) -> RateLimited:
    """The error for a client that must wait ``wait`` seconds (``Retry-After`` in whole seconds,
    at least 1)."""
    e = RateLimited("too many requests from this client; retry later")
    e.retry_after = max(1, math.ceil(wait))  # type: ignore[attr-defined]
    return e
