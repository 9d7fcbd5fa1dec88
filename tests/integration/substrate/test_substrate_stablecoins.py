"""Stablecoins on Asset Hub (issue 15): ``pallet_assets`` USDT (1984) and USDC (1337).

Everything runs on chopsticks with the real Asset Hub runtime (spec 900) whose genesis state
holds real ``pallet_assets`` assets (``devnet.substrate.chopsticks.DevAsset``: ``Assets.Asset``,
``Assets.Metadata`` and ``Assets.Account`` of the dev accounts, imported like the balances).
These tests use their own committee (members 3..5, ``helpers.ASSET_MEMBERS``), so its committee
and payment accounts hold nothing from the other substrate tests.

* a plain ``Assets.transfer_keep_alive`` to a payment account is collected by the signers'
  collectors (``Utility.batch_all([Assets.transfer(id, committee, balance), remark(ref ++
  payer)])`` through ``pallet_multisig``; the payment account holds no native balance, the
  members pay the fees) and read by the watcher as one deposit in that token; another
  configured asset sent to the same account is its own deposit in *that* token (the deposit
  rule refunds a token that differs from the quote); an unconfigured asset is not collected;
* call-based batches and proxied batches pay in a token; failed asset transfers (a
  ``batch`` whose asset transfer fails, a ``batch_all`` of a payer without the asset) are no
  deposit; an unconfigured asset to the committee is no deposit, reported;
* a release in USDT pays ``Assets.transfer_keep_alive`` from the committee multisig exactly
  once, and the custody reader sees it and the committee's USDT balance;
* with the lead's core (custody per (chain, token)): credited USDT is swept to the treasury in
  USDT once, an overpayment's excess refunded in USDT (settlement on anvil, three signer nodes'
  sweepers and approval loops; tests/integration/treasury_harness.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from bridge.errors import InputError
from relayers.substrate.client import SDK_LOCK
from relayers.substrate.collect import PaymentCollector
from relayers.substrate.custody import SubstrateCustody
from relayers.substrate.decode import TOP_UP_REMARK, ZERO_REFERENCE
from relayers.substrate.multisig import committee_account_id, payment_account, ss58
from relayers.substrate.refund import MultisigRefunder, SignerApprovals
from relayers.substrate.wallet import asset_balance, keypair, pay_asset
from relayers.substrate.watcher import SubstrateWatcher
from tests.integration.substrate.helpers import (
    ASSET_MEMBERS,
    OTHER_ASSET,
    POOR,
    USDC,
    USDT,
    Sent,
    asset_tokens,
    asset_transfer,
    batch,
    blocks_until,
    chain_config,
    proxy,
    ref,
    remark,
)
from tests.integration.substrate.test_substrate_payment_accounts import ListFeed
from tests.integration.treasury_harness import settlement  # noqa: F401  (a fixture: the settlement anvil)

ALICE, BOB, CHARLIE, DAVE, EVE, FERDIE = (keypair(s) for s in ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve",
                                                              "//Ferdie"))
TOKENS = asset_tokens()


def member_seed(i: int) -> bytes:
    return hashlib.blake2b(f"creditbridge-test/member/{i}".encode(), digest_size=32).digest()


def cfg_of(chain, **kw):
    return chain_config(chain.url, members=ASSET_MEMBERS, **kw)


async def held(chain, asset_id: int, account: bytes) -> int:
    def read() -> int:
        with SDK_LOCK:  # beside the refunders' clients of this process (client.SDK_LOCK)
            return asset_balance(chain.url, asset_id, ss58(account, 42))

    return await asyncio.to_thread(read)


async def deposits(chain, start: int, end: int, registry=None) -> list:
    w = SubstrateWatcher(cfg_of(chain), registry=registry, tokens=TOKENS)
    try:
        return sorted(await w.fetch_deposits(start, end), key=lambda o: o.sequence)
    finally:
        await w.aclose()


@pytest_asyncio.fixture
async def refunders(chain):
    rs = [MultisigRefunder(cfg_of(chain), member_seed(i)) for i in range(3, 6)]
    yield rs
    for r in rs:
        await r.aclose()
    chain.forget_nonces()


async def test_a_plain_usdt_transfer_to_the_payment_account_is_collected_and_credited_once(chain, refunders, caplog):
    cfg = cfg_of(chain)
    committee = committee_account_id(cfg.committee)
    reference = ref()
    account = payment_account(cfg.committee, reference)
    feed = ListFeed()
    feed.add("polkadot", reference, int(time.time()) + 3600)
    start = await chain.head() + 1
    collectors = [PaymentCollector(cfg, r, feed, start_block=start, tokens=TOKENS) for r in refunders[:2]]
    usdt0, usdc0 = await held(chain, USDT, committee), await held(chain, USDC, committee)

    # the payer's wallet: a plain transfer of the asset, as the instructions say (the devnet helper)
    paid = Sent("usdt", await asyncio.to_thread(pay_asset, chain.url, "//Alice", USDT, ss58(account, 42),
                                                5_000_000, wait=False))
    # another configured asset (USDC) and an unconfigured one to the same payment account
    wrong = Sent("usdc", await asyncio.to_thread(pay_asset, chain.url, "//Bob", USDC, ss58(account, 42),
                                                 2_000_000, wait=False))
    other = Sent("other", await asyncio.to_thread(pay_asset, chain.url, "//Charlie", OTHER_ASSET,
                                                  ss58(account, 42), 3_000_000, wait=False))
    chain.forget_nonces()
    await chain.new_block([paid, wrong, other])
    assert all(s.receipt["success"] for s in (paid, wrong, other))
    assert await chain.run(lambda si: si.query("System", "Account", [ss58(account, 42)]).value["data"]["free"]) == 0

    with caplog.at_level(logging.WARNING, logger="relayers.substrate.collect"):
        for _ in range(12):
            for c in collectors:
                await c.step()
            await chain.new_block()
            if await held(chain, USDT, account) == 0 and await held(chain, USDC, account) == 0:
                break
        for c in collectors:
            await c.step()
    assert (await held(chain, USDT, account), await held(chain, USDC, account)) == (0, 0)
    assert await held(chain, OTHER_ASSET, account) == 3_000_000  # not a token: not collected, reported
    assert any("asset 7, which is no configured token" in r.getMessage() for r in caplog.records)
    assert await held(chain, USDT, committee) == usdt0 + 5_000_000
    assert await held(chain, USDC, committee) == usdc0 + 2_000_000
    end = await chain.head()

    obs = await deposits(chain, start, end)
    assert sorted((o.token, o.reference, o.payer, o.amount) for o in obs) == sorted([
        ("USDT", reference, ALICE.public_key, 5_000_000), ("USDC", reference, BOB.public_key, 2_000_000)])
    assert len({o.sequence for o in obs}) == 2  # two collections, two deposits
    # read again (a restart, another signer): the same deposits, nothing more
    assert await deposits(chain, start, end) == obs
    # the collectors have nothing left to do: no more transactions
    before = [len(r.submitted) for r in refunders[:2]]
    for c in collectors:
        await c.step()
    await chain.new_block()
    assert [len(r.submitted) for r in refunders[:2]] == before

    # the custody reader of (polkadot, USDT) sees the committee's USDT at a final block
    custody = SubstrateCustody(cfg, token=TOKENS["USDT"])
    try:
        assert await custody.balance(end) == usdt0 + 5_000_000
    finally:
        await custody.aclose()


async def test_call_based_asset_payments_count_only_what_moved_in_a_configured_token(chain, caplog):
    cfg = cfg_of(chain)
    committee = ss58(committee_account_id(cfg.committee), 42)
    # Ferdie lets Dave pay for him (a proxy): the payer is Ferdie
    added = await chain.send("//Ferdie", lambda si: si.compose_call(
        "Proxy", "add_proxy", {"delegate": DAVE.ss58_address, "proxy_type": "Any", "delay": 0}))
    await chain.new_block([added])
    assert added.receipt["success"], added.receipt
    start = await chain.head() + 1
    r = {k: ref() for k in ("usdt", "usdc", "proxy", "interrupted", "failed", "other")}
    cases = {
        "usdt": await chain.send("//Alice", lambda si: batch(si, [asset_transfer(si, USDT, committee, 3_000_000),
                                                                  remark(si, r["usdt"])])),
        "usdc": await chain.send("//Bob", lambda si: batch(si, [remark(si, r["usdc"]),
                                                                asset_transfer(si, USDC, committee, 1_000_000,
                                                                               "transfer")])),
        "proxy": await chain.send("//Dave", lambda si: proxy(si, FERDIE.ss58_address, batch(si, [
            asset_transfer(si, USDC, committee, 700_000), remark(si, r["proxy"])], "batch"))),
        # batch: the asset transfer fails (more than held), the batch is interrupted but succeeds
        "interrupted": await chain.send("//Charlie", lambda si: batch(si, [
            remark(si, r["interrupted"]), asset_transfer(si, USDT, committee, 10**15)], "batch")),
        # batch_all of a payer that holds no USDT: ExtrinsicFailed
        "failed": await chain.send(POOR, lambda si: batch(si, [asset_transfer(si, USDT, committee, 1_000_000),
                                                               remark(si, r["failed"])])),
        "other": await chain.send("//Alice", lambda si: batch(si, [
            asset_transfer(si, OTHER_ASSET, committee, 9_000_000), remark(si, r["other"])])),
        "plain": await chain.send("//Eve", lambda si: asset_transfer(si, USDT, committee, 4_000_000)),
    }
    await chain.new_block(list(cases.values()))
    receipts = {k: s.receipt for k, s in cases.items()}
    assert not receipts["failed"]["success"]
    assert all(receipts[k]["success"] for k in cases if k != "failed"), receipts
    assert ("Utility", "BatchInterrupted") in {(m, e) for m, e, _ in receipts["interrupted"]["events"]}

    registry = CollectorRegistry()
    with caplog.at_level(logging.ERROR, logger="relayers.substrate.watcher"):
        obs = await deposits(chain, start, await chain.head(), registry=registry)
    got = {(o.token, o.reference, o.payer, o.amount) for o in obs}
    assert got == {
        ("USDT", r["usdt"], ALICE.public_key, 3_000_000),
        ("USDC", r["usdc"], BOB.public_key, 1_000_000),
        ("USDC", r["proxy"], FERDIE.public_key, 700_000),
        ("USDT", ZERO_REFERENCE, EVE.public_key, 4_000_000),  # no memo: unattributed, refunded later
    }
    assert len(obs) == 4
    # the unconfigured asset is no deposit: reported once, for an operator
    assert registry.get_sample_value("creditbridge_watcher_unconfigured_asset_deposits_total",
                                     {"chain": "polkadot", "asset_id": str(OTHER_ASSET)}) == 1
    assert any("of asset 7 (not a configured token)" in x.getMessage() for x in caplog.records)

    # a watcher of a chain with no tokens configured sees only native deposits: none here
    plain = SubstrateWatcher(cfg)
    try:
        assert await plain.fetch_deposits(start, await chain.head()) == []
    finally:
        await plain.aclose()


async def test_a_usdt_release_pays_usdt_once_and_the_custody_reader_sees_it(chain, refunders):
    cfg = cfg_of(chain)
    committee = committee_account_id(cfg.committee)
    funded = await chain.send("//Alice", lambda si: asset_transfer(si, USDT, ss58(committee, 42), 10_000_000))
    await chain.new_block([funded])
    assert funded.receipt["success"]
    deposit_block = await chain.head()
    to = hashlib.sha256(b"stablecoin refund" + ref()).digest()  # holds nothing: it gets exactly the refund
    usdt0 = await held(chain, USDT, committee)
    release_id = ref()
    approvals = [SignerApprovals(cfg, member_seed(i), tokens=TOKENS) for i in (3, 4, 5)]
    for a, r in zip(approvals, refunders):  # share the fixture's refunders (one nonce sequence per key)
        await a.refunder.aclose()
        a.refunder = r
    with pytest.raises(InputError):
        await approvals[0].step(release_id=release_id, payer=to, amount=1, sequence=deposit_block << 16,
                                progress={"state": "none"}, token="XYZ")
    progress = [{"state": "none"}, {"state": "none"}]
    for _ in range(12):
        for i in range(2):
            progress[i] = await approvals[i].step(release_id=release_id, payer=to, amount=1_500_000,
                                                  sequence=deposit_block << 16, progress=progress[i], token="USDT")
        await chain.new_block()
        if all(p["state"] == "done" for p in progress):
            break
    assert [p["state"] for p in progress] == ["done", "done"], progress
    assert await held(chain, USDT, to) == 1_500_000  # in USDT, to an account holding nothing else
    assert await held(chain, USDT, committee) == usdt0 - 1_500_000
    # the third member finds it done and submits nothing; more steps pay nothing more
    mark = len(refunders[2].submitted)
    late = await approvals[2].step(release_id=release_id, payer=to, amount=1_500_000,
                                   sequence=deposit_block << 16, progress={"state": "none"}, token="USDT")
    assert late["state"] == "done" and len(refunders[2].submitted) == mark
    await chain.new_block()
    assert await held(chain, USDT, to) == 1_500_000

    head = await chain.head()
    custody = SubstrateCustody(cfg_of(chain, start_block=deposit_block), token=TOKENS["USDT"])
    try:
        assert await custody.released(head, {release_id, ref()}) == {release_id}
        assert await custody.balance(head) == usdt0 - 1_500_000
    finally:
        await custody.aclose()


async def test_credited_usdt_is_swept_once_and_the_excess_refunded_in_usdt(chain, settlement, tmp_path):
    """The lead's core on Asset Hub: the sweeper of (polkadot, USDT) sweeps what was credited in
    USDT to the treasury, the signers' approval loops pay the sweep and the excess refund with
    ``Assets.transfer_keep_alive`` from the committee multisig (two approvals of three), once."""
    from bridge.committee.treasury import Sweeper
    from bridge.payments import refunds, rules
    from bridge.payments import treasury as tr
    from bridge.storage import releases as rel_repo
    from tests.integration.treasury_harness import EPOCH, close, credit, learn, make_node, processed

    head = await chain.head()
    cfg = cfg_of(chain, start_block=head)
    committee = committee_account_id(cfg.committee)
    treasury = hashlib.sha256(b"usdt treasury" + ref()).digest()  # fresh: what it holds is what sweeps paid
    refs = [ref() for _ in range(3)]
    amounts = [10_000_000, 6_000_000, 3_000_000]
    sent = [await chain.send("//Alice", lambda si, r=r, a=a: batch(si, [
        asset_transfer(si, USDT, ss58(committee, 42), a), remark(si, r)])) for r, a in zip(refs, amounts)]
    # an operator keeps the asset's min_balance in the committee account (the sweeper's reserve for
    # USDT@polkadot: releases pay transfer_keep_alive): a top-up, no deposit
    sent.append(await chain.send("//Eve", lambda si: batch(si, [asset_transfer(si, USDT, ss58(committee, 42), 70_000),
                                                               remark(si, TOP_UP_REMARK)])))
    await chain.new_block(sent)
    probe = SubstrateWatcher(cfg, tokens=TOKENS)
    end = await probe.finalized_height()
    obs = {o.reference: o for o in await probe.fetch_deposits(head + 1, end)}
    await probe.aclose()
    assert set(obs) == set(refs)  # the top-up is no deposit
    exact, over, pending = (obs[r] for r in refs)
    assert {o.token for o in (exact, over, pending)} == {"USDT"}
    excess = 1_000_000
    deposits = [(exact, rules.Decision(rules.CREDIT, 1000, exact.amount, 0)),
                (over, rules.Decision(rules.CREDIT, 500, over.amount - excess, excess)),
                (pending, rules.Decision(rules.CREDIT, 300, pending.amount, 0))]
    alice0 = await held(chain, USDT, ALICE.public_key)
    nodes, loops = [], []
    custody = SubstrateCustody(cfg, token=TOKENS["USDT"])  # the test's own reader
    try:
        for i in range(3):
            node = await make_node(tmp_path, i, chain="polkadot", token="DOT",
                                   watcher=SubstrateWatcher(cfg, tokens=TOKENS), custody=SubstrateCustody(cfg),
                                   treasury=treasury, settlement=settlement, min_refund=10**10,
                                   approvers={"polkadot": SignerApprovals(cfg, member_seed(3 + i), tokens=TOKENS)})
            node.native_tokens = {"polkadot": "DOT"}
            node.min_refund["USDT@polkadot"] = 100_000
            native = node.sweeper.custody[("polkadot", "DOT")]
            node.sweeper = Sweeper(node, addresses={"polkadot": treasury}, epoch_blocks=EPOCH,
                                   custody={("polkadot", "DOT"): native,
                                            ("polkadot", "USDT"): SubstrateCustody(cfg, token=TOKENS["USDT"])},
                                   tokens={"polkadot": "DOT"}, reserve={"USDT@polkadot": 70_000})
            await learn(node, "polkadot", end, deposits)
            nodes.append(node)
        refund_id = refunds.release_id(over.source, over.sequence, "excess")
        async with nodes[0].db.begin() as s:
            (refund,) = [r for r in await rel_repo.open_approvals(s, ["polkadot"], limit=100)
                         if r.release_id == refund_id]
        assert (refund.token, refund.amount, refund.to) == ("USDT", excess, ALICE.public_key)

        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits[:2], block)
        await settlement.mine(5)
        assert [await n.sweeper.step() for n in nodes] == [1, 1, 1]
        earned = exact.amount + over.amount - excess
        views = [await n.sweeper.view() for n in nodes]
        assert len({(v["sweeps"][0]["release_id"], v["sweeps"][0]["amount"], v["sweeps"][0]["token"])
                    for v in views}) == 1
        (sweep,) = views[0]["sweeps"]
        assert (sweep["token"], sweep["amount"], sweep["to"]) == ("USDT", str(earned), "0x" + treasury.hex())
        rid = bytes.fromhex(sweep["release_id"][2:])
        assert rid == tr.sweep_release_id(exact.source, sweep["epoch"], "USDT")

        before = await chain.head()
        committee_before = await custody.balance(before)
        loops = [asyncio.create_task(n._approval_loop(interval=0.2)) for n in nodes[:2]]
        async def paid():
            return (await held(chain, USDT, treasury) == earned
                    and await held(chain, USDT, ALICE.public_key) == alice0 + excess)

        await blocks_until(chain, paid, pause=0.3)
        for _ in range(3):  # more rounds pay nothing more
            await asyncio.sleep(0.3)
            await chain.new_block()
        assert await held(chain, USDT, treasury) == earned  # in USDT, once
        assert await held(chain, USDT, ALICE.public_key) == alice0 + excess
        assert await chain.run(lambda si: si.query("System", "Account", [ss58(treasury, 42)]).value["data"]["free"]) \
            == 0  # no native token moved
        after = await chain.head()
        assert committee_before - await custody.balance(after) == earned + excess
        assert await custody.released(after, {rid, refund_id, ref()}) == {rid, refund_id}
        for n in nodes:
            await processed(n, "polkadot", after)
        assert [await n.sweeper.step() for n in nodes] == [0, 0, 0]
        assert (await nodes[0].sweeper.view())["sweeps"][0]["state"] == "paid"
    finally:
        for t in loops:
            t.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for n in nodes:
            await n.approvers["polkadot"].aclose()
            for w in n.watchers.values():
                await w.aclose()
        await close(nodes)
        await custody.aclose()
        chain.forget_nonces()
