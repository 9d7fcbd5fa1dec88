"""ERC-20 stablecoins in the CreditLock custody (issue 15) on a real anvil with the repo's
compiled contracts: the USDC-like ``TestToken``, the USDT-like ``TestTetherToken`` (no return
values) and the fee-on-transfer ``TestFeeToken`` (contracts/ethereum/TestTokens.sol).

Covered: a plain ``transfer`` to the payment's deposit address is found by the relay's
collector (``Transfer`` logs), collected with ``collectToken`` and observed once by the watcher
as a deposit of that token's symbol, with the transferrer as payer; ``lockToken`` after
``approve``; a fee-on-transfer token counts what arrived; a token sent to a payment in another
token (USDT to a USDC payment) is a USDT deposit and is refunded in USDT by a committee-signed
``releaseToken``, which cannot be replayed; an overpayment's excess is refunded in the token;
an unconfigured token is never collected nor observed; the custody reader reports the lock's
token balance; gas of the payer's transfer, the collect and the release (printed).
"""

from __future__ import annotations

import time

import pytest
import pytest_asyncio
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from bridge.config import PayableToken
from bridge.errors import TransactionFailed
from bridge.node import DbCursor
from bridge.payments.evm_deposit import deposit_address
from bridge.payments.feed import FeedEntry
from bridge.payments.refunds import EvmRefundSigner, release_id
from bridge.storage.db import Database
from devnet.evm.anvil import DEV_PRIVATE_KEYS
from devnet.evm.tokens import deploy_token, mint, pay_token, token_balance
from relayers.evm.collector import EvmCollector
from relayers.evm.contracts import LOCK, deploy
from relayers.evm.custody import EvmCustody
from relayers.evm.release import EvmLockReleaser, token_contracts
from relayers.evm.watcher import NO_PAYER, EvmWatcher
from tests.integration.evm.helpers import DEV_ADDRESSES, MIN_LOCK, evm_config, receipt, ref

GAS_KEY = DEV_PRIVATE_KEYS[9]
THRESHOLD = 3
UNIT = 10**6  # 6 decimals
APPROVE = keccak(text="approve(address,uint256)")[:4]
LOCK_TOKEN = keccak(text="lockToken(address,uint256,bytes32)")[:4]
COLLECT_TOKEN = keccak(text="collectToken(address,bytes32,bytes32)")[:4]


class ListFeed:
    def __init__(self, chain: str = "ethereum") -> None:
        self.chain = chain
        self.entries: list[FeedEntry] = []

    def add(self, reference: bytes) -> None:
        self.entries.append(FeedEntry(len(self.entries) + 1, self.chain, reference, int(time.time()) + 3600))

    async def references(self, chain: str, after: int, limit: int) -> list[FeedEntry]:
        return [e for e in self.entries if e.chain == chain and e.cursor > after][:limit]


def payable(symbol: str, contract: str) -> PayableToken:
    return PayableToken(symbol=symbol, chain="ethereum", family="evm", decimals=6, price_symbol=symbol, native=False,
                        contract=contract.lower())


@pytest_asyncio.fixture(scope="module")
async def tokens(anvil):
    """USDC, USDT and FEE (1% burnt per transfer) deployed once, minted to dev accounts 1..4,
    then a snapshot every test reverts to."""
    key = DEV_PRIVATE_KEYS[0]
    out = {"USDC": await deploy_token(anvil.rpc_url, key, "USDC", "TestToken"),
           "USDT": await deploy_token(anvil.rpc_url, key, "USDT", "TestTetherToken"),
           "FEE": await deploy_token(anvil.rpc_url, key, "FEE", "TestFeeToken", fee_bps=100),
           "JUNK": await deploy_token(anvil.rpc_url, key, "JUNK", "TestToken")}
    for address in out.values():
        await mint(anvil.rpc_url, key, address, DEV_ADDRESSES[1:5], 1_000_000 * UNIT)
    return out


@pytest_asyncio.fixture
async def lock(anvil, w3, committee, tokens):
    snap = await anvil.rpc("evm_snapshot")
    address = await deploy(w3, LOCK, [committee.checksum_addresses, THRESHOLD, MIN_LOCK], DEV_PRIVATE_KEYS[0])
    yield address
    await anvil.rpc("evm_revert", snap)


@pytest_asyncio.fixture
async def db(tmp_path):
    d = Database(f"sqlite+aiosqlite:///{tmp_path}/relay.sqlite")
    await d.migrate()
    yield d
    await d.dispose()


@pytest.fixture
def configured(tokens):
    """The chain's configured non-native tokens (JUNK is deployed but not configured)."""
    return {s: payable(s, tokens[s]) for s in ("USDC", "USDT", "FEE")}


@pytest_asyncio.fixture
async def parts(anvil, lock, db, configured):
    cfg = evm_config(anvil.rpc_url, chain_id=anvil.chain_id, lock=lock)
    feed = ListFeed()
    collector = EvmCollector(cfg, GAS_KEY, feed, DbCursor(db, "collector"), tokens=configured)
    watcher = EvmWatcher(cfg, tokens=configured)
    releaser = EvmLockReleaser(cfg, GAS_KEY, tokens=configured)
    yield cfg, feed, collector, watcher, releaser
    for c in (collector, watcher, releaser):
        await c.aclose()


def lock_bytes(lock: str) -> bytes:
    return bytes.fromhex(lock[2:])


async def send(anvil, sender: int, to: str, data: bytes) -> dict:
    h = await anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[sender], "to": to, "data": "0x" + data.hex(),
                                                "gas": hex(400_000)})
    return await receipt(anvil, bytes.fromhex(h[2:]))


async def observe(watcher: EvmWatcher, start: int = 0):
    return await watcher.fetch_deposits(start, await watcher.finalized_height())


async def release_in(committee, releaser: EvmLockReleaser, configured, payer: bytes, amount: int, rid: bytes,
                     token: str | None):
    """The committee's signatures (the signer nodes' refunds.EvmRefundSigner: EIP-712 TokenRelease),
    checked with the releaser's ``verify``, then submitted."""
    sigs = []
    for k, a in zip(committee.keys[:THRESHOLD], committee.addresses[:THRESHOLD]):
        s = EvmRefundSigner(releaser.domain, k, a, token_contracts("ethereum", configured))
        to, sig = s.sign(b"\x00" * 12 + payer, amount, rid, token=token)
        releaser.verify(to, amount, rid, a, sig, token=token)
        sigs.append((a, sig))
    return await releaser.release(to, amount, rid, sigs, token=token)


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("symbol", ["USDC", "USDT"])
async def test_a_plain_transfer_is_collected_and_observed_once_in_its_token(anvil, lock, tokens, parts, symbol):
    cfg, feed, collector, watcher, _ = parts
    r = ref(11)
    feed.add(r)
    to = deposit_address(lock_bytes(lock), r)
    amount = 25 * UNIT
    funding = await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[2], tokens[symbol], to, amount)
    await collector.step()
    assert collector.collects == 1
    assert await token_balance(anvil.rpc_url, tokens[symbol], to) == 0
    assert await token_balance(anvil.rpc_url, tokens[symbol], lock) == amount
    await collector.step()  # the collect is final (finality 0): forgotten, nothing collected twice
    await collector.step()
    assert collector.collects == 1 and not collector.pending
    [obs] = await observe(watcher)
    assert (obs.token, obs.amount, obs.reference, obs.sequence) == (symbol, amount, r, 0)
    assert obs.payer == b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[2][2:])
    # the signer's re-check (reobserve) sees the same deposit
    assert await watcher.reobserve(obs.tx_id) == [obs]
    # a second payment to the same address (the forwarder selfdestructed: collectable again)
    await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[3], tokens[symbol], to, 5 * UNIT)
    await collector.step()
    await collector.step()
    got = await observe(watcher)
    assert [(o.sequence, o.token, o.amount) for o in got] == [(0, symbol, amount), (1, symbol, 5 * UNIT)]
    assert got[1].payer == b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[3][2:])
    assert funding != got[1].tx_id


async def test_eth_and_tokens_share_one_deposit_address_and_nonce_stream(anvil, lock, tokens, parts):
    cfg, feed, collector, watcher, _ = parts
    r = ref(12)
    feed.add(r)
    to = deposit_address(lock_bytes(lock), r)
    await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[1], tokens["USDC"], to, 7 * UNIT)
    await anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[1], "to": to_checksum_address(to),
                                            "value": hex(MIN_LOCK)})
    for _ in range(3):
        await collector.step()
    got = sorted((o.token, o.amount) for o in await observe(watcher))
    assert got == [("ETH", MIN_LOCK), ("USDC", 7 * UNIT)]
    assert sorted(o.sequence for o in await observe(watcher)) == [0, 1]
    assert int(await anvil.rpc("eth_getBalance", to_checksum_address(to), "latest"), 16) == 0


async def test_a_fee_on_transfer_token_credits_only_what_arrived(anvil, lock, tokens, parts):
    cfg, feed, collector, watcher, _ = parts
    r = ref(13)
    feed.add(r)
    to = deposit_address(lock_bytes(lock), r)
    await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[1], tokens["FEE"], to, 100 * UNIT)  # 99 arrive
    await collector.step()
    await collector.step()
    [obs] = await observe(watcher)
    # the payer's Transfer log claims 100; the collect's transfer burns 1% again: 98.01 reach the lock
    held = await token_balance(anvil.rpc_url, tokens["FEE"], lock)
    assert held == 98_010_000 and (obs.token, obs.amount) == ("FEE", held)
    # the call-based path: 50 asked, 49.5 received
    await send(anvil, 2, tokens["FEE"], APPROVE + abi_encode(["address", "uint256"], [lock, 50 * UNIT]))
    rc = await send(anvil, 2, lock, LOCK_TOKEN + abi_encode(["address", "uint256", "bytes32"],
                                                              [tokens["FEE"], 50 * UNIT, ref(14)]))
    assert int(rc["status"], 16) == 1
    last = (await observe(watcher))[-1]
    assert (last.token, last.amount, last.reference) == ("FEE", 49_500_000, ref(14))


@pytest.mark.parametrize("symbol", ["USDC", "USDT"])
async def test_lock_token_after_approve(anvil, lock, tokens, parts, symbol):
    _, _, _, watcher, _ = parts
    await send(anvil, 3, tokens[symbol], APPROVE + abi_encode(["address", "uint256"], [lock, 10 * UNIT]))
    rc = await send(anvil, 3, lock, LOCK_TOKEN + abi_encode(["address", "uint256", "bytes32"],
                                                              [tokens[symbol], 10 * UNIT, ref(15)]))
    assert int(rc["status"], 16) == 1
    [obs] = await observe(watcher)
    assert (obs.token, obs.amount, obs.reference) == (symbol, 10 * UNIT, ref(15))
    assert obs.payer == b"\x00" * 12 + bytes.fromhex(DEV_ADDRESSES[3][2:])
    # no allowance left: a second call moves nothing and reverts
    rc = await send(anvil, 3, lock, LOCK_TOKEN + abi_encode(["address", "uint256", "bytes32"],
                                                              [tokens[symbol], 10 * UNIT, ref(15)]))
    assert int(rc["status"], 16) == 0


async def test_wrong_token_is_refunded_in_the_token_sent_and_cannot_be_replayed(anvil, lock, tokens, parts,
                                                                                committee, configured):
    """USDT sent to a USDC payment's address: a USDT deposit (the deposit rule refunds it), paid
    back in USDT by releaseToken; the same release id is refused afterwards, in any token."""
    cfg, feed, collector, watcher, releaser = parts
    r = ref(16)
    feed.add(r)
    to = deposit_address(lock_bytes(lock), r)
    payer = bytes.fromhex(DEV_ADDRESSES[4][2:])
    before = await token_balance(anvil.rpc_url, tokens["USDT"], payer)
    transfer = await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[4], tokens["USDT"], to, 30 * UNIT)
    transfer_gas = int((await receipt(anvil, transfer))["gasUsed"], 16)
    await collector.step()
    collect_gas = collector.last_collect_gas
    [obs] = await observe(watcher)
    assert (obs.token, obs.amount, obs.payer[12:]) == ("USDT", 30 * UNIT, payer)
    custody = EvmCustody(cfg, token=configured["USDT"])
    usdc_custody = EvmCustody(cfg, token=configured["USDC"])
    eth_custody = EvmCustody(cfg)
    try:
        h = await watcher.finalized_height()
        assert await custody.balance(h) == 30 * UNIT
        assert await usdc_custody.balance(h) == 0 and await eth_custody.balance(h) == 0
        rid = release_id(watcher.source, obs.sequence, "refund")
        tx = await release_in(committee, releaser, configured, payer, obs.amount, rid, "USDT")
        release_gas = int((await receipt(anvil, tx))["gasUsed"], 16)
        assert await token_balance(anvil.rpc_url, tokens["USDT"], payer) == before
        h = await watcher.finalized_height()
        assert await custody.balance(h) == 0
        assert await custody.released(h) == {rid}
        assert await releaser.confirmed(tx) is True
        for token in ("USDT", "USDC", None):
            with pytest.raises(TransactionFailed, match="ReleaseUsed"):
                await release_in(committee, releaser, configured, payer, 1, rid, token)
    finally:
        for c in (custody, usdc_custody, eth_custody):
            await c.aclose()
    print(f"\nERC-20 gas: payer's USDT transfer {transfer_gas}, collectToken {collect_gas}, "
          f"releaseToken (t={THRESHOLD}) {release_gas}")


async def test_an_overpayment_excess_is_refunded_in_the_token(anvil, lock, tokens, parts, committee, configured):
    cfg, feed, collector, watcher, releaser = parts
    r = ref(17)
    feed.add(r)
    to = deposit_address(lock_bytes(lock), r)
    payer = bytes.fromhex(DEV_ADDRESSES[1][2:])
    await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[1], tokens["USDC"], to, 12 * UNIT)  # 10 quoted
    await collector.step()
    [obs] = await observe(watcher)
    before = await token_balance(anvil.rpc_url, tokens["USDC"], payer)
    rid = release_id(watcher.source, obs.sequence, "excess")
    await release_in(committee, releaser, configured, payer, obs.amount - 10 * UNIT, rid, "USDC")
    assert await token_balance(anvil.rpc_url, tokens["USDC"], payer) == before + 2 * UNIT
    assert await token_balance(anvil.rpc_url, tokens["USDC"], lock) == 10 * UNIT
    # a release signed for USDC does not verify as USDT (the token is in the signed struct)
    s = EvmRefundSigner(releaser.domain, committee.keys[0], committee.addresses[0],
                        token_contracts("ethereum", configured))
    to20, sig = s.sign(b"\x00" * 12 + payer, UNIT, rid, token="USDC")
    with pytest.raises(Exception, match="does not match"):
        releaser.verify(to20, UNIT, rid, committee.addresses[0], sig, token="USDT")


async def test_an_unconfigured_token_is_neither_collected_nor_observed(anvil, lock, tokens, parts):
    cfg, feed, collector, watcher, _ = parts
    r = ref(18)
    feed.add(r)
    to = deposit_address(lock_bytes(lock), r)
    await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[1], tokens["JUNK"], to, 3 * UNIT)
    await collector.step()
    await collector.step()
    assert collector.collects == 0
    assert await token_balance(anvil.rpc_url, tokens["JUNK"], to) == 3 * UNIT  # stays at the address
    # someone else collects it (anyone may): the lock holds it, the watcher emits nothing
    rc = await send(anvil, 1, lock, COLLECT_TOKEN + abi_encode(["address", "bytes32", "bytes32"],
                                                                 [tokens["JUNK"], r, bytes(32)]))
    assert int(rc["status"], 16) == 1
    assert await token_balance(anvil.rpc_url, tokens["JUNK"], lock) == 3 * UNIT
    assert await observe(watcher) == []


async def test_a_funding_hint_without_a_transfer_of_the_token_gives_no_payer(anvil, lock, tokens, parts):
    """Anyone may collect naming any transaction: one that moved no USDC to the address (here:
    a USDT transfer to it) proves no payer, so the deposit is kept, never refunded to a stranger."""
    cfg, feed, collector, watcher, _ = parts
    r = ref(19)
    to = deposit_address(lock_bytes(lock), r)
    await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[1], tokens["USDC"], to, 4 * UNIT)
    other = await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[2], tokens["USDT"], to, 1 * UNIT)
    rc = await send(anvil, 3, lock, COLLECT_TOKEN + abi_encode(["address", "bytes32", "bytes32"],
                                                                 [tokens["USDC"], r, other]))
    assert int(rc["status"], 16) == 1
    [obs] = await observe(watcher)
    assert (obs.token, obs.amount, obs.payer) == ("USDC", 4 * UNIT, NO_PAYER)
    assert await token_balance(anvil.rpc_url, tokens["USDT"], to) == UNIT  # USDT untouched


def test_instructions_of_an_erc20_payment(configured):
    from bridge.payments.instructions import Instructions

    evm_instructions = Instructions()  # the API's builder: ERC-20s through the core EVM form

    cfg = evm_config("http://127.0.0.1:1", chain_id=1, lock="0x" + "11" * 20)
    r = ref(20)
    to = to_checksum_address(deposit_address(b"\x11" * 20, r))
    usdc = configured["USDC"]
    ins = evm_instructions(cfg, r, 2_500_000, token=usdc)
    token = to_checksum_address(usdc.contract)
    assert ins["transfer"] == {"to": to, "amount": "2500000", "comment": None, "token": token}
    assert ins["uri"] == f"ethereum:{token}@1/transfer?address={to}&uint256=2500000"
    assert ins["method"] == "lockToken(address,uint256,bytes32)" and ins["contract"] == "0x" + "11" * 20
    substrate_only = Instructions({"evm": lambda chain, reference, amount, code=None: {}})
    with pytest.raises(Exception, match="no payment instructions for USDC"):
        substrate_only(cfg, r, 1, token=usdc)  # a builder without tokens never shows native instructions
    native = evm_instructions(cfg, r, 10**15)
    assert native["transfer"] == {"to": to, "amount": str(10**15), "comment": None}
    assert native["uri"] == f"ethereum:{to}@1?value={10**15}"


async def test_gas_of_token_payment_collect_and_eth_collect(anvil, lock, tokens, parts):
    """The figures the README reports (printed with -s); bounds catch a regression."""
    cfg, feed, collector, watcher, _ = parts
    r, r2 = ref(21), ref(22)
    feed.add(r)
    feed.add(r2)
    to = deposit_address(lock_bytes(lock), r)
    pay = await pay_token(anvil.rpc_url, DEV_PRIVATE_KEYS[1], tokens["USDC"], to, 9 * UNIT)
    pay_gas = int((await receipt(anvil, pay))["gasUsed"], 16)
    await collector.step()
    usdc_collect = collector.last_collect_gas
    to2 = deposit_address(lock_bytes(lock), r2)
    await anvil.rpc("eth_sendTransaction", {"from": DEV_ADDRESSES[1], "to": to_checksum_address(to2),
                                            "value": hex(MIN_LOCK)})
    rc = await send(anvil, 2, lock, keccak(text="collect(bytes32,bytes32)")[:4] + r2 + bytes(32))
    eth_collect = int(rc["gasUsed"], 16)
    print(f"\ngas: USDC transfer to a fresh deposit address {pay_gas}, collectToken(USDC) {usdc_collect}, "
          f"ETH collect {eth_collect}")
    assert pay_gas < 60_000 and usdc_collect < 140_000 and eth_collect < 80_000


def _locked_token_log(token: bytes, amount: int, nonce: int = 7, lock: str = "0x" + "11" * 20) -> dict:
    from relayers.evm.watcher import LOCKED_TOKEN_TOPIC

    return {"address": lock, "blockNumber": "0x5", "blockHash": "0x" + "aa" * 32, "transactionHash": "0x" + "bb" * 32,
            "logIndex": "0x1", "topics": ["0x" + LOCKED_TOKEN_TOPIC.hex(), "0x" + nonce.to_bytes(32, "big").hex(),
                                          "0x" + (bytes(12) + b"\x22" * 20).hex(), "0x" + ref(1).hex()],
            "data": "0x" + (amount.to_bytes(32, "big") + bytes(12) + token).hex()}


async def test_the_watcher_maps_configured_tokens_and_drops_others(configured, tokens):
    cfg = evm_config("http://127.0.0.1:1", chain_id=1, lock="0x" + "11" * 20)
    w = EvmWatcher(cfg, tokens=configured)
    try:
        usdc = bytes.fromhex(tokens["USDC"][2:])
        lg = w._decode(_locked_token_log(usdc, 123))
        assert (lg.token, lg.amount, lg.nonce, lg.sender) == (usdc, 123, 7, b"\x22" * 20)
        obs = w._observation(lg, 1000)
        assert (obs.token, obs.amount, obs.payer) == ("USDC", 123, bytes(12) + b"\x22" * 20)
        junk = bytes.fromhex(tokens["JUNK"][2:])
        assert w._observation(w._decode(_locked_token_log(junk, 5)), 1000) is None
        bad = _locked_token_log(usdc, 1)
        bad["data"] = bad["data"][:-40]  # a truncated token word
        with pytest.raises(Exception, match="undecodable"):
            w._decode(bad)
    finally:
        await w.aclose()
    with pytest.raises(Exception, match="no contract"):
        EvmWatcher(cfg, tokens={"USDC": PayableToken(symbol="USDC", chain="ethereum", family="evm", decimals=6,
                                                     price_symbol="USDC", native=False)})
