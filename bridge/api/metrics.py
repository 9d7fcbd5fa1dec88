"""Prometheus metrics of the gateway API, in a registry of their own (one per app)."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

PREFIX = "creditbridge_api_"
UNMATCHED = "unmatched"  # the route label of requests no route matched (bounded cardinality)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(PREFIX + "requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(PREFIX + "request_duration_seconds", "HTTP request latency by route",
                                 ["route", "method"], registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        # a token is (symbol, chain): USDT on polkadot and USDT on ton are counted apart
        self.quotes_issued = Counter(PREFIX + "quotes_issued_total", "Signed quotes issued, by token and chain",
                                     ["token", "chain"], registry=self.registry)
        self.payments_created = Counter(PREFIX + "payments_created_total", "Payments created, by token and chain",
                                        ["token", "chain"], registry=self.registry)
        self.quotes_pruned = Counter(PREFIX + "quotes_pruned_total",
                                     "Expired quotes no payment used, deleted by the retention job",
                                     registry=self.registry)

        self._issued: dict[tuple[str, str], object] = {}  # (token, chain) -> child: bounded by the payable tokens

    def quote_issued(self, token: str, chain: str) -> None:
        """Count a quote issued (``labels()`` takes a lock and builds a key: once per token)."""
        child = self._issued.get((token, chain))
        if child is None:
            child = self._issued[(token, chain)] = self.quotes_issued.labels(token, chain)
        child.inc()

    def render(self) -> web.Response:
        resp = web.Response(body=generate_latest(self.registry))
        resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return resp


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(request: web.Request) -> str:
    return request.method if request.method in _METHODS else "other"


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def request_recorder(metrics: ApiMetrics):
    """``record(request, status, start)``: counts one answered request with its final status and
    observes its latency since ``start`` (``time.perf_counter``). The labelled children are
    cached per (route, method, status): ``labels()`` takes a lock and builds a key."""
    cache: dict[tuple[str, str, int], tuple] = {}  # bounded: routes x methods x statuses
    perf_counter = time.perf_counter

    def record(request: web.Request, status: int, start: float) -> None:
        key = (route_label(request), method_label(request), status)
        children = cache.get(key)
        if children is None:
            route, method, _ = key
            children = cache[key] = (metrics.requests.labels(route, method, str(status)),
                                     metrics.latency.labels(route, method))
        children[0].inc()
        children[1].observe(perf_counter() - start)

    return record
