"""TON lock rotation through the local chain's liteserver (issue 13): the current set's
signature files (bridge/committee/rotation.py), sent by a funded wallet
(relayers/ton/rotation.py); the releaser then sees the new committee and pays a release the new
set signed. Its own lock (another min_amount), so the session's lock keeps its committee."""

from __future__ import annotations

import os

from bridge.committee import digest as dg
from bridge.committee import rotation as R
from relayers.ton import lock as L
from relayers.ton import wallet as tw
from devnet.ton.localchain import LOCAL_GLOBAL_ID
from relayers.ton.release import TonLockReleaser
from relayers.ton.rotation import committee_of, payload_hash, submit_rotation
from tests.integration.ton.conftest import MIN, TON, TonEnv


async def test_rotate_a_lock_then_the_new_set_releases(ton: TonEnv):
    lock = L.lock_address(ton.publics, 3, MIN + 7, global_id=LOCAL_GLOBAL_ID)
    await tw.transfer(ton.wallets[2], lock, 3 * TON, L.top_up_body(),
                      state_init=L.state_init(ton.publics, 3, MIN + 7, global_id=LOCAL_GLOBAL_ID))

    async def deployed():
        try:
            return (await committee_of(ton.lb, lock))[0] == 0
        except Exception:  # pytoniq raises while the account is not active
            return False

    await tw.wait_for(deployed, 20)
    new_seeds = [os.urandom(32) for _ in range(4)]
    new_keys = [L.ed25519_public(s) for s in new_seeds]
    proposal = R.proposal_from_dict({
        "network": "devnet",
        "committee": {"index": 1, "threshold": 3, "members": [
            {"name": f"n{i}", "address": "0x" + dg.address_of(os.urandom(32)).hex(), "ed25519": "0x" + k.hex()}
            for i, k in enumerate(new_keys)]},
        "custodies": [{"family": "ton", "chain": "ton", "global_id": LOCAL_GLOBAL_ID, "lock": L.bounceable(lock)}]})
    docs = [R.sign(proposal, member=f"o{i}", secp256k1_key=None, ed25519_seed=ton.seeds[i], ton_hash=payload_hash)
            for i in (0, 2, 3)]
    collected = R.collect(proposal, docs, payload_hash)["ton/lock"]
    index, members, threshold = await committee_of(ton.lb, lock)
    assert (index, members, threshold) == (0, sorted(ton.publics), 3)
    chosen = R.choose(collected, members, threshold, "ton/lock")
    await submit_rotation(ton.lb, " ".join(ton.mnemonics[2]), proposal.custodies[0], proposal.committee, chosen)
    assert await committee_of(ton.lb, lock) == (1, sorted(new_keys), 3)

    releaser = TonLockReleaser(ton.config(contracts={"lock": L.bounceable(lock)}))
    try:
        assert await releaser.committee() == (1, sorted(new_keys), 3)
        to, rid, amount = os.urandom(32), os.urandom(32), TON // 10
        payload = L.release_payload(global_id=LOCAL_GLOBAL_ID, lock=lock, destination=L.basechain(to),
                                    amount=amount, release_id=rid)
        old = [(ton.publics[i], L.sign_release(payload, ton.seeds[i])) for i in range(3)]
        new = [(new_keys[i], L.sign_release(payload, new_seeds[i])) for i in (1, 2, 3)]
        await releaser.release(to, amount, rid, old + new)  # the old set's signatures are left out
        assert await releaser.released(rid)
    finally:
        await releaser.aclose()
