"""``creditbridge committee rotate ...``: hand every custody to a new committee (issue 13).

    committee rotate propose --config F --new-committee C.json --out P.json
        reads every custody's current committee (the EVM ledger and locks, the TON locks, the
        Asset Hub committee accounts of F's chains), checks they all stand at the same index,
        and writes the proposal (new index = current + 1) the current set must sign
    committee rotate sign --config signer.toml --proposal P.json --out S.json
        (or --key K.json [--ed25519-key E.json] --password-env VAR): a member's signature file,
        made offline with its own keystores; every digest is recomputed from the proposal
    committee rotate submit --config F --proposal P.json --signatures DIR [--payer-key K.json]
                            [--ton-wallet-env VAR] [--manifest M.json]
        checks the files, keeps the signatures of each custody's current members, submits on
        every EVM contract (rotateCommittee) and TON lock (rotation op), skips custodies already
        rotated, and finally updates the manifest's committee (and committee accounts)
    committee rotate approve --config signer.toml --proposal P.json [--state S.json]
        an OLD member approves, on chain, the move of each Asset Hub committee account's funds
        to the new account (t old members must run it); repeat until it reports done

This module is part of the composition root (it wires the chain families in).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bridge.committee import rotation as R
from bridge.errors import ConfigError, InputError


def add_commands(sub) -> None:
    committee = sub.add_parser("committee", help="committee operations")
    csub = committee.add_subparsers(dest="committee_cmd", required=True)
    rot = csub.add_parser("rotate", help="rotate the committee on every custody")
    rsub = rot.add_subparsers(dest="rotate_cmd", required=True)

    sp = rsub.add_parser("propose", help="write what the current committee must sign")
    sp.add_argument("--config", required=True)
    sp.add_argument("--new-committee", required=True, help="JSON: {threshold, members: [{name, address, ed25519}]}")
    sp.add_argument("--network", default=None, help="network name in the proposal (default: from the config's chains)")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_propose)

    sp = rsub.add_parser("sign", help="a member signs a proposal with its own keystores (offline)")
    sp.add_argument("--proposal", required=True)
    sp.add_argument("--config", help="the member's signer config (signer.key, signer.refund_key)")
    sp.add_argument("--key", help="secp256k1 keystore (instead of --config)")
    sp.add_argument("--ed25519-key", help="ed25519 keystore (TON locks)")
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD")
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_sign)

    sp = rsub.add_parser("submit", help="submit a signed proposal on every custody")
    sp.add_argument("--config", required=True)
    sp.add_argument("--proposal", required=True)
    sp.add_argument("--signatures", required=True, help="a directory of signature files (*.json)")
    sp.add_argument("--payer-key", help="secp256k1 keystore paying EVM gas (default: the config's aggregator.key)")
    sp.add_argument("--password-env", default="CREDITBRIDGE_KEY_PASSWORD")
    sp.add_argument("--ton-wallet-env", default="CREDITBRIDGE_TON_MNEMONIC",
                    help="env variable with the 24-word mnemonic of a funded TON wallet sending the rotation")
    sp.add_argument("--manifest", help="manifest to update once every custody is rotated")
    sp.set_defaults(func=cmd_submit)

    sp = rsub.add_parser("approve", help="an old member approves moving the Asset Hub funds to the new account")
    sp.add_argument("--config", required=True)
    sp.add_argument("--proposal", required=True)
    sp.add_argument("--state", help="JSON file keeping this member's progress (default: next to the proposal)")
    sp.set_defaults(func=cmd_approve)


def _settings(path: str):
    from bridge.config import load_settings

    return load_settings(path)


def _print(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


# ------------------------------------------------------------------------------ family wiring
def _ton_hash(custody, committee) -> bytes:
    from relayers.ton.rotation import payload_hash

    return payload_hash(custody, committee)


async def _evm_committee(cfg, contract: bytes):
    from relayers.evm.rotation import committee_of
    from relayers.evm.rpc import RpcPool

    async with RpcPool.from_config(cfg) as pool:
        return await committee_of(pool, contract)


async def _ton_provider(cfg):
    from relayers.ton import wallet as tw

    if cfg.liteserver_config is None:
        raise ConfigError(f"chain {cfg.name}: rotating the TON lock needs liteserver_config")
    return await tw.connect(cfg.liteserver_config, cfg.trust_level)


async def _ton_committee(cfg):
    from relayers.ton.rotation import committee_of

    lb = await _ton_provider(cfg)
    try:
        return await committee_of(lb, cfg.contracts["lock"])
    finally:
        await lb.close_all()


async def _substrate_head(cfg) -> int:
    from relayers.substrate.client import SubstrateClient

    client = SubstrateClient(cfg.name, cfg.rpc, timeout=cfg.request_timeout, ss58_format=cfg.ss58_prefix,
                             genesis_hash=cfg.genesis_hash)
    try:
        return await client.call(lambda si: int(si.get_block_number(si.get_chain_finalised_head())), "head")
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------ propose
async def _propose(settings, new: dict, network: str | None) -> R.Proposal:
    from relayers.substrate.multisig import committee_account_id, multisig_account_id

    indices: dict[str, int] = {}
    custodies: list[dict] = []
    pending = []
    for c in settings.chains:
        if c.family == "evm":
            for role, key in (("ledger", "credits"), ("lock", "lock")):
                if key in c.contracts:
                    custodies.append({"family": "evm", "chain": c.name, "role": role, "chain_id": c.chain_id,
                                      "contract": c.contracts[key]})
                    pending.append((f"{c.name}/{role}", _evm_committee(c, bytes.fromhex(c.contracts[key][2:]))))
        elif c.family == "ton":
            if c.global_id is None:
                raise ConfigError(f"chain {c.name}: global_id is required to rotate its lock")
            custodies.append({"family": "ton", "chain": c.name, "global_id": c.global_id,
                              "lock": c.contracts["lock"]})
            pending.append((f"{c.name}/lock", _ton_committee(c)))
    for cid, coro in pending:
        index, _, _ = await coro
        indices[cid] = index
    if len(set(indices.values())) > 1:
        raise InputError("custodies stand at different committee indices (finish the previous rotation first): "
                         + ", ".join(f"{k}={v}" for k, v in sorted(indices.items())))
    current = next(iter(indices.values()), 0)
    committee = R.new_committee({**new, "index": current + 1})
    for c in settings.chains:
        if c.family == "substrate":
            new_members = [m.ed25519_bytes for m in committee.members]
            if any(k is None for k in new_members):
                raise InputError("every new member needs an ed25519 key (Asset Hub committee account)")
            custodies.append({"family": "substrate", "chain": c.name, "ss58_prefix": c.ss58_prefix,
                              "old_members": list(c.committee.members), "old_threshold": c.committee.threshold,
                              "old_account": "0x" + committee_account_id(c.committee).hex(),
                              "new_account": "0x" + multisig_account_id(new_members, committee.threshold).hex(),
                              "from_block": await _substrate_head(c)})
    return R.proposal_from_dict({"network": network or settings.settlement_chain,
                                 "committee": committee.model_dump(mode="json"), "custodies": custodies})


def cmd_propose(args) -> int:
    settings = _settings(args.config)
    try:
        new = json.loads(Path(args.new_committee).read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the new committee {args.new_committee}: {e.__class__.__name__}") from None
    if not isinstance(new, dict):
        raise InputError("the new committee is a JSON object {threshold, members}")
    new = {k: v for k, v in new.items() if k != "index"}
    proposal = asyncio.run(_propose(settings, new, args.network))
    Path(args.out).write_text(json.dumps(proposal.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    _print({"proposal": proposal.hash(), "new_index": proposal.committee.index,
            "custodies": [c.id for c in proposal.custodies], "out": args.out})
    return 0


# ------------------------------------------------------------------------------ sign
def cmd_sign(args) -> int:
    from bridge.config import secret_from_env
    from bridge.keystore import load_key, read_keystore

    proposal = R.load_proposal(args.proposal)
    secp = ed = None
    member = None
    if args.config:
        s = _settings(args.config)
        if s.signer is None:
            raise ConfigError(f"{args.config} has no [signer] section")
        secp = load_key(s.signer.key)
        ed = load_key(s.signer.refund_key) if s.signer.refund_key is not None else None
        member = s.signer.name
    elif args.key:
        password = secret_from_env(args.password_env)
        secp = read_keystore(args.key, password)
        ed = read_keystore(args.ed25519_key, password) if args.ed25519_key else None
    else:
        raise InputError("give --config (a signer config) or --key")
    if secp.kind != "secp256k1" or (ed is not None and ed.kind != "ed25519"):
        raise InputError("the committee key is secp256k1 and the refund key ed25519")
    names = {m.address.lower(): m.name for m in proposal.committee.members}
    member = member or names.get(secp.public.lower()) or secp.public
    doc = R.sign(proposal, member=member, secp256k1_key=secp.secret, ed25519_seed=ed.secret if ed else None,
                 ton_hash=_ton_hash)
    Path(args.out).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    _print({"proposal": doc["proposal"], "member": member, "signed": sorted(doc["signatures"]), "out": args.out})
    return 0


# ------------------------------------------------------------------------------ submit
def _read_signatures(where: str) -> list[dict]:
    p = Path(where)
    files = sorted(p.glob("*.json")) if p.is_dir() else [p]
    docs = []
    for f in files:
        try:
            docs.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            raise InputError(f"signature file {f} is not readable JSON") from None
    if not docs:
        raise InputError(f"no signature files in {where}")
    return docs


async def _submit(settings, proposal: R.Proposal, docs: list[dict], payer_key, ton_mnemonic: str | None) -> dict:
    from relayers.evm import rotation as evm_rot
    from relayers.evm.rpc import RpcPool

    collected = R.collect(proposal, docs, _ton_hash)
    new = proposal.committee
    report: dict[str, str] = {}
    for c in proposal.custodies:
        if isinstance(c, R.EvmCustody):
            cfg = settings.chain(c.chain)
            contract = bytes.fromhex(c.contract[2:])
            async with RpcPool.from_config(cfg) as pool:
                index, members, threshold = await evm_rot.committee_of(pool, contract)
                if index >= new.index:
                    report[c.id] = f"already at index {index}"
                    continue
                if index != new.index - 1:
                    raise InputError(f"{c.id}: at committee index {index}, the proposal installs {new.index}")
                chosen = R.choose(collected[c.id], members, threshold, c.id)
                if payer_key is None:
                    raise ConfigError("EVM custodies need a key paying gas: --payer-key or the config's aggregator.key")
                tx = await evm_rot.submit_rotation(pool, contract, new.evm_signers(), new.threshold,
                                                   b"".join(sig for _, sig in chosen), payer_key)
                report[c.id] = f"rotated in 0x{tx.hex()}"
        elif isinstance(c, R.TonCustody):
            from relayers.ton.rotation import committee_of, submit_rotation

            cfg = settings.chain(c.chain)
            lb = await _ton_provider(cfg)
            try:
                index, members, threshold = await committee_of(lb, c.lock)
                if index >= new.index:
                    report[c.id] = f"already at index {index}"
                    continue
                if index != new.index - 1:
                    raise InputError(f"{c.id}: at committee index {index}, the proposal installs {new.index}")
                chosen = R.choose(collected[c.id], members, threshold, c.id)
                if not ton_mnemonic:
                    raise ConfigError("TON custodies need a funded wallet's mnemonic (--ton-wallet-env)")
                h = await submit_rotation(lb, ton_mnemonic, c, new, chosen)
                report[c.id] = f"rotated by message 0x{h.hex()}"
            finally:
                await lb.close_all()
        else:
            report[c.id] = "moved by the old members' on-chain approvals: `committee rotate approve`"
    return report


def cmd_submit(args) -> int:
    import os

    from bridge.config import secret_from_env
    from bridge.keystore import load_key, read_keystore

    settings = _settings(args.config)
    proposal = R.load_proposal(args.proposal)
    docs = _read_signatures(args.signatures)
    payer = None
    if args.payer_key:
        payer = read_keystore(args.payer_key, secret_from_env(args.password_env)).secret
    elif settings.aggregator is not None:
        payer = load_key(settings.aggregator.key).secret
    mnemonic = os.environ.get(args.ton_wallet_env) or None
    if mnemonic:
        from bridge.logs import register_secret

        register_secret(mnemonic)
    report = asyncio.run(_submit(settings, proposal, docs, payer, mnemonic))
    if args.manifest:
        path = Path(args.manifest)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            raise InputError(f"cannot read the manifest {path}") from None
        path.write_text(json.dumps(R.apply_to_manifest(manifest, proposal, ss58=_ss58), indent=2, sort_keys=True) + "\n")
        report["manifest"] = f"{path}: committee index {proposal.committee.index}"
    _print({"proposal": proposal.hash(), "custodies": report})
    return 0


def _ss58(account: bytes, prefix: int) -> str:
    from relayers.substrate.multisig import ss58

    return ss58(account, prefix)


# ------------------------------------------------------------------------------ approve
async def _approve(settings, proposal: R.Proposal, seed: bytes, state: dict) -> dict:
    from relayers.substrate.refund import Progress
    from relayers.substrate.rotation import CommitteeMigrator, check_custody

    out = {}
    for c in proposal.custodies:
        if not isinstance(c, R.SubstrateCustody):
            continue
        check_custody(c, [m.ed25519_bytes for m in proposal.committee.members], proposal.committee.threshold)
        last = state.get(c.id) or {}
        tp = last.get("timepoint")
        progress = Progress(last.get("state", "none"), tuple(tp) if tp else None, last.get("block"),
                            last.get("detail", ""))
        migrator = CommitteeMigrator(settings.chain(c.chain), c, seed)
        try:
            new = await migrator.migrate(c, proposal.committee.index, progress)
        finally:
            await migrator.aclose()
        out[c.id] = {"state": new.state, "timepoint": list(new.timepoint) if new.timepoint else None,
                     "block": new.block, "detail": new.detail}
    return out


def cmd_approve(args) -> int:
    from bridge.keystore import load_key

    settings = _settings(args.config)
    if settings.signer is None or settings.signer.refund_key is None:
        raise ConfigError("approving needs the member's signer.refund_key (its Ed25519 key)")
    proposal = R.load_proposal(args.proposal)
    seed = load_key(settings.signer.refund_key).secret
    state_path = Path(args.state or f"{args.proposal}.{settings.signer.name}.state.json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    result = asyncio.run(_approve(settings, proposal, seed, state))
    state.update(result)
    state_path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    _print({"proposal": proposal.hash(), "custodies": result, "state": str(state_path)})
    return 0 if all(v["state"] != "failed" for v in result.values()) else 1
