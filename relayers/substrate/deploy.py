"""``creditbridge deploy substrate``: the committee's Asset Hub account, derived and recorded.

Nothing is deployed: the committee's account is the ``pallet_multisig`` account of the
members' Ed25519 keys and the threshold (``relayers.substrate.multisig``). The command connects
to the chain, checks its genesis hash against the known networks (a mainnet manifest needs
Polkadot Hub or Kusama Asset Hub, whose token and SS58 prefix it then takes; a testnet or
devnet manifest must not name them), shows the account in the chain's SS58 format, checks that
it holds at least the existential deposit (refused, or only a warning with ``allow_unfunded``)
and records genesis, prefix, token, account and the finalized head as the start block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bridge import manifest as mf
from bridge.config import SubstrateCommittee
from bridge.errors import ConfigError
from relayers.substrate.client import SubstrateClient
from relayers.substrate.multisig import committee_account_id, ss58
from relayers.substrate.networks import KNOWN

log = logging.getLogger("creditbridge.deploy.substrate")


@dataclass(frozen=True)
class SubstrateDeployment:
    chain: str
    committee_account: str  # SS58 in the chain's format
    genesis_hash: str
    ss58_prefix: int
    token: str
    balance: int
    existential_deposit: int
    start_block: int
    funded: bool
    manifest_hash: str


def check_genesis(network: str, chain: str, genesis: str, expected: str | None) -> None:
    if expected is not None and genesis.lower() != expected.lower():
        raise ConfigError(f"{chain}: the chain's genesis is {genesis}, the manifest's is {expected}")
    known = KNOWN.get(genesis.lower())
    if network == "mainnet" and known is None:
        names = ", ".join(n.name for n in KNOWN.values())
        raise ConfigError(f"{chain}: genesis {genesis[:12]}.. is not a known mainnet Asset Hub ({names})")
    if network != "mainnet" and known is not None:
        raise ConfigError(f"{chain}: genesis {genesis[:12]}.. is {known.name}, a mainnet, not a {network} chain")


async def deploy_substrate(manifest_path: str | Path, *, network: str, chain: str, rpc: list[str],
                           token: str | None = None, ss58_prefix: int | None = None, treasury: str | None = None,
                           allow_unfunded: bool = False, timeout: float = 30.0) -> SubstrateDeployment:
    manifest = mf.load_or_new(manifest_path, network)
    if manifest.committee is None:
        raise ConfigError(f"manifest {manifest_path} has no committee: run `creditbridge committee init` first")
    entry = manifest.chains.get(chain)
    if entry is not None and entry.family != "substrate":
        raise ConfigError(f"manifest chain {chain!r} is a {entry.family} chain, not substrate")
    committee = SubstrateCommittee(members=manifest.committee.ed25519_keys(), threshold=manifest.committee.threshold)
    account_id = committee_account_id(committee)
    client = SubstrateClient(chain, rpc, timeout=timeout, ss58_format=42)
    try:
        def facts(si):
            genesis = si.rpc_request("chain_getBlockHash", [0])["result"].lower()
            props = si.rpc_request("system_properties", []).get("result") or {}
            head = si.get_block_number(si.get_chain_finalised_head())
            ed = int(si.get_constant("Balances", "ExistentialDeposit").value)
            acct = si.query("System", "Account", ["0x" + account_id.hex()])
            free = int(acct.value["data"]["free"]) if acct is not None and acct.value else 0
            return genesis, props, int(head), ed, free

        genesis, props, head, ed, free = await client.call(facts, "reading the chain's facts")
    finally:
        await client.aclose()
    check_genesis(network, chain, genesis, entry.genesis_hash if entry is not None else None)
    known = KNOWN.get(genesis)
    if known is not None:
        if token is not None and token != known.token:
            raise ConfigError(f"{chain}: {known.name}'s token is {known.token}, not {token}")
        if ss58_prefix is not None and ss58_prefix != known.ss58_prefix:
            raise ConfigError(f"{chain}: {known.name} uses SS58 prefix {known.ss58_prefix}, not {ss58_prefix}")
        token, ss58_prefix = known.token, known.ss58_prefix
    if ss58_prefix is None:
        ss58_prefix = entry.ss58_prefix if entry is not None else props.get("ss58Format")
    if token is None:
        token = entry.token if entry is not None else None
    if not isinstance(ss58_prefix, int):
        raise ConfigError(f"{chain}: the chain announces no SS58 prefix: pass --ss58-prefix")
    if token is None:
        raise ConfigError(f"{chain}: unknown network: pass --token (e.g. DOT, KSM)")
    if entry is not None and (entry.ss58_prefix != ss58_prefix or entry.token != token):
        raise ConfigError(f"{chain}: the manifest has token {entry.token} and prefix {entry.ss58_prefix}, "
                          f"not {token} and {ss58_prefix}")
    account = ss58(account_id, ss58_prefix)
    funded = free >= ed
    if not funded:
        line = (f"{chain}: the committee account {account} holds {free} base units, below the existential deposit "
                f"{ed}: send it at least {ed - free} before payments (refunds need it alive)")
        if not allow_unfunded:
            raise ConfigError(line)
        log.warning("%s", line)

    def change(m: mf.Manifest) -> mf.Manifest:
        current = m.chains.get(chain)
        doc = current.model_dump(mode="json", exclude_none=True) if current is not None else {}
        doc.update({"family": "substrate", "genesis_hash": genesis, "ss58_prefix": ss58_prefix, "token": token,
                    "committee_account": account})
        doc.setdefault("start_block", head)
        if treasury is not None:
            doc["treasury"] = treasury
        return mf.with_chain(m, chain, doc)

    saved = mf.update_manifest(manifest_path, network, change)
    log.info("%s: committee account %s (genesis %s.., prefix %d, start block %d)", chain, account, genesis[:12],
             ss58_prefix, saved.chains[chain].start_block)
    return SubstrateDeployment(chain, account, genesis, ss58_prefix, token, free, ed,
                               saved.chains[chain].start_block, funded, saved.hash)
