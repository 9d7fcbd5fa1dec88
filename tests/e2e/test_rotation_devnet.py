"""Committee rotation on the running devnet while payments keep being credited (issue 13): the
operators' CLI (`creditbridge committee rotate propose|sign|submit`) rotates the settlement
ledger and the ETH lock from {signer-0..3} t=3 to {signer-0..2} t=2 with one payment in flight
and one made afterwards; both are credited once, and signer-3 no longer counts.

The TON lock and the Asset Hub account are rotated in their own tests (tests/integration/ton,
tests/integration/substrate): on the devnet they keep the old committee here."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from devnet.network import PASSWORD_ENV
from relayers.evm.rpc import RpcPool
from relayers.evm.rotation import committee_of

from tests.e2e.conftest import ROOT, Devnet
from tests.e2e.test_devnet import assert_each_deposit_credited_once, balance, open_payment, pay, wait_state


def cli(devnet: Devnet, *argv: str) -> dict:
    env = {**os.environ, PASSWORD_ENV: (devnet.dir / "password").read_text().strip()}
    r = subprocess.run([sys.executable, "-m", "bridge.cli", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def test_rotation_while_payments_keep_being_credited(devnet: Devnet, tmp_path):
    before = await balance(devnet, 1)
    inflight = await open_payment(devnet, 1)
    await pay(devnet, inflight, 1)

    relay = json.loads((devnet.dir / "config" / "relay.json").read_text())
    relay["chains"] = [c for c in relay["chains"] if c["family"] == "evm"]  # the EVM custodies
    kept = {c["name"] for c in relay["chains"]}
    # ... and the stablecoins of the chains kept (a token of a dropped chain is a config error)
    relay["tokens"] = [t for t in relay.get("tokens", []) if t.get("chain") in (None, *kept)]
    mins = relay.get("pricing", {}).get("min_amount", {})
    for key in [k for k in mins if "@" in k and k.partition("@")[2] not in kept]:
        del mins[key]
    relay.pop("treasury", None)  # sweeps are the signers' business; the Asset Hub reserves name dropped chains
    cfg = tmp_path / "relay-evm.json"
    cfg.write_text(json.dumps(relay))
    committee = devnet.info["committee"]
    new = {"threshold": 2, "members": [{"name": f"signer-{i}", "address": committee["signers"][i],
                                        "ed25519": "0x" + committee["ed25519_public_keys"][i].removeprefix("0x")} for i in range(3)]}
    (tmp_path / "new.json").write_text(json.dumps(new))
    proposal = tmp_path / "proposal.json"
    out = await asyncio.to_thread(cli, devnet, "committee", "rotate", "propose", "--config", str(cfg),
                                  "--new-committee", str(tmp_path / "new.json"), "--out", str(proposal))
    assert out["new_index"] == 1 and sorted(out["custodies"]) == ["ethereum/lock", "settlement/ledger"]
    sigs = tmp_path / "sigs"
    sigs.mkdir()
    for i in range(3):  # each operator with its own signer config and keystores
        await asyncio.to_thread(cli, devnet, "committee", "rotate", "sign", "--proposal", str(proposal),
                                "--config", str(devnet.dir / "config" / f"signer-{i}.json"),
                                "--out", str(sigs / f"signer-{i}.json"))
    out = await asyncio.to_thread(cli, devnet, "committee", "rotate", "submit", "--config", str(cfg),
                                  "--proposal", str(proposal), "--signatures", str(sigs))
    assert all(v.startswith("rotated") for v in out["custodies"].values()), out

    st = devnet.info["chains"]["settlement"]
    async with RpcPool(urls=[st["rpc"]], chain_id=st["chain_id"], name="settlement") as pool:
        index, members, threshold = await committee_of(pool, bytes.fromhex(st["contracts"]["credits"][2:]))
    assert (index, threshold) == (1, 2) and len(members) == 3

    after = await open_payment(devnet, 1)
    await pay(devnet, after, 1)
    for p in (inflight, after):
        await wait_state(devnet, p["id"], "credited", timeout=150)
    assert await balance(devnet, 1) - before == 1000
    await assert_each_deposit_credited_once(devnet)
