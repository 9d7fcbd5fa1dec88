"""``creditbridge deploy ton``: deploy the TON lock for the manifest's committee and record it.

The lock's state init (``relayers.ton.lock``) binds the committee's Ed25519 keys (in member
order), the threshold, the minimum deposit, ``min_release`` and the network's global id (read
from the chain: block 0's ``global_id``, checked against the manifest and the known networks).
It is deployed by a real wallet transfer (WalletV4R2, mnemonic from an environment variable in
the CLI) with the state init attached; the function waits until the lock answers its get-methods
and records its address, code hash and the masterchain seqno it was seen active at.

Jettons (issue 15): ``jetton_masters`` (the chain's ``[[tokens]] jetton_master`` addresses) are
part of the lock's initial data, hence of its address; after deployment the same wallet sends
``jetton_setup`` for each (the lock asks the master for its wallet, TEP-89) and the function
waits until the lock has stored every wallet: a lock that cannot learn its wallet would refuse
that jetton's deposits (they would stay on its wallet unlogged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from bridge import manifest as mf
from bridge.config import TON_REAL_NETWORKS
from bridge.errors import ChainError, ConfigError
from relayers.ton import lock as lockc
from relayers.ton import wallet as tw

log = logging.getLogger("creditbridge.deploy.ton")

LOCK_DEPLOY_VALUE = 10**9  # 1 TON: the lock's first storage fees; it keeps what it is not owed
GLOBAL_IDS = {"mainnet": -239, "testnet": -3}


@dataclass(frozen=True)
class TonDeployment:
    chain: str
    address: str  # raw 0:<hex>
    bounceable: str
    code_hash: str
    block: int  # masterchain seqno the lock was active at
    global_id: int
    manifest_hash: str


async def _set_up_jetton(lb, deployer, lock, master, timeout: float) -> None:
    """``jetton_setup`` from the deployer's wallet; waits until the lock stored its wallet."""
    key = int.from_bytes(master.hash_part, "big")

    async def stored():
        try:
            wallet, _ = await lb.run_get_method(lock, "get_jetton", [key])
            return int(wallet) > 0
        except Exception:  # pytoniq raises assorted errors while a state is not there yet
            return False

    if await stored():
        return
    await tw.transfer(deployer, lock, lockc.JETTON_SETUP_VALUE, lockc.jetton_setup_body(master))
    await tw.wait_for(stored, timeout)


def check_global_id(network: str, chain: str, actual: int, expected: int | None) -> None:
    if expected is not None and actual != expected:
        raise ConfigError(f"{chain}: the chain's global id is {actual}, the manifest's is {expected}")
    known = GLOBAL_IDS.get(network)
    if known is not None and actual != known:
        raise ConfigError(f"{chain}: the chain's global id is {actual}; TON {network} is {known}")
    if network == "devnet" and actual in TON_REAL_NETWORKS:
        raise ConfigError(f"{chain}: global id {actual} is TON {TON_REAL_NETWORKS[actual]}, not a devnet")


async def _global_id(lb) -> int:
    try:
        _, blk = await lb.lookup_block(-1, -(2**63), 0)
        return int(blk.global_id)
    except Exception as e:  # pytoniq raises assorted errors; convert at the boundary
        raise ChainError(f"cannot read the TON chain's global id: {e.__class__.__name__}: {e}") from None


async def deploy_ton(manifest_path: str | Path, *, network: str, chain: str = "ton", liteserver_config: dict,
                     mnemonic: str, min_amount: int, min_release: int = lockc.DEFAULT_MIN_RELEASE,
                     token: str = "TON", trust_level: int = 0, treasury: str | None = None,
                     value: int = LOCK_DEPLOY_VALUE, timeout: float = 60.0,
                     jetton_masters: list[str] | None = None) -> TonDeployment:
    manifest = mf.load_or_new(manifest_path, network)
    if manifest.committee is None:
        raise ConfigError(f"manifest {manifest_path} has no committee: run `creditbridge committee init` first")
    entry = manifest.chains.get(chain)
    if entry is not None and entry.family != "ton":
        raise ConfigError(f"manifest chain {chain!r} is a {entry.family} chain, not ton")
    keys = [bytes.fromhex(k[2:]) for k in manifest.committee.ed25519_keys()]
    threshold = manifest.committee.threshold
    lb = await tw.connect(liteserver_config, trust_level=trust_level)
    try:
        global_id = await _global_id(lb)
        check_global_id(network, chain, global_id, entry.global_id if entry is not None else None)
        from pytoniq_core import Address

        try:
            masters = [Address(m) for m in jetton_masters or []]
        except Exception:  # pytoniq-core raises bare exceptions on bad addresses
            raise ConfigError(f"{chain}: a jetton master is not a TON address") from None
        si = lockc.state_init(keys, threshold, min_amount, global_id=global_id, min_release=min_release,
                              jetton_masters=masters)
        address = lockc.lock_address(keys, threshold, min_amount, global_id=global_id, min_release=min_release,
                                     jetton_masters=masters)
        deployer = await tw.open_wallet(lb, mnemonic)
        log.info("%s: deploying the lock %s from %s (committee %d of %d, global id %d)", chain,
                 lockc.bounceable(address), deployer.address.to_str(), threshold, len(keys), global_id)
        await tw.transfer(deployer, address, value, lockc.top_up_body(), state_init=si)

        async def active():
            try:
                return (await lb.run_get_method(address, "get_min_amount", []))[0] == min_amount
            except Exception:  # not deployed yet: pytoniq raises on inactive accounts
                return False

        await tw.wait_for(active, timeout)
        for master in masters:
            await _set_up_jetton(lb, deployer, address, master, timeout)
        seqno = int((await lb.get_masterchain_info())["last"]["seqno"])
    finally:
        await lb.close_all()
    raw = address.to_str(is_user_friendly=False)
    code_hash = "0x" + lockc.lock_code().hash.hex()

    def change(m: mf.Manifest) -> mf.Manifest:
        current = m.chains.get(chain)
        doc = current.model_dump(mode="json", exclude_none=True) if current is not None else \
            {"family": "ton", "global_id": global_id}
        doc["token"] = token
        doc["start_block"] = seqno
        doc.setdefault("contracts", {})["lock"] = {"address": raw, "code_hash": code_hash, "block": seqno}
        if treasury is not None:
            doc["treasury"] = treasury
        return mf.with_chain(m, chain, doc)

    saved = mf.update_manifest(manifest_path, network, change)
    log.info("%s: lock %s active at masterchain seqno %d", chain, raw, seqno)
    return TonDeployment(chain, raw, lockc.bounceable(address), code_hash, seqno, global_id, saved.hash)
