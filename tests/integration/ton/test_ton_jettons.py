"""TEP-74 jettons (issue 15: USDT on TON) on the local TON chain: the real TVM behind a
liteserver, real WalletV4R2 wallets, an unmodified LiteBalancer, this repo's FunC minter and
jetton wallet, and a lock deployed with the USDT master that learned its jetton wallet from the
master (TEP-89). A wallet's jetton transfer with the payment code is observed once as a USDT
deposit (payer = the wallet, reference = sha256(code)); the committee's signed jetton release
refunds an overpayment's excess in USDT through the lock and cannot be replayed; a forged
transfer_notification (claiming 1,000,000 USDT) from a wallet contract, and a real notification
from the lock's wallet of ANOTHER master, credit nothing; the custody reader reports the lock's
USDT."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import pytest
import pytest_asyncio
from pytoniq.liteclient.client import LiteServerError
from pytoniq_core import Address

from bridge.config import PayableToken
from bridge.errors import TransactionFailed, VerificationError
from bridge.payments.codes import new_code, reference_for_code
from devnet.ton.localchain import LOCAL_GLOBAL_ID
from relayers.ton import jetton as J
from relayers.ton import lock as L
from relayers.ton import wallet as tw
from relayers.ton.custody import TonCustody
from relayers.ton.release import TonLockReleaser, TonRefundSigner
from relayers.ton.watcher import TonWatcher
from tests.integration.ton.conftest import MIN, TON, TonEnv
from tests.integration.treasury_harness import settlement  # noqa: F401  (a fixture: anvil with the CreditLedger)

USDT = 10**6


@dataclass
class Jet:
    lock: Address
    usdt: Address
    fake: Address
    tokens: dict[str, PayableToken]

    def config(self, ton: TonEnv, **kw):
        return ton.config(contracts={"lock": L.bounceable(self.lock)}, **kw)


async def _send(ton: TonEnv, i: int, coro_fn):
    """Run a wallet action of wallet ``i`` and wait until its seqno moved and a block passed."""
    w = ton.wallets[i]
    before = await ton._seqno(w)
    await coro_fn(w)
    await tw.wait_for(lambda: ton._moved(w, before), 20)
    await ton.wait_block(2)


@pytest_asyncio.fixture(scope="module")
async def jet(ton: TonEnv):
    admin = 0
    holder = {}

    async def deploy(w, uri):
        holder[uri] = await J.deploy_minter(w, uri)

    await _send(ton, admin, lambda w: deploy(w, "https://example.invalid/usdt.json"))
    await _send(ton, admin, lambda w: deploy(w, "https://example.invalid/fake-usdt.json"))
    usdt, fake = holder["https://example.invalid/usdt.json"], holder["https://example.invalid/fake-usdt.json"]
    for i in (1, 2):
        await _send(ton, admin, lambda w, i=i: J.mint(w, usdt, ton.wallets[i].address, 1_000 * USDT))
    await _send(ton, admin, lambda w: J.mint(w, fake, ton.wallets[1].address, 10**6 * USDT))
    lock = L.lock_address(ton.publics, 3, MIN, global_id=LOCAL_GLOBAL_ID, jetton_masters=[usdt])
    si = L.state_init(ton.publics, 3, MIN, global_id=LOCAL_GLOBAL_ID, jetton_masters=[usdt])
    await _send(ton, admin, lambda w: tw.transfer(w, lock, 2 * TON, L.top_up_body(), state_init=si))
    await _send(ton, admin, lambda w: tw.transfer(w, lock, L.JETTON_SETUP_VALUE, L.jetton_setup_body(usdt)))
    wallet, _ = await ton.lb.run_get_method(lock, "get_jetton", [int.from_bytes(usdt.hash_part, "big")])
    assert wallet == int.from_bytes(J.wallet_address(lock, usdt).hash_part, "big")
    tokens = {"USDT": PayableToken(symbol="USDT", chain="ton", family="ton", decimals=6, price_symbol="USDT",
                                   native=False, jetton_master=L.bounceable(usdt))}
    return Jet(lock, usdt, fake, tokens)


async def _observe(ton: TonEnv, watcher: TonWatcher, start: int, refs: list[bytes]) -> dict[bytes, object]:
    for _ in range(100):
        end = await watcher.finalized_height()
        got = {o.reference: o for o in await watcher.fetch_deposits(start, end) if o.reference in refs}
        if len(got) == len(refs):
            return got
        await ton.wait_block()
    raise AssertionError("deposits not observed")


async def test_jetton_paid_with_the_code_is_observed_once_and_its_excess_refunded_in_jettons(ton: TonEnv, jet: Jet):
    cfg = jet.config(ton)
    watcher = TonWatcher(cfg, tokens=jet.tokens)
    custody = TonCustody(cfg, token=jet.tokens["USDT"])
    releaser = TonLockReleaser(cfg, tokens=jet.tokens, timeout=30)
    payer = ton.wallets[1]
    try:
        start = await watcher.finalized_height() + 1
        held = await custody.balance(start - 1)
        code = new_code()
        before = await J.jetton_balance(ton.lb, jet.usdt, payer.address)
        await _send(ton, 1, lambda w: J.pay_jettons(w, jet.usdt, jet.lock, 30 * USDT, code=code))
        (o,) = (await _observe(ton, watcher, start, [reference_for_code(code)])).values()
        assert o.reference == hashlib.sha256(code.encode()).digest()
        assert (o.token, o.amount, o.payer, o.chain) == ("USDT", 30 * USDT, payer.address.hash_part, "ton")
        assert await watcher.reobserve(o.tx_id) == [o]
        end = await watcher.finalized_height()
        # read again over the whole range (as a restarted follower would): the same one deposit
        assert [x for x in await watcher.fetch_deposits(start, end) if x.reference == o.reference] == [o]
        assert await J.jetton_balance(ton.lb, jet.usdt, payer.address) == before - 30 * USDT
        assert await custody.balance(end) == held + 30 * USDT

        # the quote was for 20 USDT: the committee refunds the excess in USDT
        rid = os.urandom(32)
        signers = [TonRefundSigner(jet.lock, s, global_id=LOCAL_GLOBAL_ID, tokens=jet.tokens) for s in ton.seeds[:3]]
        sigs = []
        for s in signers:
            to, sig = s.sign(o.payer, 10 * USDT, rid, token="USDT")
            releaser.verify(to, 10 * USDT, rid, s.signer_id, sig, token="USDT")
            sigs.append((s.signer_id, sig))
        # a signature for the same release as TON (another payload) does not verify as USDT
        _, ton_sig = signers[0].sign(o.payer, L.DEFAULT_MIN_RELEASE, rid)
        with pytest.raises(VerificationError, match="does not match"):
            releaser.verify(o.payer, L.DEFAULT_MIN_RELEASE, rid, signers[0].signer_id, ton_sig, token="USDT")
        await releaser.release(o.payer, 10 * USDT, rid, sigs, token="USDT")
        await ton.wait_block(2)
        assert await J.jetton_balance(ton.lb, jet.usdt, payer.address) == before - 20 * USDT
        final = await watcher.finalized_height()
        assert await custody.balance(final) == held + 20 * USDT
        assert await custody.released(final, {rid}) == {rid}
        # no replay: the worker's releaser refuses, and the raw message is refused on chain
        with pytest.raises(TransactionFailed, match="ReleaseUsed"):
            await releaser.release(o.payer, 10 * USDT, rid, sigs, token="USDT")
        await ton.wait_block(3)  # past the liteserver's duplicate window: a genuine replay
        payload = L.jetton_release_payload(global_id=LOCAL_GLOBAL_ID, lock=jet.lock, destination=L.basechain(o.payer),
                                           amount=10 * USDT, release_id=rid, master=jet.usdt)
        with pytest.raises(LiteServerError, match=f"exit code {L.ERR_RELEASE_USED}"):
            await ton.lb.raw_send_message(L.release_message(jet.lock, L.release_body(payload, dict(sigs))).to_boc())
        await ton.wait_block()
        assert await J.jetton_balance(ton.lb, jet.usdt, payer.address) == before - 20 * USDT
    finally:
        await watcher.aclose()
        await custody.aclose()
        await releaser.aclose()


async def test_a_forged_notification_and_another_masters_jettons_credit_nothing(ton: TonEnv, jet: Jet):
    cfg = jet.config(ton)
    watcher = TonWatcher(cfg, tokens=jet.tokens)
    custody = TonCustody(cfg, token=jet.tokens["USDT"])
    try:
        start = await watcher.finalized_height() + 1
        held = await custody.balance(start - 1)
        seq = (await ton.lb.run_get_method(jet.lock, "get_deposit_seq", []))[0]
        forged_code, fake_code, real_code = new_code(), new_code(), new_code()
        # a wallet contract sends the lock a transfer_notification claiming 1,000,000 USDT
        forged = J.transfer_notification_body(10**6 * USDT, ton.wallets[2].address, L.comment_body(forged_code))
        await _send(ton, 2, lambda w: tw.transfer(w, jet.lock, TON // 10, forged))
        # a real transfer of ANOTHER jetton (same 6 decimals, any name) to the lock, with a code
        await _send(ton, 1, lambda w: J.pay_jettons(w, jet.fake, jet.lock, 10**6 * USDT, code=fake_code))
        # then a genuine USDT payment, so the watcher has read past both
        await _send(ton, 2, lambda w: J.pay_jettons(w, jet.usdt, jet.lock, USDT, code=real_code))
        got = await _observe(ton, watcher, start, [reference_for_code(real_code)])
        end = await watcher.finalized_height()
        observed = await watcher.fetch_deposits(start, end)
        assert [o.reference for o in observed] == [reference_for_code(real_code)]
        assert got[reference_for_code(real_code)].amount == USDT
        assert (await ton.lb.run_get_method(jet.lock, "get_deposit_seq", []))[0] == seq + 1
        assert await custody.balance(end) == held + USDT
        # the other jetton sits on the lock's wallet of that master, logged nowhere
        assert await J.jetton_balance(ton.lb, jet.fake, jet.lock) == 10**6 * USDT
    finally:
        await watcher.aclose()
        await custody.aclose()


async def test_credited_jettons_are_swept_once_to_the_treasury_in_jettons(ton: TonEnv, jet: Jet, settlement,  # noqa: F811
                                                                        tmp_path):
    """The lead's per-(chain, token) sweeper over the TON lock's USDT (issue 15): four signer
    nodes (tests/integration/treasury_harness.py) sweep what the credited USDT deposits earned,
    once, as a jetton release (token USDT, release id ``sweep_release_id(.., "USDT")``) that the
    lock pays from its jetton wallet to the treasury's; the overpayment's excess is refunded in
    USDT and never swept; a replay of the sweep is refused by the lock (410)."""
    import aiohttp

    from bridge.committee.treasury import Sweeper
    from bridge.payments import rules
    from bridge.payments.refunds import RefundWorker, ReleasesClient
    from bridge.payments.treasury import sweep_release_id
    from tests.integration.treasury_harness import EPOCH, close, credit, learn, make_node, processed, serve

    cfg = jet.config(ton, min_refund=L.DEFAULT_MIN_RELEASE)
    usdt = jet.tokens["USDT"]
    treasury = os.urandom(32)
    probe = TonWatcher(cfg, tokens=jet.tokens)
    start = await probe.finalized_height() + 1
    codes = [new_code(), new_code()]
    await _send(ton, 1, lambda w: J.pay_jettons(w, jet.usdt, jet.lock, 30 * USDT, code=codes[0]))
    await _send(ton, 2, lambda w: J.pay_jettons(w, jet.usdt, jet.lock, 25 * USDT, code=codes[1]))
    obs = await _observe(ton, probe, start, [reference_for_code(c) for c in codes])
    exact, over = (obs[reference_for_code(c)] for c in codes)
    assert exact.token == over.token == "USDT"
    excess = 5 * USDT
    deposits = [(exact, rules.Decision(rules.CREDIT, 3000, exact.amount, 0)),
                (over, rules.Decision(rules.CREDIT, 2000, over.amount - excess, excess))]
    nodes, runners, session = [], [], aiohttp.ClientSession()
    releaser = TonLockReleaser(cfg, tokens=jet.tokens, timeout=30)
    custody = TonCustody(cfg, token=usdt)
    try:
        height = await probe.finalized_height()
        for i, seed in enumerate(ton.seeds):
            node = await make_node(tmp_path, i, chain="ton", token="TON", watcher=TonWatcher(cfg, tokens=jet.tokens),
                                   custody=TonCustody(cfg), treasury=treasury, settlement=settlement,
                                   min_refund=cfg.min_refund,
                                   refund_signers={"ton": TonRefundSigner.from_config(cfg, seed, tokens=jet.tokens)})
            node.native_tokens = {"ton": "TON"}
            node.min_refund["USDT@ton"] = USDT
            await node.sweeper.custody[("ton", "TON")].aclose()
            node.sweeper = Sweeper(node, addresses={"ton": treasury}, epoch_blocks=EPOCH,
                                   custody={("ton", "USDT"): TonCustody(cfg, token=usdt)}, tokens={"ton": "TON"})
            await learn(node, "ton", height, deposits)
            nodes.append(node)
        urls = [await serve(n, runners) for n in nodes]
        worker = RefundWorker(signers=[ReleasesClient(u, session) for u in urls], releasers={"ton": releaser})

        async def sweeps(i: int = 0) -> list[dict]:
            return [r for r in await nodes[i].releases_after(0, 1000) if r["purpose"] == "sweep"]

        block = await settlement.next_epoch()
        for n in nodes:
            await credit(n, deposits, block)
        await settlement.mine(5)
        assert [await n.sweeper.step() for n in nodes] == [1, 1, 1, 1]
        earned = exact.amount + over.amount - excess
        got = [await sweeps(i) for i in range(4)]
        assert all(len(g) == 1 for g in got)
        sweep = got[0][0]
        assert (sweep["to"], int(sweep["amount"]), sweep["token"]) == ("0x" + treasury.hex(), earned, "USDT")
        rid = bytes.fromhex(sweep["release_id"][2:])
        assert rid == sweep_release_id(await probe.source(), sweep["sequence"], "USDT")

        before = await probe.finalized_height()
        held = await custody.balance(before)
        assert await worker.step() == 2  # the sweep and the excess refund, both in USDT
        await ton.wait_block(2)
        after = await probe.finalized_height()
        assert await custody.balance(after) == held - earned - excess
        owner = L.basechain(treasury)
        assert await J.jetton_balance(ton.lb, jet.usdt, owner) == earned
        assert await custody.released(after, {rid}) == {rid}
        for n in nodes:
            await processed(n, "ton", after)
        assert [await n.sweeper.step() for n in nodes] == [0, 0, 0, 0]  # nothing more to sweep
        # a replay of the sweep is refused by the lock
        await ton.wait_block(3)
        sigs = {bytes.fromhex(r["signer"][2:]): bytes.fromhex(r["signature"][2:]) for r in [g[0] for g in got][:3]}
        payload = L.jetton_release_payload(global_id=LOCAL_GLOBAL_ID, lock=jet.lock, destination=owner,
                                           amount=earned, release_id=rid, master=jet.usdt)
        with pytest.raises(LiteServerError, match=f"exit code {L.ERR_RELEASE_USED}"):
            await ton.lb.raw_send_message(L.release_message(jet.lock, L.release_body(payload, sigs)).to_boc())
        await ton.wait_block()
        assert await J.jetton_balance(ton.lb, jet.usdt, owner) == earned
    finally:
        await session.close()
        for r in runners:
            await r.cleanup()
        await close(nodes)
        await releaser.aclose()
        await custody.aclose()
        await probe.aclose()
