"""CreditLedger and CreditLock against a real anvil, signed with bridge.committee.digest.

One anvil and one deployment per module; every test runs between evm_snapshot/evm_revert.
Reverts are checked by their exact custom-error selector and arguments (eth_call), and the
important ones also as mined transactions with status 0 and unchanged state.
"""

from __future__ import annotations

from typing import Any, Sequence

import pytest
import pytest_asyncio
from eth_account import Account
from eth_utils import keccak, to_checksum_address
from web3.exceptions import ContractLogicError

from bridge.committee import digest as dg
from bridge.errors import ChainError, ConfigError, TransactionFailed
from bridge.hashing import source_id
from bridge.types import Credit, CreditMessage, SettlementDomain
from devnet.evm.anvil import DEFAULT_CHAIN_ID, DEV_PRIVATE_KEYS, AnvilNode, anvil_binary
from relayers.evm.contracts import (
    CREDITED_TOPIC,
    LEDGER,
    LOCK,
    LOCKED_TOPIC,
    decode_error,
    load_artifact,
    revert_data,
    send_transaction,
)

CHAIN_ID = DEFAULT_CHAIN_ID
THRESHOLD = 3  # of the 4 signers of the `committee` fixture
MIN_LOCK = 10**15  # 0.001 ETH
# dev account 0 deploys (the deploy_contract fixture's default)
PROVIDER_KEY, USER_KEY, SUBMITTER_KEY = DEV_PRIVATE_KEYS[1:4]


def address_of_key(key: str) -> str:
    return Account.from_key(key).address


@pytest_asyncio.fixture(scope="module")
async def ledger(deploy_contract, committee):
    return await deploy_contract(LEDGER, [committee.checksum_addresses, THRESHOLD, address_of_key(PROVIDER_KEY)])


@pytest_asyncio.fixture(scope="module")
async def lock(deploy_contract, committee):
    return await deploy_contract(LOCK, [committee.checksum_addresses, THRESHOLD, MIN_LOCK])


@pytest_asyncio.fixture
async def fresh_state(anvil, ledger, lock):
    """Each test runs between evm_snapshot and evm_revert, taken after the module's
    deployments: one node and one deployment, but no state shared between tests."""
    snap = await anvil.snapshot()
    try:
        yield
    finally:
        await anvil.revert(snap)


pytestmark = pytest.mark.usefixtures("fresh_state")

SOURCE_A = source_id("evm", 1, bytes.fromhex("11" * 20))
SOURCE_B = source_id("evm", 1, bytes.fromhex("22" * 20))
ALICE = bytes.fromhex("a1" * 20)
BOB = bytes.fromhex("b0" * 20)
CAROL = bytes.fromhex("c0" * 20)


# ------------------------------------------------------------------------------ helpers
def addr_bytes(address: str) -> bytes:
    return bytes.fromhex(address[2:])


def ledger_domain(ledger, chain_id: int = CHAIN_ID) -> SettlementDomain:
    return SettlementDomain(chain_id=chain_id, contract=addr_bytes(ledger.address))


def lock_domain(lock) -> SettlementDomain:
    return SettlementDomain(chain_id=CHAIN_ID, contract=addr_bytes(lock.address), name=dg.LOCK_NAME)


def credit(seq: int, beneficiary: bytes, amount: int, source: bytes = SOURCE_A) -> Credit:
    return Credit(
        source=source,
        sequence=seq,
        beneficiary=beneficiary,
        credits=amount,
        quote_id=keccak(b"quote" + source + seq.to_bytes(8, "big")),
    )


def as_args(credits: Sequence[Credit]) -> list[tuple]:
    return [(c.source, c.sequence, to_checksum_address(c.beneficiary), c.credits, c.quote_id) for c in credits]


def batch_digest(ledger, credits: Sequence[Credit], index: int = 0, chain_id: int = CHAIN_ID) -> bytes:
    return dg.credit_digest(ledger_domain(ledger, chain_id), CreditMessage(index, tuple(credits)))


def sign_batch(ledger, committee, credits: Sequence[Credit], members=(0, 1, 2), index: int = 0) -> bytes:
    return committee.sign(batch_digest(ledger, credits, index), members)


async def transact(w3, fn, key: str, *, value: int = 0, gas: int | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"from": address_of_key(key), "value": value}
    if gas is not None:
        params["gas"] = gas  # skips estimation, so a reverting call is really mined
    tx = await fn.build_transaction(params)
    return await send_transaction(w3, tx, key)


async def mined_revert(w3, fn, key: str = SUBMITTER_KEY, *, value: int = 0) -> None:
    """Send ``fn`` as a real transaction with fixed gas and require it to be mined reverted."""
    with pytest.raises(TransactionFailed, match="reverted"):
        await transact(w3, fn, key, value=value, gas=3_000_000)


async def assert_reverts(fn, contract: str, error: str, args: tuple | None = None, *, value: int = 0,
                         sender: str = SUBMITTER_KEY) -> None:
    with pytest.raises(ContractLogicError) as info:
        await fn.call({"from": address_of_key(sender), "value": value})
    decoded = decode_error(contract, revert_data(info.value))
    assert decoded is not None, f"not a {contract} custom error: {revert_data(info.value)!r}"
    assert decoded[0] == error
    if args is not None:
        assert decoded[1] == args


def credited_events(ledger, receipt) -> list[tuple]:
    out = []
    for log in receipt["logs"]:
        if log["address"] == ledger.address and log["topics"][0] == CREDITED_TOPIC:
            ev = ledger.events.Credited().process_log(log)["args"]
            out.append((ev.source, ev.sequence, ev.beneficiary, ev.credits, ev.quoteId))
    return out


def expected_events(credits: Sequence[Credit]) -> list[tuple]:
    return [(c.source, c.sequence, to_checksum_address(c.beneficiary), c.credits, c.quote_id) for c in credits]


async def balance(ledger, who: bytes) -> int:
    return await ledger.functions.creditsOf(to_checksum_address(who)).call()


async def settle(w3, ledger, committee, credits, members=(0, 1, 2), index: int = 0):
    sigs = sign_batch(ledger, committee, credits, members, index)
    return await transact(w3, ledger.functions.settle(as_args(credits), sigs), SUBMITTER_KEY)


def high_s(sig: bytes) -> bytes:
    """The malleable twin of a valid signature: (r, n - s, v ^ 1); ecrecover accepts it."""
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (dg.SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - sig[64]])


# ------------------------------------------------------------------------------ node and keys
async def test_dev_keys_are_anvils_funded_accounts(w3):
    accounts = await w3.eth.accounts
    assert accounts == [Account.from_key(k).address for k in DEV_PRIVATE_KEYS]


async def test_committee_views_and_domain_separators_match_python(ledger, lock, committee):
    for c in (ledger, lock):
        assert await c.functions.committeeIndex().call() == 0
        assert await c.functions.threshold().call() == THRESHOLD
        assert await c.functions.signers().call() == committee.checksum_addresses
    assert await ledger.functions.domainSeparator().call() == dg.domain_separator(ledger_domain(ledger))
    assert await lock.functions.domainSeparator().call() == dg.domain_separator(lock_domain(lock))
    assert await ledger.functions.provider().call() == address_of_key(PROVIDER_KEY)
    assert await lock.functions.minAmount().call() == MIN_LOCK


# ------------------------------------------------------------------------------ lock
async def test_lock_emits_locked_with_incrementing_nonce(w3, lock):
    user = address_of_key(USER_KEY)
    refs = [keccak(b"ref-%d" % i) for i in range(3)]
    amounts = [MIN_LOCK, MIN_LOCK + 1, 5 * 10**17]
    for i, (ref, amount) in enumerate(zip(refs, amounts)):
        assert await lock.functions.nextNonce().call() == i
        receipt = await transact(w3, lock.functions.lock(ref), USER_KEY, value=amount)
        (log,) = receipt["logs"]
        assert log["topics"][0] == LOCKED_TOPIC
        ev = lock.events.Locked().process_log(log)["args"]
        assert (ev.nonce, ev.sender, ev.amount, ev.ref) == (i, user, amount, ref)
    assert await lock.functions.nextNonce().call() == 3
    assert await w3.eth.get_balance(lock.address) == sum(amounts)


async def test_lock_below_minimum_reverts(w3, lock):
    fn = lock.functions.lock(keccak(b"small"))
    await assert_reverts(fn, LOCK, "AmountTooSmall", (MIN_LOCK - 1, MIN_LOCK), value=MIN_LOCK - 1)
    await mined_revert(w3, fn, USER_KEY, value=MIN_LOCK - 1)
    assert await lock.functions.nextNonce().call() == 0
    assert await w3.eth.get_balance(lock.address) == 0


async def test_plain_transfer_to_lock_reverts(w3, lock):
    user = address_of_key(USER_KEY)
    with pytest.raises(ContractLogicError):
        await w3.eth.call({"from": user, "to": lock.address, "value": MIN_LOCK})
    tx = {"to": lock.address, "value": MIN_LOCK, "gas": 100_000}
    with pytest.raises(TransactionFailed, match="reverted"):
        await send_transaction(w3, tx, USER_KEY)
    assert await w3.eth.get_balance(lock.address) == 0


# ------------------------------------------------------------------------------ settle
async def test_settle_credits_once_and_emits_credited(w3, ledger, committee):
    batch = [credit(0, ALICE, 100), credit(1, BOB, 250), credit(2, ALICE, 7)]
    sigs = sign_batch(ledger, committee, batch)
    fn = ledger.functions.settle(as_args(batch), sigs)
    assert await fn.call({"from": address_of_key(SUBMITTER_KEY)}) == 3
    receipt = await transact(w3, fn, SUBMITTER_KEY)
    assert credited_events(ledger, receipt) == expected_events(batch)
    assert await balance(ledger, ALICE) == 107
    assert await balance(ledger, BOB) == 250
    for seq in (0, 1, 2):
        assert await ledger.functions.isSettled(SOURCE_A, seq).call() is True
    assert await ledger.functions.isSettled(SOURCE_A, 3).call() is False
    assert await ledger.functions.isSettled(SOURCE_B, 0).call() is False


async def test_second_submission_reverts_nothing_to_settle(w3, ledger, committee):
    batch = [credit(0, ALICE, 100), credit(1, BOB, 250)]
    sigs = sign_batch(ledger, committee, batch)
    fn = ledger.functions.settle(as_args(batch), sigs)
    await transact(w3, fn, SUBMITTER_KEY)
    await assert_reverts(fn, LEDGER, "NothingToSettle", ())
    await mined_revert(w3, fn)
    # the same deposits signed again by another quorum are still not credited twice
    other = ledger.functions.settle(as_args(batch), sign_batch(ledger, committee, batch, members=(1, 2, 3)))
    await assert_reverts(other, LEDGER, "NothingToSettle", ())
    assert await balance(ledger, ALICE) == 100
    assert await balance(ledger, BOB) == 250


async def test_overlapping_batch_credits_only_new_items(w3, ledger, committee):
    await settle(w3, ledger, committee, [credit(0, ALICE, 10), credit(1, BOB, 20)])
    second = [credit(1, BOB, 20), credit(2, CAROL, 30), credit(0, ALICE, 10), credit(3, ALICE, 40)]
    fn = ledger.functions.settle(as_args(second), sign_batch(ledger, committee, second))
    assert await fn.call({"from": address_of_key(SUBMITTER_KEY)}) == 2
    receipt = await transact(w3, fn, SUBMITTER_KEY)
    assert credited_events(ledger, receipt) == expected_events([second[1], second[3]])
    assert (await balance(ledger, ALICE), await balance(ledger, BOB), await balance(ledger, CAROL)) == (50, 20, 30)


async def test_duplicate_deposit_inside_one_batch_is_credited_once(w3, ledger, committee):
    # CreditMessage refuses duplicates, so build the EIP-712 digest by hand as a hostile
    # aggregator could get it signed by a buggy committee
    c = credit(5, ALICE, 100)
    items = keccak(dg.credit_hash(c) * 2)
    struct = keccak(dg.BATCH_TYPEHASH + (0).to_bytes(32, "big") + items)
    sigs = committee.sign(dg.typed_digest(ledger_domain(ledger), struct), (0, 1, 2))
    receipt = await transact(w3, ledger.functions.settle(as_args([c, c]), sigs), SUBMITTER_KEY)
    assert credited_events(ledger, receipt) == expected_events([c])
    assert await balance(ledger, ALICE) == 100


async def test_interleaved_sources_words_and_beneficiaries(w3, ledger, committee):
    # exercises the in-memory caching of bitmap words and balances across switches
    batch = [
        credit(255, ALICE, 1),
        credit(256, ALICE, 2),
        credit(0, BOB, 4, SOURCE_B),
        credit(254, ALICE, 8),
        credit(1, BOB, 16, SOURCE_B),
        credit(0, BOB, 32),
        credit(2**64 - 1, CAROL, 64),
        credit(257, ALICE, 128),
    ]
    receipt = await settle(w3, ledger, committee, batch)
    assert credited_events(ledger, receipt) == expected_events(batch)
    assert (await balance(ledger, ALICE), await balance(ledger, BOB), await balance(ledger, CAROL)) == (139, 52, 64)
    for c in batch:
        assert await ledger.functions.isSettled(c.source, c.sequence).call() is True
    for source, seq in [(SOURCE_A, 1), (SOURCE_A, 253), (SOURCE_A, 258), (SOURCE_B, 2), (SOURCE_B, 255),
                        (SOURCE_A, 2**64 - 2)]:
        assert await ledger.functions.isSettled(source, seq).call() is False
    # every one of them is now refused, alone or together
    for c in batch:
        await assert_reverts(
            ledger.functions.settle(as_args([c]), sign_batch(ledger, committee, [c])), LEDGER, "NothingToSettle", ()
        )


async def test_empty_batch_reverts(w3, ledger, committee):
    sigs = committee.sign(keccak(b"anything"), (0, 1, 2))
    await assert_reverts(ledger.functions.settle([], sigs), LEDGER, "NothingToSettle", ())


# ------------------------------------------------------------------------------ signature checks
BATCH = [credit(0, ALICE, 100)]


def _sigs_for(ledger, committee, members) -> list[bytes]:
    d = batch_digest(ledger, BATCH)
    return [dg.sign_digest(committee.keys[i], d) for i in members]


@pytest.mark.parametrize(
    "case, error",
    [
        ("below_threshold", "BelowThreshold"),
        ("no_signatures", "BelowThreshold"),
        ("duplicate_signer", "SignersNotAscending"),
        ("unsorted", "SignersNotAscending"),
        ("high_s", "HighS"),
        ("length_64", "BadSignatureLength"),
        ("length_plus_one", "BadSignatureLength"),
        ("bad_v", "InvalidSignature"),
        ("zero_r", "InvalidSignature"),
    ],
)
async def test_bad_signature_sets_revert(w3, ledger, committee, case, error):
    s = _sigs_for(ledger, committee, (0, 1, 2))
    args: tuple | None = None
    if case == "below_threshold":
        sigs, args = s[0] + s[1], (2, THRESHOLD)
    elif case == "no_signatures":
        sigs, args = b"", (0, THRESHOLD)
    elif case == "duplicate_signer":
        sigs = s[0] + s[1] + s[1]
    elif case == "unsorted":
        sigs = s[1] + s[0] + s[2]
    elif case == "high_s":
        sigs = s[0] + high_s(s[1]) + s[2]
    elif case == "length_64":
        sigs = s[0] + s[1] + s[2][:64]
    elif case == "length_plus_one":
        sigs = s[0] + s[1] + s[2] + b"\x00"
    elif case == "bad_v":
        sigs = s[0] + s[1] + s[2][:64] + b"\x01"
    elif case == "zero_r":
        sigs = s[0] + b"\x00" * 32 + s[1][32:] + s[2]
    fn = ledger.functions.settle(as_args(BATCH), sigs)
    await assert_reverts(fn, LEDGER, error, args)
    if case in ("below_threshold", "duplicate_signer"):
        await mined_revert(w3, fn)
    assert await balance(ledger, ALICE) == 0
    assert await ledger.functions.isSettled(SOURCE_A, 0).call() is False


async def test_all_signers_above_threshold_are_accepted(w3, ledger, committee):
    await settle(w3, ledger, committee, BATCH, members=(0, 1, 2, 3))
    assert await balance(ledger, ALICE) == 100


async def test_unknown_signer_reverts_with_its_address(w3, ledger, committee, committee_factory):
    outsider = committee_factory.make(1, "outsider")
    d = batch_digest(ledger, BATCH)
    pairs = [(committee.addresses[i], dg.sign_digest(committee.keys[i], d)) for i in (0, 1)]
    pairs.append((outsider.addresses[0], dg.sign_digest(outsider.keys[0], d)))
    sigs = dg.pack_signatures(pairs)
    fn = ledger.functions.settle(as_args(BATCH), sigs)
    await assert_reverts(fn, LEDGER, "UnknownSigner", (outsider.checksum_addresses[0],))


async def _assert_wrong_digest(ledger, committee, signed_digest: bytes, chain_id: int = CHAIN_ID) -> None:
    """Signatures over another digest recover to an unrelated address, which the contract
    names in UnknownSigner: recovering it in Python under the *correct* digest proves that
    Python's credit_digest is byte-for-byte what the contract verifies."""
    sigs = committee.sign(signed_digest, (0, 1, 2))
    recovered = dg.recover(batch_digest(ledger, BATCH, chain_id=chain_id), sigs[:65])
    await assert_reverts(
        ledger.functions.settle(as_args(BATCH), sigs), LEDGER, "UnknownSigner", (to_checksum_address(recovered),)
    )


async def test_wrong_chain_id_is_rejected(ledger, committee):
    await _assert_wrong_digest(ledger, committee, batch_digest(ledger, BATCH, chain_id=1))


async def test_wrong_contract_is_rejected(w3, ledger, committee, deploy_contract):
    other = await deploy_contract(
        LEDGER, [committee.checksum_addresses, THRESHOLD, address_of_key(PROVIDER_KEY)]
    )
    await _assert_wrong_digest(ledger, committee, batch_digest(other, BATCH))
    # and the signatures made for `other` do work there
    await settle(w3, other, committee, BATCH)
    assert await balance(other, ALICE) == 100
    assert await balance(ledger, ALICE) == 0


async def test_wrong_domain_name_is_rejected(lock, ledger, committee):
    wrong = SettlementDomain(chain_id=CHAIN_ID, contract=addr_bytes(ledger.address), name=dg.LOCK_NAME)
    await _assert_wrong_digest(ledger, committee, dg.credit_digest(wrong, CreditMessage(0, tuple(BATCH))))


async def test_wrong_committee_index_is_rejected(ledger, committee):
    await _assert_wrong_digest(ledger, committee, batch_digest(ledger, BATCH, index=1))


async def test_domain_separator_follows_chain_id(w3, anvil, ledger, committee):
    await anvil.rpc("anvil_setChainId", 4242)
    try:
        assert await ledger.functions.domainSeparator().call() == dg.domain_separator(ledger_domain(ledger, 4242))
        await _assert_wrong_digest(ledger, committee, batch_digest(ledger, BATCH, chain_id=CHAIN_ID), chain_id=4242)
        sigs = committee.sign(batch_digest(ledger, BATCH, chain_id=4242), (0, 1, 2))
        await transact(w3, ledger.functions.settle(as_args(BATCH), sigs), SUBMITTER_KEY)
        assert await balance(ledger, ALICE) == 100
    finally:
        await anvil.rpc("anvil_setChainId", CHAIN_ID)  # evm_revert does not restore it
    assert await ledger.functions.domainSeparator().call() == dg.domain_separator(ledger_domain(ledger))


# ------------------------------------------------------------------------------ provider
async def test_spend_and_set_provider_access_control(w3, ledger, committee):
    await settle(w3, ledger, committee, [credit(0, ALICE, 100)])
    alice = to_checksum_address(ALICE)
    memo = keccak(b"job-1")
    await assert_reverts(ledger.functions.spend(alice, 1, memo), LEDGER, "NotProvider", (), sender=USER_KEY)
    await mined_revert(w3, ledger.functions.spend(alice, 1, memo), USER_KEY)
    await assert_reverts(
        ledger.functions.spend(alice, 101, memo), LEDGER, "InsufficientCredits", (100, 101), sender=PROVIDER_KEY
    )
    receipt = await transact(w3, ledger.functions.spend(alice, 60, memo), PROVIDER_KEY)
    ev = ledger.events.Spent().process_receipt(receipt)[0]["args"]
    assert (ev.account, ev.amount, ev.memo) == (alice, 60, memo)
    assert await balance(ledger, ALICE) == 40

    new_provider = address_of_key(USER_KEY)
    await assert_reverts(ledger.functions.setProvider(new_provider), LEDGER, "NotProvider", (), sender=USER_KEY)
    receipt = await transact(w3, ledger.functions.setProvider(new_provider), PROVIDER_KEY)
    assert ledger.events.ProviderChanged().process_receipt(receipt)[0]["args"]["provider"] == new_provider
    assert await ledger.functions.provider().call() == new_provider
    await assert_reverts(ledger.functions.spend(alice, 1, memo), LEDGER, "NotProvider", (), sender=PROVIDER_KEY)
    await transact(w3, ledger.functions.spend(alice, 40, memo), USER_KEY)
    assert await balance(ledger, ALICE) == 0
    await assert_reverts(ledger.functions.spend(alice, 1, memo), LEDGER, "InsufficientCredits", (0, 1), sender=USER_KEY)


# ------------------------------------------------------------------------------ rotation
def rotation_sigs(contract, domain: SettlementDomain, signer_set, new: Sequence[str],
                  threshold: int, new_index: int, members=(0, 1, 2)) -> bytes:
    d = dg.rotate_digest(domain, new_index, [addr_bytes(a) for a in new], threshold)
    return signer_set.sign(d, members)


async def test_rotation_by_current_set(w3, ledger, committee, committee_factory):
    new = committee_factory.make(3, "committee-1")
    # keep one old member in the new set, listed first (sets need not be sorted)
    new_set = [committee.checksum_addresses[3]] + new.checksum_addresses
    domain = ledger_domain(ledger)
    sigs = rotation_sigs(ledger, domain, committee, new_set, 2, 1)
    receipt = await transact(w3, ledger.functions.rotateCommittee(new_set, 2, sigs), SUBMITTER_KEY)
    ev = ledger.events.CommitteeRotated().process_receipt(receipt)[0]["args"]
    assert (ev.index, list(ev.signers), ev.threshold) == (1, new_set, 2)
    assert await ledger.functions.committeeIndex().call() == 1
    assert await ledger.functions.threshold().call() == 2
    assert await ledger.functions.signers().call() == new_set

    # the same rotation cannot be replayed (it would need newIndex 2)
    await assert_reverts(ledger.functions.rotateCommittee(new_set, 2, sigs), LEDGER, "UnknownSigner")

    # old set, old index: the contract now hashes index 1, so these recover to strangers
    old_sigs = sign_batch(ledger, committee, BATCH, members=(0, 1, 2), index=0)
    await assert_reverts(ledger.functions.settle(as_args(BATCH), old_sigs), LEDGER, "UnknownSigner")
    # old set signing the right index: its members are no longer in the committee
    old_sigs = sign_batch(ledger, committee, BATCH, members=(0, 1, 2), index=1)
    first_old = sorted(committee.addresses[:3])[0]
    await assert_reverts(
        ledger.functions.settle(as_args(BATCH), old_sigs), LEDGER, "UnknownSigner", (to_checksum_address(first_old),)
    )
    # new set (2 of 4, including the retained old member) succeeds
    d = batch_digest(ledger, BATCH, index=1)
    sigs = dg.pack_signatures((dg.address_of(k), dg.sign_digest(k, d)) for k in (committee.keys[3], new.keys[0]))
    receipt = await transact(w3, ledger.functions.settle(as_args(BATCH), sigs), SUBMITTER_KEY)
    assert credited_events(ledger, receipt) == expected_events(BATCH)
    assert await balance(ledger, ALICE) == 100


async def test_rotation_signed_by_non_members_fails(ledger, committee, committee_factory):
    outsiders = committee_factory.make(3, "outsiders")
    sigs = rotation_sigs(ledger, ledger_domain(ledger), outsiders, outsiders.checksum_addresses, 2, 1)
    await assert_reverts(
        ledger.functions.rotateCommittee(outsiders.checksum_addresses, 2, sigs),
        LEDGER, "UnknownSigner", (outsiders.checksum_addresses[0],),
    )
    # below threshold of the current set
    sigs = rotation_sigs(ledger, ledger_domain(ledger), committee, outsiders.checksum_addresses, 2, 1, members=(0, 1))
    await assert_reverts(
        ledger.functions.rotateCommittee(outsiders.checksum_addresses, 2, sigs), LEDGER, "BelowThreshold", (2, 3)
    )
    assert await ledger.functions.committeeIndex().call() == 0


ZERO = "0x" + "00" * 20


@pytest.mark.parametrize(
    "case",
    ["empty", "threshold_zero", "threshold_above_n", "duplicate", "zero_address", "too_many"],
)
async def test_rotation_to_invalid_committee_fails(ledger, committee, committee_factory, case):
    new = committee_factory.make(65, "big").checksum_addresses
    signers, t = {
        "empty": ([], 1),
        "threshold_zero": (new[:3], 0),
        "threshold_above_n": (new[:3], 4),
        "duplicate": ([new[0], new[1], new[0]], 2),
        "zero_address": ([new[0], ZERO], 1),
        "too_many": (new, 3),
    }[case]
    sigs = rotation_sigs(ledger, ledger_domain(ledger), committee, signers, t, 1)
    await assert_reverts(ledger.functions.rotateCommittee(signers, t, sigs), LEDGER, "InvalidCommittee", ())


async def test_rotation_to_64_signers_works(w3, ledger, committee, committee_factory):
    new = committee_factory.make(64, "big")
    signers = new.checksum_addresses
    sigs = rotation_sigs(ledger, ledger_domain(ledger), committee, signers, 64, 1)
    await transact(w3, ledger.functions.rotateCommittee(signers, 64, sigs), SUBMITTER_KEY)
    assert await ledger.functions.signers().call() == signers
    d = batch_digest(ledger, BATCH, index=1)
    await transact(w3, ledger.functions.settle(as_args(BATCH), new.sign(d)), SUBMITTER_KEY)
    assert await balance(ledger, ALICE) == 100


@pytest.mark.parametrize("signers_of, threshold", [(lambda c: [], 1), (lambda c: c[:2], 3), (lambda c: c[:2], 0),
                                                   (lambda c: [c[0], c[0]], 1)])
async def test_constructor_validates_committee(committee, deploy_contract, signers_of, threshold):
    with pytest.raises(TransactionFailed):
        await deploy_contract(LOCK, [signers_of(committee.checksum_addresses), threshold, MIN_LOCK])


# ------------------------------------------------------------------------------ release
async def test_release_pays_once(w3, lock, committee):
    await transact(w3, lock.functions.lock(keccak(b"r")), USER_KEY, value=10**18)
    to = to_checksum_address(CAROL)
    amount, rid = 3 * 10**17, keccak(b"release-1")
    d = dg.release_digest(lock_domain(lock), CAROL, amount, rid)

    fn = lock.functions.release(to, amount, rid, committee.sign(d, (0, 1)))
    await assert_reverts(fn, LOCK, "BelowThreshold", (2, 3))
    # signed for another amount: the contract recovers a stranger
    bad = committee.sign(dg.release_digest(lock_domain(lock), CAROL, amount + 1, rid), (0, 1, 2))
    await assert_reverts(lock.functions.release(to, amount, rid, bad), LOCK, "UnknownSigner")

    fn = lock.functions.release(to, amount, rid, committee.sign(d, (1, 2, 3)))
    receipt = await transact(w3, fn, SUBMITTER_KEY)
    ev = lock.events.Released().process_receipt(receipt)[0]["args"]
    assert (ev.releaseId, ev.to, ev.amount) == (rid, to, amount)
    assert await w3.eth.get_balance(to) == amount
    assert await w3.eth.get_balance(lock.address) == 10**18 - amount

    await assert_reverts(fn, LOCK, "ReleaseUsed", (rid,))
    await mined_revert(w3, fn)
    assert await w3.eth.get_balance(to) == amount


async def test_release_to_contract_without_receive_fails(w3, lock, ledger, committee):
    await transact(w3, lock.functions.lock(keccak(b"r")), USER_KEY, value=10**18)
    rid = keccak(b"release-2")
    d = dg.release_digest(lock_domain(lock), addr_bytes(ledger.address), 1000, rid)
    fn = lock.functions.release(ledger.address, 1000, rid, committee.sign(d, (0, 1, 2)))
    await assert_reverts(fn, LOCK, "TransferFailed", ())
    # a ledger-domain signature over the same release is not valid on the lock
    d_ledger = dg.typed_digest(ledger_domain(ledger), keccak(dg.RELEASE_TYPEHASH + b"\x00" * 12
                                                             + addr_bytes(ledger.address)
                                                             + (1000).to_bytes(32, "big") + rid))
    await assert_reverts(
        lock.functions.release(ledger.address, 1000, rid, committee.sign(d_ledger, (0, 1, 2))), LOCK, "UnknownSigner"
    )


async def test_lock_rotation_uses_lock_domain(w3, lock, ledger, committee, committee_factory):
    new = committee_factory.make(2, "lock-committee-1")
    wrong = rotation_sigs(lock, ledger_domain(ledger), committee, new.checksum_addresses, 2, 1)
    await assert_reverts(lock.functions.rotateCommittee(new.checksum_addresses, 2, wrong), LOCK, "UnknownSigner")
    sigs = rotation_sigs(lock, lock_domain(lock), committee, new.checksum_addresses, 2, 1)
    await transact(w3, lock.functions.rotateCommittee(new.checksum_addresses, 2, sigs), SUBMITTER_KEY)
    assert await lock.functions.committeeIndex().call() == 1
    assert await lock.functions.signers().call() == new.checksum_addresses


# ------------------------------------------------------------------------------ launcher
async def test_anvil_refuses_a_port_in_use(anvil):
    with pytest.raises(ChainError, match="in use"):
        await AnvilNode.start(chain_id=CHAIN_ID, port=anvil.port)
    assert anvil.running


async def test_anvil_bad_arguments_raise_chain_error():
    with pytest.raises(ChainError, match="exited"):
        await AnvilNode.start(chain_id=CHAIN_ID, extra_args=("--no-such-flag",))


async def test_missing_anvil_binary_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("CREDITBRIDGE_ANVIL", raising=False)
    with pytest.raises(ConfigError, match="make setup"):
        anvil_binary(tmp_path)


async def test_missing_artifact_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match="make setup"):
        load_artifact(LEDGER, tmp_path)


async def test_credit_overflow_reverts_with_panic(w3, ledger, committee):
    # Python refuses credits >= 2**128; a hand-made signed batch checks the contract's own guard
    big = 2**256 - 1

    def signed(items):
        hashes = b"".join(
            keccak(dg.CREDIT_TYPEHASH + src + seq.to_bytes(32, "big") + b"\x00" * 12 + ben + amt.to_bytes(32, "big") + q)
            for src, seq, ben, amt, q in items
        )
        struct = keccak(dg.BATCH_TYPEHASH + (0).to_bytes(32, "big") + keccak(hashes))
        sigs = committee.sign(dg.typed_digest(ledger_domain(ledger), struct), (0, 1, 2))
        args = [(src, seq, to_checksum_address(ben), amt, q) for src, seq, ben, amt, q in items]
        return ledger.functions.settle(args, sigs)

    panic = "0x" + (keccak(text="Panic(uint256)")[:4] + (0x11).to_bytes(32, "big")).hex()
    zero = b"\x00" * 32
    # two credits to one beneficiary summed in memory
    with pytest.raises(ContractLogicError) as info:
        await signed([(SOURCE_A, 0, ALICE, big, zero), (SOURCE_A, 1, ALICE, 1, zero)]).call()
    assert revert_data(info.value) == panic
    # a credit on top of an existing balance
    await transact(w3, signed([(SOURCE_A, 0, ALICE, big, zero)]), SUBMITTER_KEY)
    with pytest.raises(ContractLogicError) as info:
        await signed([(SOURCE_A, 1, ALICE, 1, zero)]).call()
    assert revert_data(info.value) == panic
    assert await balance(ledger, ALICE) == big
