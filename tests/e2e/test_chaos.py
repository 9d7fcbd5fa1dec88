"""The chaos harness's short seeded run (bench/chaos.py --quick): 40 payments in ETH, TON, DOT
and KSM and in every devnet stablecoin (USDC and USDT on ethereum, USDC and USDT on polkadot, USDT
on kusama and ton) through the public API of a real devnet (anvil, the local TON chain, two chopsticks
Asset Hub chains) while every fault kind is injected at least once; reconciliation from the
chains must find nothing lost, doubled, mispriced or credited without a deposit, in every
token; and every overpayment (at least one per token) refunded exactly once, to the payer, with
the excess, on its own chain (Ethereum and TON locks, the Asset Hub committee multisig); the
earned ETH, TON, DOT and KSM swept to each chain's treasury by committee sweeps, each once, never
more than earned (TON's treasury receives each sweep minus its release fees), never leaving the
custody short of what it owes. A stalled endpoint during re-observation shows up as
signer retries, never as a rejected deposit."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from chaos import FAULT_KINDS  # noqa: E402


def test_quick_chaos_run_loses_and_doubles_nothing(tmp_path):
    report_file = tmp_path / "chaos.json"
    # its own process group: on a timeout the harness's devnet (chains, signers, relay, API) is
    # killed with it, not left running under the rest of the suite
    child = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick", "--seed", "7",
         "--dir", str(tmp_path / "devnet"), "--out", str(report_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)  # anything the harness left behind
    proc = subprocess.CompletedProcess(child.args, child.returncode, out, err)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert report_file.exists(), proc.stderr[-4000:]
    report = json.loads(report_file.read_text())
    assert set(report["faults"]) == set(FAULT_KINDS), report["faults"]
    assert report["lost"] == [] and report["doubled"] == [] and report["phantom"] == []
    assert report["mispriced"] == [] and report["mispriced_quotes"] == []
    assert report["deposits"] >= report["payments"] > 0
    # every native token and every stablecoin the devnet lists (issue 15: SYMBOL@chain)
    stables = {"USDC@ethereum", "USDT@ethereum", "USDC@polkadot", "USDT@polkadot", "USDT@kusama", "USDT@ton"}
    assert set(report["deposits_by_token"]) == {"ETH", "TON", "DOT", "KSM"} | stables, report["deposits_by_token"]
    assert report["drain_seconds"] is not None, "not every deposit was credited within the bound"
    # rpc_stall: the signers' re-observation of an Ethereum deposit timed out; they retried it
    # (and credited it: nothing lost) instead of rejecting it
    assert report["fault_effects"].get("rpc_stall_payments") == 1, report["fault_effects"]
    assert any('chain="ethereum"' in k for k in report["signer_retries"]), report["signer_retries"]
    refunds = report["refunds"]
    # an overpayment in every native token: refunded, or (TON's below the lock's min_release) kept as dust
    assert {"ETH", "DOT", "KSM"} <= set(refunds["expected_by_token"]), refunds
    assert "TON" in refunds["expected_by_token"] or refunds["dust_by_token"].get("TON"), refunds
    assert refunds["missing"] == [] and refunds["doubled"] == [] and refunds["wrong"] == [], refunds
    assert refunds["phantom"] == [] and refunds["done"] == refunds["expected"], refunds
    # treasury sweeps (ETH): each paid once, to the treasury; the treasury holds exactly what they paid;
    # never more than earned; the lock still holds all it owes; after the drain everything earned is swept
    t = report["treasury"]
    assert t["doubled"] == [] and t["wrong"] == [] and not t["over_swept"], t
    assert not t["treasury_mismatch"] and not t["insolvent"], t
    assert t["sweeps"] >= 1 and t["swept"] == t["earned"] > 0, t
    # ... and likewise TON, DOT and KSM: paid once, to the treasury, which received what they paid
    # (TON: minus each release's own fees), never more than earned, the custody holds what it owes;
    # after the drain all is swept but what waits for its epoch's minimum (TON's min_release)
    assert set(t["others"]) == {"TON", "DOT", "KSM"} | stables and t["problems"] == {}, t
    for token, o in t["others"].items():
        assert o["sweeps"] >= 1 and 0 < o["swept"] <= o["earned"], (token, o)
        assert o["earned"] - o["swept"] < max(o["min_sweep"], 1), (token, o)
        # the treasury receives exactly what was swept, but TON sweeps pay their own fees; a
        # stablecoin's fees are paid in its chain's native token
        assert o["fees"] >= 0 if token == "TON" else o["fees"] == 0, (token, o)
    assert t["all_swept"], t
    assert report["ok"] is True and proc.returncode == 0, summary
    assert summary.startswith("chaos OK:")
