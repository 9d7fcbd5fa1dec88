"""The operator's treasury view on a real anvil (issue 12): four in-process signer nodes served over
HTTP with their sweepers, a real sweep paid by the refund worker, and a real gateway configured
with the signers' URLs serving ``GET /v1/admin/treasury`` (admin key), its ``creditbridge_treasury_*``
metrics, ``creditbridge treasury status`` and the treasury line of ``creditbridge status``."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from datetime import datetime, timezone

from sqlalchemy import update

from bridge import cli
from bridge.api.auth import create_key
from bridge.api.treasury import TREASURY
from bridge.storage.models import SweepRow
from relayers.evm.custody import RELEASED_TOPIC
from relayers.evm.rpc import RpcPool

from tests.integration.lifecycle.test_committee_flow import (  # noqa: F401  (committee_of is a fixture)
    chain_settings,
    committee_of,
    pay,
    step_all,
)
from tests.integration.lifecycle.test_treasury_sweeps import (  # noqa: F401  (fixtures)
    anvil,
    chain,
    fresh_address,
    sweeps,
)


async def released_logs(chain) -> list[dict]:
    pool = RpcPool.from_config(chain.cfg)
    try:
        logs = await pool.get_logs(chain.cfg.start_block, await pool.block_number(), bytes.fromhex(chain.lock[2:]),
                                   [RELEASED_TOPIC])
        blocks = {int(x["blockNumber"], 16): await pool.get_block(int(x["blockNumber"], 16)) for x in logs}
        return [{**x, "timestamp": blocks[int(x["blockNumber"], 16)].timestamp} for x in logs]
    finally:
        await pool.aclose()


def samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for f in text_string_to_metric_families(text) for x in f.samples}


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


async def test_admin_treasury_shows_what_the_signers_agree_on_with_the_payout_tx(chain, lifecycle, committee_of,
                                                                               sweeps, monkeypatch):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    treasury = fresh_address("operator-view")
    sw = await sweeps(c, treasury)
    p = await lc.payment(None, credits="500")
    amount = int(p["amount"])
    await pay(chain, p, amount)
    await step_all(c)
    assert await sw.settle() == 1
    await sw.close_epoch()
    assert await sw.sweep_all() == [1, 1, 1, 1]
    assert await sw.worker.step() == 1  # the sweep is paid on chain
    await sw.close_epoch()  # the signers' followers pass the payout's block
    assert await sw.sweep_all() == [0, 0, 0, 0]  # each signer sees it paid and where
    (log,) = released_logs_ = await released_logs(chain)
    assert released_logs_ and int(log["data"], 16) == amount

    # the operator's gateway knows the committee's signers (3 of 4 must agree)
    ops = await lifecycle(chains=chain_settings(chain)["chains"],
                          api={**lc.settings.api.model_dump(mode="json"), "treasury_signers": c.urls,
                               "treasury_threshold": 3})
    _, admin = await create_key(ops.db, "operator", "admin")
    _, merchant = await create_key(ops.db, "shop", "merchant")
    url = ops.url + "/v1/admin/treasury"
    async with ops.http.get(url) as r:
        assert r.status == 401 and r.content_type == "application/problem+json"
    async with ops.http.get(url, headers={"Authorization": f"Bearer {merchant}"}) as r:
        assert r.status == 403 and r.content_type == "application/problem+json"
    async with ops.http.get(url, headers={"Authorization": f"Bearer {admin}"}) as r:
        assert r.status == 200
        view = await r.json()
    assert view["threshold"] == 3 and view["signers"] == 4 and view["unreachable"] == []
    eth = view["chains"]["ethereum"]
    assert eth["quorum"] is True and eth["agreeing"] == 4 and eth["disagreeing_signers"] == []
    assert (eth["token"], eth["treasury"]) == ("ETH", "0x" + treasury.hex())
    assert eth["earned"] == eth["swept"] == str(amount) and eth["pending"] == "0" and eth["signed_unpaid"] == "0"
    # the figures are every signer's own view
    for u in c.urls:
        async with ops.http.get(u + "/v1/sweeps") as r:
            mine = await r.json()
        assert mine["chains"]["ethereum"]["earned"] == eth["earned"]
        assert mine["chains"]["ethereum"]["swept"] == eth["swept"]
        assert mine["sweeps"][0]["release_id"] == eth["last_sweep"]["release_id"]
    # the last sweep: paid, by the transaction that emitted the lock's Released event, at its block's time
    w = eth["last_sweep"]
    assert w["state"] == "paid" and w["amount"] == str(amount)
    assert w["release_id"] == log["topics"][1]
    assert w["tx"] == log["transactionHash"] and w["block"] == int(log["blockNumber"], 16)
    assert datetime.fromisoformat(w["paid_at"]) == datetime.fromtimestamp(log["timestamp"], timezone.utc)

    # the API's metrics
    async with ops.http.get(ops.url + "/metrics") as r:
        metrics = samples(await r.text())
    eth_labels = (("chain", "ethereum"), ("token", "ETH"))
    assert metrics[("creditbridge_treasury_committee_swept", eth_labels)] == amount
    assert metrics[("creditbridge_treasury_committee_earned", eth_labels)] == amount
    assert metrics[("creditbridge_treasury_committee_pending", eth_labels)] == 0
    assert metrics[("creditbridge_treasury_last_sweep_paid_timestamp_seconds", eth_labels)] == log["timestamp"]
    assert metrics[("creditbridge_treasury_quorum", (("chain", "ethereum"),))] == 1
    assert metrics[("creditbridge_treasury_signers_unreachable", ())] == 0

    # a signer whose records say another thing is named; the other three still make the quorum
    async with c.nodes[3].db.begin() as s:
        await s.execute(update(SweepRow).values(paid_tx=b"\x01" * 32))
    await ops.app[TREASURY].get(max_age=0)
    async with ops.http.get(url, headers={"Authorization": f"Bearer {admin}"}) as r:
        eth = (await r.json())["chains"]["ethereum"]
    assert eth["quorum"] and eth["agreeing"] == 3 and eth["disagreeing_signers"] == [c.urls[3]]
    assert eth["last_sweep"]["tx"] == log["transactionHash"]

    # the CLI: from the API with an admin key, one line per token
    monkeypatch.setenv("CREDITBRIDGE_ADMIN_KEY", admin)
    table = await asyncio.to_thread(run_cli, "treasury", "status", "--api", ops.url)
    lines = table.splitlines()
    (row,) = [x for x in lines if x.startswith("ethereum ")]
    assert row.split()[:5] == ["ethereum", "ETH", str(amount), str(amount), "0"]
    assert log["transactionHash"] in row and "paid" in row
    assert any(c.urls[3] in x and "disagree" in x for x in lines)
    as_json = json.loads(await asyncio.to_thread(run_cli, "treasury", "status", "--api", ops.url, "--json"))
    assert as_json["chains"]["ethereum"]["last_sweep"]["tx"] == log["transactionHash"]
    # ... or straight from the signers (one unreachable): the same figures
    dead = "http://127.0.0.1:1"
    direct = json.loads(await asyncio.to_thread(
        run_cli, "treasury", "status", "--json", "--threshold", "3",
        *[a for u in [*c.urls, dead] for a in ("--signer", u)]))
    assert direct["unreachable"] == [dead]
    assert direct["chains"]["ethereum"]["swept"] == str(amount) and direct["chains"]["ethereum"]["agreeing"] == 3
    # `creditbridge status` has a treasury line
    status = await asyncio.to_thread(run_cli, "status", "--api", ops.url)
    assert f"treasury: ethereum swept {amount} of {amount} ETH (pending 0)" in status


async def test_admin_treasury_without_a_quorum_shows_no_figures(chain, lifecycle, committee_of, sweeps):
    lc = await lifecycle(chains=chain_settings(chain)["chains"])
    c = await committee_of(lc)
    await sweeps(c, fresh_address("no-quorum"))
    ops = await lifecycle(chains=chain_settings(chain)["chains"],
                          api={**lc.settings.api.model_dump(mode="json"), "treasury_signers": c.urls[:2],
                               "treasury_threshold": 2})
    _, admin = await create_key(ops.db, "operator", "admin")
    async with c.nodes[1].db.begin() as s:  # nothing swept yet: make one signer report otherwise
        s.add(SweepRow(release_id=b"\x02" * 32, chain="ethereum", token="ETH", epoch=1, cutoff=4, amount=1,
                       to=b"\x03" * 20, state="signed", created_at=datetime.now(timezone.utc),
                       updated_at=datetime.now(timezone.utc)))
    await ops.app[TREASURY].get(max_age=0)  # not the view the API cached at start-up
    async with ops.http.get(ops.url + "/v1/admin/treasury", headers={"Authorization": f"Bearer {admin}"}) as r:
        assert r.status == 200
        eth = (await r.json())["chains"]["ethereum"]
    assert eth["quorum"] is False and eth["earned"] is None and eth["last_sweep"] is None
    assert eth["disagreeing_signers"] == sorted(c.urls[:2])
    async with ops.http.get(ops.url + "/metrics") as r:
        assert samples(await r.text())[("creditbridge_treasury_quorum", (("chain", "ethereum"),))] == 0
