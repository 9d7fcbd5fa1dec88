"""The committee account is the real runtime's ``pallet_multisig`` account, held by t of n.

The expected account id is never hard-coded: the runtime itself names it, in the
``Multisig.NewMultisig`` event of an ``approve_as_multi`` by one (Ed25519) member; the test
then moves funds out of that account with threshold approvals, as the committee would.
"""

from __future__ import annotations

from relayers.substrate.decode import account_bytes
from relayers.substrate.multisig import committee_address, multisig_account_id
from relayers.substrate.wallet import keypair
from tests.integration.substrate.helpers import (
    COMMITTEE,
    COMMITTEE_ID,
    MEMBERS,
    THRESHOLD,
    UNIT,
    batch,
    chain_config,
    ref,
    remark,
    transfer,
)

BOB = keypair("//Bob")
MAX_WEIGHT = 10**10


def _events(sent, module: str, event: str) -> list:
    return [a for m, e, a in sent.receipt["events"] if (m, e) == (module, event)]


async def _free(chain, address: str) -> int:
    return await chain.run(lambda si: si.query("System", "Account", [address]).value["data"]["free"])


async def test_runtime_derives_the_same_multisig_account_and_only_t_of_n_move_funds(chain):
    # fund the committee account the way a payer does
    paid = await chain.send("//Alice", lambda si: batch(si, [transfer(si, COMMITTEE, 100 * UNIT), remark(si, ref())]))
    await chain.new_block([paid])
    assert paid.receipt["success"]
    assert await _free(chain, COMMITTEE) == 100 * UNIT

    ids = [m.public_key for m in MEMBERS]
    payout = {}

    def build_payout(si):
        payout["call"] = transfer(si, BOB.ss58_address, 10 * UNIT)
        return payout["call"]

    await chain.run(build_payout)
    call_hash = "0x" + payout["call"].call_hash.hex()

    def others(i: int) -> list[str]:
        return sorted("0x" + m.public_key.hex() for j, m in enumerate(MEMBERS) if j != i)

    first = await chain.send(MEMBERS[0], lambda si: si.compose_call("Multisig", "approve_as_multi", {
        "threshold": THRESHOLD, "other_signatories": others(0), "maybe_timepoint": None,
        "call_hash": call_hash, "max_weight": MAX_WEIGHT}))
    await chain.new_block([first])
    assert first.receipt["success"], first.receipt
    (new,) = _events(first, "Multisig", "NewMultisig")
    runtime_account = account_bytes(new["multisig"])
    assert runtime_account == multisig_account_id(ids, THRESHOLD) == COMMITTEE_ID
    # the SS58 text the API shows decodes to that account, whatever the prefix
    for prefix in (0, 2, 42):
        assert account_bytes(committee_address(chain_config("ws://x").committee, prefix)) == runtime_account
    before = await _free(chain, BOB.ss58_address)
    assert before > 0 and await _free(chain, COMMITTEE) == 100 * UNIT  # one approval moves nothing

    block = await chain.node.rpc("chain_getHeader", first.block_hash)
    timepoint = {"height": int(block["number"], 16), "index": first.index}
    second = await chain.send(MEMBERS[1], lambda si: si.compose_call("Multisig", "as_multi", {
        "threshold": THRESHOLD, "other_signatories": others(1), "maybe_timepoint": timepoint,
        "call": payout["call"], "store_call": False, "max_weight": MAX_WEIGHT}))
    await chain.new_block([second])
    assert second.receipt["success"], second.receipt
    (executed,) = _events(second, "Multisig", "MultisigExecuted")
    assert "Ok" in str(executed["result"])
    moved = [a for a in _events(second, "Balances", "Transfer") if account_bytes(a["from"]) == COMMITTEE_ID]
    assert [(account_bytes(a["to"]), a["amount"]) for a in moved] == [(BOB.public_key, 10 * UNIT)]
    assert await _free(chain, BOB.ss58_address) == before + 10 * UNIT
