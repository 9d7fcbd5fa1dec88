"""Devnet plug-in of the substrate family: two chopsticks chains, "polkadot" (DOT) and
"kusama" (KSM), each running the real (Rococo) Asset Hub runtime offline.

Both run the same runtime from the same raw genesis, so on the devnet "DOT" and "KSM" are
names for the test runtime's native token (12 decimals on chain). Amounts are base units on
chain either way; the configured token's decimals (DOT 10, KSM 12) are used for pricing
only, exactly as on the real networks. The dev accounts //Alice, //Bob, //Charlie and //Dave
are funded through chopsticks' ``import-storage``; the committee's account is the
``pallet_multisig`` account of the signers' Ed25519 keys and the devnet threshold. An operator
account (``OPERATOR_SEED``) tops the committee account up with its existential deposit the way
an operator does on a real network: a batch with the ``creditbridge:top-up`` remark, which the
watchers do not count as a deposit (a plain transfer there would be refunded as unattributed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from substrateinterface.utils.hasher import xxh128

from bridge.config import SubstrateCommittee
from devnet.devchains import DevChain, DevCommittee
from bridge.errors import ChainError
from devnet.substrate.chopsticks import ChopsticksNode
from relayers.substrate.deploy import deploy_substrate
from relayers.substrate.multisig import committee_address, ss58
from relayers.substrate.networks import CHOPSTICKS_GENESIS
from relayers.substrate.wallet import DEV_SEEDS, keypair

log = logging.getLogger(__name__)

# name, token, SS58 prefix, devnet USD price of one whole token, minimum payment (base units)
DEV_CHAINS = (
    ("polkadot", "DOT", 0, "5", 10**8),  # 0.01 DOT
    ("kusama", "KSM", 2, "20", 10**9),  # 0.001 KSM
)
DEV_BALANCE = 10**18  # base units per dev account (10^6 tokens at the runtime's 12 decimals)
# funds the chaos harness's undecodable extrinsics (bench/chaos.py), never a payer
FAULT_SEED = "//Ferdie"
# funds the committee accounts' existential deposit with a top-up (never a payer)
OPERATOR_SEED = "//Eve"
# Balances.ExistentialDeposit of the chopsticks runtime (Rococo Asset Hub, spec 900): what the
# committee account keeps whatever it owes (the treasury sweeper's ``reserve``)
EXISTENTIAL_DEPOSIT = 3_333_333
MEMBER_BALANCE = 10**15  # per committee member (10^3 tokens): fees and multisig deposits
# pallet_assets stablecoins (issue 15), created in each chain's genesis state with Polkadot Hub's
# ids: symbol -> (asset id, name), per chain; 6 decimals, sufficient, min_balance 0.07 tokens
DEV_ASSETS = {
    "polkadot": {"USDT": (1984, "Tether USD"), "USDC": (1337, "USD Coin")},
    "kusama": {"USDT": (1984, "Tether USD")},
}
ASSET_DECIMALS = 6
ASSET_BALANCE = 10**12  # base units per dev account (10^6 tokens)
ASSET_MIN_AMOUNT = 100_000  # minimum payment: 0.10 tokens (above the assets' min_balance of 0.07)
# the committee account holds each asset's min_balance from genesis, as an operator funds it: its
# releases pay Assets.transfer_keep_alive, which never takes an asset account below min_balance
# (the treasury sweeper's reserve for (chain, asset)), like the native existential deposit
ASSET_MIN_BALANCE = 70_000
ASSET_PEG_BAND_BPS = 100  # the devnet's depeg guard: 1 % around 1.00
ASSET_MIN_REFUND = 100_000  # 0.10 tokens: above min_balance (a smaller refund to a new account fails)

# chopsticks sets each block's Timestamp.set to the parent's plus the slot duration (12 s for
# this runtime, measured between consecutive blocks). In "Instant" mode it builds a block per
# extrinsic, so a burst of payments pushes the chain's clock ahead of the wall clock (75 quick
# payments put it 15 minutes ahead, and every later deposit looked late to the committee: the
# chaos harness found this). The devnet therefore runs chopsticks in "Manual" mode and builds a
# block whenever the chain's clock is a slot or more behind the wall clock: one block per
# 12 s slot carrying whatever is in the pool, as a real Asset Hub does, and a clock that never
# runs ahead.
SLOT_MS = 12_000
TIMESTAMP_NOW_KEY = "0x" + (xxh128(b"Timestamp") + xxh128(b"Now")).hex()  # storage key of Timestamp.Now
CLOCK_CHECK_SECONDS = 1.0


async def chain_time_ms(node: ChopsticksNode) -> int:
    """``Timestamp.Now`` of the head (milliseconds)."""
    raw = await node.rpc("state_getStorage", TIMESTAMP_NOW_KEY)
    if not raw:
        raise ChainError(f"chopsticks {node.name}: no Timestamp.Now at the head")
    return int.from_bytes(bytes.fromhex(raw[2:]), "little")


async def clock_step(node: ChopsticksNode, now_ms: int) -> bool:
    """Build an empty block if the chain's clock is a slot or more behind ``now_ms``."""
    if await chain_time_ms(node) + SLOT_MS <= now_ms:
        await node.new_block()
        return True
    return False


async def keep_clock(node: ChopsticksNode, interval: float = CLOCK_CHECK_SECONDS) -> None:
    while True:
        try:
            await clock_step(node, int(time.time() * 1000))
        except ChainError as e:
            log.debug("chopsticks %s: clock keeping failed: %s", node.name, e)
        await asyncio.sleep(interval)


async def top_up(node: ChopsticksNode, committee: str, amount: int) -> None:
    """Send an operator's top-up of ``amount`` to the committee account and build its block."""
    from relayers.substrate.client import SDK_LOCK
    from relayers.substrate.wallet import connect, submit, top_up_call

    def job() -> None:
        # scalecodec's type registry is process-wide and not thread-safe: the devnet tops up both
        # chains at once, so SDK work is serialized by the relayers' lock (as everywhere else)
        with SDK_LOCK:
            si = connect(node.ws_url, 42)
            try:
                submit(si, OPERATOR_SEED, top_up_call(si, committee, amount), wait=False)
            finally:
                si.close()

    await asyncio.to_thread(job)
    await node.new_block()
    free = await asyncio.to_thread(_free, node.ws_url, committee)
    if free < amount:
        raise ChainError(f"chopsticks {node.name}: the committee top-up did not land ({free} < {amount})",
                         retryable=False)


def dev_assets(chain: str, extra_holders: dict[str, int] | None = None) -> dict:
    """The chain's ``DEV_ASSETS`` as chopsticks genesis assets held by every dev account (and
    ``extra_holders``: SS58 -> base units)."""
    from devnet.substrate.chopsticks import DevAsset

    holders = {keypair(s, 42).ss58_address: ASSET_BALANCE for s in DEV_SEEDS}
    holders.update(extra_holders or {})
    return {aid: DevAsset(sym, title, keypair(OPERATOR_SEED, 42).ss58_address, holders, decimals=ASSET_DECIMALS,
                          min_balance=ASSET_MIN_BALANCE)
            for sym, (aid, title) in DEV_ASSETS.get(chain, {}).items()}


def _free(url: str, account: str) -> int:
    from relayers.substrate.client import SDK_LOCK
    from relayers.substrate.wallet import connect

    with SDK_LOCK:
        si = connect(url, 42)
        try:
            return int(si.query("System", "Account", [account]).value["data"]["free"])
        finally:
            si.close()


async def start_devchains(directory: Path, committee: DevCommittee) -> list[DevChain]:
    """``committee`` is a ``devnet.devchains.DevCommittee`` (its ``ed25519_public`` keys as hex
    and its ``threshold`` are used)."""
    if len(committee.ed25519_public) < 2:
        log.warning("substrate devchains need a committee of 2 or more (pallet_multisig): not started")
        return []
    members = ["0x" + k.lower().removeprefix("0x") for k in committee.ed25519_public]
    committee_cfg = {"members": members, "threshold": committee.threshold}
    balances = {keypair(s, 42).ss58_address: DEV_BALANCE for s in (*DEV_SEEDS, FAULT_SEED, OPERATOR_SEED)}
    # the members approve refunds from the committee account themselves: they pay fees and the
    # multisig deposit
    balances.update({ss58(bytes.fromhex(m[2:]), 42): MEMBER_BALANCE for m in members})
    where = directory / "chopsticks"
    started = await asyncio.gather(
        *(ChopsticksNode.start(where, name, balances=balances, build_block_mode="Manual", assets=dev_assets(
            name, {committee_address(SubstrateCommittee(**committee_cfg), 42): ASSET_MIN_BALANCE}))
          for name, *_ in DEV_CHAINS),
        return_exceptions=True,
    )
    failed = [r for r in started if isinstance(r, BaseException)]
    if failed:
        await asyncio.gather(*(n.stop() for n in started if isinstance(n, ChopsticksNode)))
        raise failed[0]

    chains = []
    keepers: list[asyncio.Task] = []
    try:
        # the committee account's own existential deposit (the treasury sweeper's reserve): what an
        # operator funds it with before it takes payments, so that sweeps can empty it of earned funds
        await asyncio.gather(*(top_up(node, committee_address(SubstrateCommittee(**committee_cfg), 42),
                                      EXISTENTIAL_DEPOSIT) for node in started))
        for node, (name, token, prefix, usd, min_amount) in zip(started, DEV_CHAINS):
            keeper = asyncio.create_task(keep_clock(node), name=f"chopsticks-clock-{name}")
            keepers.append(keeper)

            async def stop(node=node, keeper=keeper) -> None:
                keeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keeper
                await node.stop()

            account = committee_address(SubstrateCommittee(**committee_cfg), prefix)
            if committee.manifest is not None:
                # `creditbridge deploy substrate` does the same: derive the committee account, check
                # the genesis and record token, prefix, account and start block in the manifest (the
                # devnet does not fund the account itself: payments do)
                deployed = await deploy_substrate(committee.manifest, network=committee.network, chain=name,
                                                  rpc=[node.ws_url], token=token, ss58_prefix=prefix,
                                                  allow_unfunded=True)
                if deployed.committee_account != account:
                    raise ChainError(f"{name}: deploy derived {deployed.committee_account}, expected {account}",
                                     retryable=False)
                config = {"family": "substrate", "name": name, "rpc": [node.ws_url], "poll_interval": 0.5,
                          "max_block_range": 100}
            else:
                config = {"family": "substrate", "name": name, "rpc": [node.ws_url], "token": token,
                          "ss58_prefix": prefix, "genesis_hash": CHOPSTICKS_GENESIS, "committee": committee_cfg,
                          "poll_interval": 0.5, "max_block_range": 100}
            chains.append(DevChain(
                name=name,
                config=config,
                info={"family": "substrate", "rpc": node.ws_url, "ss58_prefix": prefix, "token": token,
                      "committee_account": account, "existential_deposit": EXISTENTIAL_DEPOSIT, "genesis_hash": CHOPSTICKS_GENESIS,
                      "runtime": "Rococo Asset Hub (spec 900) on chopsticks; on-chain decimals 12",
                      # pallet_assets stablecoins held by the dev accounts (devnet.json chains.<name>.tokens)
                      "tokens": {sym: {"asset_id": aid, "decimals": ASSET_DECIMALS, "min_balance": ASSET_MIN_BALANCE}
                                 for sym, (aid, _) in DEV_ASSETS.get(name, {}).items()}},
                accounts=[{"address": keypair(s, prefix).ss58_address, "seed": s} for s in DEV_SEEDS],
                fixed_usd={token: usd},
                min_amount={token: min_amount, **{f"{sym}@{name}": ASSET_MIN_AMOUNT for sym in DEV_ASSETS.get(name, {})}},
                # [[tokens]] of every component's config: the pallet_assets stablecoins are payable
                tokens=[{"symbol": sym, "chain": name, "decimals": ASSET_DECIMALS, "asset_id": aid, "peg": "1.00",
                         "peg_band_bps": ASSET_PEG_BAND_BPS, "min_refund": ASSET_MIN_REFUND}
                        for sym, (aid, _) in DEV_ASSETS.get(name, {}).items()],
                stop=stop,
            ))
    except BaseException:
        for k in keepers:
            k.cancel()
        await asyncio.gather(*(n.stop() for n in started))
        raise
    return chains
