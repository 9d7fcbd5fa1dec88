"""Helpers for the substrate integration tests: a chopsticks chain in Manual block mode and a
payer that signs real extrinsics with substrate-interface on its own thread."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from substrateinterface import ExtrinsicReceipt, Keypair, KeypairType, SubstrateInterface

from bridge.config import SubstrateChainConfig
from devnet.substrate.chopsticks import ChopsticksNode
from relayers.substrate.client import SDK_LOCK
from relayers.substrate.multisig import committee_account_id, ss58
from relayers.substrate.networks import CHOPSTICKS_GENESIS
from relayers.substrate.wallet import connect, keypair

# sr25519 dev accounts funded with FUNDS each; POOR can pay fees but not much more
SEEDS = ("//Alice", "//Bob", "//Charlie", "//Dave", "//Eve", "//Ferdie")
POOR = "//Poor"
FUNDS = 10**18
POOR_FUNDS = 10**12
UNIT = 10**12  # the runtime's 12 decimals


def member_keypair(i: int) -> Keypair:
    """Committee member i: an Ed25519 key, as the devnet's signers have."""
    import hashlib

    seed = hashlib.blake2b(f"creditbridge-test/member/{i}".encode(), digest_size=32).hexdigest()
    return Keypair.create_from_seed(seed, crypto_type=KeypairType.ED25519, ss58_format=42)


MEMBERS = tuple(member_keypair(i) for i in range(3))
THRESHOLD = 2
# a second committee (members 3..5) for the stablecoin tests: its own committee and payment
# accounts on the session chain, so those tests and the others never see each other's funds
ASSET_MEMBERS = tuple(member_keypair(i) for i in range(3, 6))

# pallet_assets assets in the session chain's genesis state (issue 15): Polkadot Hub's ids, 6
# decimals, sufficient; OTHER_ASSET is held by the dev accounts but configured as no token
USDT, USDC, OTHER_ASSET = 1984, 1337, 7
ASSET_FUNDS = 10**12  # 10^6 tokens of 6 decimals per dev account


def committee_cfg(members=MEMBERS, threshold: int = THRESHOLD) -> dict:
    return {"members": ["0x" + m.public_key.hex() for m in members], "threshold": threshold}


def chain_config(rpc: list[str] | str, *, name: str = "polkadot", token: str = "DOT", ss58_prefix: int = 0,
                 genesis_hash: str | None = CHOPSTICKS_GENESIS, members=None, **kw: Any) -> SubstrateChainConfig:
    return SubstrateChainConfig(family="substrate", name=name, rpc=[rpc] if isinstance(rpc, str) else rpc,
                                token=token, ss58_prefix=ss58_prefix, genesis_hash=genesis_hash,
                                committee=committee_cfg(members or MEMBERS), request_timeout=20, **kw)


COMMITTEE_ID = committee_account_id(chain_config("ws://x").committee)
COMMITTEE = ss58(COMMITTEE_ID, 42)


def funded_balances() -> dict[str, int]:
    out = {keypair(s).ss58_address: FUNDS for s in SEEDS}
    out[keypair(POOR).ss58_address] = POOR_FUNDS
    for m in (*MEMBERS, *ASSET_MEMBERS):
        out[m.ss58_address] = FUNDS
    return out


def dev_assets() -> dict:
    """USDT 1984, USDC 1337 and OTHER_ASSET held by every dev account but //Poor."""
    from devnet.substrate.chopsticks import DevAsset

    owner = keypair("//Eve").ss58_address
    holders = {keypair(s).ss58_address: ASSET_FUNDS for s in SEEDS}
    return {USDT: DevAsset("USDT", "Tether USD", owner, holders), USDC: DevAsset("USDC", "USD Coin", owner, holders),
            OTHER_ASSET: DevAsset("OTHER", "Not configured", owner, holders)}


def asset_tokens(chain: str = "polkadot") -> dict:
    """The chain's non-native tokens as the composition root passes them (symbol -> PayableToken)."""
    from bridge.config import PayableToken

    return {sym: PayableToken(symbol=sym, chain=chain, family="substrate", decimals=6, price_symbol=sym,
                              native=False, asset_id=aid) for sym, aid in (("USDT", USDT), ("USDC", USDC))}


@dataclass
class Sent:
    label: str
    extrinsic_hash: str
    reference: bytes | None = None
    amount: int = 0
    block_hash: str = ""
    index: int = -1
    receipt: Any = None


@dataclass
class Chain:
    """A chopsticks node in Manual mode plus a thread that owns a SubstrateInterface."""

    node: ChopsticksNode
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="payer"))
    _si: SubstrateInterface | None = None
    _nonces: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.node.ws_url

    async def run(self, fn: Callable[[SubstrateInterface], Any]) -> Any:
        def job():
            # the process's substrate clients (refunders, watchers under test) run beside this
            # thread; scalecodec's registry is process-wide and not thread-safe (client.SDK_LOCK)
            with SDK_LOCK:
                if self._si is None:
                    self._si = connect(self.url, 42)
                return fn(self._si)

        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def _signer(self, seed: str | Keypair) -> Keypair:
        return seed if isinstance(seed, Keypair) else keypair(seed)

    async def send(self, seed: str | Keypair, build: Callable[[SubstrateInterface], Any], label: str = "",
                   reference: bytes | None = None, amount: int = 0) -> Sent:
        """Sign and submit without waiting (the test builds the block); nonces are tracked here
        because the pool's pending extrinsics do not count in the chain's account nonce."""
        kp = self._signer(seed)

        def job(si: SubstrateInterface) -> str:
            nonce = self._nonces.get(kp.ss58_address)
            if nonce is None:
                nonce = si.get_account_nonce(kp.ss58_address)
            xt = si.create_signed_extrinsic(call=build(si), keypair=kp, nonce=nonce)
            r = si.submit_extrinsic(xt, wait_for_inclusion=False)
            self._nonces[kp.ss58_address] = nonce + 1
            return r.extrinsic_hash

        return Sent(label, await self.run(job), reference, amount)

    async def signed_hex(self, seed: str | Keypair, build: Callable[[SubstrateInterface], Any]) -> tuple[str, str]:
        """(extrinsic hex, hash) signed with the next nonce but not submitted."""
        kp = self._signer(seed)

        def job(si: SubstrateInterface) -> tuple[str, str]:
            nonce = self._nonces.get(kp.ss58_address)
            if nonce is None:
                nonce = si.get_account_nonce(kp.ss58_address)
            xt = si.create_signed_extrinsic(call=build(si), keypair=kp, nonce=nonce)
            return xt.data.to_hex(), "0x" + xt.extrinsic_hash.hex()

        return await self.run(job)

    def forget_nonces(self) -> None:
        self._nonces.clear()

    async def new_block(self, sent: list[Sent] = ()) -> str:
        """Build one block with everything pending; fill in where each ``sent`` landed."""
        block_hash = await self.node.new_block()
        block = await self.node.rpc("chain_getBlock", block_hash)
        from relayers.substrate.decode import blake2_256

        hashes = ["0x" + blake2_256(bytes.fromhex(x[2:])).hex() for x in block["block"]["extrinsics"]]
        for s in sent:
            assert s.extrinsic_hash in hashes, f"{s.label} was not included"
            s.block_hash, s.index = block_hash, hashes.index(s.extrinsic_hash)
            s.receipt = await self.run(lambda si, s=s: _receipt(si, s))
        return block_hash

    async def head(self) -> int:
        return await self.node.head()

    async def close(self) -> None:
        def job():
            if self._si is not None:
                self._si.close()
                self._si = None

        await asyncio.get_running_loop().run_in_executor(self._executor, job)
        self._executor.shutdown(wait=False)


def _receipt(si: SubstrateInterface, s: Sent) -> dict:
    r = ExtrinsicReceipt(substrate=si, extrinsic_hash=s.extrinsic_hash, block_hash=s.block_hash)
    return {"success": r.is_success, "error": r.error_message,
            "events": [(e.value["module_id"], e.value["event_id"], e.value["attributes"]) for e in r.triggered_events]}


def ref() -> bytes:
    return os.urandom(32)


# --- call builders (run on the payer thread with its SubstrateInterface) ---------------------------
def transfer(si, to: str, amount: int, function: str = "transfer_keep_alive"):
    return si.compose_call("Balances", function, {"dest": to, "value": amount})


def asset_transfer(si, asset_id: int, to: str, amount: int, function: str = "transfer_keep_alive"):
    return si.compose_call("Assets", function, {"id": asset_id, "target": to, "amount": amount})


def remark(si, data: bytes, function: str = "remark_with_event"):
    return si.compose_call("System", function, {"remark": "0x" + data.hex()})


def batch(si, calls: list, function: str = "batch_all"):
    return si.compose_call("Utility", function, {"calls": calls})


def proxy(si, real: str, call):
    return si.compose_call("Proxy", "proxy", {"real": real, "force_proxy_type": None, "call": call})


async def blocks_until(chain: "Chain", done: Callable, *, pause: float, timeout: float = 180.0) -> bool:
    """Build a block every ``pause`` seconds until ``await done()`` holds (True) or ``timeout``
    seconds have passed (False). The bound is wall-clock time, not a number of blocks: on a loaded
    machine the members' approval steps are slower, and a count of 40-60 blocks once ran out
    before a refund that was on its way executed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(pause)
        await chain.new_block()
        if await done():
            return True
    return False
