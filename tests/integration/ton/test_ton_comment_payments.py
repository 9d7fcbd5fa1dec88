"""Plain TON transfers to the lock (issue 14) on the local TON chain (real TVM behind a liteserver
and toncenter, real WalletV4R2 wallets, an unmodified LiteBalancer): a wallet's text-comment
transfer with the payment code is a deposit whose Observation carries the payment's reference
(sha256 of the code) and the wallet as payer, over both transports; a comment with an unknown
code and an empty-body transfer name no payment, so the signers -- real SignerNodes asking a
served gateway, which knows no such payment -- refund each once to the wallet (purpose
``unattributed``) after the delay, through the refund worker and the lock, and one below the
refund minimum is kept as dust; a transfer below the lock's minimum bounces back to the wallet."""

from __future__ import annotations

import hashlib

import aiohttp
from pytoniq_core import Cell

from bridge.api.keys import SIGNER as SIGNER_KEY
from bridge.committee import digest as dg
from bridge.committee.gateway import GatewayClient
from bridge.committee.signer import SignerNode
from bridge.keystore import SecretKey
from bridge.payments import refunds
from bridge.payments.codes import new_code, reference_for_code
from bridge.payments.refunds import RefundWorker, ReleasesClient
from bridge.storage import observations as obs_repo
from bridge.storage.db import Database
from bridge.types import SettlementDomain
from relayers.evm.settlement import EvmSettlement
from relayers.ton import lock as L
from relayers.ton.release import TonLockReleaser, TonRefundSigner
from relayers.ton.watcher import TonWatcher
from tests.integration.lifecycle.conftest import lifecycle, receiver  # noqa: F401  (fixtures: a served gateway)
from tests.integration.lifecycle.test_committee_flow import WallClock
from tests.integration.ton.conftest import MIN, TON, TonEnv
from tests.integration.treasury_harness import serve, settlement  # noqa: F401  (settlement is a fixture)

REFUND_AFTER = 60  # the devnet's unknown_reference_refund_after_seconds


async def _observed(ton: TonEnv, watcher: TonWatcher, start: int, refs: list[bytes]) -> dict[bytes, object]:
    for _ in range(100):
        end = await watcher.finalized_height()
        got = {o.reference: o for o in await watcher.fetch_deposits(start, end) if o.reference in refs}
        if len(got) == len(refs):
            return got
        await ton.wait_block()
    raise AssertionError("deposits not observed")


async def _balance(ton: TonEnv, addr) -> int:
    return (await ton.lb.get_account_state(addr)).balance


async def test_a_wallet_comment_with_the_code_is_observed_with_the_payments_reference(ton: TonEnv):
    code = new_code()
    wallet = ton.wallets[1]
    watchers = [TonWatcher(ton.config()),
                TonWatcher(ton.config(liteserver_config=None, toncenter=[ton.toncenter]))]
    try:
        start = await watchers[0].finalized_height() + 1
        seq = await ton.deposit_count()
        await ton.pay(1, 3 * TON // 2, L.comment_body(code))
        for w in watchers:  # the liteserver and the toncenter transport read the same deposit
            (o,) = (await _observed(ton, w, start, [reference_for_code(code)])).values()
            assert o.reference == hashlib.sha256(code.encode()).digest()
            assert (o.payer, o.amount, o.sequence, o.token, o.chain) == (
                wallet.address.hash_part, 3 * TON // 2, seq, "TON", "ton")
            assert await w.reobserve(o.tx_id) == [o]  # what each signer checks before attesting
    finally:
        for w in watchers:
            await w.aclose()


async def test_unknown_codes_and_empty_transfers_are_refunded_once_and_dust_is_kept(
        ton: TonEnv, lifecycle, settlement, tmp_path):  # noqa: F811
    cfg = ton.config(min_refund=L.DEFAULT_MIN_RELEASE)
    lc = await lifecycle()  # a served gateway: it knows no payment with these references
    probe = TonWatcher(cfg)
    start = await probe.finalized_height() + 1
    unknown = new_code()
    pays = [(0, 2 * TON, L.comment_body(unknown), reference_for_code(unknown)),  # a code no payment has
            (1, TON, Cell.empty(), hashlib.sha256(b"").digest()),  # no comment at all
            (2, 2 * MIN, L.comment_body("thanks!"), hashlib.sha256(b"thanks!").digest())]  # below min_refund
    for i, amount, body, _ in pays:
        await ton.pay(i, amount, body)
    obs = await _observed(ton, probe, start, [r for *_, r in pays])
    clock = WallClock()
    session = aiohttp.ClientSession()
    nodes, runners = [], []
    releaser = TonLockReleaser(cfg, timeout=30)
    try:
        for i, seed in enumerate(ton.seeds[:3]):
            db = Database(f"sqlite+aiosqlite:///{tmp_path}/comment-signer-{i}.sqlite")
            await db.migrate()
            k = hashlib.sha256(f"comment-signer-{i}".encode()).digest()
            nodes.append(SignerNode(
                name=f"s{i}", key=SecretKey("secp256k1", k, "0x" + dg.address_of(k).hex()), db=db,
                watchers={"ton": TonWatcher(cfg)}, settlement=EvmSettlement(settlement.cfg, None),
                domain=SettlementDomain(31337, bytes.fromhex(settlement.cfg.contracts["credits"][2:])),
                gateway=GatewayClient(lc.url, session, timeout=5), gateway_public_key=lc.app[SIGNER_KEY].public_key,
                refund_signers={"ton": TonRefundSigner.from_config(cfg, seed)}, min_refund={"ton": cfg.min_refund},
                wall_clock=clock, unknown_reference_refund_after_seconds=REFUND_AFTER, start_block={"ton": start}))

        async def stored(n: SignerNode) -> dict[bytes, obs_repo.StoredObservation]:
            async with n.db.begin() as s:
                return {o.observation.reference: o for st in ("new", "attested", "rejected")
                        for o in await obs_repo.observations_by_status(s, st, 1000)}

        for n in nodes:  # each node follows the lock with its own watcher
            for _ in range(100):
                for f in n.followers:
                    await f.step()
                if len(await stored(n)) >= 3:
                    break
                await ton.wait_block()
            assert {r: s.observation for r, s in (await stored(n)).items()} == obs
        # the gateway knows none of them: asked again, nothing refunded before the delay
        assert [await n.process_once() for n in nodes] == [0, 0, 0]
        clock.t = min(o.timestamp for o in obs.values()) + REFUND_AFTER - 1
        assert [await n.process_once() for n in nodes] == [0, 0, 0]
        assert all([await n.releases_after(0, 10) == [] for n in nodes])
        clock.t = max(o.timestamp for o in obs.values()) + REFUND_AFTER
        assert [await n.process_once() for n in nodes] == [3, 3, 3]
        source = await probe.source()
        refunded = [obs[r] for *_, r in pays[:2]]
        for n in nodes:
            assert {o.status for o in (await stored(n)).values()} == {"rejected"}
            got = await n.releases_after(0, 10)
            assert sorted((r["purpose"], r["to"], int(r["amount"]), r["release_id"]) for r in got) == sorted(
                ("unattributed", "0x" + o.payer.hex(), o.amount,
                 "0x" + refunds.release_id(source, o.sequence, "unattributed").hex()) for o in refunded)
        dust = obs[pays[2][3]]
        for n in nodes:  # reported, not refunded
            view = await n.refunds()
            assert view["dust"]["ton"] == {"count": 1, "amount": str(dust.amount), "min_refund": str(cfg.min_refund)}
            assert [(d["purpose"], d["to"], d["sequence"]) for d in view["dust_latest"]] == [
                ("unattributed", "0x" + dust.payer.hex(), dust.sequence)]

        urls = [await serve(n, runners) for n in nodes]
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in urls], releasers={"ton": releaser})
        before = [await _balance(ton, ton.wallets[i].address) for i in range(3)]
        assert await worker.step() == 2
        await ton.wait_block(2)
        after = [await _balance(ton, ton.wallets[i].address) for i in range(3)]
        for i, amount in ((0, 2 * TON), (1, TON)):  # the whole deposit, minus the release's own fees
            assert amount - L.RELEASE_FEE_BOUND < after[i] - before[i] < amount
        assert after[2] == before[2]  # the dust stays in the lock
        # once: the worker finds both paid, and the nodes sign nothing more
        assert await worker.step() == 0
        await ton.wait_block()
        assert [await _balance(ton, ton.wallets[i].address) for i in range(3)] == after
        assert [await n.process_once() for n in nodes] == [0, 0, 0]
    finally:
        for r in runners:
            await r.cleanup()
        for n in nodes:
            for w in n.watchers.values():
                await w.aclose()
            await n.settlement.aclose()
            await n.db.dispose()
        await releaser.aclose()
        await probe.aclose()
        await session.close()


async def test_a_comment_transfer_below_the_minimum_bounces_back_to_the_wallet(ton: TonEnv):
    wallet = ton.wallets[2]
    seq = await ton.deposit_count()
    before = await _balance(ton, wallet.address)
    await ton.pay(2, MIN - 1, L.comment_body(new_code()))
    await ton.wait_block(2)  # the bounce reaches the wallet
    assert await ton.deposit_count() == seq
    spent = before - await _balance(ton, wallet.address)
    assert 0 < spent < MIN - 1, spent  # fees only: the value came back
