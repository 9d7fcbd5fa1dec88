"""The committee / deployment manifest: one JSON file per committee deployment.

``creditbridge committee init`` writes its committee part, each ``creditbridge deploy <family>``
adds or updates its chain's entry, and every node's config points to it (top-level
``manifest = "path"``, relative to the config file's folder). Shape (version 1)::

    {"version": 1, "network": "mainnet" | "testnet" | "devnet",
     "committee": {"index": 0, "threshold": 3, "members": [{"name", "address", "ed25519"}]},
     "settlement_chain": "settlement",
     "chains": {"settlement": {"family": "evm", "chain_id": 8453, "contracts": {"credits": {...}}},
                "ethereum": {"family": "evm", "chain_id": 1, "token": "ETH", "start_block": 123,
                             "contracts": {"lock": {"address", "code_hash", "block"}}, "treasury": "0x.."},
                "polkadot": {"family": "substrate", "genesis_hash", "ss58_prefix", "token",
                             "committee_account", "start_block", "treasury"},
                "ton": {"family": "ton", "global_id", "token", "start_block", "contracts": {"lock": {...}}}},
     "payments": {"late_grace_seconds": 0},
     "governor": {"chains": {"ethereum": {"daily_limit_usd", "large_payment_usd", "large_payment_delay_seconds"}}},
     "treasury": {"epoch_blocks": 150}}

Its hash is sha256 over the canonical JSON (sorted keys, no whitespace, UTF-8), as 0x hex.

A config that names a manifest gets what it omits from it (``merge_config``, on the raw config
before validation: chains' family, chain ids / genesis / global ids, tokens, contracts, start
blocks, the Asset Hub committee, the settlement chain, the lateness grace, governor limits and
treasury addresses); ``check_settings`` then refuses, in one line naming the first
disagreement, a config whose own values differ. Committees sign credits and refunds, so
2t > n is required (a minority can neither mint nor refund).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bridge.errors import ConfigError

VERSION = 1
NETWORKS = ("mainnet", "testnet", "devnet")
_NAME = r"^[a-z][a-z0-9_-]{0,31}$"
_HEX20 = r"^0x[0-9a-fA-F]{40}$"
_HEX32 = r"^0x[0-9a-fA-F]{64}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Model):
    name: str = Field(min_length=1, max_length=64)
    address: str = Field(pattern=_HEX20)  # secp256k1 (EVM) address: credits and EVM refunds
    ed25519: str = Field(pattern=_HEX32)  # TON lock releases, Asset Hub multisig member


class Committee(_Model):
    index: int = Field(default=0, ge=0)
    threshold: int = Field(ge=1)
    members: list[Member] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _quorum(self) -> "Committee":
        n, t = len(self.members), self.threshold
        if t > n:
            raise ValueError(f"threshold {t} exceeds the {n} member(s)")
        if 2 * t <= n:
            raise ValueError(f"threshold {t} of {n}: a committee that signs credits and refunds needs 2t > n "
                             f"(at least {n // 2 + 1})")
        for what in ("name", "address", "ed25519"):
            values = [getattr(m, what).lower() for m in self.members]
            if len(set(values)) != len(values):
                raise ValueError(f"committee members' {what} values must be distinct")
        return self

    def addresses(self) -> list[str]:
        return [m.address.lower() for m in self.members]

    def ed25519_keys(self) -> list[str]:
        return [m.ed25519.lower() for m in self.members]


class Contract(_Model):
    address: str = Field(min_length=1)
    code_hash: str = Field(pattern=_HEX32)
    block: int = Field(ge=0)  # deploy block (EVM) / masterchain seqno it was active at (TON)


class EvmEntry(_Model):
    family: Literal["evm"]
    chain_id: int = Field(gt=0)
    token: str | None = None
    start_block: int | None = Field(default=None, ge=0)
    contracts: dict[str, Contract] = {}
    treasury: str | None = Field(default=None, pattern=_HEX20)


class SubstrateEntry(_Model):
    family: Literal["substrate"]
    genesis_hash: str = Field(pattern=_HEX32)
    ss58_prefix: int = Field(ge=0, le=16383)
    token: str
    committee_account: str | None = None
    start_block: int | None = Field(default=None, ge=0)
    treasury: str | None = None


class TonEntry(_Model):
    family: Literal["ton"]
    global_id: int = Field(ge=-(2**31), lt=2**31)
    token: str = "TON"
    start_block: int | None = Field(default=None, ge=0)
    contracts: dict[str, Contract] = {}
    treasury: str | None = None


ChainEntry = Annotated[Union[EvmEntry, SubstrateEntry, TonEntry], Field(discriminator="family")]


class GovernorLimits(_Model):
    daily_limit_usd: Decimal = Field(gt=0, allow_inf_nan=False)
    large_payment_usd: Decimal = Field(gt=0, allow_inf_nan=False)
    large_payment_delay_seconds: int = Field(default=86_400, ge=0, le=30 * 86_400)


class Governor(_Model):
    chains: dict[str, GovernorLimits] = {}


class Payments(_Model):
    late_grace_seconds: int = Field(default=0, ge=0)


class Treasury(_Model):
    epoch_blocks: int | None = Field(default=None, gt=0)


class Manifest(_Model):
    version: Literal[1] = 1
    network: Literal["mainnet", "testnet", "devnet"]
    committee: Committee | None = None
    settlement_chain: str | None = Field(default=None, pattern=_NAME)
    chains: dict[Annotated[str, Field(pattern=_NAME)], ChainEntry] = {}
    payments: Payments | None = None
    governor: Governor | None = None
    treasury: Treasury | None = None

    @model_validator(mode="after")
    def _cross(self) -> "Manifest":
        if self.settlement_chain is not None:
            st = self.chains.get(self.settlement_chain)
            if st is not None and st.family != "evm":
                raise ValueError(f"settlement chain {self.settlement_chain!r} must be an evm chain")
        if self.governor is not None:
            for name in self.governor.chains:
                if name not in self.chains:
                    raise ValueError(f"governor.chains: {name!r} is not a chain of the manifest")
        return self

    def document(self) -> dict:
        """The JSON document (no nulls; decimals as strings)."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def hash(self) -> str:
        return manifest_hash(self.document())


def canonical_json(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_hash(doc: dict) -> str:
    return "0x" + hashlib.sha256(canonical_json(doc)).hexdigest()


def _one_line(origin: str, e: ValidationError) -> str:
    first = e.errors()[0]
    where = ".".join(str(x) for x in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    return f"manifest {origin}: {where + ': ' if where else ''}{msg}"


def parse_manifest(doc: object, origin: str = "manifest") -> Manifest:
    try:
        return Manifest.model_validate(doc)
    except ValidationError as e:
        raise ConfigError(_one_line(origin, e)) from None


def load_manifest(path: str | Path) -> Manifest:
    p = Path(path)
    try:
        raw = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read manifest {p}: {e.strerror}") from None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"manifest {p} is not valid JSON: {e}") from None
    return parse_manifest(doc, str(p))


def save_manifest(path: str | Path, manifest: Manifest) -> str:
    """Write atomically (pretty JSON); return its hash."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(manifest.document(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)
    return manifest.hash


def load_or_new(path: str | Path, network: str) -> Manifest:
    """The manifest at ``path`` (its network must be ``network``), or a new empty one."""
    p = Path(path)
    if not p.exists():
        return parse_manifest({"version": VERSION, "network": network}, str(p))
    m = load_manifest(p)
    if m.network != network:
        raise ConfigError(f"manifest {p} is for network {m.network!r}, not {network!r}")
    return m


def with_chain(manifest: Manifest, name: str, entry: dict, *, settlement: bool = False) -> Manifest:
    """A copy with chain ``name`` set to ``entry`` (and the settlement chain if ``settlement``)."""
    doc = manifest.document()
    doc.setdefault("chains", {})[name] = entry
    if settlement:
        current = doc.get("settlement_chain")
        if current not in (None, name):
            raise ConfigError(f"the manifest's settlement chain is already {current!r}")
        doc["settlement_chain"] = name
    return parse_manifest(doc)


def with_committee(manifest: Manifest, members: list[dict], threshold: int, index: int = 0) -> Manifest:
    doc = manifest.document()
    doc["committee"] = {"index": index, "threshold": threshold, "members": members}
    return parse_manifest(doc)


def update_manifest(path: str | Path, network: str, change) -> Manifest:
    """Load (or start) the manifest, apply ``change(manifest) -> manifest``, save; the result."""
    m = change(load_or_new(path, network))
    save_manifest(path, m)
    return m


def member_from_keystores(name: str, secp256k1_keystore: str | Path, ed25519_keystore: str | Path) -> dict:
    """A member from the public parts of its two keystores (no password needed), or from
    ``keys show`` output files (``{"kind", "public", ...}``)."""
    def public(path, kind: str) -> str:
        p = Path(path)
        try:
            doc = json.loads(p.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read {p}: {e.strerror}") from None
        except ValueError:
            raise ConfigError(f"{p} is not JSON (a keystore or `keys show` output)") from None
        if not isinstance(doc, dict) or doc.get("kind") != kind or not isinstance(doc.get("public"), str):
            raise ConfigError(f"{p} is not a {kind} keystore or `keys show` output")
        return doc["public"]

    address = public(secp256k1_keystore, "secp256k1").lower()
    ed = public(ed25519_keystore, "ed25519").lower()
    return {"name": name, "address": address if address.startswith("0x") else "0x" + address,
            "ed25519": ed if ed.startswith("0x") else "0x" + ed}


# --- configs that point to a manifest ------------------------------------------------------------
def resolve_path(value: str, config_path: str | Path | None) -> Path:
    p = Path(value).expanduser()
    if not p.is_absolute() and config_path is not None:
        p = Path(config_path).resolve().parent / p
    return p


def _contract_addresses(entry) -> dict[str, str]:
    return {k: c.address for k, c in entry.contracts.items()}


def merge_config(data: dict, manifest: Manifest) -> dict:
    """The raw config ``data`` with what it omits taken from ``manifest`` (a new dict). Values
    the config states are kept as they are: ``check_settings`` compares them afterwards."""
    out = dict(data)
    if "settlement_chain" not in out and manifest.settlement_chain:
        out["settlement_chain"] = manifest.settlement_chain
    chains = []
    for raw in out.get("chains") or []:
        if not isinstance(raw, dict):
            chains.append(raw)
            continue
        c = dict(raw)
        entry = manifest.chains.get(c.get("name"))
        if entry is not None:
            c.setdefault("family", entry.family)
            if c["family"] == entry.family:
                _fill_chain(c, entry, manifest)
        chains.append(c)
    if "chains" in out:
        out["chains"] = chains
    if manifest.payments is not None:
        grace = manifest.payments.late_grace_seconds
        payments = dict(out.get("payments") or {})
        payments.setdefault("late_grace_seconds", grace)
        out["payments"] = payments
        if isinstance(out.get("signer"), dict):
            out["signer"] = {"late_grace_seconds": grace, **out["signer"]}
    if manifest.governor is not None and manifest.governor.chains:
        gov = dict(out.get("governor") or {})
        limits = dict(gov.get("chains") or {})
        for name, lim in manifest.governor.chains.items():
            limits.setdefault(name, lim.model_dump(mode="json"))
        gov["chains"] = limits
        out["governor"] = gov
    if _settings_have_treasury():
        listed = {c.get("name") for c in out.get("chains") or [] if isinstance(c, dict)}
        # the treasuries of the chains this config runs (a node may run a subset of the chains)
        addresses = {n: e.treasury for n, e in manifest.chains.items() if e.treasury and n in listed}
        epoch = manifest.treasury.epoch_blocks if manifest.treasury else None
        if addresses or epoch is not None:
            tr = dict(out.get("treasury") or {})
            tr["addresses"] = {**addresses, **(tr.get("addresses") or {})}
            if epoch is not None:
                tr.setdefault("epoch_blocks", epoch)
            out["treasury"] = tr
    return out


def _settings_have_treasury() -> bool:
    from bridge.config import Settings

    return "treasury" in Settings.model_fields


def _fill_chain(c: dict, entry, manifest: Manifest) -> None:
    if entry.start_block is not None:
        c.setdefault("start_block", entry.start_block)
    if getattr(entry, "token", None) is not None:
        c.setdefault("token", entry.token)
    if entry.family == "evm":
        c.setdefault("chain_id", entry.chain_id)
    elif entry.family == "substrate":
        c.setdefault("genesis_hash", entry.genesis_hash)
        c.setdefault("ss58_prefix", entry.ss58_prefix)
        if manifest.committee is not None:
            c.setdefault("committee", {"members": manifest.committee.ed25519_keys(),
                                       "threshold": manifest.committee.threshold})
    elif entry.family == "ton":
        c.setdefault("global_id", entry.global_id)
    if entry.family in ("evm", "ton") and entry.contracts:
        contracts = dict(c.get("contracts") or {})
        for k, v in _contract_addresses(entry).items():
            contracts.setdefault(k, v)
        c["contracts"] = contracts


def ton_address_key(addr: str) -> tuple[int, bytes] | None:
    """(workchain, account id) of a raw ``wc:hex`` or user-friendly (base64) TON address."""
    a = addr.strip()
    try:
        if ":" in a:
            wc, h = a.split(":", 1)
            account = bytes.fromhex(h)
            return (int(wc), account) if len(account) == 32 else None
        raw = base64.urlsafe_b64decode(a.replace("+", "-").replace("/", "_") + "=" * (-len(a) % 4))
    except ValueError:
        return None
    if len(raw) != 36:
        return None
    return int.from_bytes(raw[1:2], "big", signed=True), raw[2:34]


def _same_address(family: str, a: str, b: str) -> bool:
    if family == "ton":
        ka, kb = ton_address_key(a), ton_address_key(b)
        return ka is not None and ka == kb
    return a.lower() == b.lower()


def check_settings(settings, manifest: Manifest) -> None:
    """ConfigError (one line: the first disagreement) unless ``settings`` agree with ``manifest``."""
    problem = disagreement(settings, manifest)
    if problem is not None:
        raise ConfigError(f"config disagrees with manifest {manifest.hash[:18]}..: {problem}")


def disagreement(settings, manifest: Manifest) -> str | None:  # noqa: C901 - one flat list of checks
    def differ(what: str, mine, theirs) -> str:
        return f"{what} is {mine!r} in the config but {theirs!r} in the manifest"

    if manifest.committee is None:
        return "the manifest has no committee (run `creditbridge committee init`)"
    if manifest.settlement_chain is None:
        return "the manifest has no settlement chain (run `creditbridge deploy evm --settlement`)"
    if settings.settlement_chain != manifest.settlement_chain:
        return differ("settlement_chain", settings.settlement_chain, manifest.settlement_chain)
    mine = {c.name: c for c in settings.chains}
    for name in manifest.chains:
        if name not in mine:
            return f"chain {name!r} of the manifest is missing from the config's chains (add it with its rpc)"
    for name, c in mine.items():
        entry = manifest.chains.get(name)
        if entry is None:
            return f"chain {name!r} is not in the manifest"
        where = f"chains.{name}"
        if c.family != entry.family:
            return differ(f"{where}.family", c.family, entry.family)
        if entry.start_block is not None and c.start_block != entry.start_block:
            return differ(f"{where}.start_block", c.start_block, entry.start_block)
        token = getattr(entry, "token", None)
        if token is not None and c.token != token:
            return differ(f"{where}.token", c.token, token)
        if entry.family == "evm" and c.chain_id != entry.chain_id:
            return differ(f"{where}.chain_id", c.chain_id, entry.chain_id)
        if entry.family == "substrate":
            if (c.genesis_hash or "").lower() != entry.genesis_hash.lower():
                return differ(f"{where}.genesis_hash", c.genesis_hash, entry.genesis_hash)
            if c.ss58_prefix != entry.ss58_prefix:
                return differ(f"{where}.ss58_prefix", c.ss58_prefix, entry.ss58_prefix)
            if sorted(m.lower() for m in c.committee.members) != sorted(manifest.committee.ed25519_keys()):
                return f"{where}.committee.members are not the manifest committee's ed25519 keys"
            if c.committee.threshold != manifest.committee.threshold:
                return differ(f"{where}.committee.threshold", c.committee.threshold, manifest.committee.threshold)
        if entry.family == "ton" and c.global_id != entry.global_id:
            return differ(f"{where}.global_id", c.global_id, entry.global_id)
        if entry.family in ("evm", "ton"):
            for k, rec in entry.contracts.items():
                have = c.contracts.get(k)
                if have is None:
                    return f"{where}.contracts.{k} is missing from the config"
                if not _same_address(entry.family, have, rec.address):
                    return differ(f"{where}.contracts.{k}", have, rec.address)
            for k in c.contracts:
                if k not in entry.contracts:
                    return f"{where}.contracts.{k} is not in the manifest"
    grace = manifest.payments.late_grace_seconds if manifest.payments else 0
    if settings.api is not None and settings.payments.late_grace_seconds != grace:
        return differ("payments.late_grace_seconds", settings.payments.late_grace_seconds, grace)
    if settings.signer is not None and settings.signer.late_grace_seconds != grace:
        return differ("signer.late_grace_seconds", settings.signer.late_grace_seconds, grace)
    theirs = manifest.governor.chains if manifest.governor else {}
    for name, lim in settings.governor.chains.items():
        if name not in theirs:
            return f"governor.chains.{name} is not in the manifest"
        ours = lim.model_dump()
        for k, v in theirs[name].model_dump().items():
            if ours.get(k) != v:
                return differ(f"governor.chains.{name}.{k}", str(ours.get(k)), str(v))
    for name in theirs:
        if name not in settings.governor.chains:
            return f"governor.chains.{name} of the manifest is missing from the config"
    treasury = getattr(settings, "treasury", None)
    if treasury is not None:
        addresses = getattr(treasury, "addresses", None) or {}
        for name, entry in manifest.chains.items():
            if entry.treasury is not None and name in addresses and \
                    not _same_address(entry.family, str(addresses[name]), entry.treasury):
                return differ(f"treasury.addresses.{name}", addresses[name], entry.treasury)
        epoch = manifest.treasury.epoch_blocks if manifest.treasury else None
        if epoch is not None and getattr(treasury, "epoch_blocks", epoch) != epoch:
            return differ("treasury.epoch_blocks", treasury.epoch_blocks, epoch)
    return None


def check_member(manifest: Manifest, *, address: str | None = None, ed25519: str | None = None) -> None:
    """ConfigError unless the node's signer key (and Ed25519 refund key) belong to one member."""
    c = manifest.committee
    if c is None:
        return
    if address is not None and address.lower() not in c.addresses():
        raise ConfigError(f"signer key {address} is not a member of the manifest's committee")
    if ed25519 is not None:
        ed = "0x" + ed25519.lower().removeprefix("0x")
        if ed not in c.ed25519_keys():
            raise ConfigError(f"signer refund_key {ed} is not a member of the manifest's committee")
        if address is not None and c.addresses().index(address.lower()) != c.ed25519_keys().index(ed):
            raise ConfigError("signer key and refund_key belong to different members of the manifest's committee")


def register_metric(registry, hash_: str) -> None:
    """``creditbridge_manifest_info{hash="0x.."} 1`` in ``registry``."""
    from prometheus_client import Gauge

    Gauge("creditbridge_manifest_info", "The committee manifest this node runs with (its sha256)", ["hash"],
          registry=registry).labels(hash=hash_).set(1)
