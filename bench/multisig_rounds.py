"""Blocks per multisig round on the devnet's Asset Hub chains, read from the chains themselves.

Run next to a devnet (``bench/chaos.py`` or ``python -m devnet``) with its directory::

    .venv/bin/python bench/multisig_rounds.py --dir .devnet-chaos --out rounds.jsonl   # record
    .venv/bin/python bench/multisig_rounds.py --report rounds.jsonl                   # summarize

Recording polls each substrate chain's head (the direct RPC of ``devnet.json``, never the chaos
proxies) and writes, for every block, its number, chain time and the events that matter here:
``Multisig.NewMultisig`` / ``MultisigApproval`` / ``MultisigExecuted``, failed extrinsics (with
their module error, e.g. ``Multisig.AlreadyApproved``), and ``Balances.Transfer`` /
``Assets.Transferred`` (the fundings of payment accounts). The report groups the multisig events
by operation (multisig account, call hash, timepoint) and prints, separately for the committee
account (refunds, sweeps) and the per-payment accounts (collections): blocks from creation to
execution, approvals per operation, and for collections blocks from the account's funding to
the creation. Block counts are exact whatever the machine's load; chain time is 12 s a block.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relayers.substrate.decode import account_bytes  # noqa: E402


def _hexid(v) -> str:
    b = account_bytes(v)
    return b.hex() if b is not None else str(v)


def _block(si, n: int) -> dict:
    h = si.get_block_hash(n)
    out = {"n": n, "events": []}
    for e in si.get_events(h):
        v = e.value
        m, name, a = v["module_id"], v["event_id"], v.get("attributes")
        if (m, name) == ("Timestamp", "Set"):
            continue
        if m == "Multisig":
            rec = {"ev": name, "multisig": _hexid(a["multisig"]), "call_hash": str(a["call_hash"]),
                   "who": _hexid(a.get("approving") or a.get("cancelling")), "x": v.get("extrinsic_idx")}
            if "timepoint" in a:
                rec["tp"] = [a["timepoint"]["height"], a["timepoint"]["index"]]
            if "result" in a:
                rec["ok"] = "Ok" in str(a["result"])
            out["events"].append(rec)
        elif (m, name) == ("System", "ExtrinsicFailed"):
            err = a.get("dispatch_error") if isinstance(a, dict) else a
            text = str(err)
            if isinstance(err, dict) and isinstance(err.get("Module"), dict):
                try:
                    idx = int(err["Module"]["index"])
                    e_ = err["Module"]["error"]
                    code = bytes.fromhex(e_[2:])[0] if isinstance(e_, str) else int(e_)
                    pallet = next(p for p in si.metadata.pallets if p["index"] == idx)
                    text = f"{pallet.name}.{si.metadata.get_module_error(idx, code).name}"
                except Exception:  # best effort: the raw error stays
                    pass
            out["events"].append({"ev": "Failed", "error": text, "x": v.get("extrinsic_idx")})
        elif (m, name) in (("Balances", "Transfer"), ("Assets", "Transferred")):
            out["events"].append({"ev": "Transfer", "from": _hexid(a["from"]), "to": _hexid(a["to"]),
                                  "asset": a.get("asset_id"), "x": v.get("extrinsic_idx")})
    return out


def record(directory: Path, out: Path, poll: float) -> None:
    from relayers.substrate.wallet import connect

    info = json.loads((directory / "devnet.json").read_text())
    chains = {n: c for n, c in info["chains"].items() if c.get("family") == "substrate"}
    conns = {n: connect(c["rpc"], c.get("ss58_prefix", 42)) for n, c in chains.items()}
    nxt = {n: 1 for n in chains}
    with out.open("a") as f:
        for n, c in chains.items():
            f.write(json.dumps({"chain": n, "committee": _hexid(c["committee_account"])}) + "\n")
        f.flush()
        while True:
            for n, si in conns.items():
                head = si.get_block_number(si.get_chain_head())
                while nxt[n] <= head:
                    b = _block(si, nxt[n])
                    b["chain"], b["seen"] = n, time.time()
                    f.write(json.dumps(b) + "\n")
                    nxt[n] += 1
                f.flush()
            time.sleep(poll)


def _q(xs: list[int]) -> str:
    if not xs:
        return "-"
    xs = sorted(xs)
    return (f"n={len(xs)} mean={statistics.mean(xs):.2f} p50={xs[len(xs) // 2]} "
            f"p90={xs[min(len(xs) - 1, int(len(xs) * 0.9))]} max={xs[-1]} hist={dict(sorted(_hist(xs).items()))}")


def _hist(xs):
    h: dict[int, int] = {}
    for x in xs:
        h[x] = h.get(x, 0) + 1
    return h


def report(path: Path, since: int = 0) -> dict:
    committees, ops, funded, failed = {}, {}, {}, {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "committee" in r:
            committees[r["chain"]] = r["committee"]
            continue
        chain, n = r["chain"], r["n"]
        for e in r["events"]:
            if e["ev"] == "Transfer":
                funded.setdefault((chain, e["to"]), []).append(n)
            elif e["ev"] == "Failed":
                failed[e["error"]] = failed.get(e["error"], 0) + 1
            elif e["ev"] == "NewMultisig":
                ops.setdefault((chain, e["multisig"], e["call_hash"], n), {"created": n, "approvals": []})
            elif e["ev"] in ("MultisigApproval", "MultisigExecuted"):
                op = ops.setdefault((chain, e["multisig"], e["call_hash"], e["tp"][0]),
                                    {"created": e["tp"][0], "approvals": []})
                if e["ev"] == "MultisigApproval":
                    op["approvals"].append(n)
                else:
                    op["executed"], op["ok"] = n, e["ok"]
    out = {"failed_extrinsics": failed}
    for kind in ("committee", "collection"):
        rounds, pending, approvals, lead = [], 0, [], []
        for (chain, multisig, _, _), op in ops.items():
            if op["created"] < since or (multisig == committees.get(chain)) != (kind == "committee"):
                continue
            if "executed" not in op:
                pending += 1
                continue
            rounds.append(op["executed"] - op["created"])
            approvals.append(len(op["approvals"]))
            if kind == "collection":
                f = [b for b in funded.get((chain, multisig), []) if b <= op["created"]]
                if f:
                    lead.append(op["created"] - max(f))
        out[kind] = {"creation_to_execution_blocks": _q(rounds), "approval_events_per_round": _q(approvals),
                     "never_executed": pending}
        if kind == "collection":
            out[kind]["funding_to_creation_blocks"] = _q(lead)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(".devnet"))
    ap.add_argument("--out", type=Path, default=Path("rounds.jsonl"))
    ap.add_argument("--poll", type=float, default=3.0)
    ap.add_argument("--wait", type=float, default=900.0, help="seconds to wait for devnet.json")
    ap.add_argument("--report", type=Path, default=None, help="summarize a recording instead")
    args = ap.parse_args(argv)
    if args.report is not None:
        print(json.dumps(report(args.report), indent=2))
        return 0
    deadline = time.time() + args.wait
    while not (args.dir / "devnet.json").exists():
        if time.time() > deadline:
            raise SystemExit(f"no {args.dir / 'devnet.json'}")
        time.sleep(2)
    try:
        record(args.dir, args.out, args.poll)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
