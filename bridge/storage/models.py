"""Tables. Every component (API, each signer node, the aggregator) has its own database with
this one schema; each uses the tables of its role.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, PrimaryKeyConstraint,
                        String, Text, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from bridge.storage.types import U256, UTCDateTime


class Base(DeclarativeBase):
    pass


class QuoteRow(Base):
    __tablename__ = "quotes"
    __table_args__ = (Index("ix_quotes_expires_at", "expires_at"),)  # 0006: retention (storage/quotes.py)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token: Mapped[str] = mapped_column(String(16))
    chain: Mapped[str] = mapped_column(String(32))
    amount: Mapped[int] = mapped_column(U256)
    credits: Mapped[int] = mapped_column(U256)
    rate: Mapped[str] = mapped_column(String(80))  # Decimal as text, USD per whole token
    credit_price_usd: Mapped[str] = mapped_column(String(80))
    sources: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    # batched signing (0012): the signed Merkle root (32 bytes) then the quote's proof path
    # (32 bytes a hash); NULL for quotes signed one by one (the signature covers the quote)
    proof: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, default=None)


class PaymentRow(Base):
    __tablename__ = "payments"
    # one payment per quote: credits name their quote, which then names one payment (0002)
    __table_args__ = (Index("uq_payments_quote_id", "quote_id", unique=True),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    reference: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    quote_id: Mapped[str] = mapped_column(String(36), ForeignKey("quotes.id"))
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    chain: Mapped[str] = mapped_column(String(32))
    token: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(U256)
    credits: Mapped[int] = mapped_column(U256)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), index=True)
    key_id: Mapped[str] = mapped_column(String(64))
    terms_signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    paid_amount: Mapped[int] = mapped_column(U256, default=0)
    credited: Mapped[int] = mapped_column(U256, default=0)
    settlement_tx: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # 0003: held for refund (excess + late + invalid), and the merchant whose key created it
    refundable: Mapped[int] = mapped_column(U256, default=0, server_default="0")
    merchant_id: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # 0010: the payment code (TON text comment; reference = sha256(code)); NULL before issue 14
    code: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # 0011: bumped by every evaluated change (compare-and-set; names its webhook events' seq)
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


Index("uq_payments_code", PaymentRow.code, unique=True)


class PaymentFeedRow(Base):
    """0010: the reference feed's cursor of each payment (``GET /v1/payment-references``): an
    autoincrement key, so a payment created later has a larger cursor (never reused)."""

    __tablename__ = "payment_feed"
    __table_args__ = (UniqueConstraint("payment_id", name="uq_payment_feed_payment"), {"sqlite_autoincrement": True})
    cursor: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                        autoincrement=True)
    payment_id: Mapped[str] = mapped_column(String(36), ForeignKey("payments.id"))


class ObservationRow(Base):
    """A finalized deposit as this node's watcher saw it."""

    __tablename__ = "observations"
    __table_args__ = (
        UniqueConstraint("chain", "tx_id", "event_index", name="uq_observation_event"),
        UniqueConstraint("source", "sequence", name="uq_observation_deposit"),
        Index("ix_observations_due", "status", "next_attempt_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(32))
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    tx_id: Mapped[bytes] = mapped_column(LargeBinary(64))
    event_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes] = mapped_column(LargeBinary(64))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    token: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(U256)
    payer: Mapped[bytes] = mapped_column(LargeBinary(32))
    reference: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    # signer nodes: new -> attested | rejected | queued (governor); ``new`` ones not decidable yet
    # wait with a backoff (attempts, next_attempt_at)
    # no index of its own (0014): ``ix_observations_due`` leads with it
    status: Mapped[str] = mapped_column(String(16), default="new")
    status_detail: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # 0007: a deposit not decided yet is tried again from this unix time (backoff), attempts so far
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class CursorRow(Base):
    """How far a component has processed a chain: the last fully handled block."""

    __tablename__ = "cursors"
    component: Mapped[str] = mapped_column(String(64), primary_key=True)
    chain: Mapped[str] = mapped_column(String(32), primary_key=True)
    height: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttestationRow(Base):
    """A signer node's own signature over a one-credit message; ``id`` is its feed cursor."""

    __tablename__ = "attestations"
    __table_args__ = (UniqueConstraint("source", "sequence", name="uq_attestation_deposit"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    credits: Mapped[int] = mapped_column(U256)
    quote_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    committee_index: Mapped[int] = mapped_column(BigInteger)
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    payment_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SettlementRow(Base):
    """The aggregator's record of one deposit's way to the settlement contract."""

    __tablename__ = "settlements"
    source: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    credits: Mapped[int] = mapped_column(U256)
    quote_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | settled
    tx_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CreditRow(Base):
    """A credit the settlement contract recorded, as the API's settlement watcher read it."""

    __tablename__ = "credits"
    __table_args__ = (Index("ix_credits_quote", "quote_id"),)
    source: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    beneficiary: Mapped[bytes] = mapped_column(LargeBinary(20))
    credits: Mapped[int] = mapped_column(U256)
    quote_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    tx_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    block_number: Mapped[int] = mapped_column(BigInteger)
    observed: Mapped[bool] = mapped_column(Boolean, default=False)


# --- 0003: merchants' API keys, webhooks (outbox + delivery log), governor, refunds ----------------
class ApiKeyRow(Base):
    """An API key: only its SHA-256 is stored; ``id`` is the public prefix of the key."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))  # merchant | admin
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookRow(Base):
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(16), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    secret: Mapped[str] = mapped_column(String(80))  # HMAC key; shown once at registration
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookEventRow(Base):
    """The outbox: one row per payment event, written in the state change's transaction."""

    __tablename__ = "webhook_events"
    __table_args__ = (Index("uq_webhook_events_payment_seq", "payment_id", "seq", unique=True),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(36), index=True)
    merchant_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    type: Mapped[str] = mapped_column(String(48))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # 0011: the payment's change it reports (payments.version after it): one event per change,
    # whichever replica evaluates it (NULL for events stored before 0011)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)


class WebhookDeliveryRow(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(String(36), index=True)
    event_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))  # pending | succeeded | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(String(200), default="")
    redelivery_of: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # 0011: the replica delivering it and until when (unix seconds, database clock): a lease
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_until: Mapped[float | None] = mapped_column(Float(precision=53), nullable=True)


class WebhookAttemptRow(Base):
    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(36), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(String(200), default="")


class GovernorItemRow(Base):
    """A signer's governor schedule: when a credited deposit may be attested (unix seconds)."""

    __tablename__ = "governor_items"
    __table_args__ = (Index("ix_governor_chain_release", "chain", "release_at"),)
    source: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chain: Mapped[str] = mapped_column(String(32))
    block_time: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(U256)
    release_at: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReleaseRow(Base):
    """A signer's authorization of a refund: its signature over a ``Release`` for the source
    chain's lock contract (EVM, TON), or, on Asset Hub, an empty signature and the progress of
    its own multisig approval (``progress``: JSON, see relayers/substrate/refund.py)."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("release_id", name="uq_release_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    chain: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(String(16))
    to: Mapped[bytes] = mapped_column(LargeBinary(32))  # 20-byte EVM address or 32-byte account id
    amount: Mapped[int] = mapped_column(U256)
    release_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    payment_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    state: Mapped[str] = mapped_column(String(16), default="", server_default="")  # Asset Hub: done/failed/...
    progress: Mapped[str] = mapped_column(Text, default="", server_default="")
    # 0007: Asset Hub approvals: next step not before this unix time (rotation, backoff)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # 0013: the token paid out: NULL for the chain's native token, else its symbol (USDC, USDT ...)
    token: Mapped[str | None] = mapped_column(String(16), nullable=True)


# --- 0004: late deposits credited at a fresh quote ---------------------------------------------------
class LateDecisionRow(Base):
    """The gateway's signed decision for one late deposit (``bridge/payments/late.py``): credit it
    at a fresh quote or hold it for refund. One per deposit id; the first decision stored wins."""

    __tablename__ = "late_decisions"
    __table_args__ = (PrimaryKeyConstraint("source", "sequence", name="pk_late_decisions"),
                      Index("ix_late_decisions_fresh_quote", "fresh_quote_id"))  # 0006: quote retention
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    reference: Mapped[bytes] = mapped_column(LargeBinary(32))
    payment_id: Mapped[str] = mapped_column(String(36), index=True)
    amount: Mapped[int] = mapped_column(U256)  # the deposit's amount, base units
    block_time: Mapped[int] = mapped_column(BigInteger)  # the deposit's block time, unix seconds
    decision: Mapped[str] = mapped_column(String(8), index=True)  # credit | hold
    credits: Mapped[int] = mapped_column(U256)
    counted: Mapped[int] = mapped_column(U256)
    refundable: Mapped[int] = mapped_column(U256)
    fresh_quote_id: Mapped[str] = mapped_column(String(36))  # "" when no fresh quote was made
    fresh_amount: Mapped[int | None] = mapped_column(U256, nullable=True)
    tolerance_bps: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# --- 0006: treasury sweeps (issue 12) -------------------------------------------------------------
class TreasuryDepositRow(Base):
    """A signer's facts about one deposit into a custody for sweeps (bridge/payments/treasury.py):
    its decision by the deposit rule (computed once; ``outcome`` NULL while undecided) and the
    final settlement block that recorded its credit."""

    __tablename__ = "treasury_deposits"
    __table_args__ = (PrimaryKeyConstraint("source", "sequence", name="pk_treasury_deposits"),
                      Index("ix_treasury_deposits_chain", "chain"))
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    chain: Mapped[str] = mapped_column(String(32))
    reference: Mapped[bytes] = mapped_column(LargeBinary(32))
    amount: Mapped[int] = mapped_column(U256)
    outcome: Mapped[str | None] = mapped_column(String(24), nullable=True)
    credits: Mapped[int] = mapped_column(U256, default=0)
    counted: Mapped[int] = mapped_column(U256, default=0)
    refundable: Mapped[int] = mapped_column(U256, default=0)
    refund_id: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)
    credited_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    token: Mapped[str | None] = mapped_column(String(16), nullable=True)  # 0013: the deposit's token symbol


class SweepRow(Base):
    """One epoch's sweep of a custody to its treasury, as this signer authorized (or refused) it."""

    __tablename__ = "sweeps"
    __table_args__ = (UniqueConstraint("release_id", name="uq_sweep_release_id"),
                      UniqueConstraint("chain", "token", "epoch", name="uq_sweep_epoch"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    chain: Mapped[str] = mapped_column(String(32))
    token: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(BigInteger)
    cutoff: Mapped[int] = mapped_column(BigInteger)  # settlement block B_k
    amount: Mapped[int] = mapped_column(U256)
    to: Mapped[bytes] = mapped_column(LargeBinary(32))
    state: Mapped[str] = mapped_column(String(16))  # signed | paid
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # where the custody paid it (custodies that can tell: the EVM lock's Released log); None otherwise
    paid_tx: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True)
    paid_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)  # the block's time


class SweepItemRow(Base):
    """The audit trail: a sweep -> the deposits it covers, with the earned amount of each."""

    __tablename__ = "sweep_items"
    __table_args__ = (PrimaryKeyConstraint("release_id", "source", "sequence", name="pk_sweep_items"),)
    release_id: Mapped[bytes] = mapped_column(LargeBinary(32))
    source: Mapped[bytes] = mapped_column(LargeBinary(32))
    sequence: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(U256)


# --- 0011: API replicas on one database ------------------------------------------------------------
class LeaseRow(Base):
    """A singleton job's lease (bridge/singleton.py): ``holder`` runs ``name`` until
    ``expires_at`` (unix seconds by the database's clock) unless it renews it."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    acquired_at: Mapped[float] = mapped_column(Float(precision=53))
    expires_at: Mapped[float] = mapped_column(Float(precision=53))
