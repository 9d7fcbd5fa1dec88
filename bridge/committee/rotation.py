"""Committee rotation: what the current committee signs to hand every custody to a new set.

A rotation is one JSON **proposal** (``creditbridge committee rotate propose``) that names the
new committee (index, threshold, members with their secp256k1 address and Ed25519 key, the
manifest's ``committee`` shape) and every custody it must be installed on:

* ``evm``: the settlement ledger and each CreditLock (both ``Committee.sol``): the current set
  signs the EIP-712 ``RotateCommittee(newIndex, signers, threshold)`` of each contract
  (``digest.rotate_digest``; the domain binds chain id and contract);
* ``ton``: the lock's rotation op (contracts/ton/lock.fc ``rotate#43425243``): the current set
  signs the payload cell's hash (global id, lock, new index, threshold, keys), which the
  composition root computes with ``relayers.ton.rotation``;
* ``substrate``: the committee account is derived from its members and threshold, so the old
  account's funds move to the new one by an old-multisig operation that each old member
  approves on chain itself (``relayers.substrate.rotation``): nothing is signed off chain.

Each member signs with its own keystores, offline (``committee rotate sign``): it recomputes
every digest from the proposal's fields (never a digest handed to it) and writes one signature
file. The submitter (``committee rotate submit``, anyone: it holds no authority) checks each
signature against its claimed signer, keeps those of the custody's current members as the
chain reports them, and submits. There is deliberately no HTTP endpoint that signs rotations:
a signer node must never sign a rotation for whoever asks.

Money is untouched here; this module is pure (no chain SDK): family-specific hashing is passed
in by the composition root.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bridge.committee import digest as dg
from bridge.errors import ConfigError, InputError, VerificationError
from bridge.types import SettlementDomain

VERSION = 1
_HEX20 = r"^0x[0-9a-fA-F]{40}$"
_HEX32 = r"^0x[0-9a-fA-F]{64}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Member(_Model):
    name: str = Field(min_length=1, max_length=64)
    address: str = Field(pattern=_HEX20)  # secp256k1: EVM attestations, refunds, rotations
    ed25519: str | None = Field(default=None, pattern=_HEX32)  # TON releases, Asset Hub approvals

    @property
    def address_bytes(self) -> bytes:
        return bytes.fromhex(self.address[2:])

    @property
    def ed25519_bytes(self) -> bytes | None:
        return bytes.fromhex(self.ed25519[2:]) if self.ed25519 else None


class NewCommittee(_Model):
    """The committee being installed (the manifest's ``committee`` part after the rotation)."""

    index: int = Field(ge=1, lt=2**32)
    threshold: int = Field(ge=1)
    members: list[Member] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _check(self) -> "NewCommittee":
        n = len(self.members)
        if self.threshold > n:
            raise ValueError(f"threshold {self.threshold} exceeds the {n} members")
        if 2 * self.threshold <= n:
            raise ValueError(f"threshold {self.threshold} of {n} is not a majority (need 2t > n: the committee "
                             "signs credits and refunds)")
        for what, values in (("names", [m.name for m in self.members]),
                             ("addresses", [m.address.lower() for m in self.members]),
                             ("ed25519 keys", [m.ed25519.lower() for m in self.members if m.ed25519])):
            if len(set(values)) != len(values):
                raise ValueError(f"member {what} must be distinct")
        return self

    def evm_signers(self) -> list[bytes]:
        """The new set as the EVM contracts store it: addresses in ascending order."""
        return sorted(m.address_bytes for m in self.members)

    def ed25519_keys(self) -> list[bytes]:
        keys = [m.ed25519_bytes for m in self.members]
        if any(k is None for k in keys):
            raise InputError("every member needs an ed25519 key for TON and Asset Hub custodies")
        return sorted(keys)  # type: ignore[arg-type]


class EvmCustody(_Model):
    family: Literal["evm"]
    chain: str
    role: Literal["ledger", "lock"]
    chain_id: int = Field(gt=0)
    contract: str = Field(pattern=_HEX20)

    @property
    def id(self) -> str:
        return f"{self.chain}/{self.role}"

    def domain(self) -> SettlementDomain:
        return SettlementDomain(chain_id=self.chain_id, contract=bytes.fromhex(self.contract[2:]),
                                name=dg.LEDGER_NAME if self.role == "ledger" else dg.LOCK_NAME)


class TonCustody(_Model):
    family: Literal["ton"]
    chain: str
    global_id: int = Field(ge=-(2**31), lt=2**31)
    lock: str = Field(min_length=1)

    @property
    def id(self) -> str:
        return f"{self.chain}/lock"


class SubstrateCustody(_Model):
    """The old committee account moves everything to the new committee's account."""

    family: Literal["substrate"]
    chain: str
    ss58_prefix: int = Field(ge=0, le=16383)
    old_members: list[Annotated[str, Field(pattern=_HEX32)]] = Field(min_length=2)
    old_threshold: int = Field(ge=2)
    old_account: str = Field(pattern=_HEX32)
    new_account: str = Field(pattern=_HEX32)
    # a block at or below the proposal's: where members look for the migration's execution
    from_block: int = Field(ge=0)

    @property
    def id(self) -> str:
        return f"{self.chain}/account"


Custody = Annotated[Union[EvmCustody, TonCustody, SubstrateCustody], Field(discriminator="family")]


class Proposal(_Model):
    version: Literal[1] = VERSION
    network: str = Field(min_length=1)
    committee: NewCommittee
    custodies: list[Custody] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "Proposal":
        ids = [c.id for c in self.custodies]
        if len(set(ids)) != len(ids):
            raise ValueError("each custody appears once")
        return self

    def canonical(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    def hash(self) -> str:
        """0x sha256 of the canonical JSON: what every signature file names."""
        return "0x" + hashlib.sha256(self.canonical()).hexdigest()

    def custody(self, cid: str):
        for c in self.custodies:
            if c.id == cid:
                return c
        raise InputError(f"the proposal has no custody {cid!r}")


def one_line(e: ValidationError) -> str:
    """The first error of a pydantic ValidationError, as one line."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg')}" if where else str(err.get("msg"))


def new_committee(data: dict) -> NewCommittee:
    try:
        return NewCommittee.model_validate(data)
    except ValidationError as e:
        raise InputError(f"invalid new committee: {one_line(e)}") from None


def proposal_from_dict(data: dict) -> Proposal:
    try:
        return Proposal.model_validate(data)
    except ValidationError as e:
        raise InputError(f"invalid rotation proposal: {one_line(e)}") from None


def load_proposal(path: str | Path) -> Proposal:
    try:
        return proposal_from_dict(json.loads(Path(path).read_text()))
    except OSError as e:
        raise ConfigError(f"cannot read proposal {path}: {e.strerror}") from None
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"proposal {path} is not JSON") from None


# ---------------------------------------------------------------------------- what is signed
TonHash = Callable[[TonCustody, NewCommittee], bytes]


def evm_digest(custody: EvmCustody, committee: NewCommittee) -> bytes:
    return dg.rotate_digest(custody.domain(), committee.index, committee.evm_signers(), committee.threshold)


def messages(proposal: Proposal, ton_hash: TonHash | None) -> dict[str, tuple[str, bytes]]:
    """custody id -> (scheme, 32-byte message) every current member signs: ``secp256k1`` over
    the EIP-712 digest, ``ed25519`` over the TON payload's cell hash. Substrate custodies are
    approved on chain, not here."""
    out: dict[str, tuple[str, bytes]] = {}
    for c in proposal.custodies:
        if isinstance(c, EvmCustody):
            out[c.id] = ("secp256k1", evm_digest(c, proposal.committee))
        elif isinstance(c, TonCustody):
            if ton_hash is None:
                raise InputError("the proposal has a TON custody: the TON payload hasher is needed")
            out[c.id] = ("ed25519", ton_hash(c, proposal.committee))
    return out


def _ed25519_public(seed: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return Ed25519PrivateKey.from_private_bytes(seed[:32]).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(proposal: Proposal, *, member: str, secp256k1_key: bytes | None, ed25519_seed: bytes | None,
         ton_hash: TonHash | None) -> dict:
    """One member's signature file for ``proposal`` (every custody it has the key for)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    doc: dict = {"version": VERSION, "proposal": proposal.hash(), "member": member, "signatures": {}}
    if secp256k1_key is not None:
        doc["address"] = "0x" + dg.address_of(secp256k1_key).hex()
    if ed25519_seed is not None:
        doc["ed25519"] = "0x" + _ed25519_public(ed25519_seed).hex()
    for cid, (scheme, msg) in messages(proposal, ton_hash).items():
        if scheme == "secp256k1" and secp256k1_key is not None:
            doc["signatures"][cid] = "0x" + dg.sign_digest(secp256k1_key, msg).hex()
        elif scheme == "ed25519" and ed25519_seed is not None:
            doc["signatures"][cid] = "0x" + Ed25519PrivateKey.from_private_bytes(ed25519_seed[:32]).sign(msg).hex()
    if not doc["signatures"]:
        raise InputError("this member has no key for any custody of the proposal")
    return doc


def _hex(v, n: int, what: str) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise VerificationError(f"{what} must be 0x hex")
    try:
        b = bytes.fromhex(v[2:])
    except ValueError:
        raise VerificationError(f"{what} must be 0x hex") from None
    if len(b) != n:
        raise VerificationError(f"{what} must be {n} bytes")
    return b


def collect(proposal: Proposal, docs: list[dict], ton_hash: TonHash | None) -> dict[str, list[tuple[bytes, bytes]]]:
    """custody id -> verified (signer id, signature) pairs from signature files: the signer id is
    the 20-byte address (EVM) or the 32-byte Ed25519 key (TON). A file for another proposal, or a
    signature that does not verify for its claimed signer, raises VerificationError (one bad
    file should be looked at, not silently dropped). Membership in the *current* committee is
    the submitter's check against each chain."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    want = proposal.hash()
    msgs = messages(proposal, ton_hash)
    out: dict[str, list[tuple[bytes, bytes]]] = {cid: [] for cid in msgs}
    for doc in docs:
        who = doc.get("member", "?") if isinstance(doc, dict) else "?"
        if not isinstance(doc, dict) or doc.get("proposal") != want:
            raise VerificationError(f"signature file of {who}: it signs another proposal (not {want[:18]}..)")
        sigs = doc.get("signatures")
        if not isinstance(sigs, dict):
            raise VerificationError(f"signature file of {who}: no signatures")
        for cid, value in sigs.items():
            if cid not in msgs:
                raise VerificationError(f"signature file of {who}: unknown custody {cid!r}")
            scheme, msg = msgs[cid]
            if scheme == "secp256k1":
                sig = _hex(value, 65, f"{who}'s signature for {cid}")
                claimed = _hex(doc.get("address"), 20, f"{who}'s address")
                if dg.recover(msg, sig) != claimed:
                    raise VerificationError(f"signature file of {who}: the {cid} signature is not by {doc['address']}")
                signer = claimed
            else:
                sig = _hex(value, 64, f"{who}'s signature for {cid}")
                signer = _hex(doc.get("ed25519"), 32, f"{who}'s ed25519 key")
                try:
                    Ed25519PublicKey.from_public_bytes(signer).verify(sig, msg)
                except InvalidSignature:
                    raise VerificationError(f"signature file of {who}: the {cid} signature is not by "
                                            f"{doc['ed25519']}") from None
            if signer not in {s for s, _ in out[cid]}:
                out[cid].append((signer, sig))
    return out


def choose(pairs: list[tuple[bytes, bytes]], members: list[bytes], threshold: int, cid: str) -> list[tuple[bytes, bytes]]:
    """``threshold`` signatures of current ``members`` (ascending signer order), or InputError
    naming how many are missing."""
    current = {bytes(m) for m in members}
    valid = sorted((p for p in pairs if p[0] in current), key=lambda p: p[0])
    if len(valid) < threshold:
        raise InputError(f"{cid}: {len(valid)} signature(s) of current members, the threshold is {threshold}")
    return valid[:threshold]


# ---------------------------------------------------------------------------- the manifest
def apply_to_manifest(manifest: dict, proposal: Proposal, *, ss58: Callable[[bytes, int], str]) -> dict:
    """The manifest (docs: the agreed issue-13 shape) after ``proposal`` was applied everywhere:
    its ``committee`` becomes the new one, and each Asset Hub chain's ``committee_account`` the
    new account, the old one appended to ``previous_committee_accounts`` (watched until the
    operators' cut-off). Contract addresses do not change (EVM and TON custodies keep their
    addresses). ``ss58`` formats an account id under a prefix (the composition root's)."""
    out = json.loads(json.dumps(manifest))
    c = proposal.committee
    out["committee"] = {"index": c.index, "threshold": c.threshold,
                        "members": [m.model_dump(mode="json", exclude_none=True) for m in c.members]}
    chains = out.setdefault("chains", {})
    for custody in proposal.custodies:
        if isinstance(custody, SubstrateCustody):
            entry = chains.setdefault(custody.chain, {"family": "substrate"})
            old = ss58(bytes.fromhex(custody.old_account[2:]), custody.ss58_prefix)
            previous = entry.setdefault("previous_committee_accounts", [])
            if old not in previous:
                previous.append(old)
            entry["committee_account"] = ss58(bytes.fromhex(custody.new_account[2:]), custody.ss58_prefix)
    return out
