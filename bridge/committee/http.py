"""HTTP faces of the committee processes.

Signer node: ``GET /v1/attestations?after=ID&limit=N`` (its signed one-credit messages, in
order), ``GET /v1/releases?after=ID&limit=N`` (its signed refunds), ``GET /v1/refunds`` (the operator's
view: refunds by chain and state, the failed ones), ``GET /v1/sweeps`` (treasury sweeps: earned,
swept and pending per chain, each sweep with the deposits it covers), ``POST /v1/batches`` (sign a batch of credits it attested), ``GET /v1/signer``,
``GET /v1/health``, ``GET /metrics``. Everything a signer serves is a signature over public
facts or a count of them (the refunds view shows what ``/v1/releases`` and the chains show), and it signs batches only of credits it attested byte for byte, so these endpoints hold
no authority worth a credential; operators should still bind them to a private interface.
Aggregator: ``GET /v1/health`` and ``GET /metrics`` only.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from bridge.api.problems import problem_middleware
from bridge.errors import InputError
from bridge.types import Credit

SIGNER = web.AppKey("signer", object)
REGISTRY = web.AppKey("registry", CollectorRegistry)
READY = web.AppKey("ready", object)
MANIFEST = web.AppKey("manifest", object)  # the manifest hash (0x hex) or None


class SignerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter("creditbridge_signer_decisions_total", "Deposits decided by this signer",
                                 ["outcome"], registry=registry)
        self.price_bound_violations = Counter(
            "creditbridge_signer_price_bound_violations_total",
            "Deposits whose signed terms were outside this signer's price bound (held for refund, not attested)",
            ["chain", "token"], registry=registry)
        self.dust = Counter("creditbridge_signer_dust_total", "Deposits whose held amount was below the chain's "
                            "min_refund: kept in custody as dust, not refunded", ["chain"], registry=registry)
        self.retries = Counter("creditbridge_signer_retries_total",
                               "Deposit decisions (and Asset Hub refund approvals) left for a later attempt, by "
                               "chain and reason (a chain or gateway that could not tell, an unknown reference, "
                               "a late deposit not decided yet, an unexpected error)",
                               ["chain", "reason"], registry=registry)


class AggregatorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.settled = Counter("creditbridge_aggregator_credits_settled_total", "Credits settled", registry=registry)
        self.batches = Counter("creditbridge_aggregator_batches_total", "Settlement batches sent", registry=registry)
        self.fee_cap_refusals = Counter(
            "creditbridge_aggregator_fee_cap_refusals_total",
            "Settlement transactions (or fee bumps) not sent: the price asked was above aggregator.max_fee_per_gas",
            registry=registry)
        self.fee_bumps = Counter("creditbridge_aggregator_fee_bumps_total",
                                 "Unmined settlement transactions replaced with bumped fees", registry=registry)
        self.taken_over = Counter("creditbridge_aggregator_taken_over_total",
                                  "Credits this relay settled for another relay index (it had not settled them "
                                  "within aggregator.takeover_after_seconds)", registry=registry)


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not lo <= int(raw) <= hi:
        raise InputError(f"query parameter {name} must be an integer in [{lo}, {hi}]")
    return int(raw)


async def _health(request: web.Request) -> web.Response:
    ready = request.app[READY]()
    body = {"status": "ok" if ready else "starting"}
    if request.app.get(MANIFEST) is not None:
        body["manifest"] = request.app[MANIFEST]
    return web.json_response(body, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(request.app[REGISTRY]),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _attestations(request: web.Request) -> web.Response:
    node = request.app[SIGNER]
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    return web.json_response({"attestations": await node.attestations_after(after, limit)})


async def _releases(request: web.Request) -> web.Response:
    node = request.app[SIGNER]
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    return web.json_response({"releases": await node.releases_after(after, limit)})


async def _refunds(request: web.Request) -> web.Response:
    return web.json_response(await request.app[SIGNER].refunds())


async def _sweeps(request: web.Request) -> web.Response:
    sweeper = getattr(request.app[SIGNER], "sweeper", None)
    if sweeper is None:
        return web.json_response({"epoch_blocks": None, "chains": {}, "sweeps": []})
    return web.json_response(await sweeper.view())


async def _batches(request: web.Request) -> web.Response:
    node = request.app[SIGNER]
    try:
        body = await request.json()
    except ValueError:
        raise InputError("body must be JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("credits"), list) \
            or not isinstance(body.get("committee_index"), int):
        raise InputError("body must be {committee_index: int, credits: [...]}")
    if not 1 <= len(body["credits"]) <= 256:
        raise InputError("a batch has 1 to 256 credits")
    credits = [Credit.from_json(c) if isinstance(c, dict) else Credit.from_json({}) for c in body["credits"]]
    sig = await node.sign_batch(body["committee_index"], credits)
    return web.json_response({"signer": "0x" + node.address.hex(), "signature": "0x" + sig.hex()})


async def _whoami(request: web.Request) -> web.Response:
    node = request.app[SIGNER]
    return web.json_response({"name": node.name, "address": "0x" + node.address.hex()})


def create_signer_app(node, registry: CollectorRegistry, manifest_hash: str | None = None) -> web.Application:
    app = web.Application(middlewares=[problem_middleware], client_max_size=256 * 1024)
    app[MANIFEST] = manifest_hash
    app[SIGNER] = node
    app[REGISTRY] = registry
    app[READY] = lambda: node.ready
    app.router.add_get("/v1/attestations", _attestations)
    app.router.add_post("/v1/batches", _batches)
    app.router.add_get("/v1/releases", _releases)
    app.router.add_get("/v1/refunds", _refunds)
    app.router.add_get("/v1/sweeps", _sweeps)
    app.router.add_get("/v1/signer", _whoami)
    app.router.add_get("/v1/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app


def create_ops_app(ready, registry: CollectorRegistry, manifest_hash: str | None = None) -> web.Application:
    app = web.Application(middlewares=[problem_middleware])
    app[MANIFEST] = manifest_hash
    app[REGISTRY] = registry
    app[READY] = ready
    app.router.add_get("/v1/health", _health)
    app.router.add_get("/metrics", _metrics)
    return app
