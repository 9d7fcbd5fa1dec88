"""Start the devnet's local chains only, as stand-ins for real networks, and run until Ctrl-C.

    PYTHONPATH=$PWD .venv/bin/python scripts/local_chains.py [--dir .local-chains] [--evm-only]

It starts what ``creditbridge devnet`` starts, without deploying anything or running any
component, so that docs/operators.md can be followed step by step with local RPC URLs:

* two anvil chains: ``ethereum`` (chain id 31337, a block every second: finality needs blocks)
  and ``settlement`` (chain id 31338); anvil's public dev accounts are funded on both;
* two chopsticks Asset Hubs, ``polkadot`` (DOT, SS58 prefix 0) and ``kusama`` (KSM, prefix 2),
  the Rococo Asset Hub runtime offline, with //Alice .. //Dave funded and a block per 12 s
  slot (as ``devnet.network`` runs them);
* the local TON chain (real TVM emulator) with its ADNL liteserver and a toncenter v2 API: a
  deployer wallet and four payer wallets (WalletV4R2) funded in its genesis. Its liteserver
  config is written to ``<dir>/ton-global.config.json``; read it with ``trust_level = 2`` (the
  local chain has no validator signatures).

Everything is printed once the chains answer and written to ``<dir>/chains.json``. The keys and
mnemonics it prints are public dev keys or throw-away ones: never use them on a real network.

``--fund-substrate SS58 [...]`` funds extra accounts on both Asset Hubs at start (e.g. the
members' SS58 addresses from ``keys show``); ``fund`` moves DOT/KSM from //Alice later::

    scripts/local_chains.py fund --rpc ws://127.0.0.1:P --to SS58 --amount 1000000000000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bridge.committee.digest import address_of  # noqa: E402
from bridge.errors import BridgeError  # noqa: E402

ETH_CHAIN_ID = 31337
SETTLEMENT_CHAIN_ID = 31338


async def start_evm(block_time: float) -> tuple[list, dict]:
    from devnet.evm.anvil import DEV_PRIVATE_KEYS, AnvilNode

    eth = await AnvilNode.start(chain_id=ETH_CHAIN_ID, block_time=block_time)
    st = await AnvilNode.start(chain_id=SETTLEMENT_CHAIN_ID)
    accounts = [{"address": "0x" + address_of(bytes.fromhex(k[2:])).hex(), "private_key": k}
                for k in DEV_PRIVATE_KEYS[:5]]
    info = {"ethereum": {"family": "evm", "rpc": eth.rpc_url, "chain_id": ETH_CHAIN_ID,
                         "block_time": block_time, "accounts": accounts},
            "settlement": {"family": "evm", "rpc": st.rpc_url, "chain_id": SETTLEMENT_CHAIN_ID,
                           "accounts": accounts}}
    return [eth.stop, st.stop], info


async def start_substrate(directory: Path, extra: list[str]) -> tuple[list, list, dict]:
    from devnet.substrate.chopsticks import ChopsticksNode
    from devnet.substrate.devchain import DEV_BALANCE, DEV_CHAINS, keep_clock
    from relayers.substrate.networks import CHOPSTICKS_GENESIS
    from relayers.substrate.wallet import DEV_SEEDS, keypair

    balances = {keypair(s, 42).ss58_address: DEV_BALANCE for s in DEV_SEEDS}
    balances.update({a: DEV_BALANCE for a in extra})
    nodes = await asyncio.gather(*(ChopsticksNode.start(directory / "chopsticks", name, balances=balances,
                                                        build_block_mode="Manual") for name, *_ in DEV_CHAINS),
                                 return_exceptions=True)
    failed = [n for n in nodes if isinstance(n, BaseException)]
    if failed:
        await asyncio.gather(*(n.stop() for n in nodes if not isinstance(n, BaseException)))
        raise failed[0]
    # a block per 12 s slot, never ahead of the wall clock (see devnet/substrate/devchain.py)
    keepers = [asyncio.create_task(keep_clock(n), name=f"clock-{n.name}") for n in nodes]
    info = {}
    for node, (name, token, prefix, _usd, _min) in zip(nodes, DEV_CHAINS):
        info[name] = {"family": "substrate", "rpc": node.ws_url, "token": token, "ss58_prefix": prefix,
                      "genesis_hash": CHOPSTICKS_GENESIS, "on_chain_decimals": 12,
                      "accounts": [{"address": keypair(s, prefix).ss58_address, "seed": s} for s in DEV_SEEDS]}
    return [n.stop for n in nodes], keepers, info


async def start_ton(directory: Path) -> tuple[list, dict]:
    from pytoniq_core.crypto.keys import mnemonic_new, mnemonic_to_private_key

    from devnet.ton.devchain import DEPLOYER_BALANCE, DEV_BALANCE, DEV_WALLETS, LocalChainProcess, _v4r2_address

    wallets = [(mnemonic_new(24), DEPLOYER_BALANCE)] + [(mnemonic_new(24), DEV_BALANCE) for _ in range(DEV_WALLETS)]
    genesis, accounts = [], []
    for words, amount in wallets:
        pub = mnemonic_to_private_key(words)[0]
        addr = _v4r2_address(pub)
        genesis.append({"address": addr.to_str(False), "amount": amount, "public_key": pub.hex()})
        accounts.append({"address": addr.to_str(is_user_friendly=True, is_bounceable=False, is_url_safe=True),
                         "mnemonic": " ".join(words), "version": "v4r2", "nanoton": amount})
    chain = await LocalChainProcess.start(directory / "ton", genesis)
    cfg_path = directory / "ton-global.config.json"
    cfg_path.write_text(json.dumps(chain.info["liteserver_config"], indent=2))
    info = {"ton": {"family": "ton", "liteserver_config_file": str(cfg_path), "global_id": chain.info["global_id"],
                    "trust_level": 2, "toncenter": chain.info.get("toncenter"),
                    "deployer": accounts[0], "accounts": accounts[1:]}}
    return [chain.stop], info


async def run(args) -> None:
    d = Path(args.dir).resolve()
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    stops: list = []
    keepers: list[asyncio.Task] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        s, chains = await start_evm(args.block_time)
        stops += s
        if not args.evm_only:
            s, keepers, info = await start_substrate(d, args.fund_substrate)
            stops += s
            chains.update(info)
            s, info = await start_ton(d)
            stops += s
            chains.update(info)
        out = d / "chains.json"
        out.write_text(json.dumps({"chains": chains}, indent=2))
        out.chmod(0o600)
        for name, c in chains.items():
            where = c.get("rpc") or c.get("liteserver_config_file")
            print(f"{name:11} {c['family']:9} {where}")
        print(f"dev accounts, keys and mnemonics (public / throw-away: never on a real network): {out}")
        print("running; Ctrl-C stops the chains", flush=True)
        await stop.wait()
    finally:
        for k in keepers:
            k.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await k
        await asyncio.gather(*(f() for f in reversed(stops)), return_exceptions=True)


def fund(args) -> None:
    from substrateinterface import SubstrateInterface

    from relayers.substrate.wallet import keypair

    si = SubstrateInterface(url=args.rpc, ss58_format=42)
    call = si.compose_call("Balances", "transfer_keep_alive", {"dest": args.to, "value": args.amount})
    xt = si.create_signed_extrinsic(call=call, keypair=keypair(args.seed, 42))
    receipt = si.submit_extrinsic(xt, wait_for_inclusion=True)
    if not receipt.is_success:
        raise BridgeError(f"transfer failed: {receipt.error_message}")
    print(json.dumps({"to": args.to, "amount": args.amount, "block": receipt.block_hash}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/local_chains.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    ap.add_argument("--dir", default=".local-chains")
    ap.add_argument("--evm-only", action="store_true")
    ap.add_argument("--block-time", type=float, default=1.0, help="seconds between ethereum blocks")
    ap.add_argument("--fund-substrate", nargs="*", default=[], metavar="SS58",
                    help="extra accounts funded on both Asset Hubs at genesis")
    fp = sub.add_parser("fund", help="transfer from a dev account on a running chopsticks chain")
    fp.add_argument("--rpc", required=True)
    fp.add_argument("--to", required=True)
    fp.add_argument("--amount", type=int, required=True, help="base units (the runtime has 12 decimals)")
    fp.add_argument("--seed", default="//Alice")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "fund":
            fund(args)
        else:
            asyncio.run(run(args))
    except BridgeError as e:
        print(f"local_chains: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
