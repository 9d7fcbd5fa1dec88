"""``creditbridge treasury status``: the operator's view of treasury sweeps, read from the signers'
``GET /v1/sweeps`` (each signer's own records; they should agree -- a signer that disagrees is
named). Per chain: earned (at the final settlement block), swept (paid by the custody), signed but
not paid yet, stranded (below-one-credit remainders kept in custody) and the last sweep."""

from __future__ import annotations

import asyncio
import json

from bridge.errors import BridgeError


async def _fetch(urls: list[str]) -> dict[str, dict]:
    import aiohttp

    out: dict[str, dict] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s:
        for u in urls:
            try:
                async with s.get(u.rstrip("/") + "/v1/sweeps") as r:
                    body = await r.json(content_type=None)
                    if r.status != 200 or not isinstance(body, dict):
                        raise BridgeError(f"signer {u} answered HTTP {r.status} to /v1/sweeps")
                    out[u] = body
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                out[u] = {"error": f"unreachable ({e.__class__.__name__})"}
    return out


def summarize(views: dict[str, dict]) -> dict:
    chains: dict[str, dict] = {}
    for url, v in views.items():
        for chain, c in (v.get("chains") or {}).items():
            last = next((w for w in v.get("sweeps", []) if w["chain"] == chain), None)
            row = {k: c.get(k) for k in ("token", "treasury", "earned", "swept", "signed_unpaid", "stranded")}
            row["last_sweep"] = None if last is None else {k: last[k] for k in (
                "release_id", "epoch", "cutoff", "amount", "state", "created_at")}
            chains.setdefault(chain, {"signers": {}})["signers"][url] = row
    for chain, c in chains.items():
        rows = list(c["signers"].values())
        c.update(rows[0])
        def figures(r: dict) -> tuple:  # what honest signers agree on (not their own clocks)
            w = r["last_sweep"] or {}
            return (r["earned"], r["swept"], r["signed_unpaid"], w.get("release_id"), w.get("amount"), w.get("state"))

        c["disagreeing_signers"] = [u for u, r in c["signers"].items() if figures(r) != figures(rows[0])]
        del c["signers"]
    return {"chains": chains, "unreachable": [u for u, v in views.items() if "error" in v]}


def cmd_treasury_status(args) -> int:
    urls = list(args.signer or [])
    if not urls:
        from bridge.cli import _devnet

        urls = [n["url"] for n in _devnet(args)["committee"]["nodes"]]
    print(json.dumps(summarize(asyncio.run(_fetch(urls))), indent=2))
    return 0


def add_commands(sub) -> None:
    sp = sub.add_parser("treasury", help="treasury sweeps: earned, swept and pending per chain")
    tsub = sp.add_subparsers(dest="treasury_cmd", required=True)
    st = tsub.add_parser("status", help="what the signers earned, swept and have pending, per chain")
    st.add_argument("--signer", action="append", help="a signer's base URL (repeatable)")
    st.add_argument("--devnet", default=".devnet/devnet.json", help="read the signers from devnet.json")
    st.set_defaults(func=cmd_treasury_status)
