"""The operator's status endpoint (API key of role ``admin``)::

    GET /v1/admin/status

``chains``: per chain the API follows, its head, final height, the height the API has
stored (``stored``) and the lag to head. ``payments``: counts by state; ``pending_credit``
is the number of payments paid but not yet credited (attestations or settlement pending).
``queued``: credits the governor holds (computed with the signers' own rule over the API's
copy of the chain facts) with their release times. ``webhooks.pending_deliveries``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from bridge import governor as gov
from bridge.api.auth import authenticate
from bridge.api.handlers import transaction
from bridge.api.keys import CLOCK, DB, SETTINGS
from bridge.payments import rules
from bridge.payments.state import CONFIRMED, OVERPAID, UNDERPAID
from bridge.pricing.quotes import rfc3339
from bridge.storage import admin as admin_repo
from bridge.storage import governor as gov_repo
from bridge.storage import observations as obs_repo
from bridge.storage import payments as pay_repo
from bridge.storage import webhooks as wh_repo

# async () -> {chain name: {"head": int | None, "final": int | None}} (from the live watchers)
CHAIN_HEADS = web.AppKey("chain_heads", Callable[[], Awaitable[dict]])
HISTORY_DAYS = 7


async def queued_credits(app: web.Application, now_ts: int) -> list[dict]:
    """Deposits whose credit the governor holds at ``now_ts``, per the signers' rule."""
    settings = app[SETTINGS]
    out: list[dict] = []
    grace = settings.payments.late_grace_seconds
    price = settings.pricing.credit_price_usd
    for chain, cfg in settings.governor.chains.items():
        limits = gov.Limits.from_config(cfg)
        async with transaction(app[DB]) as s:
            deposits = await gov_repo.recent_observations(s, chain, now_ts - HISTORY_DAYS * gov.DAY)
            payments, earlier = {}, {}
            for o in deposits:
                if o.reference not in payments:
                    payments[o.reference] = await pay_repo.get_payment_by_reference(s, o.reference)
                    earlier[o.reference] = [x.observation for x in
                                            await obs_repo.observations_by_reference(s, o.reference)]
        items: list[tuple] = []
        for o in deposits:
            p = payments[o.reference]
            if p is None:
                continue
            terms = rules.Terms(p.chain, p.token, p.amount, p.credits, p.expires_at)
            facts = [rules.DepositFact(e.deposit_id, e.chain, e.token, e.amount, e.timestamp)
                     for e in earlier[o.reference]]
            d = rules.decide(terms, rules.DepositFact(o.deposit_id, o.chain, o.token, o.amount, o.timestamp),
                             facts, grace)
            if d.credits > 0:
                items.append((o, p, d.credits))
        releases = gov.schedule(limits, [(o.timestamp, gov.usd_value(c, price)) for o, _, c in items])
        for (o, p, c), r in zip(items, releases):
            if r > o.timestamp and r > now_ts:  # delayed by the governor and not yet due
                out.append({"chain": chain, "payment_id": p.id, "sequence": o.sequence,
                            "tx": "0x" + o.tx_id.hex(), "credits": str(c),
                            "usd": str(gov.usd_value(c, price)), "release_at": r})
    return out


async def status(request: web.Request) -> web.Response:
    app = request.app
    await authenticate(request, app[DB], role="admin")
    now_ts = int(app[CLOCK]().timestamp())
    async with transaction(app[DB]) as s:
        by_state = await admin_repo.payments_by_state(s)
        stored = await admin_repo.cursors(s, "api")
        pending_deliveries = await wh_repo.pending_count(s)
    heads = {}
    provider = app.get(CHAIN_HEADS)
    if provider is not None:
        heads = await provider()
    chains = []
    for c in app[SETTINGS].source_chains():
        h = heads.get(c.name, {})
        head, final = h.get("head"), h.get("final")
        st = stored.get(c.name)
        chains.append({"name": c.name, "family": c.family, "head": head, "final": final, "stored": st,
                       "lag": None if head is None or st is None else max(0, head - st),
                       "error": h.get("error")})
    queued = await queued_credits(app, now_ts)
    return web.json_response({
        "time": rfc3339(app[CLOCK]()),
        "chains": chains,
        "payments": by_state,
        "pending_credit": sum(by_state.get(s, 0) for s in (UNDERPAID, CONFIRMED, OVERPAID)),
        "queued": queued,
        "webhooks": {"pending_deliveries": pending_deliveries},
    })


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/admin/status", status, name="admin_status")
