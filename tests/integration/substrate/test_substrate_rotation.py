"""Committee rotation on Asset Hub (issue 13): the old committee's multisig account hands all its
funds to the new committee's account, by t on-chain approvals of old members
(``relayers/substrate/rotation.py``), on a real chopsticks chain (Manual block mode).

Its own committees (members 3-5 old, 6-8 new), so the shared chain's refund committee is untouched.
"""

from __future__ import annotations

import pytest

from bridge.committee.rotation import SubstrateCustody
from bridge.errors import ConfigError
from relayers.substrate.multisig import multisig_account_id, ss58
from relayers.substrate.refund import Progress
from relayers.substrate.rotation import CommitteeMigrator, check_custody
from tests.integration.substrate.helpers import UNIT, batch, chain_config, member_keypair, ref, remark, transfer
from tests.integration.substrate.test_substrate_refund import free, member_seed

OLD = [3, 4, 5]
NEW = [6, 7, 8]
NONE = Progress("none")


def pub(i: int) -> bytes:
    return bytes(member_keypair(i).public_key)


async def test_old_set_moves_the_funds_to_the_new_account_with_t_approvals(chain):
    old_account = multisig_account_id([pub(i) for i in OLD], 2)
    new_account = multisig_account_id([pub(i) for i in NEW], 2)
    # the old members pay their own fees; the old committee account holds payments
    sent = [await chain.send("//Alice", lambda si, i=i: transfer(si, member_keypair(i).ss58_address, 10 * UNIT))
            for i in OLD]
    sent.append(await chain.send("//Alice", lambda si: batch(si, [transfer(si, ss58(old_account, 42), 77 * UNIT),
                                                                  remark(si, ref())])))
    await chain.new_block(sent)
    chain.forget_nonces()
    assert await free(chain, old_account) == 77 * UNIT and await free(chain, new_account) == 0

    custody = SubstrateCustody(family="substrate", chain="polkadot", ss58_prefix=0,
                               old_members=["0x" + pub(i).hex() for i in OLD], old_threshold=2,
                               old_account="0x" + old_account.hex(), new_account="0x" + new_account.hex(),
                               from_block=await chain.head())
    check_custody(custody, [pub(i) for i in NEW], 2)
    cfg = chain_config(chain.url)
    with pytest.raises(ConfigError, match="not one of the committee"):  # a new member cannot approve
        CommitteeMigrator(cfg, custody, member_seed(NEW[0]))
    m3, m4 = (CommitteeMigrator(cfg, custody, member_seed(i)) for i in OLD[:2])
    try:
        p3 = await m3.migrate(custody, 1, NONE)
        assert p3.state == "proposed"
        await chain.new_block()
        # a payment arriving between the approvals moves too: transfer_all runs at execution
        late = await chain.send("//Bob", lambda si: transfer(si, ss58(old_account, 42), 5 * UNIT))
        await chain.new_block([late])
        assert await free(chain, new_account) == 0  # one approval (a minority) moves nothing
        p4 = await m4.migrate(custody, 1, NONE)
        assert p4.state == "approved"
        await chain.new_block()
        assert await free(chain, old_account) == 0
        assert await free(chain, new_account) == 82 * UNIT  # everything, nothing lost to fees
        for _ in range(2):  # both old members then see the execution: done, nothing sent again
            p3, p4 = await m3.migrate(custody, 1, p3), await m4.migrate(custody, 1, p4)
        assert p3.state == p4.state == "done"
    finally:
        await m3.aclose()
        await m4.aclose()
