"""The TON chain of the devnet (a ``devnet.network`` family plug-in).

``start_devchains`` runs the local TON chain (real TVM emulator, ``devnet.ton.localchain``) in
a subprocess with its ADNL liteserver and a toncenter v2 API on 127.0.0.1, funds a deployer
wallet and four dev wallets (WalletV4R2, 24-word mnemonics made by pytoniq) in its genesis,
deploys the lock contract with the committee's Ed25519 keys and threshold through a real wallet
transfer (state init + top-up body) with ``relayers.ton.deploy.deploy_ton`` (``creditbridge deploy
ton``), which records it in the devnet's manifest, and returns the chain's config for every
component (the manifest adds family, lock, global id and start block):

    {"name": "ton", "liteserver_config": {...}, "trust_level": 2,
     "toncenter": ["http://127.0.0.1:P/api/v2"], ...}

USDT (issue 15): before the lock, the deployer wallet deploys this repo's TEP-74 minter (a
"USDT" jetton with 6 decimals, the deployer as admin) and mints ``USDT_DEV_BALANCE`` to each dev
wallet; the lock is deployed with that master (``deploy_ton(jetton_masters=...)``), which also
sets up the lock's jetton wallet (TEP-89). The chain's ``tokens`` (``[[tokens]]`` entries: 6
decimals, peg 1.00) and devnet.json's ``chains.ton.tokens`` =
``{"USDT": {"jetton_master": <bounceable>, "decimals": 6}}`` name it.

The local chain produces a block every 0.5 s, so deposits become final within a second.
It cannot give liteserver proofs, hence ``trust_level`` 2 (see ``devnet.ton.localchain``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from pytoniq_core.crypto.keys import mnemonic_new, mnemonic_to_private_key

from devnet.devchains import DevChain, DevCommittee
from bridge.errors import BridgeError
from relayers.ton import lock as lockc
from relayers.ton.deploy import deploy_ton

log = logging.getLogger("creditbridge.devnet.ton")

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAIN_NAME = "ton"
LOCK_MIN_NANOTON = 10**7  # 0.01 TON: the lock rejects (bounces) anything smaller
QUOTE_MIN_NANOTON = 10**7
TON_USD = "5"
DEV_WALLETS = 4
DEV_BALANCE = 1_000 * 10**9
DEPLOYER_BALANCE = 100 * 10**9
LOCK_DEPLOY_VALUE = 10**9
BLOCK_INTERVAL = 0.5
USDT_DECIMALS = 6
USDT_DEV_BALANCE = 100_000 * 10**USDT_DECIMALS  # per dev wallet
USDT_CONTENT_URI = "https://creditbridge.invalid/devnet/usdt.json"
USDT_PEG_BAND_BPS = 100
USDT_QUOTE_MIN = 10**5  # 0.1 USDT
# the smallest USDT refund: a jetton release costs the lock ~0.01-0.02 TON of its reserve
USDT_MIN_REFUND = 500_000  # 0.5 USDT


def _v4r2_address(public_key: bytes):
    from pytoniq_core import Address
    from pytoniq_core.tlb.account import StateInit
    from pytoniq.contract.wallets.wallet import WALLET_V4_R2_CODE, WalletV4

    si = StateInit(code=WALLET_V4_R2_CODE, data=WalletV4.create_data_cell(public_key, None, 0))
    return Address((0, si.serialize().hash))


class LocalChainProcess:
    """``python -m devnet.ton.localchain`` as a child process, stopped with SIGTERM."""

    def __init__(self, proc: asyncio.subprocess.Process, state_dir: Path, info: dict) -> None:
        self.proc = proc
        self.state_dir = state_dir
        self.info = info

    @classmethod
    async def start(cls, state_dir: Path, genesis: list[dict], *, block_interval: float = BLOCK_INTERVAL,
                    toncenter: bool = True, timeout: float = 60.0) -> "LocalChainProcess":
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "genesis.json").write_text(json.dumps(genesis, indent=2))
        ready = state_dir / "ready.json"
        ready.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "devnet.ton.localchain", "--state-dir", str(state_dir),
                "--block-interval", str(block_interval)]
        if toncenter:
            argv += ["--toncenter-port", "0"]
        logf = open(state_dir / "localchain.log", "ab")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf,
                                                    stderr=logf, env=env, cwd=str(REPO_ROOT))
        logf.close()
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                tail = (state_dir / "localchain.log").read_text()[-2000:]
                raise BridgeError(f"ton localchain did not start (exit {proc.returncode}):\n{tail}")
            await asyncio.sleep(0.1)
        return cls(proc, state_dir, json.loads(ready.read_text()))

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def deploy_dev_usdt(liteserver_config: dict, deployer_mnemonic: str, holders: list, *,
                          amount: int = USDT_DEV_BALANCE, timeout: float = 60.0) -> str:
    """Deploy the devnet's USDT minter from the deployer wallet and mint ``amount`` to each of
    ``holders`` (addresses); the master's bounceable address once every balance is there."""
    from pytoniq_core import Address

    from relayers.ton import jetton as J
    from relayers.ton import wallet as tw

    lb = await tw.connect(liteserver_config, trust_level=2)
    try:
        w = await tw.open_wallet(lb, deployer_mnemonic)

        async def seqno() -> int:
            await w.update()
            return await w.get_seqno() if w.is_active else 0

        async def step(coro) -> None:
            before = await seqno()
            await coro

            async def moved():
                return await seqno() > before

            await tw.wait_for(moved, timeout)

        content = J.content_cell(USDT_CONTENT_URI)
        master = J.minter_address(w.address, content)
        await step(J.deploy_minter(w, USDT_CONTENT_URI))
        for h in holders:
            await step(J.mint(w, master, Address(h) if isinstance(h, str) else h, amount))
        for h in holders:
            async def funded(h=h):
                try:
                    return await J.jetton_balance(lb, master, h) >= amount
                except BridgeError:
                    return False

            await tw.wait_for(funded, timeout)
    finally:
        await lb.close_all()
    return lockc.bounceable(master)


async def start_devchains(directory: Path, committee: DevCommittee) -> list[DevChain]:
    """``committee`` is a ``devnet.devchains.DevCommittee`` (``ed25519_public`` hex keys, threshold)."""
    state_dir = directory / "ton"
    deployer = mnemonic_new(24)
    dev = [mnemonic_new(24) for _ in range(DEV_WALLETS)]
    genesis, accounts = [], []
    for words, amount in [(deployer, DEPLOYER_BALANCE)] + [(w, DEV_BALANCE) for w in dev]:
        pub = mnemonic_to_private_key(words)[0]
        addr = _v4r2_address(pub)
        genesis.append({"address": addr.to_str(False), "amount": amount, "public_key": pub.hex()})
        if words is not deployer:
            accounts.append({"address": addr.to_str(is_user_friendly=True, is_bounceable=False, is_url_safe=True),
                             "mnemonic": " ".join(words), "version": "v4r2"})
    chain = await LocalChainProcess.start(state_dir, genesis)
    try:
        cfg = chain.info["liteserver_config"]
        if committee.manifest is None:
            raise BridgeError("the ton devchain deploys through the manifest: DevCommittee.manifest is not set")
        usdt = await deploy_dev_usdt(cfg, " ".join(deployer), [a["address"] for a in accounts])
        # `creditbridge deploy ton` does the same: state init through a real wallet transfer
        deployed = await deploy_ton(committee.manifest, network=committee.network, chain=CHAIN_NAME,
                                    liteserver_config=cfg, mnemonic=" ".join(deployer), min_amount=LOCK_MIN_NANOTON,
                                    trust_level=2, value=LOCK_DEPLOY_VALUE, jetton_masters=[usdt])
        lock, global_id = deployed.bounceable, deployed.global_id
    except BaseException:
        await chain.stop()
        raise
    log.info("ton: local chain on %s, lock %s", chain.info.get("toncenter"), lock)
    toncenter = [chain.info["toncenter"]] if chain.info.get("toncenter") else []
    # trust_level 2: the local chain's blocks carry no validator signatures, so no liteserver
    # proof can be checked (devnet/ton/localchain.py); real networks use the default, 0.
    # The lock, global id and start block come from the manifest.
    config = {"family": "ton", "name": CHAIN_NAME, "liteserver_config": cfg, "trust_level": 2,
              "min_refund": lockc.DEFAULT_MIN_RELEASE,
              "toncenter": toncenter, "poll_interval": 0.5, "max_block_range": 200}
    info = {"family": "ton", "liteserver_config": cfg, "trust_level": 2, "toncenter": toncenter,
            "contracts": {"lock": lock}, "global_id": global_id,
            "lock_min_amount": str(LOCK_MIN_NANOTON), "lock_min_release": str(lockc.DEFAULT_MIN_RELEASE),
            "tokens": {"USDT": {"jetton_master": usdt, "decimals": USDT_DECIMALS}}}
    tokens = [{"symbol": "USDT", "chain": CHAIN_NAME, "decimals": USDT_DECIMALS, "jetton_master": usdt,
               "peg": "1.00", "peg_band_bps": USDT_PEG_BAND_BPS, "min_refund": USDT_MIN_REFUND}]
    return [DevChain(name=CHAIN_NAME, config=config, info=info, accounts=accounts, fixed_usd={"TON": TON_USD},
                     min_amount={"TON": QUOTE_MIN_NANOTON, f"USDT@{CHAIN_NAME}": USDT_QUOTE_MIN}, stop=chain.stop,
                     tokens=tokens)]
