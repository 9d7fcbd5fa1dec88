"""The committee's treasury view, as operators read it (``GET /v1/admin/treasury``,
``creditbridge treasury status``): every signer's ``GET /v1/sweeps`` combined per chain into the
figures at least ``threshold`` signers agree on.

Why from the signers: the earned figure is defined by the signers' own decisions and the
settlement contract's final credits (bridge/payments/treasury.py); a sweep exists only once the
committee signed it. The API holds neither (it never decides deposits with the signers' terms
checks, and recomputing would be a second implementation that could drift). A single signer is
not trusted either: the view is what ``threshold`` signers report identically -- the same
quorum that authorizes a sweep -- and the signers that report something else are named.

Per chain: ``earned`` (at the final settlement block), ``swept`` (paid by the custody),
``pending`` (earned, not paid yet: ``earned - swept``), ``signed_unpaid`` (of it, signed sweeps
waiting for payment), ``stranded`` (below-one-credit remainders kept in custody) and the last
sweep (id, epoch, amount, state, and where the custody paid it: tx, block, time).
"""

from __future__ import annotations

import asyncio
from collections import Counter

from bridge.errors import BridgeError

FIGURES = ("token", "treasury", "earned", "swept", "signed_unpaid", "stranded")
LAST_SWEEP = ("release_id", "epoch", "cutoff", "amount", "state", "tx", "block", "paid_at")


def default_threshold(n: int) -> int:
    """A majority of the listed signers."""
    return n // 2 + 1


async def fetch(urls: list[str], session, timeout: float = 10.0) -> dict[str, dict]:
    """Each signer's ``/v1/sweeps``; an unreachable or failing signer maps to ``{"error": ...}``."""
    import aiohttp

    async def one(u: str) -> dict:
        try:
            async with session.get(u.rstrip("/") + "/v1/sweeps", timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                body = await r.json(content_type=None)
                if r.status != 200 or not isinstance(body, dict) or not isinstance(body.get("chains"), dict):
                    return {"error": f"HTTP {r.status}"}
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            return {"error": f"unreachable ({e.__class__.__name__})"}

    answers = await asyncio.gather(*(one(u) for u in urls))
    return dict(zip(urls, answers))


def _row(view: dict, chain: str) -> dict | None:
    c = view.get("chains", {}).get(chain)
    if not isinstance(c, dict):
        return None
    row = {k: c.get(k) for k in FIGURES}
    # a custody's figures are per token: keyed by the chain (native token) or SYMBOL@chain
    last = next((w for w in view.get("sweeps") or []
                 if isinstance(w, dict) and w.get("ledger", w.get("chain")) == chain), None)
    row["last_sweep"] = None if last is None else {k: last.get(k) for k in LAST_SWEEP}
    return row


def _key(row: dict) -> str:
    import json

    return json.dumps(row, sort_keys=True)


def summarize(views: dict[str, dict], threshold: int) -> dict:
    """Per chain the figures ``threshold`` signers agree on (``quorum``), or none (figures null)."""
    if threshold < 1:
        raise BridgeError("the treasury view's threshold must be at least 1")
    reachable = {u: v for u, v in views.items() if "error" not in v}
    names = sorted({c for v in reachable.values() for c in (v.get("chains") or {})})
    chains: dict[str, dict] = {}
    for chain in names:
        rows = {u: r for u, v in reachable.items() if (r := _row(v, chain)) is not None}
        counts = Counter(_key(r) for r in rows.values())
        best, n = counts.most_common(1)[0]
        quorum = n >= threshold
        agreed = next(r for r in rows.values() if _key(r) == best) if quorum else None
        out: dict = {"quorum": quorum, "agreeing": n if quorum else 0}
        for k in FIGURES:
            out[k] = None if agreed is None else agreed[k]
        out["pending"] = None
        if agreed is not None:
            try:
                out["pending"] = str(int(agreed["earned"]) - int(agreed["swept"]))
            except (TypeError, ValueError):
                out["pending"] = None
        out["last_sweep"] = None if agreed is None else agreed["last_sweep"]
        out["disagreeing_signers"] = sorted(u for u, r in rows.items() if not quorum or _key(r) != best)
        out["missing_signers"] = sorted(u for u in reachable if u not in rows)  # reachable, no such chain
        chains[chain] = out
    return {"threshold": threshold, "signers": len(views),
            "unreachable": sorted(u for u, v in views.items() if "error" in v), "chains": chains}


def _amount(v) -> str:
    return "?" if v is None else str(v)


def format_table(view: dict) -> str:
    """One line per token (chain), then the signers that are unreachable or disagree."""
    lines = [f"{'chain':<10} {'token':<6} {'earned':>24} {'swept':>24} {'pending':>24} {'stranded':>12}  last sweep"]
    for chain, c in view["chains"].items():
        w = c.get("last_sweep")
        if not c["quorum"]:
            last = f"NO QUORUM ({len(c['disagreeing_signers'])} signers disagree, {view['threshold']} needed)"
        elif w is None:
            last = "none"
        else:
            last = (f"epoch {w['epoch']} {w['amount']} {w['state']} {w['release_id'][:18]}"
                    + (f" tx {w['tx']} at {w['paid_at']}" if w.get("tx") else ""))
        lines.append(f"{chain:<10} {c['token'] or '?':<6} {_amount(c['earned']):>24} {_amount(c['swept']):>24} "
                     f"{_amount(c['pending']):>24} {_amount(c['stranded']):>12}  {last}")
        if c["quorum"] and c["disagreeing_signers"]:
            lines.append(f"  {chain}: disagreeing signers: {', '.join(c['disagreeing_signers'])}")
    if not view["chains"]:
        lines.append("(no treasury sweeps configured on the signers)")
    if view["unreachable"]:
        lines.append("unreachable signers: " + ", ".join(view["unreachable"]))
    return "\n".join(lines)


def short_line(view: dict) -> str:
    """One line for ``creditbridge status``."""
    if not view.get("signers"):
        return "treasury: not configured on the API ([api] treasury_signers)"
    parts = []
    for chain, c in view["chains"].items():
        if not c["quorum"]:
            parts.append(f"{chain} no quorum")
        else:
            parts.append(f"{chain} swept {c['swept']} of {c['earned']} {c['token']} (pending {c['pending']})")
    extra = f"; {len(view['unreachable'])} signer(s) unreachable" if view["unreachable"] else ""
    return "treasury: " + ("; ".join(parts) or "no sweeps configured") + extra
