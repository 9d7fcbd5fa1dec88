"""Deployment commands of the ``creditbridge`` CLI (registered by ``bridge.cli``)::

    creditbridge committee init --manifest F --network N --threshold T \\
        --member NAME:SECP256K1_KEYSTORE:ED25519_KEYSTORE ...   (or `keys show` output files)
    creditbridge deploy evm --manifest F --network N --chain NAME --rpc URL --contract lock|credits \\
        --keystore F [--password-env V] [--min-amount WEI] [--provider 0x..] [--token ETH] \\
        [--confirmations N] [--max-fee WEI] [--max-priority-fee WEI] [--treasury 0x..]
    creditbridge deploy ton --manifest F --network N [--chain ton] --liteserver-config F \\
        [--mnemonic-env V] --min-amount NANOTON [--min-release NANOTON] [--trust-level 0|2]
    creditbridge deploy substrate --manifest F --network N --chain NAME --rpc wss://.. \\
        [--token DOT] [--ss58-prefix P] [--allow-unfunded]
    creditbridge manifest show --manifest F     the manifest's hash and summary

Each deploy command adds or updates its chain in the manifest and prints one JSON line. The
devnet (``devnet.network``) calls the same functions (``relayers/<family>/deploy.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from bridge import manifest as mf
from bridge.errors import ConfigError


def init_committee(manifest_path: str | Path, *, network: str, threshold: int, members: list[dict],
                   index: int = 0) -> mf.Manifest:
    """Write the manifest's committee part (a new manifest if there is none yet). A manifest
    with deployed chains keeps its committee: changing it is a rotation, not an init."""
    def change(m: mf.Manifest) -> mf.Manifest:
        if m.committee is not None and m.chains:
            same = m.committee.threshold == threshold and \
                [(x.address.lower(), x.ed25519.lower()) for x in m.committee.members] == \
                [(x["address"].lower(), x["ed25519"].lower()) for x in members]
            if not same:
                raise ConfigError(f"manifest {manifest_path} already has deployed chains for another committee: "
                                  "rotate it (creditbridge committee rotate) or start a new manifest")
        return mf.with_committee(m, members, threshold, index)

    return mf.update_manifest(manifest_path, network, change)


def _member(spec: str) -> dict:
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"--member {spec!r}: expected NAME:SECP256K1_KEYSTORE:ED25519_KEYSTORE")
    return mf.member_from_keystores(*parts)


def cmd_committee_init(args) -> int:
    m = init_committee(args.manifest, network=args.network, threshold=args.threshold,
                       members=[_member(s) for s in args.member], index=args.index)
    print(json.dumps({"manifest": str(args.manifest), "hash": m.hash, "threshold": m.committee.threshold,
                      "members": [x.name for x in m.committee.members]}))
    return 0


def _print(result) -> int:
    print(json.dumps(dataclasses.asdict(result)))
    return 0


def cmd_deploy_evm(args) -> int:
    from bridge.config import secret_from_env
    from bridge.keystore import read_keystore
    from relayers.evm.deploy import deploy_evm

    key = read_keystore(args.keystore, secret_from_env(args.password_env))
    if key.kind != "secp256k1":
        raise ConfigError(f"{args.keystore} is an {key.kind} keystore; the deployer needs secp256k1")
    return _print(asyncio.run(deploy_evm(
        args.manifest, network=args.network, chain=args.chain, rpc=args.rpc, private_key=key.secret,
        kind=args.contract, min_amount=args.min_amount, provider=args.provider, token=args.token,
        confirmations=args.confirmations, max_fee=args.max_fee, max_priority_fee=args.max_priority_fee,
        treasury=args.treasury, timeout=args.timeout)))


def read_liteserver_config(path: str) -> dict:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read liteserver config {p}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(f"liteserver config {p} is not JSON") from None
    if not isinstance(doc, dict) or not doc.get("liteservers"):
        raise ConfigError(f"liteserver config {p} has no liteservers")
    return doc


def cmd_deploy_ton(args) -> int:
    from bridge.config import secret_from_env
    from relayers.ton.deploy import deploy_ton
    from relayers.ton.lock import DEFAULT_MIN_RELEASE

    return _print(asyncio.run(deploy_ton(
        args.manifest, network=args.network, chain=args.chain,
        liteserver_config=read_liteserver_config(args.liteserver_config), mnemonic=secret_from_env(args.mnemonic_env),
        min_amount=args.min_amount, min_release=args.min_release or DEFAULT_MIN_RELEASE,
        trust_level=args.trust_level, treasury=args.treasury, timeout=args.timeout,
        jetton_masters=_jetton_masters(args.jetton_master))))


def _jetton_masters(given: list[str] | None) -> list[str]:
    """``--jetton-master`` addresses, each a valid TON address (a typo would make the lock's
    address, which they are part of, and every jetton payment to it wrong)."""
    from bridge import addresses

    out = []
    for a in given or []:
        try:
            addresses.parse("ton", a)
        except ValueError as e:
            raise ConfigError(f"--jetton-master {a!r}: {e}") from None
        out.append(a)
    if len(set(out)) != len(out):
        raise ConfigError("--jetton-master: a master is given twice")
    return out


def cmd_deploy_substrate(args) -> int:
    from relayers.substrate.deploy import deploy_substrate

    return _print(asyncio.run(deploy_substrate(
        args.manifest, network=args.network, chain=args.chain, rpc=args.rpc, token=args.token,
        ss58_prefix=args.ss58_prefix, treasury=args.treasury, allow_unfunded=args.allow_unfunded)))


def cmd_manifest_show(args) -> int:
    m = mf.load_manifest(args.manifest)
    c = m.committee
    print(json.dumps({"hash": m.hash, "network": m.network, "settlement_chain": m.settlement_chain,
                      "committee": None if c is None else {"index": c.index, "threshold": c.threshold,
                                                           "members": len(c.members)},
                      "chains": {n: e.family for n, e in sorted(m.chains.items())}}))
    return 0


def _positive(v: str) -> int:
    n = int(v)
    if n <= 0:
        raise ValueError(v)
    return n


def add_commands(sub, group) -> None:
    """``group(sub, name, help)`` returns the sub-command group ``name`` (shared with other modules)."""
    common = dict(required=True)
    committee = group(sub, "committee", "the committee: its members and threshold in the manifest")
    sp = committee.add_parser("init", help="write the manifest's committee from the members' public keys")
    sp.add_argument("--manifest", **common)
    sp.add_argument("--network", choices=mf.NETWORKS, **common)
    sp.add_argument("--threshold", type=_positive, **common)
    sp.add_argument("--member", action="append", required=True, metavar="NAME:SECP256K1_FILE:ED25519_FILE",
                    help="repeat per member, in order; files are keystores or `keys show` outputs")
    sp.add_argument("--index", type=int, default=0, help="the committee set's index (0 at first deployment)")
    sp.set_defaults(func=cmd_committee_init)

    deploy = group(sub, "deploy", "deploy custody contracts / accounts and record them in the manifest")
    sp = deploy.add_parser("evm", help="deploy CreditLock (source chain) or CreditLedger (settlement chain)")
    sp.add_argument("--manifest", **common)
    sp.add_argument("--network", choices=mf.NETWORKS, **common)
    sp.add_argument("--chain", **common, help="the chain's name in configs and the manifest (e.g. ethereum)")
    sp.add_argument("--rpc", **common)
    sp.add_argument("--contract", choices=["lock", "credits"], **common)
    sp.add_argument("--keystore", **common, help="the deployer's secp256k1 keystore (pays the gas)")
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD")
    sp.add_argument("--min-amount", type=_positive, help="lock: smallest deposit in wei")
    sp.add_argument("--provider", help="credits: the provider address (default: the deployer)")
    sp.add_argument("--token", default="ETH")
    sp.add_argument("--confirmations", type=int, default=2, help="blocks on top of the deployment to wait for")
    sp.add_argument("--max-fee", type=_positive, help="cap on maxFeePerGas (wei)")
    sp.add_argument("--max-priority-fee", type=int, help="cap on maxPriorityFeePerGas (wei)")
    sp.add_argument("--treasury", help="treasury address on this chain (recorded in the manifest)")
    sp.add_argument("--timeout", type=float, default=600.0)
    sp.set_defaults(func=cmd_deploy_evm)

    sp = deploy.add_parser("ton", help="deploy the TON lock through a wallet")
    sp.add_argument("--manifest", **common)
    sp.add_argument("--network", choices=mf.NETWORKS, **common)
    sp.add_argument("--chain", default="ton")
    sp.add_argument("--liteserver-config", **common, help="global config JSON (liteservers)")
    sp.add_argument("--mnemonic-env", default="CREDITBRIDGE_TON_MNEMONIC",
                    help="env variable holding the deployer wallet's 24 words (WalletV4R2)")
    sp.add_argument("--min-amount", type=_positive, **common, help="smallest deposit in nanotons")
    sp.add_argument("--min-release", type=_positive, help="smallest refund the lock pays (nanotons)")
    sp.add_argument("--trust-level", type=int, choices=[0, 1, 2], default=0,
                    help="pytoniq trust level: 0 checks proofs; 2 only for the local chain")
    sp.add_argument("--treasury")
    sp.add_argument("--jetton-master", action="append", metavar="ADDRESS",
                    help="a TEP-74 jetton master the lock holds (repeat it; the chain's [[tokens]] jetton_master, "
                         "e.g. USDT's): part of the lock's address, set up after deployment (TEP-89)")
    sp.add_argument("--timeout", type=float, default=60.0)
    sp.set_defaults(func=cmd_deploy_ton)

    sp = deploy.add_parser("substrate", help="derive the committee's Asset Hub account, check funding, record it")
    sp.add_argument("--manifest", **common)
    sp.add_argument("--network", choices=mf.NETWORKS, **common)
    sp.add_argument("--chain", **common, help="e.g. polkadot, kusama")
    sp.add_argument("--rpc", action="append", required=True, help="ws(s):// endpoint; repeat for failover")
    sp.add_argument("--token", help="needed only for chains that are not a known network")
    sp.add_argument("--ss58-prefix", type=int)
    sp.add_argument("--treasury")
    sp.add_argument("--allow-unfunded", action="store_true",
                    help="only warn when the account holds less than the existential deposit")
    sp.set_defaults(func=cmd_deploy_substrate)

    manifest = group(sub, "manifest", "the committee / deployment manifest")
    sp = manifest.add_parser("show", help="print the manifest's hash and a summary")
    sp.add_argument("--manifest", **common)
    sp.set_defaults(func=cmd_manifest_show)
