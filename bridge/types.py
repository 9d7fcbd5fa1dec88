"""Neutral, chain-agnostic types of the core.

Conventions (Hyperlane's H256 idea): addresses and references are fixed-width ``bytes``
(payers are left-padded to 32 bytes, settlement beneficiaries are 20-byte EVM addresses),
tx ids are raw ``bytes``, token amounts are ``int`` base units, rates are ``Decimal``.
Conversion to and from chain formats happens at the edge, in ``relayers/``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from bridge.errors import InputError

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1


class Family(str, enum.Enum):
    EVM = "evm"
    SUBSTRATE = "substrate"
    TON = "ton"


@dataclass(frozen=True)
class Token:
    symbol: str
    decimals: int
    chain: str  # config name of the chain the token is paid on


# Decimals are facts of the tokens, not configuration.
TOKEN_DECIMALS: dict[str, int] = {"DOT": 10, "KSM": 12, "ETH": 18, "TON": 9}


def _check_len(name: str, value: bytes, n: int) -> None:
    if not isinstance(value, (bytes, bytearray)) or len(value) != n:
        raise InputError(f"{name} must be {n} bytes")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Observation:
    """A deposit seen on a source chain, emitted only once final under the chain's rule.

    ``source`` identifies the stream of deposits (a lock contract on one chain) and
    ``sequence`` is the deposit's dense position in it (the lock contract's nonce); together
    they are the deposit id the settlement contract credits at most once.
    """

    chain: str
    source: bytes
    sequence: int
    tx_id: bytes
    event_index: int
    block_number: int
    block_hash: bytes
    timestamp: int
    token: str
    amount: int
    payer: bytes
    reference: bytes

    def __post_init__(self) -> None:
        _check_len("source", self.source, 32)
        _check_len("reference", self.reference, 32)
        _check_len("payer", self.payer, 32)
        if not 0 <= self.sequence <= UINT64_MAX:
            raise InputError("sequence out of range")
        if self.amount <= 0:
            raise InputError("deposit amount must be positive")

    @property
    def deposit_id(self) -> tuple[bytes, int]:
        return (self.source, self.sequence)

    @classmethod
    def unchecked(cls, chain: str, source: bytes, sequence: int, tx_id: bytes, event_index: int, block_number: int,
                  block_hash: bytes, timestamp: int, token: str, amount: int, payer: bytes,
                  reference: bytes) -> "Observation":
        """The observation, without ``__post_init__``'s checks: only for a caller whose fields
        satisfy them by construction (source, reference and payer 32 bytes, sequence a uint64,
        amount positive) -- the EVM watcher, which builds them from fixed-width ABI words on a
        catch-up's hot path (a dataclass construction was ~1.5 µs a deposit, this ~0.3). Equal
        to ``Observation(...)`` of the same fields (tests/unit/test_observation_unchecked.py)."""
        o = _new_object(cls)
        o.__dict__.update(chain=chain, source=source, sequence=sequence, tx_id=tx_id, event_index=event_index,
                          block_number=block_number, block_hash=block_hash, timestamp=timestamp, token=token,
                          amount=amount, payer=payer, reference=reference)
        return o


_new_object = object.__new__
if hasattr(Observation, "__slots__"):  # pragma: no cover - unchecked() fills __dict__
    raise RuntimeError("Observation.unchecked needs a dataclass without slots")


@dataclass(frozen=True)
class Credit:
    """One credit: ``credits`` for ``beneficiary`` for the deposit ``(source, sequence)``."""

    source: bytes
    sequence: int
    beneficiary: bytes
    credits: int
    quote_id: bytes

    def __post_init__(self) -> None:
        _check_len("source", self.source, 32)
        _check_len("beneficiary", self.beneficiary, 20)
        _check_len("quote_id", self.quote_id, 32)
        if not 0 <= self.sequence <= UINT64_MAX:
            raise InputError("sequence out of range")
        if not 0 < self.credits < 2**128:
            raise InputError("credits out of range")

    @property
    def deposit_id(self) -> tuple[bytes, int]:
        return (self.source, self.sequence)

    def to_json(self) -> dict:
        return {
            "source": "0x" + self.source.hex(),
            "sequence": self.sequence,
            "beneficiary": "0x" + self.beneficiary.hex(),
            "credits": str(self.credits),
            "quote_id": "0x" + self.quote_id.hex(),
        }

    @classmethod
    def from_json(cls, d: dict) -> "Credit":
        try:
            return cls(
                source=bytes.fromhex(_strip0x(d["source"])),
                sequence=int(d["sequence"]),
                beneficiary=bytes.fromhex(_strip0x(d["beneficiary"])),
                credits=int(d["credits"]),
                quote_id=bytes.fromhex(_strip0x(d["quote_id"])),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed credit: {e.__class__.__name__}") from None


@dataclass(frozen=True)
class SettlementDomain:
    """EIP-712 domain of the settlement contract."""

    chain_id: int
    contract: bytes  # 20 bytes
    name: str = "CreditBridge Ledger"
    version: str = "1"


@dataclass(frozen=True)
class CreditMessage:
    """What the committee signs: a batch of credits under one committee set.

    A batch of one is the per-deposit attestation; the aggregator asks signers to sign
    larger batches of credits each of them attested already.
    """

    committee_index: int
    credits: tuple[Credit, ...]

    def __post_init__(self) -> None:
        if not self.credits:
            raise InputError("a credit message needs at least one credit")
        ids = [c.deposit_id for c in self.credits]
        if len(set(ids)) != len(ids):
            raise InputError("duplicate deposit in credit message")


@dataclass(frozen=True)
class Attestation:
    """One signer's secp256k1 signature (65 bytes r||s||v) over a CreditMessage digest."""

    signer: bytes  # 20-byte address
    message: CreditMessage
    signature: bytes


@dataclass(frozen=True)
class Quote:
    """A signed promise: ``amount`` base units of ``token`` buy ``credits`` until expiry."""

    id: str
    token: str
    chain: str
    amount: int
    credits: int
    rate: Decimal  # USD per whole token used for the quote
    credit_price_usd: Decimal
    created_at: datetime
    expires_at: datetime
    key_id: str = ""
    signature: bytes = b""
    sources: tuple[str, ...] = field(default=())
    # batched signing (bridge/pricing/merkle.py): ``signature`` signs the root of a Merkle tree
    # of quotes and ``merkle_path`` proves this quote is a leaf of it; an empty root means the
    # older format, ``signature`` over the quote's canonical bytes themselves
    merkle_root: bytes = b""
    merkle_path: tuple[bytes, ...] = field(default=())


@dataclass(frozen=True)
class PaymentTerms:
    """The gateway-signed binding of a payment reference to a beneficiary and a quote.

    Signers fetch it by reference and verify its signature with the gateway's public key, so
    they need not trust the API's transport or database.
    """

    payment_id: str
    reference: bytes
    beneficiary: bytes
    quote_id: str
    chain: str
    token: str
    amount: int
    credits: int
    expires_at: datetime
    key_id: str = ""
    signature: bytes = b""


def _strip0x(s: str) -> str:
    if not isinstance(s, str):
        raise TypeError("expected a hex string")
    return s[2:] if s[:2] in ("0x", "0X") else s


def hex_to_bytes(s: str, n: int | None = None, *, what: str = "value") -> bytes:
    """Parse ``0x``-prefixed hex into bytes of length ``n``, raising InputError."""
    try:
        if not isinstance(s, str) or not s.startswith(("0x", "0X")):
            raise ValueError
        b = bytes.fromhex(s[2:])
    except ValueError:
        raise InputError(f"{what} must be 0x-prefixed hex") from None
    if n is not None and len(b) != n:
        raise InputError(f"{what} must be {n} bytes ({2 * n} hex digits)")
    return b


def quote_id_bytes(quote_id: str) -> bytes:
    """On-chain bytes32 form of a quote id (a UUID): its 16 bytes, right-padded with zeros."""
    import uuid

    try:
        return uuid.UUID(quote_id).bytes + b"\x00" * 16
    except (ValueError, AttributeError, TypeError):
        raise InputError("quote id must be a UUID") from None
